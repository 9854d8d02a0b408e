"""Outcome feedback end to end: a real server holds sampled decisions, joins the outcomes that
``report_outcomes`` brings, and appends auction-log files to a directory or S3; SIGTERM writes
everything accepted, SIGKILL loses at most the flush interval."""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from serving import BIDFILTER, RunningServer, ServerPool
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TFramedTransport

from bidfilter.client import AsyncBidFilterClient, BidFilterClient, ConnectionSettings
from bidfilter.logs import conform_batch, iter_log_batches
from bidfilter.thrift import AuctionOutcome, FilterResponse, PartnerOutcome

LOAD_S = 60.0  # the bar: a minute of load with reports flowing, then SIGTERM


def _outcome(response: FilterResponse, bids: dict[str, float]) -> AuctionOutcome:
    """What an SSP reports: it called the partners the filter said to send to; those of them
    in ``bids`` bid that price."""
    return AuctionOutcome(
        response.request_id,
        [
            PartnerOutcome(
                d.partner,
                d.send,
                (d.partner in bids) if d.send else None,
                bids.get(d.partner) if d.send else None,
            )
            for d in response.decisions
        ],
    )


def _logged_bids(partners: list[dict[str, Any]]) -> dict[str, float]:
    return {p["partner"]: p["price"] for p in partners if p["bid"]}


def _records(root: Path) -> dict[str, dict[str, Any]]:
    """Every record under a log directory, by request id (the files are validated on read)."""
    return {row["request_id"]: row for batch in iter_log_batches(root) for row in batch.to_pylist()}


def _metric(server: RunningServer, name: str) -> float:
    _, body = server.http("/metrics")
    for line in body.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture
def synth_requests(synth_logs: Path) -> list[tuple[bytes, list[dict[str, Any]]]]:
    batch = next(iter_log_batches(synth_logs, columns=["request", "partners"], batch_size=2000))
    return [
        (text.encode(), partners)
        for text, partners in zip(
            batch.column("request").to_pylist(), batch.column("partners").to_pylist(), strict=True
        )
    ]


PROTOCOLS = {"binary": TBinaryProtocol, "compact": TCompactProtocol}
TRANSPORTS = {"framed": TFramedTransport, "unframed": TBufferedTransport}


@pytest.mark.parametrize(("protocol", "transport"), [("binary", "framed"), ("compact", "unframed")])
def test_official_client_reports_and_the_store_holds_the_joined_records(
    protocol: str,
    transport: str,
    start_server: ServerPool,
    trained_store: tuple[Path, str],
    thrift_generated: tuple[ModuleType, ModuleType],
    synth_requests: list[tuple[bytes, list[dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    ttypes, service = thrift_generated
    out = tmp_path / "outcomes"
    server = start_server(
        trained_store[0], outcome_log=out, decision_log_share=0.5, outcome_flush_s=0.5
    )
    sock = TSocket("127.0.0.1", server.port)
    sock.setTimeout(5000)
    wire = TRANSPORTS[transport](sock)
    wire.open()
    client = service.Client(PROTOCOLS[protocol](wire))
    reported: dict[str, dict[str, float]] = {}
    outcomes = []
    for openrtb, partners in synth_requests[:200]:
        candidates = [p["partner"] for p in partners]
        response = client.filter(ttypes.FilterRequest(openrtb=openrtb, candidates=candidates))
        bids = _logged_bids(partners)
        outcomes.append(
            ttypes.AuctionOutcome(
                request_id=response.request_id,
                partners=[
                    ttypes.PartnerOutcome(
                        partner=d.partner,
                        called=d.send,
                        bid=(d.partner in bids) if d.send else None,
                        price=bids.get(d.partner) if d.send else None,
                    )
                    for d in response.decisions
                ],
            )
        )
        if response.logged:
            reported[response.request_id] = bids
    assert 50 < len(reported) < 150  # about half logged
    receipt = client.report_outcomes(outcomes)
    assert (receipt.accepted, receipt.unknown, receipt.duplicate) == (
        len(reported),
        200 - len(reported),
        0,
    )
    again = client.report_outcomes(outcomes[:10])
    assert again.accepted == 0 and again.duplicate + again.unknown == 10

    with pytest.raises(ttypes.InvalidRequest) as refused:
        client.report_outcomes(
            [
                ttypes.AuctionOutcome(
                    request_id="x", partners=[ttypes.PartnerOutcome("a", False, True)]
                )
            ]
        )
    assert refused.value.field == "outcomes[0].partners[0].bid"
    wire.close()

    server.wait_until(
        lambda: _metric(server, "bidfilter_outcome_records_written_total") == len(reported)
    )
    assert _metric(server, "bidfilter_outcomes_accepted_total") == len(reported)
    records = _records(out)
    assert set(records) == set(reported)
    for request_id, bids in reported.items():
        record = records[request_id]
        assert record["sample_rate"] == 0.5
        for entry in record["partners"]:
            if entry["sent"]:
                assert entry["bid"] == (entry["partner"] in bids)
                assert entry["price"] == (bids.get(entry["partner"], 0.0))
                assert 0 < entry["propensity"] <= 1
            else:
                assert not entry["bid"] and entry["price"] == 0
            assert entry["model_version"] == trained_store[1]
    assert server.stop() == 0


def test_without_an_outcome_log_reports_are_counted_unknown(
    start_server: ServerPool,
    trained_store: tuple[Path, str],
    synth_requests: list[tuple[bytes, list[dict[str, Any]]]],
) -> None:
    server = start_server(trained_store[0])
    with BidFilterClient(ConnectionSettings("127.0.0.1", server.port)) as client:
        openrtb, partners = synth_requests[0]
        response = client.filter(openrtb, [p["partner"] for p in partners])
        assert response.logged is None
        receipt = client.report_outcomes([_outcome(response, {})])
    assert (receipt.accepted, receipt.unknown) == (0, 1)
    server.wait_until(lambda: _metric(server, "bidfilter_outcomes_unknown_total") == 1)


def _under_load(
    server: RunningServer,
    requests: list[tuple[bytes, list[dict[str, Any]]]],
    seconds: float,
    stop_at: threading.Event,
) -> tuple[dict[str, float], int]:
    """Filter and report for ``seconds`` over eight connections; (accepted id -> when its
    receipt came, calls made). The caller signals or kills the server meanwhile."""
    accepted: dict[str, float] = {}
    calls = 0

    async def ssp(client: AsyncBidFilterClient, seed: int) -> None:
        nonlocal calls
        rng = random.Random(seed)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop_at.is_set():
            chosen = [requests[rng.randrange(len(requests))] for _ in range(8)]
            # Each request gets an id of its own: the decision log keeps the first of an id.
            responses = []
            for openrtb, partners in chosen:
                unique = openrtb.replace(b'"id":"', f'"id":"{seed}-{calls}-'.encode(), 1)
                calls += 1
                try:
                    response = await client.filter(unique, [p["partner"] for p in partners])
                except Exception:
                    return  # the server is going away
                responses.append((response, _logged_bids(partners)))
            outcomes = [_outcome(r, bids) for r, bids in responses if r.logged]
            try:
                receipt = await client.report_outcomes(outcomes)
            except Exception:
                return
            if receipt.accepted == len(outcomes):
                now = time.monotonic()
                accepted.update((o.request_id, now) for o in outcomes)
            else:  # which were accepted is not said one by one: report them singly
                for o in outcomes:
                    one = await client.report_outcomes([o])
                    if one.accepted:
                        accepted[o.request_id] = time.monotonic()

    async def main() -> None:
        settings = ConnectionSettings("127.0.0.1", server.port, timeout=5.0, retries=0)
        async with AsyncBidFilterClient(settings, connections=8) as client:
            await asyncio.gather(*(ssp(client, seed) for seed in range(8)))

    asyncio.run(main())
    return accepted, calls


def _load_then(
    server: RunningServer,
    requests: list[tuple[bytes, list[dict[str, Any]]]],
    after_s: float,
    act: Callable[[], object],
) -> tuple[dict[str, float], int]:
    """Load the server (as ``_under_load``) and, ``after_s`` into it, ``act`` on it."""
    stop = threading.Event()

    def fire() -> None:
        act()
        stop.set()

    timer = threading.Timer(after_s, fire)
    timer.start()
    try:
        return _under_load(server, requests, after_s + 30, stop)
    finally:
        timer.cancel()


def test_sigterm_under_load_writes_every_accepted_report(
    start_server: ServerPool,
    trained_store: tuple[Path, str],
    synth_requests: list[tuple[bytes, list[dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    out = tmp_path / "outcomes"
    # A long flush interval: everything accepted in the last minute is still in memory at the
    # signal, so only the SIGTERM path can have written it.
    server = start_server(
        trained_store[0], workers=2, outcome_log=out, decision_log_share=0.2, outcome_flush_s=3600
    )
    sigterm = lambda: server.process.send_signal(signal.SIGTERM)  # noqa: E731
    accepted, calls = _load_then(server, synth_requests, LOAD_S, sigterm)
    assert server.process.wait(60) == 0
    assert calls > 1000 and len(accepted) > 100
    records = _records(out)
    assert set(accepted) <= set(records)  # nothing accepted is lost
    assert sum(batch.num_rows for batch in iter_log_batches(out)) == len(records)  # once each
    for path in out.rglob("*"):
        assert path.is_dir() or path.suffix == ".parquet"  # no temporary file left behind


def _process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def test_sigkill_loses_at_most_the_flush_interval(
    start_server: ServerPool,
    trained_store: tuple[Path, str],
    synth_requests: list[tuple[bytes, list[dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    out = tmp_path / "outcomes"
    flush_s = 1.0
    server = start_server(
        trained_store[0],
        workers=2,
        outcome_log=out,
        decision_log_share=0.3,
        outcome_flush_s=flush_s,
    )
    pids = _process_tree(server.process.pid)
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        for pid in pids:  # the supervisor and its workers at once: nobody gets to write
            os.kill(pid, signal.SIGKILL)

    accepted, _ = _load_then(server, synth_requests, 8.0, kill)
    server.process.wait(10)
    assert len(accepted) > 50
    records = _records(out)  # every file there is whole: written atomically
    # Accepted before the last flush that surely ran (an interval, plus the time a write of a
    # second's records takes on a loaded machine): written.
    surely_flushed = killed_at[0] - flush_s - 1.5
    old = {rid for rid, at in accepted.items() if at < surely_flushed}
    assert old and old <= set(records)
    lost = set(accepted) - set(records)
    assert all(accepted[rid] >= killed_at[0] - flush_s - 1.5 for rid in lost)


def test_outcomes_go_to_s3(
    start_server: ServerPool,
    trained_store: tuple[Path, str],
    synth_requests: list[tuple[bytes, list[dict[str, Any]]]],
    s3_server: str,
    s3_bucket: str,
) -> None:
    server = start_server(
        trained_store[0],
        outcome_log=f"s3://{s3_bucket}/auction-logs",
        s3_endpoint_url=s3_server,
        decision_log_share=1.0,
        outcome_flush_s=0.5,
    )
    with BidFilterClient(ConnectionSettings("127.0.0.1", server.port)) as client:
        outcomes = []
        for openrtb, partners in synth_requests[:30]:
            response = client.filter(openrtb, [p["partner"] for p in partners])
            outcomes.append(_outcome(response, _logged_bids(partners)))
        assert client.report_outcomes(outcomes).accepted == 30
    assert server.stop() == 0
    s3 = boto3.client("s3", endpoint_url=s3_server)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and all(k.startswith("auction-logs/date=") and k.endswith(".parquet") for k in keys)
    ids = set()
    for key in keys:
        body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        for batch in pq.read_table(io.BytesIO(body)).to_batches():
            conform_batch(batch, batch.schema.names)
            ids.update(batch.column("request_id").to_pylist())
    assert ids == {o.request_id for o in outcomes}


def test_a_bad_outcome_log_uri_stops_the_server_with_a_message(
    trained_store: tuple[Path, str], port_allocator: Callable[[], int]
) -> None:
    result = subprocess.run(
        [
            str(BIDFILTER),
            "serve",
            "--store",
            str(trained_store[0]),
            "--port",
            str(port_allocator()),
            "--metrics-port",
            str(port_allocator()),
            "--outcome-log",
            "ftp://nowhere/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--outcome-log" in result.stderr and "Traceback" not in result.stderr

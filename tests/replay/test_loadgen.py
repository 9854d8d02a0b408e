"""The load generator against the fake server, whose policy is known."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from client_fake_server import FakeBidFilterServer, fails_open, sends

from bidfilter.client import BidFilterUnavailableError
from bidfilter.replay import LoadReport, read_logged_auctions, run_loadgen
from bidfilter.thrift import Protocol, Transport

FAIL_OPEN_EVERY = 4


def expected_counts(logs: Path, calls: int) -> dict[str, object]:
    """What the fake answers to the first ``calls`` replayed records (cycled, in log order)."""
    auctions = read_logged_auctions(logs)
    outcomes: Counter[str] = Counter()
    partner_calls = filtered = logged_bids = bids_lost = 0
    for index in range(calls):
        auction = auctions[index % len(auctions)]
        fail_open = fails_open(auction.openrtb, FAIL_OPEN_EVERY)
        outcomes["FAIL_OPEN_OVERLOAD" if fail_open else "SCORED"] += 1
        for partner, bid in zip(auction.partners, auction.bids, strict=True):
            sent = fail_open or sends(partner)
            partner_calls += 1
            filtered += not sent
            logged_bids += bid
            bids_lost += bid and not sent
    return {
        "outcomes": outcomes,
        "partner_calls": partner_calls,
        "filtered": filtered,
        "logged_bids": logged_bids,
        "bids_lost": bids_lost,
    }


@pytest.mark.parametrize(
    ("protocol", "transport"),
    [(Protocol.BINARY, Transport.FRAMED), (Protocol.COMPACT, Transport.UNFRAMED)],
)
def test_open_loop_at_a_fixed_rate(
    fake_server: FakeBidFilterServer, replay_log: Path, protocol: Protocol, transport: Transport
) -> None:
    fake_server.fail_open_every = FAIL_OPEN_EVERY
    fake_server.record_calls = False
    rate, duration = 400.0, 2.0
    progress = io.StringIO()
    report = run_loadgen(
        ("127.0.0.1", fake_server.port),
        replay_log,
        rate=rate,
        duration=duration,
        connections=2,
        protocol=protocol,
        transport=transport,
        progress=True,
        progress_stream=progress,
    )
    assert report.mode == "open"
    assert abs(report.sent - rate * duration) <= 0.1 * rate * duration
    assert report.completed == report.sent == fake_server.stats.calls
    assert report.unfinished == 0
    assert sum(report.errors.values()) == 0
    assert abs(report.throughput - rate) <= 0.15 * rate
    latency = report.latency_us
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"]
    assert latency["p99.9"] <= latency["max"]

    expected = expected_counts(replay_log, report.completed)
    assert {k: v for k, v in report.outcomes.items() if v} == dict(expected["outcomes"])  # type: ignore[call-overload]
    assert report.partner_calls == expected["partner_calls"]
    assert report.partner_calls_filtered == expected["filtered"]
    assert report.logged_bids == expected["logged_bids"]
    assert report.bids_lost == expected["bids_lost"]
    assert report.filtered_share == pytest.approx(
        report.partner_calls_filtered / report.partner_calls
    )
    assert report.bids_lost_share == pytest.approx(report.bids_lost / report.logged_bids)
    assert report.cpu_s > 0
    assert report.connects == 2

    lines = progress.getvalue().splitlines()
    assert 1 <= len(lines) <= 4 and all(line.startswith("loadgen") for line in lines)
    document = json.loads(json.dumps(report.to_dict()))
    assert document["sent"] == report.sent
    assert "filtered" in report.to_text()


def test_closed_loop_and_every_partner(fake_server: FakeBidFilterServer, replay_log: Path) -> None:
    fake_server.record_calls = False
    report = run_loadgen(
        ("127.0.0.1", fake_server.port),
        replay_log,
        rate=None,
        duration=1.0,
        connections=2,
        depth=8,
        candidates="all",
    )
    assert report.mode == "closed" and report.depth == 8
    assert report.completed == report.sent > 100
    # candidates "all": the fake decides on its 4 partners, dsp-01 and dsp-03 sent
    assert report.partner_calls == 4 * report.completed
    assert report.filtered_share == 0.5


def test_stops_by_itself_when_the_server_hangs(
    fake_server: FakeBidFilterServer, replay_log: Path
) -> None:
    fake_server.hang = True
    began = time.monotonic()
    report = run_loadgen(
        ("127.0.0.1", fake_server.port),
        replay_log,
        rate=100.0,
        duration=1.0,
        connections=2,
        timeout=0.2,
    )
    assert time.monotonic() - began < 1.0 + 0.2 + 0.5 + 1.5
    assert report.completed == 0
    assert report.errors["timeout"] == report.sent > 50
    assert report.latency_us["p99"] == 0


def test_the_drain_timeout_cuts_calls_still_waiting(
    fake_server: FakeBidFilterServer, replay_log: Path
) -> None:
    fake_server.hang = True
    began = time.monotonic()
    report = run_loadgen(
        ("127.0.0.1", fake_server.port),
        replay_log,
        rate=100.0,
        duration=0.5,
        connections=1,
        timeout=30.0,  # far longer than the run: only the drain timeout ends it
        drain=0.3,
    )
    assert time.monotonic() - began < 0.5 + 0.3 + 1.5
    assert report.unfinished == report.sent > 20


def test_an_unreachable_server_fails_at_the_start(free_tcp_port: int, replay_log: Path) -> None:
    with pytest.raises(BidFilterUnavailableError):
        run_loadgen(("127.0.0.1", free_tcp_port), replay_log, rate=10.0, duration=1.0)


def test_processes_split_the_load_and_merge(
    fake_server: FakeBidFilterServer, replay_log: Path
) -> None:
    fake_server.record_calls = False
    report = run_loadgen(
        ("127.0.0.1", fake_server.port),
        replay_log,
        rate=200.0,
        duration=1.0,
        connections=2,
        processes=2,
    )
    assert isinstance(report, LoadReport)
    assert report.processes == 2
    assert abs(report.sent - 200) <= 20
    assert report.completed == report.sent == fake_server.stats.calls
    assert report.connects == 2  # one per process
    assert report.latency_us["p50"] > 0


def test_bad_arguments(replay_log: Path) -> None:
    target = ("127.0.0.1", 1)
    with pytest.raises(ValueError, match="connection"):
        run_loadgen(target, replay_log, rate=10.0, duration=1.0, connections=1, processes=2)
    with pytest.raises(ValueError, match="candidates"):
        run_loadgen(target, replay_log, rate=10.0, duration=1.0, candidates="some")
    with pytest.raises(ValueError, match="rate"):
        run_loadgen(target, replay_log, rate=0.0, duration=1.0)

"""The fast-path benchmark harness: its pieces, and ``python -m bench --smoke`` end to end.

The smoke runs check that the harness works (every system answers, scores agree, the results
JSON and the table are written, the servers are pinned, nothing is written into the
repository), not the speed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.load_client import LoadSpec, build_loadgen, run_load
from bench.report import END_MARKER, SECTION_HEADING, START_MARKER, update_docs
from bench.runner import plan_rates
from bench.workload import write_requests_file

from bidfilter.thrift import (
    CallEncoder,
    FilterRequest,
    FilterResponse,
    Outcome,
    PartnerDecision,
    Protocol,
    ReplyEncoder,
    Transport,
)

REPO = Path(__file__).resolve().parents[2]

# -- pieces


def test_plan_rates_runs_half_of_max_and_the_rates_a_system_can_carry() -> None:
    half, rates = plan_rates(8000.0, [200, 1000, 5000, 7000, 20000], share=0.8)
    assert half == 4000.0
    assert rates == [200.0, 1000.0, 4000.0, 5000.0]  # 7000 > 80% of 8000
    assert plan_rates(3.0, [50], share=0.8) == (2.0, [2.0])


def test_update_docs_appends_the_section_once_then_replaces_only_between_markers(
    tmp_path: Path,
) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nearlier text\n")
    update_docs(doc, "first table")
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nearlier text\n")
    assert text.count(SECTION_HEADING) == 1
    assert f"{START_MARKER}\nfirst table\n{END_MARKER}" in text
    doc.write_text(text + "\nafter the section\n")
    update_docs(doc, "second table")
    again = doc.read_text()
    assert "first table" not in again and "second table" in again
    assert again.count(SECTION_HEADING) == 1
    assert again.endswith("\nafter the section\n")


class _CannedServer:
    """Answers every complete request on a connection with ``answer`` (a thread, 127.0.0.1)."""

    def __init__(self, request_size: int, answer: bytes) -> None:
        self.request_size = request_size
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        pending = b""
        connection.settimeout(0.5)
        with connection:
            while not self._stop.is_set():
                try:
                    data = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                pending += data
                complete, rest = divmod(len(pending), self.request_size)
                pending = pending[len(pending) - rest :]
                if complete:
                    connection.sendall(self.answer * complete)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=2)


@pytest.fixture
def canned_server() -> Iterator[Callable[[int, bytes], _CannedServer]]:
    servers: list[_CannedServer] = []

    def start(request_size: int, answer: bytes) -> _CannedServer:
        servers.append(_CannedServer(request_size, answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _run_loadgen(
    tmp_path: Path, port: int, message: bytes, wire: str, spec: LoadSpec
) -> dict[str, Any]:
    binary = build_loadgen(tmp_path / "cache")
    requests = tmp_path / "requests.bin"
    write_requests_file(requests, [message] * 3)
    return run_load(
        binary,
        port=port,
        requests_file=requests,
        wire=wire,
        spec=spec,
        core=1,
        report_file=tmp_path / "report.json",
    )


@pytest.mark.usefixtures("harness_tools")
def test_loadgen_reads_outcomes_from_bidfilters_own_thrift_replies(
    tmp_path: Path, canned_server: Callable[[int, bytes], _CannedServer]
) -> None:
    call = CallEncoder(Protocol.BINARY, Transport.FRAMED).filter(
        1, FilterRequest(b'{"id":"r"}', ["dsp-01"])
    )
    response = FilterResponse(
        "r", [PartnerDecision("dsp-01", 0.5, True, False, 0.1)], "v1", Outcome.FAIL_OPEN_DEADLINE
    )
    reply = ReplyEncoder(Protocol.BINARY, Transport.FRAMED).filter(1, response)
    server = canned_server(len(call), reply)
    report = _run_loadgen(
        tmp_path, server.port, call, "thrift", LoadSpec("closed", 0.3, 2, depth=4, drain_s=1)
    )
    assert report["answered"] > 0
    assert report["results"]["fail_open_deadline"] == report["answered"] == report["sent"]
    assert report["errors"] == {
        "connection": 0,
        "lost_in_flight": 0,
        "protocol": 0,
        "in_flight_limit": 0,
    }
    assert 0 <= report["cpu_share"] <= 1.5


@pytest.mark.usefixtures("harness_tools")
def test_loadgen_open_loop_over_http_sends_the_offered_rate(
    tmp_path: Path, canned_server: Callable[[int, bytes], _CannedServer]
) -> None:
    body = b'{"outputs":[]}'
    post = b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    server = canned_server(len(post), answer)
    report = _run_loadgen(
        tmp_path, server.port, post, "http", LoadSpec("open", 0.5, 2, rate=400, drain_s=1)
    )
    assert report["intended"] == 200
    assert report["results"]["http_ok"] == report["answered"] == report["sent"] == 200
    assert report["latency_us"]["count"] == 200
    assert report["latency_us"]["p50"] <= report["latency_us"]["p99"] <= report["latency_us"]["max"]


# -- end to end


def _smoke(tmp_path: Path, systems: str) -> dict[str, Any]:
    docs = REPO / "docs" / "benchmarks.md"
    docs_before = docs.read_text()
    results_dir = REPO / "bench" / "results"
    results_before = sorted(results_dir.glob("*.json")) if results_dir.exists() else []
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--systems", systems, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-6000:]
    # Smoke output goes to --out only: the repository's docs and results are untouched.
    assert docs.read_text() == docs_before
    assert (sorted(results_dir.glob("*.json")) if results_dir.exists() else []) == results_before
    [path] = list(out.glob("*.json"))
    results: dict[str, Any] = json.loads(path.read_text())
    assert results["smoke"] is True
    table = (out / "benchmarks.md").read_text()
    assert START_MARKER in table and END_MARKER in table
    for name in systems.split(","):
        system = results["systems"][name]
        assert "error" not in system, system.get("error")
        assert system["correctness"]["agree"]
        assert system["max_throughput_rps"] > 0
        assert system["max"]["ok_share"] > 0.5  # fail-open answers only under heavy noise
        assert system["rates"] and all(run["ok"] > 0 for run in system["rates"])
        assert all(0 <= run["loadgen_cpu_share"] < 1.5 for run in system["rates"])
        assert all(p["cpus_allowed"] == "0" for p in system["memory"]["processes"])
        assert system["memory"]["peak_rss_sum_mib"] > 0
        assert f"| {system['label']} |" in table
    assert results["agreement"]["agree"]
    count = len(systems.split(","))
    assert len(results["agreement"]["pairs_max_abs_diff"]) == count * (count - 1) // 2
    return results


@pytest.mark.slow
@pytest.mark.usefixtures("harness_tools")
def test_smoke_bidfilter_and_thread_pool(tmp_path: Path) -> None:
    results = _smoke(tmp_path, "bidfilter,threadpool")
    assert {row["target"] for row in results["targets"]} >= {"p99 at half of max load"}


@pytest.mark.slow
@pytest.mark.usefixtures("harness_tools")
def test_smoke_all_three_with_mlserver(tmp_path: Path) -> None:
    """Installs MLServer into bench/.venvs/mlserver the first time (about two minutes)."""
    results = _smoke(tmp_path, "bidfilter,mlserver,threadpool")
    assert set(results["agreement"]["pairs_max_abs_diff"]) == {
        "bidfilter~mlserver",
        "bidfilter~threadpool",
        "mlserver~threadpool",
    }

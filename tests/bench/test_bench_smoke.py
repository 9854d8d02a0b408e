"""The fast-path benchmark harness: its pieces, and ``python -m bench --smoke`` end to end.

The smoke runs check that the harness works (every system answers, scores agree, the results
JSON and the table are written, the servers are pinned, nothing is written into the
repository), not the speed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.load_client import LoadSpec, build_floor_server, build_loadgen, run_load
from bench.report import END_MARKER, SECTION_HEADING, START_MARKER, targets, update_docs
from bench.runner import matched_work_us, plan_rates
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


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def floor_server(tmp_path: Path) -> Iterator[Callable[..., tuple[int, bytes, int]]]:
    """Starts the floor server on a free port, answering with a small canned reply:
    ``start(*extra_arguments) -> (port, reply, pid)``."""
    binary = build_floor_server(tmp_path / "cache")
    reply = _frame(b"canned reply")
    (tmp_path / "reply.bin").write_bytes(reply)
    processes: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> tuple[int, bytes, int]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [str(binary), "--port", str(port), "--reply", str(tmp_path / "reply.bin"), *extra]
        processes.append(subprocess.Popen(command))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                threading.Event().wait(0.05)
        return port, reply, processes[-1].pid

    yield start
    for process in processes:
        process.terminate()
        assert process.wait(timeout=5) == 0  # SIGTERM is a clean stop


@pytest.mark.usefixtures("harness_tools")
def test_floor_server_answers_each_complete_frame_once_however_the_bytes_are_split(
    floor_server: Callable[..., tuple[int, bytes, int]],
) -> None:
    port, reply, _pid = floor_server()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(_frame(b"one") + _frame(b"two") + _frame(b"three")[:5])
        assert _read_exactly(connection, 2 * len(reply)) == 2 * reply
        connection.sendall(_frame(b"three")[5:] + _frame(b"four"))
        assert _read_exactly(connection, 2 * len(reply)) == 2 * reply


@pytest.mark.usefixtures("harness_tools")
def test_floor_server_closes_a_connection_that_announces_an_oversized_frame(
    floor_server: Callable[..., tuple[int, bytes, int]],
) -> None:
    port, _reply, _pid = floor_server()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall((1 << 31).to_bytes(4, "big"))
        assert connection.recv(100) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:  # still serving
        connection.sendall(_frame(b"x"))
        assert connection.recv(100) != b""


@pytest.mark.usefixtures("harness_tools")
def test_floor_server_spins_the_work_it_is_given_per_request(
    floor_server: Callable[..., tuple[int, bytes, int]],
) -> None:
    port, reply, pid = floor_server("--work-us", "2000")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(_frame(b"call") * 50)
        assert _read_exactly(connection, 50 * len(reply)) == 50 * reply
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    assert cpu_s >= 0.09  # 50 x 2 ms on the CPU, less a clock tick of accounting


def test_matched_work_is_bidfilters_cpu_beyond_the_floors_at_the_latency_target_rate() -> None:
    bidfilter = {"max": {}, "half_load_rate": 15_000.0, "rates": [_run(10_000.0, 0, 0, 64.0)]}
    floor = {"max": {}, "rates": [_run(10_000.0, 0, 0, 24.0), _run(15_000.0, 0, 0, 20.0)]}
    assert matched_work_us({"bidfilter": bidfilter, "floor": floor}) == 40.0
    bidfilter["rates"] = [_run(15_000.0, 0, 0, 50.0)]  # 10,000/s not run: at half load
    assert matched_work_us({"bidfilter": bidfilter, "floor": floor}) == 30.0
    with pytest.raises(RuntimeError, match="measured first"):
        matched_work_us({"bidfilter": bidfilter})


def _run(rate: float, p99_us: float, p999_us: float, cpu_us: float) -> dict[str, Any]:
    return {
        "load": {"offered_rate": rate, "latency_us": {"p99": p99_us, "p99_9": p999_us}},
        "server_cpu_us_per_request": cpu_us,
    }


def test_targets_judge_cpu_at_max_load_and_latency_at_ten_thousand_per_second() -> None:
    bidfilter = {
        "max": _run(0, 0, 0, cpu_us=30.0),
        "max_throughput_rps": 30_000.0,
        "half_load_rate": 15_000.0,
        "rates": [_run(10_000.0, 400.0, 2500.0, 60.0), _run(15_000.0, 1500.0, 7000.0, 50.0)],
    }
    floor = {
        "max": _run(0, 0, 0, cpu_us=5.0),
        "max_throughput_rps": 100_000.0,
        "rates": [_run(10_000.0, 150.0, 1800.0, 20.0)],
    }
    matched = {"max": _run(0, 0, 0, cpu_us=60.0), "rates": [_run(10_000.0, 300.0, 2400.0, 60.0)]}
    threadpool = {"max": _run(0, 0, 0, cpu_us=500.0), "max_throughput_rps": 2_000.0}
    rows = {
        row["target"].split(" (")[0]: row
        for row in targets(
            {"bidfilter": bidfilter, "threadpool": threadpool, "floor": floor, "matched": matched}
        )
    }
    cpu = rows["server CPU per bid request at max load"]
    assert (cpu["measured"], cpu["met"]) == (30.0, True)
    p99 = rows["p99 at 10,000 req/s"]
    assert (p99["measured"], p99["floor"], p99["matched"], p99["met"]) == (0.4, 0.15, 0.3, True)
    p999 = rows["p99.9 at 10,000 req/s"]
    assert (p999["measured"], p999["floor"], p999["matched"]) == (2.5, 1.8, 2.4)
    assert p999["met"] is False
    versus = rows["max throughput per core vs threadpool"]
    assert versus["measured"] == 15.0 and versus["per_cpu_second"] == pytest.approx(500 / 30)
    assert rows["max throughput per core vs mlserver"]["met"] is None  # not run


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
        assert name in ("floor", "matched") or system["correctness"]["agree"]
        assert system["max_throughput_rps"] > 0
        assert system["max"]["ok_share"] > 0.5  # fail-open answers only under heavy noise
        assert system["rates"] and all(run["ok"] > 0 for run in system["rates"])
        assert all(0 <= run["loadgen_cpu_share"] < 1.5 for run in system["rates"])
        assert all(p["cpus_allowed"] == "0" for p in system["memory"]["processes"])
        assert system["memory"]["peak_rss_sum_mib"] > 0
        assert f"| {system['label']} |" in table
    assert results["agreement"]["agree"]
    count = len([name for name in systems.split(",") if name not in ("floor", "matched")])
    assert len(results["agreement"]["pairs_max_abs_diff"]) == count * (count - 1) // 2
    return results


@pytest.mark.slow
@pytest.mark.usefixtures("harness_tools")
def test_smoke_bidfilter_thread_pool_and_the_floor(tmp_path: Path) -> None:
    # The references are named first but run last, at the others' half-load rates too.
    results = _smoke(tmp_path, "matched,floor,bidfilter,threadpool")
    systems = results["systems"]
    assert list(systems) == ["bidfilter", "threadpool", "floor", "matched"]
    for name in ("floor", "matched"):
        rates = {run["load"]["offered_rate"] for run in systems[name]["rates"]}
        assert rates >= {systems[n]["half_load_rate"] for n in ("bidfilter", "threadpool")}
        assert "correctness" not in systems[name] and "half_load_rate" not in systems[name]
        assert systems[name]["max"]["load"]["results"]["scored"] > 0
    # The matched server spins what bidfilter spends beyond the floor: it is the busier one.
    floor_cpu = systems["floor"]["max"]["server_cpu_us_per_request"]
    assert systems["matched"]["max"]["server_cpu_us_per_request"] > floor_cpu
    assert {row["target"] for row in results["targets"]} >= {
        "p99 at 10,000 req/s (half of that load)"
    }


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

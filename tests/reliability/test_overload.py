"""Overload: three times what the server can score, for a bounded time. Every call must still be
answered, in order, on a connection that stays up; the excess must come back FAIL_OPEN_OVERLOAD
quickly once the worker reads them; the worker's memory must stay put; and once the load drops,
calls are scored again as fast as before. A second test: steady pipelined traffic must not be
cut off by the timeout meant for clients that stall part-way into a message.

One worker, so that its queue sees the whole load and its capacity is one process's. The test
measures that capacity first (closed loop, pipelined), then offers three times it open loop:
each connection sends its calls at their scheduled times whether or not answers have come, as
an auction server does, and latency counts from the scheduled time. Calls are encoded once and
sent as raw bytes, answers decoded on threads: the generator costs a small fraction of what the
server spends per call, so the offered rate is real. Assertions are on ratios and presence, with
loose time bounds: the machine has two cores and other work.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from serving import RunningServer, ServerPool

from bidfilter.client import BidFilterClient, ConnectionSettings
from bidfilter.thrift import CallEncoder, FilterRequest, Outcome, Protocol, ReplyDecoder, Transport

WIRE = (Protocol.COMPACT, Transport.FRAMED)
# Below the default (512) so that a full queue waits a few milliseconds, well inside the
# requests' deadlines (half their tmax: 100 ms and up): the excess is shed as overload rather
# than timing out in the queue, which is the behaviour under test.
MAX_PENDING_CALLS = 64
OVERLOAD_FACTOR = 3.0
OVERLOAD_S = 8.0
CONNECTIONS = 4
DRAIN_TIMEOUT_S = 60.0  # how long the last answers may take once sending has stopped
DISTINCT_CALLS = 500  # encoded once each (seqid = index), then sent in a cycle
READ_TIMEOUT_S = 10.0  # the server's defaults: ``read_timeout_s``, and the deadline settings
DEADLINE_SHARE_OF_TMAX = 0.5
DEFAULT_DEADLINE_MS = 50.0


def metric(server: RunningServer, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", server.http("/metrics")[1], re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def worker_pids(server: RunningServer) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    # Workers are spawned (multiprocessing's spawn_main); the resource tracker is not a worker.
    return [pid for pid in children if b"spawn_main" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS line for pid {pid}")


@dataclass
class Answer:
    outcome: Outcome
    latency_s: float  # from the call's scheduled send time to its answer
    server_us: int  # from the worker reading the call to answering it
    deadline_s: float  # the server's deadline for this call: half the request's tmax
    all_sent: bool  # one decision per candidate, in order, every one sent


@dataclass
class Stream:
    """One connection: when each call was due, and each answer, in call order."""

    sock: socket.socket
    planned: int = 0
    scheduled: list[float] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PipelinedCalls:
    """Raw pipelined ``filter`` calls on connections to ``port``; each answer is checked to come
    in call order (its seqid) and recorded."""

    def __init__(self, port: int, requests: list[tuple[bytes, list[str]]]) -> None:
        encoder = CallEncoder(*WIRE)
        self.port = port
        self.requests = [requests[i % len(requests)] for i in range(DISTINCT_CALLS)]
        self.calls = [encoder.filter(i, FilterRequest(*r)) for i, r in enumerate(self.requests)]
        self.deadlines_s = [
            json.loads(openrtb).get("tmax", 2 * DEFAULT_DEADLINE_MS) * DEADLINE_SHARE_OF_TMAX / 1e3
            for openrtb, _ in self.requests
        ]

    def connect(self) -> Stream:
        return Stream(socket.create_connection(("127.0.0.1", self.port), timeout=DRAIN_TIMEOUT_S))

    def send(self, stream: Stream, due: list[float]) -> None:
        """Send the next ``len(due)`` calls in one write."""
        first = len(stream.scheduled)
        stream.scheduled += due
        stream.sock.sendall(
            b"".join(self.calls[k % DISTINCT_CALLS] for k in range(first, len(stream.scheduled)))
        )

    def receive(
        self,
        stream: Stream,
        done: Callable[[], bool],
        on_answers: Callable[[int], None] | None = None,
    ) -> None:
        """Read answers until ``done()``, the connection closes, or nothing comes for the drain
        timeout; a failure is recorded in ``stream.errors``."""
        decoder = ReplyDecoder(*WIRE)
        try:
            while not done():
                data = stream.sock.recv(1 << 16)
                if not data:
                    stream.errors.append(f"closed by the server after {len(stream.answers)}")
                    return
                now = time.monotonic()
                replies = decoder.feed(data)
                for reply in replies:
                    index = len(stream.answers)
                    if reply.seqid != index % DISTINCT_CALLS:
                        stream.errors.append(f"answer {index} has seqid {reply.seqid}")
                        return
                    response = reply.filter_response()
                    candidates = self.requests[reply.seqid][1]
                    decisions = response.decisions
                    stream.answers.append(
                        Answer(
                            response.outcome,
                            now - stream.scheduled[index],
                            response.server_us or 0,
                            self.deadlines_s[reply.seqid],
                            [d.partner for d in decisions] == candidates
                            and all(d.send for d in decisions),
                        )
                    )
                if on_answers is not None and replies:
                    on_answers(len(replies))
        except OSError as error:  # a reset, or no answer within the drain timeout
            stream.errors.append(f"{type(error).__name__}: {error} after {len(stream.answers)}")

    def closed_loop(self, seconds: float, window: int) -> float:
        """Scored answers per second with ``window`` calls in flight on each connection."""
        streams = [self.connect() for _ in range(CONNECTIONS)]
        stop_at = time.monotonic() + seconds

        def drive(stream: Stream) -> None:
            def refill(answered: int) -> None:
                if time.monotonic() < stop_at:
                    self.send(stream, [time.monotonic()] * answered)

            self.send(stream, [time.monotonic()] * window)
            self.receive(stream, lambda: len(stream.answers) >= len(stream.scheduled), refill)

        started = time.monotonic()
        _run_each(streams, drive)
        elapsed = time.monotonic() - started
        assert [s.errors for s in streams] == [[]] * len(streams)
        answers = [a.outcome for s in streams for a in s.answers]
        return answers.count(Outcome.SCORED) / elapsed

    def open_loop(self, rate: float, seconds: float) -> list[Stream]:
        """Each connection sends its share of ``rate`` calls a second on schedule for
        ``seconds``, answers or not; returns once every call is answered (or failed)."""
        streams = [self.connect() for _ in range(CONNECTIONS)]
        per_connection = rate / CONNECTIONS
        total = int(per_connection * seconds)
        for stream in streams:
            stream.planned = total
        start = time.monotonic() + 0.05

        def send_on_schedule(stream: Stream) -> None:
            try:
                while (sent := len(stream.scheduled)) < total:
                    due = min(total, int((time.monotonic() - start) * per_connection) + 1)
                    if due > sent:
                        self.send(stream, [start + k / per_connection for k in range(sent, due)])
                    time.sleep(0.002)
            except OSError as error:
                stream.errors.append(f"sending: {type(error).__name__}: {error}")

        def drive(stream: Stream) -> None:
            sender = threading.Thread(target=send_on_schedule, args=(stream,), daemon=True)
            sender.start()
            self.receive(stream, lambda: len(stream.answers) >= total)
            sender.join(DRAIN_TIMEOUT_S)

        _run_each(streams, drive)
        return streams


def _run_each(streams: list[Stream], drive: Callable[[Stream], None]) -> None:
    threads = [threading.Thread(target=drive, args=(s,), daemon=True) for s in streams]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(OVERLOAD_S + 3 * DRAIN_TIMEOUT_S)
    finally:
        for stream in streams:
            stream.sock.close()


def sequential_latencies(port: int, requests: list[tuple[bytes, list[str]]]) -> list[float]:
    """Seconds per call, one call at a time; every one must be scored."""
    latencies = []
    with BidFilterClient(ConnectionSettings("127.0.0.1", port)) as client:
        for openrtb, partners in requests[:200]:
            started = time.monotonic()
            response = client.filter(openrtb, partners)
            latencies.append(time.monotonic() - started)
            assert response.outcome == Outcome.SCORED
    return latencies


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def test_a_steady_pipelined_stream_is_not_cut_by_the_read_timeout(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    """A client streaming pipelined calls has its writes end part-way into the next call, as
    any stream cut into TCP segments does. It is sending, not stalling: ``read_timeout_s``
    (10 s) is the time to finish *a* message, so steady traffic for longer than that must not
    close the connection (and lose the calls in flight on it)."""
    server = server_pool(trained_store[0])
    calls = PipelinedCalls(server.port, replay_requests)
    stream = calls.connect()
    wire = [calls.calls[k % DISTINCT_CALLS] for k in range(int(200 * (READ_TIMEOUT_S + 3)))]
    receiver = threading.Thread(
        target=calls.receive, args=(stream, lambda: len(stream.answers) >= len(wire))
    )
    receiver.start()
    try:
        # Each write: the rest of one call and the first half of the next, 200 writes a second.
        started, carry = time.monotonic(), b""
        try:
            for message in wire:
                half = len(message) // 2
                stream.scheduled.append(time.monotonic())
                stream.sock.sendall(carry + message[:half])
                carry = message[half:]
                time.sleep(0.005)
            stream.sock.sendall(carry)
        except OSError as error:
            elapsed = time.monotonic() - started
            stream.errors.append(
                f"sending call {len(stream.scheduled)} at {elapsed:.1f} s: {error}"
            )
        receiver.join(DRAIN_TIMEOUT_S)
    finally:
        stream.sock.close()
        receiver.join(5)
    assert stream.errors == []
    assert len(stream.answers) == len(wire)
    assert metric(server, "bidfilter_connections_timed_out_total") == 0


@pytest.mark.slow
def test_three_times_capacity_is_shed_answered_and_survived(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    server = server_pool(trained_store[0], max_pending_calls=MAX_PENDING_CALLS)
    (worker,) = worker_pids(server)
    calls = PipelinedCalls(server.port, replay_requests)
    # Fewer calls in flight than the shedding limit, so that all of them are scored. This also
    # warms the worker up before its RSS is read.
    capacity = calls.closed_loop(seconds=3.0, window=MAX_PENDING_CALLS // (2 * CONNECTIONS))
    overload_metric = 'bidfilter_calls_total{method="filter",result="fail_open_overload"}'
    shed_before = metric(server, overload_metric)
    latency_before = statistics.median(sequential_latencies(server.port, replay_requests))
    rss_before = rss_kib(worker)

    rss_peak = rss_before
    overloaded = threading.Event()

    def sample_rss() -> None:
        nonlocal rss_peak
        while not overloaded.wait(0.25):
            rss_peak = max(rss_peak, rss_kib(worker))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        streams = calls.open_loop(OVERLOAD_FACTOR * capacity, OVERLOAD_S)
    finally:
        overloaded.set()
        sampler.join(5)
    rss_after = rss_kib(worker)

    answers = [a for s in streams for a in s.answers]
    sent = sum(len(s.scheduled) for s in streams)
    outcomes = {o.name: n for o in Outcome if (n := sum(a.outcome is o for a in answers))}
    shed = [a for a in answers if a.outcome is Outcome.FAIL_OPEN_OVERLOAD]
    summary = (
        f"capacity {capacity:.0f}/s, offered {OVERLOAD_FACTOR * capacity:.0f}/s for"
        f" {OVERLOAD_S:g} s: sent {sent}, answered {len(answers)}, {outcomes}; shed latency"
        f" p50 {quantile([a.latency_s for a in shed], 0.5) * 1e3:.1f} ms, p99"
        f" {quantile([a.latency_s for a in shed], 0.99) * 1e3:.1f} ms (in the server: p50"
        f" {quantile([a.server_us / 1e3 for a in shed], 0.5):.1f} ms, p99"
        f" {quantile([a.server_us / 1e3 for a in shed], 0.99):.1f} ms,"
        f" {sum(a.server_us / 1e6 <= a.deadline_s for a in shed) / max(len(shed), 1):.0%}"
        " within their deadline);"
        f" worker RSS {rss_before} -> peak {rss_peak} -> {rss_after} KiB; errors"
        f" {[s.errors for s in streams]}"
    )
    print(summary)

    # Every call answered, in order, on connections that stayed up.
    assert [s.errors for s in streams] == [[]] * CONNECTIONS, summary
    assert [len(s.answers) for s in streams] == [s.planned for s in streams], summary
    assert sent == sum(s.planned for s in streams) >= 2.5 * capacity * OVERLOAD_S
    assert set(outcomes) <= {"SCORED", "FAIL_OPEN_OVERLOAD", "FAIL_OPEN_DEADLINE"}, summary
    # The excess was shed: a real share came back as overload, every one sending to every
    # candidate, and scoring went on meanwhile rather than collapsing.
    assert len(shed) >= 0.2 * len(answers), summary
    assert all(a.all_sent for a in shed)
    assert outcomes.get("SCORED", 0) >= 0.05 * capacity * OVERLOAD_S, summary
    # The server counted what the client got: no call lost in between.
    assert metric(server, overload_metric) - shed_before == len(shed)
    server.wait_until(lambda: metric(server, "bidfilter_pending_calls") == 0)
    # Once the worker has read a call, the queue in front of it is bounded: most shed calls
    # are answered within their own deadline (half their tmax), and none waits for seconds.
    # (Counted from the scheduled send time, shed calls also wait in TCP buffers whenever the
    # offered rate is more than the worker can even shed; that figure is printed, not
    # asserted: it depends on how much CPU this shared machine gives the worker.)
    in_time = sum(a.server_us / 1e6 <= a.deadline_s for a in shed)
    assert in_time >= 0.5 * len(shed), summary
    assert quantile([a.server_us / 1e6 for a in shed], 0.99) < 1.0, summary
    # The queue is bounded (reading stops at four times the limit), so the worker's memory
    # does not grow with the backlog; keeping every call would cost hundreds of MiB.
    assert rss_peak - rss_before < 64 * 1024, summary
    assert rss_after - rss_before < 32 * 1024, summary

    # Load gone: every call scored again, at the latency of before.
    latency_after = statistics.median(sequential_latencies(server.port, replay_requests))
    assert latency_after < 3 * latency_before + 0.002, (latency_before, latency_after)

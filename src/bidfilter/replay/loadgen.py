"""The auction server's traffic: replay logged requests against a BidFilter server, and measure.

``run_loadgen`` splits the load over ``processes`` (one Python process tops out around ten to
twenty thousand calls a second): each gets its share of the rate and of the connections and
replays its own slice of the records (process ``k`` takes records ``k``, ``k + N``, ...). The
processes are spawned (no fork: no inherited threads or sockets), load their records and
connect, wait at a barrier, then start together; their counts and latency histograms are merged
into one ``LoadReport``. How each process drives the load (open and closed loop, no coordinated
omission, the drain timeout) is told in ``load_worker``.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import IO, Any, Final

from bidfilter.client import BidFilterUnavailableError, Protocol, Transport, client_context
from bidfilter.logs import LogFormatError
from bidfilter.replay.load_report import LoadReport, LoadTally
from bidfilter.replay.load_worker import CANDIDATE_MODES, LoadPlan, run_plan

DEFAULT_DEPTH: Final = 32
# Time for spawned processes to import, read their records and connect, before they give up.
_STARTUP_TIMEOUT_S: Final = 120.0
# After the drain timeout, how long the parent waits for a process's report before killing it.
_REPORT_GRACE_S: Final = 10.0


def run_loadgen(
    target: tuple[str, int],
    logs: Path,
    *,
    rate: float | None,
    duration: float,
    connections: int = 4,
    protocol: Protocol = Protocol.BINARY,
    transport: Transport = Transport.FRAMED,
    processes: int = 1,
    progress: bool = False,
    candidates: str = "logged",
    depth: int = DEFAULT_DEPTH,
    timeout: float = 1.0,
    retries: int = 0,
    drain: float | None = None,
    max_records: int = 100_000,
    progress_stream: IO[str] | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> LoadReport:
    """Replay the requests of ``logs`` against ``target`` for ``duration`` seconds.

    ``rate``: calls per second offered in total (open loop), or ``None`` for as many as the
    server answers (closed loop, ``connections × depth`` calls in flight). ``candidates``:
    ``"logged"`` sends each record's logged partners as the candidates, ``"all"`` sends none
    (the server decides on every partner it knows). ``timeout`` and ``retries`` are per call
    (``retries=0``: like an auction server, a late answer is not asked again). ``drain``: how
    long calls still in flight at the end may take (default ``timeout × (retries + 1)``, plus a
    little). ``progress`` writes one line per second to ``progress_stream`` (stderr).
    ``tls_ca``, ``tls_cert``, ``tls_key``: TLS, as ``ConnectionSettings`` says.

    Raises ``BidFilterUnavailableError`` if the server cannot be reached at the start, and
    ``LogFormatError`` if ``logs`` holds no records.
    """
    host, port = target
    if duration <= 0:
        raise ValueError(f"duration must be positive, not {duration}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive (or None: as fast as possible), not {rate}")
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    if connections < processes:
        raise ValueError(f"each process needs a connection: {connections} < {processes} processes")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f"candidates must be one of {CANDIDATE_MODES}, not {candidates!r}")
    if tls_ca or tls_cert or tls_key:
        client_context(tls_ca, tls_cert, tls_key)  # a bad file fails here, not in each process
    drain_s = drain if drain is not None else timeout * (retries + 1) + 0.5
    plans = [
        LoadPlan(
            host=host,
            port=port,
            logs=Path(logs),
            rate=None if rate is None else rate / processes,
            duration_s=duration,
            connections=connections // processes + (1 if k < connections % processes else 0),
            depth=depth,
            protocol=Protocol(protocol),
            transport=Transport(transport),
            timeout_s=timeout,
            retries=retries,
            drain_s=drain_s,
            candidates=candidates,
            max_records=max_records,
            first_record=k,
            stride=processes,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        for k in range(processes)
    ]
    printer = _ProgressPrinter(progress_stream or sys.stderr, processes) if progress else None
    cpu_start = time.process_time()
    if processes == 1:
        if printer is None:
            tally = run_plan(plans[0])
        else:
            tally = run_plan(plans[0], printer.update_one, printer.start)
    else:
        tally = _run_processes(plans, printer)
        tally.cpu_s += time.process_time() - cpu_start  # the parent's share: waiting, printing
    return LoadReport.from_tally(
        tally,
        target=f"{host}:{port}",
        mode="closed" if rate is None else "open",
        offered_rate=rate,
        duration_s=duration,
        processes=processes,
        connections=connections,
        depth=depth if rate is None else None,
        protocol=str(protocol),
        transport=str(transport),
        candidates=candidates,
    )


# -- processes


@dataclass(frozen=True)
class _Failure:
    kind: str  # "unavailable", "logs" or "other"
    field: str
    message: str


def _process_main(
    index: int,
    plan: LoadPlan,
    messages: mp.Queue[tuple[str, int, Any]],
    barrier: Barrier,
    progress: bool,
) -> None:
    """A spawned load process: run the plan, send progress snapshots and the final tally."""

    def ready() -> None:
        barrier.wait(_STARTUP_TIMEOUT_S)

    def report(tally: LoadTally) -> None:
        # A copy: the queue pickles in a background thread, while the loop keeps counting.
        messages.put(("progress", index, tally.snapshot()))

    try:
        tally = run_plan(plan, report if progress else None, ready)
    except BidFilterUnavailableError as error:
        failure = _Failure("unavailable", error.field, error.message)
    except LogFormatError as error:
        failure = _Failure("logs", error.field, error.message)
    except Exception as error:  # reported to the parent, which raises it
        failure = _Failure("other", type(error).__name__, str(error))
    else:
        messages.put(("done", index, tally))
        return
    barrier.abort()  # the others stop waiting for this one
    messages.put(("failed", index, failure))


def _run_processes(plans: list[LoadPlan], printer: _ProgressPrinter | None) -> LoadTally:
    context = mp.get_context("spawn")
    messages: mp.Queue[tuple[str, int, Any]] = context.Queue()
    barrier = context.Barrier(len(plans) + 1)
    workers = [
        context.Process(
            target=_process_main,
            args=(index, plan, messages, barrier, printer is not None),
            name=f"bidfilter-loadgen-{index}",
            daemon=True,
        )
        for index, plan in enumerate(plans)
    ]
    for worker in workers:
        worker.start()
    results: dict[int, LoadTally] = {}
    failures: list[_Failure] = []
    try:
        started = _wait_at(barrier, messages, failures)
        if printer is not None:
            printer.start()
        plan = plans[0]
        deadline = time.monotonic() + plan.duration_s + plan.drain_s + _REPORT_GRACE_S
        while started and len(results) + len(failures) < len(plans):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                kind, index, payload = messages.get(timeout=min(remaining, 0.5))
            except queue_module.Empty:
                continue
            if kind == "done":
                results[index] = payload
            elif kind == "failed":
                failures.append(payload)
            elif kind == "progress" and printer is not None:
                printer.update_many(index, payload)
    finally:
        for worker in workers:
            worker.join(timeout=1.0)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5.0)
    if failures:
        raise _as_error(failures[0])
    if not results:
        raise RuntimeError("no load process reported")
    total = LoadTally()
    for tally in results.values():
        total.merge(tally)
    return total


def _wait_at(
    barrier: Barrier, messages: mp.Queue[tuple[str, int, Any]], failures: list[_Failure]
) -> bool:
    """Wait for every process to be ready; False (with ``failures`` filled) if one failed."""
    try:
        barrier.wait(_STARTUP_TIMEOUT_S)
        return True
    except threading.BrokenBarrierError:
        pass
    try:
        failures.append(messages.get(timeout=5.0)[2])
    except queue_module.Empty:
        failures.append(_Failure("other", "startup", "a load process did not get ready in time"))
    return False


def _as_error(failure: _Failure) -> Exception:
    if failure.kind == "unavailable":
        return BidFilterUnavailableError(failure.field, failure.message, attempts=1)
    if failure.kind == "logs":
        return LogFormatError(failure.field, failure.message)
    return RuntimeError(f"a load process failed: {failure.field}: {failure.message}")


# -- progress


class _ProgressPrinter:
    """One line per second: calls sent and answered, the answer rate, p99 so far, errors."""

    def __init__(self, stream: IO[str], processes: int = 1) -> None:
        self._stream = stream
        self._processes = processes
        self._start = time.monotonic()
        self._last_line = self._start
        self._last_done = 0
        self._latest: dict[int, LoadTally] = {}
        self._fresh: set[int] = set()

    def start(self) -> None:
        """The load starts now (after the records are loaded and the connections open)."""
        self._start = self._last_line = time.monotonic()

    def update_one(self, tally: LoadTally) -> None:
        self._print(tally)

    def update_many(self, index: int, tally: LoadTally) -> None:
        self._latest[index] = tally
        self._fresh.add(index)
        # A line once every process has reported again (or, if one is silent, a little later).
        waited = time.monotonic() - self._last_line
        if (len(self._fresh) == self._processes and waited >= 0.5) or waited >= 1.5:
            self._fresh.clear()
            total = LoadTally()
            for snapshot in self._latest.values():
                total.merge(snapshot)
            self._print(total)

    def _print(self, tally: LoadTally) -> None:
        now = time.monotonic()
        interval = max(now - self._last_line, 1e-9)
        rate = (tally.completed - self._last_done) / interval
        self._last_line, self._last_done = now, tally.completed
        errors = sum(tally.errors.values())
        p99_ms = tally.latency.percentile(99) / 1000
        self._stream.write(
            f"loadgen {now - self._start:5.1f}s  sent {tally.sent}  done {tally.completed}  "
            f"{rate:,.0f}/s  p99 {p99_ms:.2f} ms  errors {errors}\n"
        )
        self._stream.flush()

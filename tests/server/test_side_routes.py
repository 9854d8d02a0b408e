"""The side port's routes, read from a supervisor state built by hand (no processes)."""

from __future__ import annotations

import time
from multiprocessing import Pipe
from pathlib import Path

from bidfilter.server.reload import LoadedVersion
from bidfilter.server.side_routes import SidePortRoutes
from bidfilter.server.supervisor_state import SupervisorState, WorkerHandle
from bidfilter.settings import Settings


class FakeProcess:
    def __init__(self, pid: int, alive: bool = True) -> None:
        self.pid = pid
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive


class FakeWatcher:
    def __init__(self, version: str) -> None:
        self.current = LoadedVersion(version, Path("/nonexistent"), 1, ("dsp-01",))


def _state(*workers: tuple[bool, bool, int]) -> SupervisorState:
    """One worker per (alive, ready, generation)."""
    state = SupervisorState()
    for slot, (alive, ready, generation) in enumerate(workers):
        ours, _ = Pipe()
        handle = WorkerHandle(slot, FakeProcess(100 + slot, alive), ours)  # type: ignore[arg-type]
        handle.ready, handle.generation, handle.last_beat = ready, generation, time.monotonic()
        state.workers[slot] = handle
    return state


def test_healthz_fails_only_with_no_worker_alive_or_a_task_ended() -> None:
    state = _state((True, True, 1), (False, True, 1))
    routes = SidePortRoutes(Settings(workers=2), state)
    assert routes.healthz() == (200, "text/plain", b"ok\n")
    state.workers[0].process.alive = False  # type: ignore[attr-defined]
    assert routes.healthz() == (503, "text/plain", b"no worker alive\n")
    state.failed_task = "model watcher"
    assert routes.healthz() == (503, "text/plain", b"model watcher ended\n")


def test_readyz_counts_workers_serving_a_model() -> None:
    state = _state((True, True, 1), (True, False, 0))
    state.watcher = FakeWatcher("v1")  # type: ignore[assignment]
    routes = SidePortRoutes(Settings(workers=2, ready_share=0.5), state)
    status, _, body = routes.readyz()
    assert status == 200
    assert (
        body == b"ready: v1 (1 of 2 workers)\nworker 0 pid 100: ready\nworker 1 pid 101: starting\n"
    )
    state.stopping = True
    assert routes.readyz() == (503, "text/plain", b"draining\n")


def test_readyz_says_why_not() -> None:
    routes = SidePortRoutes(Settings(workers=1), _state((True, False, 0)))
    assert routes.readyz()[2].startswith(b"workers starting\n")
    routes = SidePortRoutes(Settings(workers=1), _state((True, True, 0)))
    assert routes.readyz()[2].startswith(b"no model loaded (answering fail-open)\n")


def test_metrics_wait_for_the_board() -> None:
    routes = SidePortRoutes(Settings(workers=1), _state())
    assert routes.metrics() == (503, "text/plain", b"starting\n")

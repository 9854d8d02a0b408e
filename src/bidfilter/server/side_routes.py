"""The side port's routes: ``/healthz``, ``/readyz`` and ``/metrics``, read from what the
supervisor knows (``http_side`` serves them)."""

from __future__ import annotations

import math
import time

from bidfilter.server.http_side import Route
from bidfilter.server.metrics import render
from bidfilter.server.supervisor_state import SupervisorState
from bidfilter.settings import Settings


class SidePortRoutes:
    def __init__(self, settings: Settings, state: SupervisorState) -> None:
        self.settings = settings
        self.state = state

    def routes(self) -> dict[str, Route]:
        return {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.metrics}

    def healthz(self) -> tuple[int, str, bytes]:
        state = self.state
        if state.failed_task:
            return 503, "text/plain", f"{state.failed_task} ended\n".encode()
        if state.workers and not state.alive():
            return 503, "text/plain", b"no worker alive\n"
        return 200, "text/plain", b"ok\n"

    def readyz(self) -> tuple[int, str, bytes]:
        """200 while ``ready_share`` of the configured workers serve with a model: a load
        balancer that sees 503 cuts every session of the server, not just the lost worker's."""
        workers = self.state.workers
        if self.state.stopping:
            return 503, "text/plain", b"draining\n"
        now = time.monotonic()
        timeout_s = self.settings.heartbeat_timeout_s
        states = {slot: h.state(now, timeout_s) for slot, h in sorted(workers.items())}
        listing = "".join(
            f"worker {slot} pid {workers[slot].process.pid}: {state}\n"
            for slot, state in states.items()
        )
        serving = sum(state == "ready" for state in states.values())
        needed = max(1, math.ceil(self.settings.ready_share * self.settings.workers))
        if serving >= needed:
            watcher = self.state.watcher
            assert watcher is not None and watcher.current is not None
            head = f"ready: {watcher.current.version}"
            return (
                200,
                "text/plain",
                f"{head} ({serving} of {len(states)} workers)\n{listing}".encode(),
            )
        if all(state == "starting" for state in states.values()):
            head = "workers starting"
        elif serving == 0 and "no-model" in states.values():
            head = "no model loaded (answering fail-open)"
        else:
            head = f"{serving} of {len(states)} workers ready, {needed} needed"
        return 503, "text/plain", f"{head}\n{listing}".encode()

    def metrics(self) -> tuple[int, str, bytes]:
        state = self.state
        board, watcher = state.board, state.watcher
        if board is None or watcher is None:  # the side port opens first
            return 503, "text/plain", b"starting\n"
        current = watcher.current
        text = render(
            board.totals(),
            partners=current.partners if current else (),
            model_version=current.version if current else None,
            workers_alive=len(state.alive()),
            workers_configured=self.settings.workers,
            worker_restarts=state.restarts,
            reloads={"success": watcher.successes, "failure": watcher.failures},
            store_poll_failures=watcher.store_failures,
            background_errors={
                "model_watcher": watcher.errors,
                "worker_monitor": state.monitor_errors,
            },
            side_port=state.side_port,
            tls_not_after=state.tls_not_after,
        )
        return 200, "text/plain; version=0.0.4; charset=utf-8", text.encode()

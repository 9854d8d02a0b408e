"""What the supervisor knows of its server: written by the supervisor, read by the side port."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from bidfilter.server.http_side import SidePortStats
from bidfilter.server.metrics import MetricsBoard
from bidfilter.server.reload import ModelWatcher


@dataclass
class WorkerHandle:
    slot: int
    process: BaseProcess
    control: Connection
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    generation: int = 0
    last_beat: float = field(default_factory=time.monotonic)
    retired: bool = False  # dead, its pipe closed: waiting for its replacement

    def state(self, now: float, heartbeat_timeout_s: float) -> str:
        """What /readyz says of this worker: only ``ready`` counts towards readiness."""
        if not self.process.is_alive():
            return "dead"
        if not self.ready:
            return "starting"
        if now - self.last_beat > heartbeat_timeout_s:
            return "unresponsive"
        return "ready" if self.generation > 0 else "no-model"


@dataclass
class SupervisorState:
    workers: dict[int, WorkerHandle] = field(default_factory=dict)
    restarts: int = 0  # workers replaced after dying
    monitor_errors: int = 0  # rounds of the worker monitor that raised (logged; it went on)
    stopping: bool = False
    failed_task: str | None = None  # a background task that ended: the server stops
    # None until the side port is open: it opens first, so that a server that cannot have it
    # fails before anything else starts.
    board: MetricsBoard | None = None
    watcher: ModelWatcher | None = None
    side_port: SidePortStats = field(default_factory=SidePortStats)
    tls_not_after: float | None = None  # the Thrift port's certificate's expiry (Unix time)

    def alive(self) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.process.is_alive()]

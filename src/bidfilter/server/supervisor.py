"""The supervisor: N worker processes on one port, the model watcher, and the HTTP side port.

It owns what must exist once per server: the port (held open with SO_REUSEPORT so replacement
workers can join it), the shared metrics, the model lifecycle (poll, fetch, verify, then tell
the workers), and shutdown (SIGTERM: workers drain and exit, then the supervisor does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from bidfilter.artifact import ModelStore
from bidfilter.server.http_side import SidePortStats, serve_http
from bidfilter.server.metrics import MetricsBoard, render
from bidfilter.server.reload import LoadedVersion, ModelWatcher
from bidfilter.server.tls import certificate_not_after, server_context
from bidfilter.server.worker import check_port_free, listening_socket, run_worker
from bidfilter.settings import Settings

log = logging.getLogger(__name__)

_SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_RESPAWN_MIN_INTERVAL_S = 1.0
_FIRST_CHECK_WAIT_S = 5.0


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


class Supervisor:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.workers: dict[int, WorkerHandle] = {}
        self.restarts = 0
        self.stopping = False
        self.port = settings.port
        self._context = multiprocessing.get_context("spawn")
        self._board: MetricsBoard | None = None
        self._watcher: ModelWatcher | None = None
        self._restores: set[asyncio.Task[bool]] = set()  # held: the loop keeps weak references
        self.monitor_errors = 0
        self.side_port = SidePortStats()
        self.failed_task: str | None = None  # a background task that ended: the server stops
        self.tls_not_after: float | None = None

    def run(self) -> int:
        # Every worker builds its own TLS context; building one here first stops a bad
        # certificate or key with one error naming the setting, before any worker starts.
        if server_context(self.settings) is not None:
            mutual = " with client certificates required" if self.settings.tls_client_ca else ""
            log.info("TLS on the Thrift port%s", mutual)
            not_after = certificate_not_after(self.settings)
            self.tls_not_after = not_after.timestamp() if not_after else None
        asyncio.run(self._main())
        return 1 if self.failed_task else 0

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        settings = self.settings
        check_port_free(settings.host, settings.port, "Thrift port")
        # Bound, never listening: it reserves the port (port 0 picks one) without taking
        # connections, so workers can come and go.
        reservation = listening_socket(settings.host, settings.port, listen=False)
        self.port = reservation.getsockname()[1]
        # Before any worker: without its side port a server has no /readyz for its load
        # balancer and nobody sees its metrics, so one that cannot have it does not start.
        try:
            http = await serve_http(
                settings.host,
                settings.metrics_port,
                {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics},
                self.side_port,
            )
        except OSError as error:
            reservation.close()
            raise SystemExit(
                f"bidfilter serve: metrics port {settings.host}:{settings.metrics_port}"
                f" is not free ({error.strerror})"
            ) from None
        self._board = MetricsBoard(settings.workers)
        self._watcher = ModelWatcher(
            self.store, Path(settings.cache_dir), settings.poll_s, self._broadcast
        )
        # The first look at the store gives the workers a model to start with. A store that
        # hangs (dropped packets, a server that accepts and never answers) would hold up the
        # port, the side port and SIGTERM for minutes of botocore timeouts: past a short wait
        # the workers start fail-open and get the model from the watcher when it arrives.
        first_check = asyncio.create_task(self._watcher.check())
        await asyncio.wait({first_check}, timeout=_FIRST_CHECK_WAIT_S)
        for slot in range(settings.workers):
            self._spawn(slot)
        log.info(
            "bidfilter serving Thrift on %s:%d with %d workers; HTTP side port %d; store %s",
            settings.host,
            self.port,
            settings.workers,
            settings.metrics_port,
            self.store.uri,
        )
        tasks = [
            asyncio.create_task(self._watch(first_check), name="model watcher"),
            asyncio.create_task(self._monitor(), name="worker monitor"),
        ]

        def ended(task: asyncio.Task[None]) -> None:
            # Both loop for ever and survive any one round's error: ending is a bug, and a
            # server without reloads or respawns must not look healthy. Stop, loudly.
            if self.stopping or task.cancelled():
                return
            self.failed_task = task.get_name()
            log.critical(
                "the %s ended (%r): stopping the server", task.get_name(), task.exception()
            )
            stop.set()

        for task in tasks:
            task.add_done_callback(ended)
        await stop.wait()
        self.stopping = True
        log.info("stopping: draining workers (up to %.0f s)", settings.drain_s)
        first_check.cancel()
        for task in tasks:
            task.cancel()
        await self._stop_workers()
        http.close()
        reservation.close()
        self._board.close()
        log.info("stopped")

    async def _watch(self, first_check: asyncio.Task[LoadedVersion | None]) -> None:
        assert self._watcher is not None
        try:
            await first_check
        except Exception:  # not the store's typed errors (the watcher handles those): a bug
            log.exception("the first look at the model store failed; polling on")
        await self._watcher.run()

    # --- workers ----------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        assert self._board is not None and self._watcher is not None
        current = self._watcher.current
        initial = (str(current.path), current.generation) if current else None
        parent, child = self._context.Pipe()
        # A worker is single-threaded by design (parallelism is more workers): keep numpy's BLAS
        # and OpenMP from starting thread pools that would spin beside it. The spawned process
        # reads these before numpy loads; a value the operator set wins.
        for variable in _SINGLE_THREAD_ENV:
            os.environ.setdefault(variable, "1")
        process = self._context.Process(
            target=run_worker,
            args=(
                self.settings,
                slot,
                self.port,
                self._board.name,
                self._board.slots,
                child,
                initial,
            ),
            name=f"bidfilter-worker-{slot}",
        )
        try:
            process.start()
        except BaseException:  # EMFILE and the like: no pipe ends left behind per retry
            parent.close()
            raise
        finally:
            child.close()
        handle = WorkerHandle(slot, process, parent)
        self.workers[slot] = handle
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_message, handle)

    def _on_message(self, handle: WorkerHandle) -> None:
        try:
            message = handle.control.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(handle.control.fileno())
            return
        kind = message[0]
        handle.last_beat = time.monotonic()
        if kind == "ready":
            handle.ready = True
        elif kind == "loaded":
            handle.generation = max(handle.generation, message[1])
        elif kind == "refused":
            log.error("worker %d refused generation %d: %s", handle.slot, message[1], message[2])
            watcher = self._watcher
            current = watcher.current if watcher is not None else None
            if watcher is not None and current is not None and message[1] == current.generation:
                # The watcher verified this version, so the cached copy was damaged since:
                # fetch it again (the workers lacking it are then told to load it).
                task = asyncio.create_task(watcher.restore(check_files=True))
                self._restores.add(task)
                task.add_done_callback(self._restores.discard)

    def _broadcast(self, version: LoadedVersion) -> None:
        for handle in self.workers.values():
            # A version fetched again into the cache goes only to the workers that lack it.
            if handle.process.is_alive() and handle.generation < version.generation:
                # A dead pipe means a dead worker: the monitor replaces it, with this version.
                with contextlib.suppress(OSError):
                    handle.control.send(("load", str(version.path), version.generation))

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            for slot, handle in list(self.workers.items()):
                if self.stopping:
                    continue
                try:
                    await self._look_after(slot, handle)
                except Exception:  # e.g. EMFILE spawning: log, count, try again shortly
                    self.monitor_errors += 1
                    log.exception("worker monitor: could not replace worker %d; retrying", slot)
                    await asyncio.sleep(_RESPAWN_MIN_INTERVAL_S)

    async def _look_after(self, slot: int, handle: WorkerHandle) -> None:
        """Kill a worker that stopped beating; replace one that died."""
        if handle.process.is_alive():
            silent_s = time.monotonic() - handle.last_beat
            if handle.ready and silent_s > self.settings.heartbeat_timeout_s:
                # Stopped, or its loop stuck: its calls wait and its port share is lost.
                # SIGKILL works on a stopped process; the next round replaces it.
                log.error(
                    "worker %d (pid %s) sent no heartbeat for %.1f s; killing it",
                    slot,
                    handle.process.pid,
                    silent_s,
                )
                handle.process.kill()
            return
        if not handle.retired:  # once, however many tries its replacement takes
            log.error(
                "worker %d (pid %s) exited with code %s; replacing it",
                slot,
                handle.process.pid,
                handle.process.exitcode,
            )
            asyncio.get_running_loop().remove_reader(handle.control.fileno())
            handle.control.close()
            handle.retired = True
        wait = _RESPAWN_MIN_INTERVAL_S - (time.monotonic() - handle.started)
        if wait > 0:  # a worker dying at start would otherwise spin the CPU
            await asyncio.sleep(wait)
        assert self._watcher is not None
        await self._watcher.restore()  # the replacement loads from the cache: it must be there
        self._spawn(slot)
        self.restarts += 1

    async def _stop_workers(self) -> None:
        for handle in self.workers.values():
            if handle.process.is_alive():
                handle.process.terminate()  # SIGTERM: the worker drains, then exits
        deadline = time.monotonic() + self.settings.drain_s + 5.0
        while time.monotonic() < deadline and any(
            h.process.is_alive() for h in self.workers.values()
        ):
            await asyncio.sleep(0.05)
        for handle in self.workers.values():
            if handle.process.is_alive():
                log.error("worker %d did not drain in time; killing it", handle.slot)
                handle.process.kill()
            handle.process.join(timeout=1.0)

    # --- HTTP side port -------------------------------------------------------------------------

    def _alive(self) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.process.is_alive()]

    def _healthz(self) -> tuple[int, str, bytes]:
        if self.failed_task:
            return 503, "text/plain", f"{self.failed_task} ended\n".encode()
        if self.workers and not self._alive():
            return 503, "text/plain", b"no worker alive\n"
        return 200, "text/plain", b"ok\n"

    def _readyz(self) -> tuple[int, str, bytes]:
        """200 while ``ready_share`` of the configured workers serve with a model: a load
        balancer that sees 503 cuts every session of the server, not just the lost worker's."""
        if self.stopping:
            return 503, "text/plain", b"draining\n"
        now = time.monotonic()
        timeout_s = self.settings.heartbeat_timeout_s
        states = {slot: h.state(now, timeout_s) for slot, h in sorted(self.workers.items())}
        listing = "".join(
            f"worker {slot} pid {self.workers[slot].process.pid}: {state}\n"
            for slot, state in states.items()
        )
        serving = sum(state == "ready" for state in states.values())
        needed = max(1, math.ceil(self.settings.ready_share * self.settings.workers))
        if serving >= needed:
            assert self._watcher is not None and self._watcher.current is not None
            head = f"ready: {self._watcher.current.version}"
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

    def _metrics(self) -> tuple[int, str, bytes]:
        if self._board is None or self._watcher is None:  # the side port opens first
            return 503, "text/plain", b"starting\n"
        current = self._watcher.current
        text = render(
            self._board.totals(),
            partners=current.partners if current else (),
            model_version=current.version if current else None,
            workers_alive=len(self._alive()),
            workers_configured=self.settings.workers,
            worker_restarts=self.restarts,
            reloads={"success": self._watcher.successes, "failure": self._watcher.failures},
            store_poll_failures=self._watcher.store_failures,
            background_errors={
                "model_watcher": self._watcher.errors,
                "worker_monitor": self.monitor_errors,
            },
            side_port=self.side_port,
            tls_not_after=self.tls_not_after,
        )
        return 200, "text/plain; version=0.0.4; charset=utf-8", text.encode()

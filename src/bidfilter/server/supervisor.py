"""The supervisor: N worker processes on one port, the model watcher, and the HTTP side port.

It owns what must exist once per server: the port (held open with SO_REUSEPORT so replacement
workers can join it), the shared metrics, the model lifecycle (poll, fetch, verify, then tell
the workers), and shutdown (SIGTERM: workers drain and exit, then the supervisor does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

from bidfilter.artifact import ModelStore
from bidfilter.logs.sink import open_log_sink
from bidfilter.server.control import Beat, Load, Loaded, Ready, Refused
from bidfilter.server.http_side import serve_http
from bidfilter.server.metrics import MetricsBoard
from bidfilter.server.outcome_log import FINAL_WRITE_S
from bidfilter.server.reload import LoadedVersion, ModelWatcher
from bidfilter.server.side_routes import SidePortRoutes
from bidfilter.server.supervisor_state import SupervisorState, WorkerHandle
from bidfilter.server.tls import certificate_not_after, server_context
from bidfilter.server.worker import check_port_free, listening_socket, run_worker
from bidfilter.settings import Settings

log = logging.getLogger(__name__)

_SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_RESPAWN_MIN_INTERVAL_S = 1.0
_FIRST_CHECK_WAIT_S = 5.0


class Supervisor:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.state = SupervisorState()
        self.port = settings.port
        self._context = multiprocessing.get_context("spawn")
        self._restores: set[asyncio.Task[bool]] = set()  # held: the loop keeps weak references

    def run(self) -> int:
        # Every worker builds its own TLS context; building one here first stops a bad
        # certificate or key with one error naming the setting, before any worker starts.
        if server_context(self.settings) is not None:
            mutual = " with client certificates required" if self.settings.tls_client_ca else ""
            log.info("TLS on the Thrift port%s", mutual)
            not_after = certificate_not_after(self.settings)
            self.state.tls_not_after = not_after.timestamp() if not_after else None
        asyncio.run(self._main())
        return 1 if self.state.failed_task else 0

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        settings, state = self.settings, self.state
        if settings.outcome_log is not None:
            try:  # a bad URI stops the server here, not each worker as it starts
                open_log_sink(settings.outcome_log, endpoint_url=settings.s3_endpoint_url)
            except ValueError as error:
                raise SystemExit(f"bidfilter serve: --outcome-log: {error}") from None
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
                SidePortRoutes(settings, state).routes(),
                state.side_port,
            )
        except OSError as error:
            reservation.close()
            raise SystemExit(
                f"bidfilter serve: metrics port {settings.host}:{settings.metrics_port}"
                f" is not free ({error.strerror})"
            ) from None
        board = state.board = MetricsBoard(settings.workers)
        watcher = state.watcher = ModelWatcher(
            self.store, Path(settings.cache_dir), settings.poll_s, self._broadcast
        )
        # The first look at the store gives the workers a model to start with. A store that
        # hangs (dropped packets, a server that accepts and never answers) would hold up the
        # port, the side port and SIGTERM for minutes of botocore timeouts: past a short wait
        # the workers start fail-open and get the model from the watcher when it arrives.
        first_check = asyncio.create_task(watcher.check())
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
        if settings.outcome_log is not None:
            log.info(
                "decision log: %.1f%% of requests held %.0f s for report_outcomes; joined"
                " records written to %s every %.0f s",
                100 * settings.decision_log_share,
                settings.outcome_wait_s,
                settings.outcome_log,
                settings.outcome_flush_s,
            )
        tasks = [
            asyncio.create_task(self._watch(first_check), name="model watcher"),
            asyncio.create_task(self._monitor(), name="worker monitor"),
        ]

        def ended(task: asyncio.Task[None]) -> None:
            # Both loop for ever and survive any one round's error: ending is a bug, and a
            # server without reloads or respawns must not look healthy. Stop, loudly.
            if state.stopping or task.cancelled():
                return
            state.failed_task = task.get_name()
            log.critical(
                "the %s ended (%r): stopping the server", task.get_name(), task.exception()
            )
            stop.set()

        for task in tasks:
            task.add_done_callback(ended)
        await stop.wait()
        state.stopping = True
        log.info("stopping: draining workers (up to %.0f s)", settings.drain_s)
        first_check.cancel()
        for task in tasks:
            task.cancel()
        await self._stop_workers()
        http.close()
        reservation.close()
        board.close()
        log.info("stopped")

    async def _watch(self, first_check: asyncio.Task[LoadedVersion | None]) -> None:
        watcher = self.state.watcher
        assert watcher is not None
        try:
            await first_check
        except Exception:  # not the store's typed errors (the watcher handles those): a bug
            log.exception("the first look at the model store failed; polling on")
        await watcher.run()

    # --- workers ----------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        board, watcher = self.state.board, self.state.watcher
        assert board is not None and watcher is not None
        current = watcher.current
        initial = Load(str(current.path), current.generation) if current else None
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
                board.name,
                board.slots,
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
        self.state.workers[slot] = handle
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_message, handle)

    def _on_message(self, handle: WorkerHandle) -> None:
        try:
            message = handle.control.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(handle.control.fileno())
            return
        handle.last_beat = time.monotonic()
        match message:
            case Ready():
                handle.ready = True
            case Loaded(generation=generation):
                handle.generation = max(handle.generation, generation)
            case Refused(generation=generation, error=error):
                log.error("worker %d refused generation %d: %s", handle.slot, generation, error)
                watcher = self.state.watcher
                current = watcher.current if watcher is not None else None
                if watcher is not None and current is not None and generation == current.generation:
                    # The watcher verified this version, so the cached copy was damaged since:
                    # fetch it again (the workers lacking it are then told to load it).
                    task = asyncio.create_task(watcher.restore(check_files=True))
                    self._restores.add(task)
                    task.add_done_callback(self._restores.discard)
            case Beat():
                pass  # its arrival is the news

    def _broadcast(self, version: LoadedVersion) -> None:
        for handle in self.state.workers.values():
            # A version fetched again into the cache goes only to the workers that lack it.
            if handle.process.is_alive() and handle.generation < version.generation:
                # A dead pipe means a dead worker: the monitor replaces it, with this version.
                with contextlib.suppress(OSError):
                    handle.control.send(Load(str(version.path), version.generation))

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            for slot, handle in list(self.state.workers.items()):
                if self.state.stopping:
                    continue
                try:
                    await self._look_after(slot, handle)
                except Exception:  # e.g. EMFILE spawning: log, count, try again shortly
                    self.state.monitor_errors += 1
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
        watcher = self.state.watcher
        assert watcher is not None
        await watcher.restore()  # the replacement loads from the cache: it must be there
        self._spawn(slot)
        self.state.restarts += 1

    async def _stop_workers(self) -> None:
        workers = self.state.workers
        for handle in workers.values():
            if handle.process.is_alive():
                handle.process.terminate()  # SIGTERM: the worker drains, then exits
        # A worker with an outcome log writes its last records after draining.
        final_write = FINAL_WRITE_S if self.settings.outcome_log is not None else 0.0
        deadline = time.monotonic() + self.settings.drain_s + 5.0 + final_write
        while time.monotonic() < deadline and any(h.process.is_alive() for h in workers.values()):
            await asyncio.sleep(0.05)
        for handle in workers.values():
            if handle.process.is_alive():
                log.error("worker %d did not drain in time; killing it", handle.slot)
                handle.process.kill()
            handle.process.join(timeout=1.0)

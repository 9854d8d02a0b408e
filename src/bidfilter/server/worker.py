"""A worker process: one event loop serving Thrift on the shared port.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads new
connections over the workers. The supervisor talks to a worker over a pipe (the messages are in
``control``): it says which verified model directory to load, and the worker answers whether it
did.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from bidfilter.artifact import ArtifactError
from bidfilter.logging_setup import configure_logging
from bidfilter.scoring import ServingModel
from bidfilter.server.connection import ThriftConnection, WorkerState
from bidfilter.server.control import Beat, Load, Loaded, Ready, Refused, WorkerMessage
from bidfilter.server.dispatch import Dispatcher
from bidfilter.server.metrics import MetricsBoard
from bidfilter.server.outcome_log import OutcomeLog
from bidfilter.server.service import FilterService
from bidfilter.server.tls import server_context
from bidfilter.settings import Settings

log = logging.getLogger(__name__)

# How often a worker's event loop tells the supervisor it turns; the supervisor replaces a worker
# silent for ``heartbeat_timeout_s`` (stopped, or its loop stuck in one call).
HEARTBEAT_INTERVAL_S = 0.5
_ACCEPT_QUEUE_GRACE_S = 0.25  # at SIGTERM: connections already accepted by the kernel come in


def check_port_free(host: str, port: int, what: str) -> None:
    """Refuse a port another process holds. Workers share theirs with SO_REUSEPORT, which would
    let a second server on the same port silently take half of the connections; a bind without
    it fails while anyone listens there (SO_REUSEADDR only passes over closed connections)."""
    if port == 0:
        return
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise SystemExit(
                f"bidfilter serve: {what} {host}:{port} is not free ({error.strerror})"
            ) from None


def listening_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT (the port is shared by every worker)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    if listen:
        sock.listen(2048)
        sock.setblocking(False)
    return sock


class Worker:
    """One worker's pieces: its connections' shared state, the service and the dispatcher."""

    def __init__(self, settings: Settings, slot: int, board: MetricsBoard) -> None:
        self.settings = settings
        self.slot = slot
        self.metrics = board.worker(slot)
        self.state = WorkerState(self.metrics)
        self.outcome_log = (
            None
            if settings.outcome_log is None
            else OutcomeLog.from_settings(settings, self.metrics, slot)
        )
        self.service = FilterService(settings, self.metrics, self.outcome_log)
        self.dispatcher = Dispatcher(self.service, self.metrics, settings.max_pending_calls)
        # The loop (ready, heartbeats) and the listener thread (load results) both write to the
        # pipe; a Connection's send is not safe from two threads at once.
        self._control_lock = threading.Lock()

    async def serve(self, port: int, control: Connection, initial: Load | None) -> None:
        loop = asyncio.get_running_loop()
        if initial is not None:
            model = self._load(initial, control)
            if model is not None:
                self.service.swap(model, initial.generation)
        sock = listening_socket(self.settings.host, port)
        tls = server_context(self.settings)  # None: plaintext
        server = await loop.create_server(
            lambda: ThriftConnection(self.settings, self.state, self.dispatcher),
            sock=sock,
            ssl=tls,
            # Bounded like a started message: a client that stalls mid-handshake, or never
            # starts one, holds its connection no longer (our timers start after the handshake);
            # nor does one that never answers our close_notify (asyncio would wait 30 s).
            ssl_handshake_timeout=None if tls is None else self.settings.read_timeout_s,
            ssl_shutdown_timeout=None if tls is None else self.settings.read_timeout_s,
        )
        if self.outcome_log is not None:
            self.outcome_log.start()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        self._tell(control, Ready(self.slot))
        self._beat(control, loop)
        threading.Thread(
            target=self._listen_to_supervisor, args=(control, loop), daemon=True
        ).start()
        await stop.wait()
        await self._drain(server)

    async def _drain(self, server: asyncio.Server) -> None:
        """Stop accepting, answer every call already received, close connections as they idle."""
        # Connections the kernel completed before the signal wait in this worker's accept
        # queue, their calls perhaps already sent; closing the listening socket now would reset
        # them. Take them in first: they are answered and closed like the others.
        await asyncio.sleep(_ACCEPT_QUEUE_GRACE_S)
        server.close()
        connections = self.state.connections
        log.info("worker %d draining %d connections", self.slot, len(connections))
        deadline = asyncio.get_running_loop().time() + self.settings.drain_s
        while connections and asyncio.get_running_loop().time() < deadline:
            for connection in list(connections):
                connection.close_if_idle()
            await asyncio.sleep(0.01)
        for connection in list(connections):
            connection.close_now()  # one not reading its replies would hold the exit up
        if self.outcome_log is not None:  # no report can come in now: write every one taken
            await self.outcome_log.close()
        self.metrics.flush()  # the last calls' counts
        await asyncio.sleep(0)  # let the transports flush and close

    def _tell(self, control: Connection, message: WorkerMessage) -> None:
        with self._control_lock:
            control.send(message)

    def _beat(self, control: Connection, loop: asyncio.AbstractEventLoop) -> None:
        """Sent from the loop itself: a beat proves the loop still runs callbacks between calls."""
        try:
            self._tell(control, Beat())
        except OSError:  # the supervisor is gone; the listener thread stops the loop
            return
        loop.call_later(HEARTBEAT_INTERVAL_S, self._beat, control, loop)

    def _load(self, load: Load, control: Connection) -> ServingModel | None:
        """Load and verify a model, telling the supervisor how it went."""
        try:
            model = ServingModel.load(Path(load.path))
        except (ArtifactError, OSError, ValueError) as error:
            self.metrics.add("model_load_failures")
            log.error("worker %d refused model at %s: %s", self.slot, load.path, error)
            self._tell(control, Refused(load.generation, str(error)))
            return None
        self._tell(control, Loaded(load.generation, model.version))
        return model

    def _listen_to_supervisor(self, control: Connection, loop: asyncio.AbstractEventLoop) -> None:
        # Loading (hashing, parsing the model) happens on this thread; only the swap itself,
        # one attribute assignment, runs on the event loop, between two calls.
        while True:
            try:
                message = control.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(loop.stop)  # the supervisor is gone: so are we
                return
            if isinstance(message, Load):
                model = self._load(message, control)
                if model is not None:
                    loop.call_soon_threadsafe(self.service.swap, model, message.generation)


def run_worker(
    settings: Settings,
    slot: int,
    port: int,
    board_name: str,
    slots: int,
    control: Connection,
    initial: Load | None,
) -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    configure_logging(settings.log_level, settings.log_json)
    board = MetricsBoard(slots, name=board_name)
    worker = Worker(settings, slot, board)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # uvloop is optional; asyncio's own loop is only slower
        loop_factory = asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(worker.serve(port, control, initial))
    except KeyboardInterrupt:
        pass
    finally:
        board.close()
    sys.exit(0)

"""One Thrift connection: bytes from the socket into the codec, calls into the dispatcher.

Timeouts protect the worker from clients that connect and say nothing (``idle_timeout_s``) or
trickle a message a byte at a time (``read_timeout_s`` to finish a started message); bytes that
are not Thrift close the connection at once.

A client that sends calls but does not read the replies is not read either once its unsent
replies pass a high-water mark (TCP then pushes back on it); it is dropped when they pass
``max_unsent_bytes`` or stay over the mark for ``read_timeout_s``. Dropped means aborted: a
close would wait for a flush that never comes, holding the connection (and its slot) forever.

A client that half-closes (``shutdown(SHUT_WR)``) gets every call it sent answered before the
connection closes.

A connection is given what it uses (uvicorn's ``H11Protocol(config, server_state, app_state)``):
the settings, the :class:`WorkerState` its worker's connections share, and the dispatcher it
submits calls to, which answers through the connection's side of ``dispatch.ReplySink``
(``send``, ``pause_reading``, ``resume_reading``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import cast

from bidfilter.server.dispatch import Dispatcher
from bidfilter.server.metrics import WorkerMetrics
from bidfilter.settings import Settings
from bidfilter.thrift import ReplyEncoder, ThriftConnectionDecoder, ThriftError

log = logging.getLogger(__name__)

_DRAIN_QUIET_NS = 100_000_000
# Unsent bytes past which a connection is no longer read, and below which it is read again.
# Well above what one read's replies come to, so a client that reads stays below it.
_WRITE_HIGH_WATER = 256 * 1024
_WRITE_LOW_WATER = 64 * 1024


@dataclass(slots=True)
class WorkerState:
    """What one worker's connections share (uvicorn's ``ServerState``): the worker drains the
    open ones at shutdown."""

    metrics: WorkerMetrics
    connections: set[ThriftConnection] = field(default_factory=set)


class ThriftConnection(asyncio.Protocol):
    def __init__(self, settings: Settings, state: WorkerState, dispatcher: Dispatcher) -> None:
        self._settings = settings
        self._state = state
        self._metrics = state.metrics
        self._dispatcher = dispatcher
        self.decoder = ThriftConnectionDecoder(settings.max_message_bytes)
        self.encoder: ReplyEncoder | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.half_closed = False  # the client sent EOF: answer what it sent, then close
        self.pending = 0  # calls submitted, not yet answered
        # Reading stops while either holds: the worker's queue is full, or this client's
        # replies pile up unread.
        self._queue_full = False
        self._unsent_full = False
        self._unread_timer: asyncio.TimerHandle | None = None
        self.last_data_ns = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        settings, connections = self._settings, self._state.connections
        if len(connections) >= settings.max_connections:
            self._metrics.add("connections_refused")
            self.closed = True
            transport.abort()
            return
        high_water = min(_WRITE_HIGH_WATER, settings.max_unsent_bytes // 2)
        transport.set_write_buffer_limits(high=high_water, low=min(_WRITE_LOW_WATER, high_water))
        connections.add(self)
        self._metrics.add("connections_open")
        self._metrics.add("connections_total")
        self.last_data_ns = time.perf_counter_ns()
        self._arm_idle_timer(settings.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        arrived_ns = time.perf_counter_ns()
        self.last_data_ns = arrived_ns
        if self.closed:
            return
        try:
            calls = self.decoder.feed(data)
        except ThriftError as error:
            self._metrics.add("protocol_errors")
            log.debug("closing connection: %s", error)
            self.close()
            return
        if calls:
            encoder = self.encoder
            if encoder is None:
                encoder = self.encoder = self.decoder.reply_encoder()
            self.pending += len(calls)
            self._dispatcher.submit(self, encoder, calls, arrived_ns)
        if calls and self._read_timer is not None:
            # A message completed: the clock runs from here for the one now part-way in (a
            # client streaming calls is rarely caught between two).
            self._read_timer.cancel()
            self._read_timer = None
        if self.decoder.buffered_bytes:
            if self._read_timer is None:
                self._read_timer = self._loop.call_later(
                    self._settings.read_timeout_s, self._timed_out, "message not completed"
                )
        elif self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def eof_received(self) -> bool:
        # Stay half-open: the calls already received are still owed their replies.
        self.half_closed = True
        if self.pending == 0:
            self.close()
        return True

    def pause_writing(self) -> None:
        self._unsent_full = True
        self._apply_reading()
        if self._unread_timer is None:
            self._unread_timer = self._loop.call_later(
                self._settings.read_timeout_s, self._give_up, "replies not read"
            )

    def resume_writing(self) -> None:
        self._unsent_full = False
        if self._unread_timer is not None:
            self._unread_timer.cancel()
            self._unread_timer = None
        self._apply_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        connections = self._state.connections
        if self in connections:
            connections.discard(self)
            self._metrics.add("connections_open", -1)
        self.closed = True
        self._cancel_timers()

    # --- the dispatcher's reply sink ----------------------------------------------------------

    def send(self, replies: bytes, answered: int) -> None:
        self.pending -= answered
        transport = self.transport
        if not replies or transport is None or self.closed:
            return
        transport.write(replies)
        if transport.get_write_buffer_size() > self._settings.max_unsent_bytes:
            self._give_up("too many replies not read")
        elif self.half_closed and self.pending == 0:
            self.close()  # the last reply owed: flushed, then closed

    def pause_reading(self) -> None:
        """The worker's queue is full."""
        self._queue_full = True
        self._apply_reading()

    def resume_reading(self) -> None:
        self._queue_full = False
        self._apply_reading()

    # --- reading, and closing (the worker's drain) -------------------------------------------

    def _apply_reading(self) -> None:
        if self.transport is None or self.closed:
            return
        if self._queue_full or self._unsent_full:
            self.transport.pause_reading()
        else:
            # While not read the client was not quiet, we were deaf: what it sent meanwhile is
            # still in the socket, so the quiet clock of the idle timer and the drain restarts.
            if not self.transport.is_reading():
                self.last_data_ns = time.perf_counter_ns()
            self.transport.resume_reading()

    def close_if_idle(self) -> None:
        """During a drain: close once every received call is answered, no message is half in,
        and the client has been quiet for a moment (bytes it already sent may still be in the
        socket buffer, unread; closing then would reset the connection and lose them)."""
        if self._queue_full or self._unsent_full:
            return  # not reading: calls may wait in the socket buffer
        quiet_ns = time.perf_counter_ns() - self.last_data_ns
        if self.pending == 0 and not self.decoder.buffered_bytes and quiet_ns > _DRAIN_QUIET_NS:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()  # flushes what is written, then closes
        self._cancel_timers()

    def close_now(self) -> None:
        """Close without waiting on a client that does not read: what it has not read of our
        replies is dropped (a close would wait for it, forever if the client never reads)."""
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():
            self.closed = True
            transport.abort()  # works on a transport already closing, too
            self._cancel_timers()
        else:
            self.close()

    # --- timers -----------------------------------------------------------------------------------

    def _arm_idle_timer(self, delay_s: float) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self._loop.call_later(delay_s, self._idle_check)

    def _idle_check(self) -> None:
        # The idle timer is not moved on every read (that costs more than the rest of a small
        # read); when it fires, it looks at how long the client has really been quiet.
        self._idle_timer = None
        timeout_s = self._settings.idle_timeout_s
        quiet_s = (time.perf_counter_ns() - self.last_data_ns) / 1e9
        if quiet_s < timeout_s:
            self._arm_idle_timer(timeout_s - quiet_s)
        else:
            self._timed_out("idle")

    def _timed_out(self, why: str) -> None:
        if self.pending:
            # Still answering: the client is waiting on us, not the other way round. Look again
            # later, or a connection that goes quiet after this would never be closed.
            self._arm_idle_timer(self._settings.idle_timeout_s)
            return
        self._give_up(why)

    def _give_up(self, why: str) -> None:
        self._metrics.add("connections_timed_out")
        log.debug("closing connection: %s", why)
        self.close_now()

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._read_timer, self._unread_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._read_timer = self._unread_timer = None

"""One Thrift connection: bytes from the socket into the codec, calls into the dispatcher.

Timeouts protect the worker from clients that connect and say nothing (``idle_timeout_s``) or
trickle a message a byte at a time (``read_timeout_s`` to finish a started message); bytes that
are not Thrift close the connection at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from bidfilter.thrift import ReplyEncoder, ThriftConnectionDecoder, ThriftError

if TYPE_CHECKING:
    from bidfilter.server.worker import Worker

log = logging.getLogger(__name__)

_DRAIN_QUIET_NS = 100_000_000


class ThriftConnection(asyncio.Protocol):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        settings = worker.settings
        self.decoder = ThriftConnectionDecoder(settings.max_message_bytes)
        self.encoder: ReplyEncoder | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pending = 0
        self.last_data_ns = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        worker = self.worker
        if len(worker.connections) >= worker.settings.max_connections or worker.draining:
            worker.metrics.add("connections_refused")
            self.closed = True
            transport.abort()
            return
        worker.connections.add(self)
        worker.metrics.add("connections_open")
        worker.metrics.add("connections_total")
        self.last_data_ns = time.perf_counter_ns()
        self._arm_idle_timer(worker.settings.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        arrived_ns = time.perf_counter_ns()
        self.last_data_ns = arrived_ns
        if self.closed:
            return
        try:
            calls = self.decoder.feed(data)
        except ThriftError as error:
            self.worker.metrics.add("protocol_errors")
            log.debug("closing connection: %s", error)
            self.close()
            return
        if calls:
            if self.encoder is None:
                self.encoder = self.decoder.reply_encoder()
            self.worker.dispatcher.submit(self, calls, arrived_ns)
        if calls and self._read_timer is not None:
            # A message completed: the clock runs from here for the one now part-way in (a
            # client streaming calls is rarely caught between two).
            self._read_timer.cancel()
            self._read_timer = None
        if self.decoder.buffered_bytes:
            if self._read_timer is None:
                self._read_timer = self._loop.call_later(
                    self.worker.settings.read_timeout_s, self._timed_out, "message not completed"
                )
        elif self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.worker.connections:
            self.worker.connections.discard(self)
            self.worker.metrics.add("connections_open", -1)
        self.closed = True
        self._cancel_timers()

    # --- used by the dispatcher and the worker --------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close_if_idle(self) -> None:
        """During a drain: close once every received call is answered, no message is half in,
        and the client has been quiet for a moment (bytes it already sent may still be in the
        socket buffer, unread; closing then would reset the connection and lose them)."""
        quiet_ns = time.perf_counter_ns() - self.last_data_ns
        if self.pending == 0 and not self.decoder.buffered_bytes and quiet_ns > _DRAIN_QUIET_NS:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()  # flushes what is written, then closes
        self._cancel_timers()

    # --- timers -----------------------------------------------------------------------------------

    def _arm_idle_timer(self, delay_s: float) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self._loop.call_later(delay_s, self._idle_check)

    def _idle_check(self) -> None:
        # The idle timer is not moved on every read (that costs more than the rest of a small
        # read); when it fires, it looks at how long the client has really been quiet.
        self._idle_timer = None
        timeout_s = self.worker.settings.idle_timeout_s
        quiet_s = (time.perf_counter_ns() - self.last_data_ns) / 1e9
        if quiet_s < timeout_s:
            self._arm_idle_timer(timeout_s - quiet_s)
        else:
            self._timed_out("idle")

    def _timed_out(self, why: str) -> None:
        if self.pending:
            # Still answering: the client is waiting on us, not the other way round. Look again
            # later, or a connection that goes quiet after this would never be closed.
            self._arm_idle_timer(self.worker.settings.idle_timeout_s)
            return
        self.worker.metrics.add("connections_timed_out")
        log.debug("closing connection: %s", why)
        self.close()

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._read_timer = None

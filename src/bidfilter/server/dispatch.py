"""The worker's call queue: one FIFO for every connection, drained between socket reads.

Calls are answered in arrival order, so each connection's replies come out in the order its
calls went in (pipelining needs nothing more). Overload is decided when a call is queued: past
``max_pending_calls`` waiting, it is still answered in order, but with a cheap fail-open reply
instead of a prediction; past four times that, connections stop being read until the queue
drains, so memory stays bounded and TCP pushes back on the senders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from bidfilter.openrtb import InvalidRequestError
from bidfilter.server import metrics as m
from bidfilter.server.service import FilterService
from bidfilter.thrift import (
    ApplicationExceptionType,
    Call,
    FilterRequest,
    InvalidRequest,
    RejectedCall,
    ReplyEncoder,
)

if TYPE_CHECKING:
    from bidfilter.server.connection import ThriftConnection

log = logging.getLogger(__name__)

_SLICE_NS = 2_000_000  # answer for at most 2 ms, then let the loop read sockets again
_METHOD_INDEX = {name: index for index, name in enumerate(m.METHODS)}


class Dispatcher:
    """Queues decoded calls and answers them from a loop callback scheduled when the first one
    arrives: every call the current round of socket reads delivered is queued first, so calls
    that arrive together are answered together, and each connection's replies leave in one
    write. No task or event sits in between (each would cost a loop round trip per wake-up).

    Below full load a read usually brings one call to an idle worker; that call is answered
    at once, from the read, which saves the loop turn in between (~3 µs of a call's ~64 at
    10,000 calls/s on one core)."""

    def __init__(self, service: FilterService, metrics: m.WorkerMetrics, max_pending: int) -> None:
        self.service = service
        self.metrics = metrics
        self.max_pending = max_pending
        self._queue: deque[tuple[ThriftConnection, Call | RejectedCall, int, bool]] = deque()
        self._scheduled = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._paused: set[ThriftConnection] = set()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(
        self, connection: ThriftConnection, calls: list[Call | RejectedCall], arrived_ns: int
    ) -> None:
        """The calls one read of ``connection`` completed, in order."""
        if len(calls) == 1 and not self._scheduled:  # not scheduled: nothing is queued
            reply = self._answer(connection, calls[0], arrived_ns, False)
            if reply is not None:
                connection.send(reply)
            self.metrics.flush_due(time.perf_counter_ns())
            self._arm_flush_timer()
            return
        for call in calls:
            self._enqueue(connection, call, arrived_ns)

    def _enqueue(
        self, connection: ThriftConnection, call: Call | RejectedCall, arrived_ns: int
    ) -> None:
        shed = len(self._queue) >= self.max_pending
        self._queue.append((connection, call, arrived_ns, shed))
        connection.pending += 1
        if len(self._queue) >= 4 * self.max_pending and connection not in self._paused:
            connection.pause_reading()
            self._paused.add(connection)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        try:
            self._answer_slice()
            if self._paused and len(self._queue) < self.max_pending:
                for connection in self._paused:
                    connection.resume_reading()
                self._paused.clear()
        finally:  # whatever happened, calls left in the queue must not be stranded
            if self._queue:  # the slice ran out: let the loop read sockets, then go on
                asyncio.get_running_loop().call_soon(self._drain)
            else:
                self._scheduled = False
                self._arm_flush_timer()

    def _arm_flush_timer(self) -> None:
        if self._flush_timer is None:  # idle: counters must not wait for the next call
            self._flush_timer = asyncio.get_running_loop().call_later(
                m.FLUSH_INTERVAL_NS / 1e9, self._flush
            )

    def _flush(self) -> None:
        self._flush_timer = None
        self.metrics.flush()

    def _answer_slice(self) -> None:
        started = time.perf_counter_ns()
        replies: dict[ThriftConnection, list[bytes]] = {}
        queue = self._queue
        while queue and time.perf_counter_ns() - started < _SLICE_NS:
            connection, call, arrived_ns, shed = queue.popleft()
            connection.pending -= 1
            if connection.closed:
                continue
            reply = self._answer(connection, call, arrived_ns, shed)
            if reply is not None:
                replies.setdefault(connection, []).append(reply)
        self.metrics.set("pending_calls", len(queue))  # once a slice, not twice a call
        self.metrics.flush_due(time.perf_counter_ns())
        for connection, parts in replies.items():
            # Pipelined replies for one connection leave in a single write.
            connection.send(b"".join(parts) if len(parts) > 1 else parts[0])

    def _answer(
        self, connection: ThriftConnection, call: Call | RejectedCall, arrived_ns: int, shed: bool
    ) -> bytes | None:
        encoder = connection.encoder
        assert encoder is not None  # set before the connection's first call is submitted
        method = _METHOD_INDEX.get(call.method, _METHOD_INDEX["other"])
        if isinstance(call, RejectedCall):
            self.metrics.call(method, m.REJECTED, (time.perf_counter_ns() - arrived_ns) / 1000)
            return None if call.oneway else encoder.rejection(call)
        try:
            reply = self._serve(encoder, call, arrived_ns, shed)
        except Exception as exc:
            log.exception("call %s failed", call.method)
            self.metrics.call(method, m.RESULTS.index("fail_open_error"), 0.0)
            reply = encoder.application_exception(
                call.method, call.seqid, ApplicationExceptionType.INTERNAL_ERROR, type(exc).__name__
            )
        return None if call.oneway else reply

    def _serve(self, encoder: ReplyEncoder, call: Call, arrived_ns: int, shed: bool) -> bytes:
        service = self.service
        if call.method == "filter":
            assert isinstance(call.args, FilterRequest)
            try:
                return encoder.filter(call.seqid, service.filter(call.args, arrived_ns, shed))
            except InvalidRequestError as error:
                self.metrics.call(0, m.INVALID, (time.perf_counter_ns() - arrived_ns) / 1000)
                return encoder.invalid_request(
                    call.seqid, InvalidRequest(message=error.message, field=error.field)
                )
        if call.method == "filter_batch":
            assert isinstance(call.args, list)
            try:
                responses = service.filter_batch(call.args, arrived_ns, shed)
            except InvalidRequestError as error:
                self.metrics.call(1, m.INVALID, (time.perf_counter_ns() - arrived_ns) / 1000)
                return encoder.application_exception(
                    call.method, call.seqid, ApplicationExceptionType.PROTOCOL_ERROR, str(error)
                )
            return encoder.filter_batch(call.seqid, responses)
        latency_us = (time.perf_counter_ns() - arrived_ns) / 1000
        if call.method == "model_info":
            self.metrics.call(2, m.OK, latency_us)
            return encoder.model_info(call.seqid, service.model_info())
        if call.method == "ping":
            self.metrics.call(3, m.OK, latency_us)
            return encoder.ping(call.seqid, "pong")
        self.metrics.call(4, m.REJECTED, latency_us)
        return encoder.application_exception(
            call.method,
            call.seqid,
            ApplicationExceptionType.UNKNOWN_METHOD,
            f"no method {call.method!r}",
        )

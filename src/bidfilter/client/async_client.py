"""An asyncio BidFilter client that pipelines: many calls in flight on each connection.

The server answers the calls of a connection in the order they came, so a connection keeps a
queue of its calls in flight and hands each reply to the oldest, after checking that the reply
names that call's seqid and method (anything else means the stream cannot be trusted: the
connection is dropped). Calls go round-robin over a pool of ``connections``, each opened on
first use and replaced when it breaks.

Failures, and what is retried (every method of the service is idempotent):

- a connection that breaks (refused, reset, EOF, bytes that are not a reply) fails all its
  calls in flight; each is tried again on the next connection of the pool, up to ``retries``
  more times;
- a call with no reply within ``timeout`` is tried again on the next connection. Its own
  connection is kept (the late reply is dropped when it comes), unless that connection has not
  answered anything since the call was sent: it is then stalled, and is dropped as if broken;
- the server's own answers (``RemoteInvalidRequestError``, ``RemoteApplicationError``) are
  raised, never retried.

The I/O is an ``asyncio.Protocol`` rather than a ``StreamReader`` and a reader task: replies
are decoded and handed over in ``data_received`` itself, which saves a task switch per read
and lets a reply that has arrived win against a timeout due in the same loop iteration.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final

from bidfilter.client.connection_settings import ConnectionSettings
from bidfilter.client.errors import (
    AttemptFailedError,
    ClientClosedError,
    unavailable,
)
from bidfilter.client.routes import OutcomeRoutes, summed
from bidfilter.thrift import (
    AuctionOutcome,
    CallEncoder,
    FilterRequest,
    FilterResponse,
    ModelInfo,
    OutcomeReceipt,
    Reply,
    ReplyDecoder,
    ThriftProtocolError,
)

_SEQIDS: Final = 1 << 31
# Past this many unsent bytes a caller waits for the socket to drain (backpressure).
_WRITE_HIGH_WATER: Final = 1 << 20

_Encode = Callable[[int], bytes]


class _InFlight:
    """A call sent on a connection and not yet answered (or answered too late to matter)."""

    __slots__ = ("future", "method", "sent_at", "seqid", "timer")

    def __init__(
        self,
        seqid: int,
        method: str,
        future: asyncio.Future[Reply],
        sent_at: float,
    ) -> None:
        self.seqid = seqid
        self.method = method
        self.future = future
        self.sent_at = sent_at
        self.timer: asyncio.TimerHandle | None = None


class _PipelinedConnection(asyncio.Protocol):
    """One connection: writes calls as they come, matches replies to them in order."""

    def __init__(self, encoder: CallEncoder, timeout: float, max_message_bytes: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._decoder = ReplyDecoder(encoder.protocol, encoder.transport, max_message_bytes)
        self._timeout = timeout
        self._in_flight: deque[_InFlight] = deque()
        self._transport: asyncio.Transport | None = None
        self._seqids = itertools.count(1)
        self._last_reply_at = 0.0
        self._broken: AttemptFailedError | None = None
        self._writable: asyncio.Future[None] | None = None
        self._unsent: list[bytes] = []

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._decoder.feed(data)
        except ThriftProtocolError as error:
            self._break(AttemptFailedError(f"not a reply: {error}"))
            return
        if not replies:
            return
        self._last_reply_at = self._loop.time()
        in_flight = self._in_flight
        for reply in replies:
            if not in_flight:
                unasked = f"a reply to {reply.method} #{reply.seqid}, unasked"
                self._break(AttemptFailedError(unasked))
                return
            call = in_flight.popleft()
            if reply.seqid != call.seqid or reply.method != call.method:
                self._break(
                    AttemptFailedError(
                        f"a reply to {reply.method} #{reply.seqid}, "
                        f"for call {call.method} #{call.seqid}"
                    )
                )
                return
            if call.timer is not None:
                call.timer.cancel()
            if not call.future.done():  # done: timed out (or its caller gave up) already
                call.future.set_result(reply)

    def eof_received(self) -> bool:
        self._break(AttemptFailedError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "the connection was closed"
        self._break(AttemptFailedError(reason))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- calls

    @property
    def usable(self) -> bool:
        return self._broken is None and self._transport is not None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def call(self, encode: _Encode, method: str) -> Reply:
        """Send the call and wait for its reply (``AttemptFailedError`` if none comes)."""
        if self._broken is not None:
            raise _copy(self._broken)
        transport = self._transport
        assert transport is not None
        seqid = next(self._seqids) % _SEQIDS
        data = encode(seqid)
        loop = self._loop
        future: asyncio.Future[Reply] = loop.create_future()
        call = _InFlight(seqid, method, future, loop.time())
        call.timer = loop.call_later(self._timeout, self._expire, call)
        self._in_flight.append(call)
        # Calls made in the same loop iteration leave together at its end: one send syscall
        # and one wake-up of the server per iteration and connection, not one per call.
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append(data)
        if self._writable is not None and not self._writable.done():
            await self._writable  # the server reads slower than we write: wait, don't buffer
        try:
            return await future
        except asyncio.CancelledError:
            call.timer.cancel()  # the caller gave up (a task cancelled at shutdown)
            raise

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and self._broken is None:
            self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def _expire(self, call: _InFlight) -> None:
        if call.future.done():
            return
        call.future.set_exception(
            AttemptFailedError(f"no reply in {self._timeout:g} s", timed_out=True)
        )
        if self._last_reply_at < call.sent_at:
            # Nothing has come back since this call went out: the connection, not the call, is
            # stuck; the calls behind it (answered in order) are stuck too. Try them elsewhere.
            self._break(AttemptFailedError(f"no reply in {self._timeout:g} s", timed_out=True))

    def _break(self, error: AttemptFailedError) -> None:
        """Fail every call in flight with ``error`` (they may retry elsewhere) and hang up."""
        if self._broken is None:
            self._broken = error
        while self._in_flight:
            call = self._in_flight.popleft()
            if call.timer is not None:
                call.timer.cancel()
            if not call.future.done():
                call.future.set_exception(_copy(error))
        if self._transport is not None:
            self._transport.abort()

    def close(self, error: AttemptFailedError) -> None:
        self._break(error)


def _usable(connection: _PipelinedConnection) -> bool:
    return connection.usable


def _copy(error: AttemptFailedError) -> AttemptFailedError:
    """A fresh instance per waiter: one raised in many tasks would pile up their tracebacks."""
    return AttemptFailedError(error.reason, timed_out=error.timed_out)


class AsyncBidFilterClient:
    """An asyncio client of the server its ``settings`` name, pipelining over ``connections``.

    Use ``async with AsyncBidFilterClient(ConnectionSettings(host, port)) as client:`` and
    ``await`` its methods from any number of tasks at once: calls spread round-robin over the
    connections, each carrying as many calls in flight as are made. Each call gets ``timeout``
    seconds per attempt and ``retries`` more attempts on other connections (see
    ``ConnectionSettings``). Not thread-safe: use it from the event loop it was first used in.
    """

    def __init__(self, settings: ConnectionSettings, *, connections: int = 4) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, not {connections}")
        self.settings = settings
        self._encoder = CallEncoder(settings.protocol, settings.transport)
        self.connections = connections
        self._pool: list[_PipelinedConnection | None] = [None] * connections
        self._connecting: list[asyncio.Future[_PipelinedConnection] | None] = [None] * connections
        self._next_slot = 0
        self._closed = False
        self.connects = 0
        """How many connections were opened (a sign of churn when it grows)."""
        self.retried = 0
        """How many attempts were made again, on another connection, after one failed."""
        self._routes: OutcomeRoutes[_PipelinedConnection] = OutcomeRoutes()

    # -- the service

    async def filter(
        self,
        openrtb: bytes,
        candidates: Sequence[str] | None = None,
        deadline_ms: int | None = None,
    ) -> FilterResponse:
        """Which of ``candidates`` (``None``: every partner the model knows) to send to."""
        request = FilterRequest(
            openrtb, None if candidates is None else list(candidates), deadline_ms
        )
        encoder = self._encoder
        reply, connection = await self._call_on(
            "filter", lambda seqid: encoder.filter(seqid, request)
        )
        response = reply.filter_response()
        self._routes.remember(response, connection)
        return response

    async def filter_batch(self, requests: Sequence[FilterRequest]) -> list[FilterResponse]:
        """One response per request, in order (an item that failed says so in its ``error``)."""
        encoder = self._encoder
        reply, connection = await self._call_on(
            "filter_batch", lambda seqid: encoder.filter_batch(seqid, requests)
        )
        responses = reply.filter_responses()
        for response in responses:
            self._routes.remember(response, connection)
        return responses

    async def report_outcomes(self, outcomes: Sequence[AuctionOutcome]) -> OutcomeReceipt:
        """Tell the server what each request's auction did, after it. Each outcome goes on the
        connection its ``logged`` response came on (the server process holding its decision);
        the receipts of those calls, summed."""
        encoder = self._encoder
        receipts = []
        for connection, group in self._routes.route(outcomes, usable=_usable):

            def encode(seqid: int, group: list[AuctionOutcome] = group) -> bytes:
                return encoder.report_outcomes(seqid, group)

            if connection is None:
                reply = await self._call("report_outcomes", encode)
            else:
                try:
                    reply = await connection.call(encode, "report_outcomes")
                except AttemptFailedError:  # its process is out of reach: they are unknown
                    reply = await self._call("report_outcomes", encode)
            receipts.append(reply.outcome_receipt())
        return summed(receipts)

    async def model_info(self) -> ModelInfo:
        """The model the answering server process serves."""
        return (await self._call("model_info", self._encoder.model_info)).model_info()

    async def ping(self) -> str:
        return (await self._call("ping", self._encoder.ping)).pong()

    # -- lifecycle

    async def connect(self) -> None:
        """Open every connection of the pool now (else each opens on first use); raises
        ``BidFilterUnavailableError`` if one cannot be opened."""
        try:
            await asyncio.gather(*(self._connection(slot) for slot in range(self.connections)))
        except AttemptFailedError as error:
            raise unavailable(error, 1, self.settings.target) from None

    async def close(self) -> None:
        """Close every connection; calls in flight fail with ``ClientClosedError``."""
        self._closed = True
        closing = AttemptFailedError("the client is closing")
        for connection in self._pool:
            if connection is not None:
                connection.close(closing)
        self._pool = [None] * self.connections
        await asyncio.sleep(0)  # let the transports run connection_lost

    async def __aenter__(self) -> AsyncBidFilterClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        """Calls sent and not answered, over all connections."""
        return sum(c.in_flight for c in self._pool if c is not None)

    # -- calls

    async def _call(self, method: str, encode: _Encode) -> Reply:
        return (await self._call_on(method, encode))[0]

    async def _call_on(self, method: str, encode: _Encode) -> tuple[Reply, _PipelinedConnection]:
        """The reply, and the connection that carried it."""
        if self._closed:
            raise ClientClosedError
        slot = self._next_slot
        self._next_slot = (slot + 1) % self.connections
        last: AttemptFailedError | None = None
        retries = self.settings.retries
        for attempt in range(retries + 1):
            if attempt:
                self.retried += 1
            try:
                connection = self._pool[slot]
                if connection is None or not connection.usable:
                    connection = await self._connection(slot)
                return await connection.call(encode, method), connection
            except AttemptFailedError as error:
                if self._closed:
                    raise ClientClosedError from None
                last = error
                slot = (slot + 1) % self.connections  # another connection
        assert last is not None
        raise unavailable(last, retries + 1, self.settings.target)

    async def _connection(self, slot: int) -> _PipelinedConnection:
        """The slot's connection, opened (once, however many callers wait) if need be."""
        connection = self._pool[slot]
        if connection is not None and connection.usable:
            return connection
        pending = self._connecting[slot]
        if pending is None:
            pending = asyncio.ensure_future(self._open())
            self._connecting[slot] = pending
            pending.add_done_callback(lambda _: self._connected(slot))
        # shield: one waiter cancelled must not cancel the connect the others wait for.
        return await asyncio.shield(pending)

    def _connected(self, slot: int) -> None:
        pending = self._connecting[slot]
        self._connecting[slot] = None
        if pending is None or pending.cancelled() or pending.exception() is not None:
            return
        connection = pending.result()
        if self._closed:
            connection.close(AttemptFailedError("the client is closing"))
        else:
            self._pool[slot] = connection

    async def _open(self) -> _PipelinedConnection:
        loop = asyncio.get_running_loop()
        settings, encoder = self.settings, self._encoder
        timeout, limit = settings.timeout, settings.max_message_bytes
        try:
            async with asyncio.timeout(settings.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _PipelinedConnection(encoder, timeout, limit),
                    settings.host,
                    settings.port,
                    ssl=settings.ssl_context,
                    server_hostname=settings.server_hostname,
                )
        except TimeoutError:
            raise AttemptFailedError(
                f"cannot connect in {settings.connect_timeout:g} s", timed_out=True
            ) from None
        except OSError as error:
            raise AttemptFailedError(f"cannot connect: {error}") from None
        self.connects += 1
        return connection

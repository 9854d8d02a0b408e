"""A blocking BidFilter client: a thread-safe pool of connections, one call at a time on each.

Every method of the service is idempotent (a decision has no side effect), so a call whose
connection fails (refused, reset, EOF, timeout, a reply that is not Thrift or answers another
call) is tried again on a fresh connection, up to ``retries`` more times. The server's own
answers are never retried: ``RemoteInvalidRequestError`` and ``RemoteApplicationError`` are
raised as they come.

A connection that failed, or timed out (its late reply could still arrive), is closed, never
returned to the pool; an idle pooled connection the server has since closed is found out by
the first call that uses it, which then tries a fresh one without counting that attempt.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from bidfilter.client.connection_settings import ConnectionSettings
from bidfilter.client.errors import (
    AttemptFailedError,
    BidFilterUnavailableError,
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

_RECV_BYTES = 65_536
_SEQIDS = 1 << 31  # seqids are i32: wrap before going negative


class _Connection:
    """One socket with its codec state; used by one thread at a time (the pool sees to it)."""

    def __init__(self, settings: ConnectionSettings, encoder: CallEncoder) -> None:
        address = (settings.host, settings.port)
        try:
            sock = socket.create_connection(address, timeout=settings.connect_timeout)
        except OSError as error:
            raise AttemptFailedError(
                f"cannot connect: {error}", timed_out=isinstance(error, TimeoutError)
            ) from None
        # Calls are small and answered at once: Nagle's algorithm would hold them back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if settings.ssl_context is not None:
            try:  # the handshake runs here, each step bounded by the socket's connect_timeout
                sock = settings.ssl_context.wrap_socket(
                    sock, server_hostname=settings.server_hostname
                )
            except OSError as error:  # the failed SSLSocket has closed the socket already
                raise AttemptFailedError(
                    f"TLS handshake failed: {error}", timed_out=isinstance(error, TimeoutError)
                ) from None
        self._socket = sock
        self._decoder = ReplyDecoder(
            encoder.protocol, encoder.transport, settings.max_message_bytes
        )
        self._seqid = 0
        self.closed = False

    def call(self, encode: Callable[[int], bytes], method: str, timeout: float) -> Reply:
        self._seqid = (self._seqid + 1) % _SEQIDS
        seqid = self._seqid
        deadline = time.monotonic() + timeout
        sock = self._socket
        try:
            sock.settimeout(timeout)
            sock.sendall(encode(seqid))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(_RECV_BYTES)
                if not data:
                    raise AttemptFailedError("the server closed the connection")
                replies = self._decoder.feed(data)
                if replies:
                    break
        except TimeoutError:
            raise AttemptFailedError(f"no reply in {timeout:g} s", timed_out=True) from None
        except OSError as error:
            raise AttemptFailedError(f"connection failed: {error}") from None
        except ThriftProtocolError as error:
            raise AttemptFailedError(f"not a reply: {error}") from None
        reply = replies[0]
        if len(replies) > 1 or reply.seqid != seqid or reply.method != method:
            raise AttemptFailedError(
                f"a reply to {reply.method} #{reply.seqid}, for call {method} #{seqid}"
            )
        return reply

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):  # a reset connection may say so on close
            self._socket.close()


class BidFilterClient:
    """A blocking client of the server its ``settings`` name, safe to share between threads.

    At most ``pool_size`` connections are open at once (a call waits up to ``timeout`` for a
    free one, then fails with ``BidFilterUnavailableError``). Each call gets ``timeout``
    seconds per attempt and ``retries`` more attempts on fresh connections (see
    ``ConnectionSettings``).
    """

    def __init__(self, settings: ConnectionSettings, *, pool_size: int = 4) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self.settings = settings
        self.pool_size = pool_size
        self._encoder = CallEncoder(settings.protocol, settings.transport)
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)  # a connection came back to the pool
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[_Connection] = []
        self._closed = False
        self._routes: OutcomeRoutes[_Connection] = OutcomeRoutes()

    # -- the service

    def filter(
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
        reply, connection = self._call_on("filter", lambda seqid: encoder.filter(seqid, request))
        response = reply.filter_response()
        with self._lock:
            self._routes.remember(response, connection)
        return response

    def filter_batch(self, requests: Sequence[FilterRequest]) -> list[FilterResponse]:
        """One response per request, in order (an item that failed says so in its ``error``)."""
        encoder = self._encoder
        reply, connection = self._call_on(
            "filter_batch", lambda seqid: encoder.filter_batch(seqid, requests)
        )
        responses = reply.filter_responses()
        with self._lock:
            for response in responses:
                self._routes.remember(response, connection)
        return responses

    def report_outcomes(self, outcomes: Sequence[AuctionOutcome]) -> OutcomeReceipt:
        """Tell the server what each request's auction did, after it. Each outcome goes on the
        connection its ``logged`` response came on (the server process holding its decision),
        waiting up to ``timeout`` for that connection to be free; the receipts, summed."""
        encoder = self._encoder
        receipts = []
        with self._lock:
            groups = list(self._routes.route(outcomes, usable=lambda c: not c.closed))
        for connection, group in groups:

            def encode(seqid: int, group: list[AuctionOutcome] = group) -> bytes:
                return encoder.report_outcomes(seqid, group)

            reply = None
            if connection is not None:
                reply = self._call_with(connection, encode)
            if reply is None:  # no route, or it broke: to any process, where they are unknown
                reply = self._call("report_outcomes", encode)
            receipts.append(reply.outcome_receipt())
        return summed(receipts)

    def model_info(self) -> ModelInfo:
        """The model the answering server process serves."""
        return self._call("model_info", self._encoder.model_info).model_info()

    def ping(self) -> str:
        return self._call("ping", self._encoder.ping).pong()

    # -- lifecycle

    def close(self) -> None:
        """Close the idle connections; calls in flight finish, then close theirs."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __enter__(self) -> BidFilterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- calls

    def _call(self, method: str, encode: Callable[[int], bytes]) -> Reply:
        return self._call_on(method, encode)[0]

    def _call_on(self, method: str, encode: Callable[[int], bytes]) -> tuple[Reply, _Connection]:
        """The reply, and the connection that carried it (back in the pool by now)."""
        if self._closed:
            raise ClientClosedError
        timeout = self.settings.timeout
        if not self._slots.acquire(timeout=timeout):
            raise BidFilterUnavailableError(
                "connection",
                f"{self.settings.target}: all {self.pool_size} connections stayed busy"
                f" {timeout:g} s",
                attempts=0,
            )
        try:
            return self._attempts(method, encode)
        finally:
            self._slots.release()

    def _attempts(self, method: str, encode: Callable[[int], bytes]) -> tuple[Reply, _Connection]:
        """Try the call on a pooled connection, then on fresh ones (the caller holds a slot)."""
        connection = self._take_idle()
        # A pooled connection may have been closed by the server while idle (its idle timeout):
        # failing on one is not the call's fault, and costs no attempt.
        stale_allowance = 1 if connection is not None else 0
        attempts = 0
        last: AttemptFailedError | None = None
        settings = self.settings
        while attempts < settings.retries + 1:
            reused = connection is not None
            try:
                if connection is None:
                    connection = self._connect()
                reply = connection.call(encode, method, settings.timeout)
            except AttemptFailedError as error:
                if connection is not None:
                    connection.close()
                connection = None
                last = error
                if self._closed:
                    raise ClientClosedError from None
                if reused and stale_allowance and not error.timed_out:
                    stale_allowance = 0
                else:
                    attempts += 1
                continue
            self._give_back(connection)
            return reply, connection
        assert last is not None
        raise unavailable(last, attempts, settings.target)

    def _connect(self) -> _Connection:
        return _Connection(self.settings, self._encoder)

    def _take_idle(self) -> _Connection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                self._returned.notify_all()
                return
        connection.close()

    def _call_with(self, connection: _Connection, encode: Callable[[int], bytes]) -> Reply | None:
        """``report_outcomes`` on this pooled connection; ``None`` if it closed, stayed busy or
        failed (one attempt: another connection reaches another process anyway)."""
        timeout = self.settings.timeout
        if not self._slots.acquire(timeout=timeout):
            return None
        try:
            if not self._take(connection):
                return None
            try:
                reply = connection.call(encode, "report_outcomes", timeout)
            except AttemptFailedError:
                connection.close()
                return None
            self._give_back(connection)
            return reply
        finally:
            self._slots.release()

    def _take(self, connection: _Connection) -> bool:
        """Take this pooled connection for a call, waiting up to ``timeout`` while another
        thread uses it; ``False`` if it closed or stayed busy."""
        deadline = time.monotonic() + self.settings.timeout
        with self._lock:
            while connection not in self._idle:
                remaining = deadline - time.monotonic()
                if connection.closed or self._closed or remaining <= 0:
                    return False
                self._returned.wait(remaining)
            self._idle.remove(connection)
            return True

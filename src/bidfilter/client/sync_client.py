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
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from bidfilter.client.connection_settings import ConnectionSettings
from bidfilter.client.errors import (
    AttemptFailedError,
    BidFilterUnavailableError,
    ClientClosedError,
    unavailable,
)
from bidfilter.thrift import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CallEncoder,
    FilterRequest,
    FilterResponse,
    ModelInfo,
    Protocol,
    Reply,
    ReplyDecoder,
    ThriftProtocolError,
    Transport,
)

_RECV_BYTES = 65_536
_SEQIDS = 1 << 31  # seqids are i32: wrap before going negative


class _Connection:
    """One socket with its codec state; used by one thread at a time (the pool sees to it)."""

    def __init__(
        self,
        host: str,
        port: int,
        encoder: CallEncoder,
        connect_timeout: float,
        max_message_bytes: int,
        tls: ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as error:
            raise AttemptFailedError(
                f"cannot connect: {error}", timed_out=isinstance(error, TimeoutError)
            ) from None
        # Calls are small and answered at once: Nagle's algorithm would hold them back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:  # the handshake runs here, each step bounded by the socket's connect_timeout
                sock = tls.wrap_socket(sock, server_hostname=server_hostname)
            except OSError as error:  # the failed SSLSocket has closed the socket already
                raise AttemptFailedError(
                    f"TLS handshake failed: {error}", timed_out=isinstance(error, TimeoutError)
                ) from None
        self._socket = sock
        self._decoder = ReplyDecoder(encoder.protocol, encoder.transport, max_message_bytes)
        self._seqid = 0

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
        with contextlib.suppress(OSError):  # a reset connection may say so on close
            self._socket.close()


class BidFilterClient(ConnectionSettings):
    """A blocking client of a BidFilter server, safe to share between threads.

    At most ``pool_size`` connections are open at once (a call waits up to ``timeout`` for a
    free one, then fails with ``BidFilterUnavailableError``). Each call gets ``timeout``
    seconds per attempt and ``retries`` more attempts on fresh connections; ``connect_timeout``
    bounds each connection attempt, TLS handshake included. TLS options: see
    ``ConnectionSettings``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: Protocol = Protocol.BINARY,
        transport: Transport = Transport.FRAMED,
        pool_size: int = 4,
        timeout: float = 1.0,
        retries: int = 2,
        connect_timeout: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        super().__init__(
            host,
            port,
            protocol=protocol,
            transport=transport,
            timeout=timeout,
            retries=retries,
            connect_timeout=connect_timeout,
            max_message_bytes=max_message_bytes,
            ssl_context=ssl_context,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            server_hostname=server_hostname,
        )
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[_Connection] = []
        self._closed = False

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
        return self._call("filter", lambda seqid: encoder.filter(seqid, request)).filter_response()

    def filter_batch(self, requests: Sequence[FilterRequest]) -> list[FilterResponse]:
        """One response per request, in order (an item that failed says so in its ``error``)."""
        encoder = self._encoder
        reply = self._call("filter_batch", lambda seqid: encoder.filter_batch(seqid, requests))
        return reply.filter_responses()

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

    @property
    def _target(self) -> str:
        return f"{self.host}:{self.port}"

    def _call(self, method: str, encode: Callable[[int], bytes]) -> Reply:
        if self._closed:
            raise ClientClosedError
        if not self._slots.acquire(timeout=self.timeout):
            raise BidFilterUnavailableError(
                "connection",
                f"{self._target}: all {self.pool_size} connections stayed busy {self.timeout:g} s",
                attempts=0,
            )
        try:
            return self._attempts(method, encode)
        finally:
            self._slots.release()

    def _attempts(self, method: str, encode: Callable[[int], bytes]) -> Reply:
        """Try the call on a pooled connection, then on fresh ones (the caller holds a slot)."""
        connection = self._take_idle()
        # A pooled connection may have been closed by the server while idle (its idle timeout):
        # failing on one is not the call's fault, and costs no attempt.
        stale_allowance = 1 if connection is not None else 0
        attempts = 0
        last: AttemptFailedError | None = None
        while attempts < self.retries + 1:
            reused = connection is not None
            try:
                if connection is None:
                    connection = self._connect()
                reply = connection.call(encode, method, self.timeout)
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
            return reply
        assert last is not None
        raise unavailable(last, attempts, self._target)

    def _connect(self) -> _Connection:
        return _Connection(
            self.host,
            self.port,
            self._encoder,
            self.connect_timeout,
            self.max_message_bytes,
            self.ssl_context,
            self.server_hostname,
        )

    def _take_idle(self) -> _Connection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
        connection.close()

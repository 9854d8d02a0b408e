"""What both clients are configured with, checked once: where the server is, how to speak to it
(TLS included), and how long and how often to try."""

from __future__ import annotations

import ssl
from dataclasses import KW_ONLY, InitVar, dataclass
from pathlib import Path
from typing import NoReturn

from bidfilter.thrift import DEFAULT_MAX_MESSAGE_BYTES, Protocol, Transport


@dataclass(frozen=True)
class ConnectionSettings:
    """A server and how to call it: one value, given to either client
    (``BidFilterClient(ConnectionSettings("10.0.0.7", 9090, timeout=0.05))``).

    ``timeout`` is per attempt of a call, ``retries`` the attempts made again on another
    connection, ``connect_timeout`` bounds opening a connection, TLS handshake included.

    TLS is on when ``ssl_context``, ``tls_ca``, ``tls_cert`` or ``tls_key`` is given.
    ``ssl_context``: a client context made by the caller, used as is. Otherwise one is built by
    ``client_context``: ``tls_ca`` is the PEM CA to trust (default: the system's), ``tls_cert``
    and ``tls_key`` the client certificate for a server that requires one (mutual TLS;
    ``tls_key`` may be left out when ``tls_cert`` holds the key too). ``server_hostname`` is the
    name the server's certificate must carry (default ``host``; an IP address is matched
    against the certificate's IP addresses).

    The files are read once, here: ``ssl_context`` then holds the context they gave (``None``:
    plaintext) and ``server_hostname`` the name checked (``None`` without TLS).
    """

    host: str
    port: int
    _: KW_ONLY
    protocol: Protocol = Protocol.BINARY
    transport: Transport = Transport.FRAMED
    timeout: float = 1.0
    retries: int = 2
    connect_timeout: float = 1.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    # Init-only: kept as the context they build, so that ``dataclasses.replace`` reuses it.
    tls_ca: InitVar[str | Path | None] = None
    tls_cert: InitVar[str | Path | None] = None
    tls_key: InitVar[str | Path | None] = None

    def __post_init__(
        self, tls_ca: str | Path | None, tls_cert: str | Path | None, tls_key: str | Path | None
    ) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must not be negative, not {self.retries}")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        context = self.ssl_context
        files = (tls_ca, tls_cert, tls_key)
        if any(file is not None for file in files):
            if context is not None:
                raise ValueError("give ssl_context or tls_ca/tls_cert/tls_key, not both")
            context = client_context(*files)
        hostname = (self.server_hostname or self.host) if context is not None else None
        # Frozen: the checked values are set once, through object.__setattr__.
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        object.__setattr__(self, "transport", Transport(self.transport))
        object.__setattr__(self, "ssl_context", context)
        object.__setattr__(self, "server_hostname", hostname)

    @property
    def target(self) -> str:
        """``host:port``, as errors name the server."""
        return f"{self.host}:{self.port}"


def client_context(
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, verifying the server against ``ca`` (default: the
    system's CAs) and its name, presenting ``cert`` (with ``key``) to a server that asks.

    Raises ``ValueError`` naming the option at fault (``tls_ca``, ``tls_cert``, ``tls_key``).
    """
    if key is not None and cert is None:
        raise ValueError("tls_key: given without tls_cert")
    try:
        context = ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"tls_ca: cannot load {ca}: {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:

        def no_password() -> NoReturn:
            # Without a callback OpenSSL would prompt on the terminal.
            raise ValueError(f"tls_key: {key or cert} is encrypted; give an unencrypted key")

        try:
            context.load_cert_chain(cert, key, password=no_password)
        except (ssl.SSLError, OSError) as error:
            raise ValueError(
                f"tls_cert: cannot load {cert} with its key {key or cert}: {error}"
            ) from None
    return context

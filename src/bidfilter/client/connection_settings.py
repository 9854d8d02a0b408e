"""What both clients are configured with, checked once: where the server is, how to speak to it
(TLS included), and how long and how often to try."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NoReturn

from bidfilter.thrift import DEFAULT_MAX_MESSAGE_BYTES, CallEncoder, Protocol, Transport


class ConnectionSettings:
    """TLS is on when ``ssl_context``, ``tls_ca``, ``tls_cert`` or ``tls_key`` is given.

    ``ssl_context``: a client context made by the caller, used as is. Otherwise one is built by
    ``client_context``: ``tls_ca`` is the PEM CA to trust (default: the system's), ``tls_cert``
    and ``tls_key`` the client certificate for a server that requires one (mutual TLS;
    ``tls_key`` may be left out when ``tls_cert`` holds the key too). ``server_hostname`` is the
    name the server's certificate must carry (default ``host``; an IP address is matched
    against the certificate's IP addresses).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: Protocol,
        transport: Transport,
        timeout: float,
        retries: int,
        connect_timeout: float,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must not be negative, not {retries}")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        self.host = host
        self.port = port
        self.protocol = Protocol(protocol)
        self.transport = Transport(transport)
        self.timeout = timeout
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.max_message_bytes = max_message_bytes
        self._encoder = CallEncoder(self.protocol, self.transport)
        files = (tls_ca, tls_cert, tls_key)
        if any(file is not None for file in files):
            if ssl_context is not None:
                raise ValueError("give ssl_context or tls_ca/tls_cert/tls_key, not both")
            ssl_context = client_context(*files)
        self.ssl_context = ssl_context
        """What connections are wrapped in; ``None``: plaintext."""
        self.server_hostname = (server_hostname or host) if ssl_context is not None else None


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

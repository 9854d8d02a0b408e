"""What both clients are configured with, checked once: where the server is, how to speak to it,
and how long and how often to try."""

from __future__ import annotations

from bidfilter.thrift import DEFAULT_MAX_MESSAGE_BYTES, CallEncoder, Protocol, Transport


class ConnectionSettings:
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

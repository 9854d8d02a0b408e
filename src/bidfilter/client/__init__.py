"""Clients of a BidFilter server.

- ``ConnectionSettings``: the server and how to call it (protocol, transport, timeouts,
  retries, TLS), one frozen value given to either client;
- ``BidFilterClient``: blocking, a thread-safe pool of connections;
- ``AsyncBidFilterClient``: asyncio, pipelining many calls per connection;
- ``client_context``: the TLS context the settings build from ``tls_ca``/``tls_cert``/``tls_key``,
  to adjust and pass as ``ssl_context``.

Both clients retry a call that failed to reach the server on another connection (every method
is idempotent) and raise the server's own answers (``RemoteInvalidRequestError``,
``RemoteApplicationError``) as they come; see ``errors``. The load generator and the auction
simulator, users of these clients, are ``bidfilter.replay``: importing the clients imports
neither numpy nor pyarrow.
"""

from bidfilter.client.async_client import AsyncBidFilterClient
from bidfilter.client.connection_settings import ConnectionSettings, client_context
from bidfilter.client.errors import (
    BidFilterClientError,
    BidFilterTimeoutError,
    BidFilterUnavailableError,
    ClientClosedError,
)
from bidfilter.client.sync_client import BidFilterClient
from bidfilter.thrift import (
    FilterRequest,
    FilterResponse,
    ModelInfo,
    Outcome,
    PartnerDecision,
    Protocol,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    Transport,
)

__all__ = [
    "AsyncBidFilterClient",
    "BidFilterClient",
    "BidFilterClientError",
    "BidFilterTimeoutError",
    "BidFilterUnavailableError",
    "ClientClosedError",
    "ConnectionSettings",
    "FilterRequest",
    "FilterResponse",
    "ModelInfo",
    "Outcome",
    "PartnerDecision",
    "Protocol",
    "RemoteApplicationError",
    "RemoteInvalidRequestError",
    "Transport",
    "client_context",
]

"""Clients of a BidFilter server, the load generator, and the auction simulator.

- ``BidFilterClient``: blocking, a thread-safe pool of connections;
- ``AsyncBidFilterClient``: asyncio, pipelining many calls per connection;
- ``run_loadgen``: the auction server's traffic replayed from the logs, open or closed loop,
  over several processes, into a ``LoadReport``;
- ``simulate``: the SSP's auctions with and without the filter, into a ``SimulationReport``;
- ``LatencyHistogram``: the HDR-style histogram the load generator measures with;
- ``client_context``: the TLS context the clients build from ``tls_ca``/``tls_cert``/``tls_key``,
  to adjust and pass as ``ssl_context``.

Both clients retry a call that failed to reach the server on another connection (every method
is idempotent) and raise the server's own answers (``RemoteInvalidRequestError``,
``RemoteApplicationError``) as they come; see ``errors``.
"""

from bidfilter.client.async_client import AsyncBidFilterClient
from bidfilter.client.auction import AUCTION_KINDS, AuctionKind, clearing_price, floor_of
from bidfilter.client.connection_settings import client_context
from bidfilter.client.errors import (
    BidFilterClientError,
    BidFilterTimeoutError,
    BidFilterUnavailableError,
    ClientClosedError,
)
from bidfilter.client.histogram import LatencyHistogram
from bidfilter.client.load_report import ERROR_KINDS, LoadReport
from bidfilter.client.load_worker import CANDIDATE_MODES
from bidfilter.client.loadgen import run_loadgen
from bidfilter.client.logged_auctions import LoggedAuction, read_logged_auctions
from bidfilter.client.simulate import AuctionTotals, SimulationReport, simulate
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
    "AUCTION_KINDS",
    "CANDIDATE_MODES",
    "ERROR_KINDS",
    "AsyncBidFilterClient",
    "AuctionKind",
    "AuctionTotals",
    "BidFilterClient",
    "BidFilterClientError",
    "BidFilterTimeoutError",
    "BidFilterUnavailableError",
    "ClientClosedError",
    "FilterRequest",
    "FilterResponse",
    "LatencyHistogram",
    "LoadReport",
    "LoggedAuction",
    "ModelInfo",
    "Outcome",
    "PartnerDecision",
    "Protocol",
    "RemoteApplicationError",
    "RemoteInvalidRequestError",
    "SimulationReport",
    "Transport",
    "clearing_price",
    "client_context",
    "floor_of",
    "read_logged_auctions",
    "run_loadgen",
    "simulate",
]

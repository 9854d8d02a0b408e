"""The auction server's logged traffic, replayed against a BidFilter server through the clients.

- ``run_loadgen``: the load generator, open or closed loop, over several processes, into a
  ``LoadReport`` (latencies in a ``LatencyHistogram``);
- ``simulate``: the SSP's auctions with and without the filter, into a ``SimulationReport``,
  which ``simulation_plot.plot_simulation`` draws (not imported here: matplotlib takes most of
  a second to import, and the load generator's spawned processes import this package); with
  ``qps_cap_share``, also under per-partner QPS caps (``qps_caps``);
- ``read_logged_auctions``: the logged requests and bids both replay, as ``LoggedAuction``;
- ``clearing_price``, ``floor_of``: how the simulator settles an auction (``auction``).

Reading the logs needs pyarrow; this is why these tools are not part of ``bidfilter.client``.
"""

from bidfilter.replay.auction import AUCTION_KINDS, AuctionKind, clearing_price, floor_of
from bidfilter.replay.histogram import LatencyHistogram
from bidfilter.replay.load_report import ERROR_KINDS, LoadReport
from bidfilter.replay.load_worker import CANDIDATE_MODES
from bidfilter.replay.loadgen import run_loadgen
from bidfilter.replay.logged_auctions import LoggedAuction, read_logged_auctions
from bidfilter.replay.simulate import simulate
from bidfilter.replay.simulation_report import AuctionTotals, SimulationReport

__all__ = [
    "AUCTION_KINDS",
    "CANDIDATE_MODES",
    "ERROR_KINDS",
    "AuctionKind",
    "AuctionTotals",
    "LatencyHistogram",
    "LoadReport",
    "LoggedAuction",
    "SimulationReport",
    "clearing_price",
    "floor_of",
    "read_logged_auctions",
    "run_loadgen",
    "simulate",
]

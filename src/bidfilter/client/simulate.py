"""The SSP's auctions with and without the filter, on the same logged traffic.

For each logged request, *without* the filter every logged partner is called; *with* it, only
the partners the server says to send to (explored ones included). The bids an auction receives
are the logged bids (``bid = true``, at the logged price) of the partners it called, and it is
settled as ``auction.py`` says. A call to the filter that fails (no answer, refused) fails open
as an SSP would: every partner is called, and the failure is counted.

The calls are pipelined over a few connections by the async client, so tens of thousands of
logged requests take seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bidfilter.client.async_client import AsyncBidFilterClient
from bidfilter.client.auction import AUCTION_KINDS, AuctionKind, floor_of, revenue
from bidfilter.client.errors import (
    BidFilterTimeoutError,
    BidFilterUnavailableError,
)
from bidfilter.client.logged_auctions import LoggedAuction, read_logged_auctions
from bidfilter.thrift import (
    FilterResponse,
    Protocol,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    ThriftProtocolError,
    Transport,
)

DEFAULT_IN_FLIGHT: Final = 256


@dataclass(frozen=True)
class AuctionTotals:
    """One column of the simulation: sums over every simulated auction."""

    requests: int
    partner_calls: int
    bids: int
    filled: int  # auctions with at least one bid
    revenue: float  # currency units: clearing prices (CPM) / 1000, summed

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "partner_calls": self.partner_calls,
            "bids": self.bids,
            "filled": self.filled,
            "revenue": round(self.revenue, 6),
        }


@dataclass(frozen=True)
class SimulationReport:
    """Both columns, the deltas, and how the filter calls went. ``to_dict``, ``to_table``."""

    target: str
    auction: AuctionKind
    without: AuctionTotals
    with_filter: AuctionTotals
    errors: dict[str, int]  # failed filter calls (they failed open), by kind
    outcomes: dict[str, int]  # the server's outcomes, by name
    elapsed_s: float
    png: Path | None = None

    @property
    def calls_saved_share(self) -> float:
        return _share_lost(self.without.partner_calls, self.with_filter.partner_calls)

    @property
    def bids_lost_share(self) -> float:
        return _share_lost(self.without.bids, self.with_filter.bids)

    @property
    def filled_lost_share(self) -> float:
        return _share_lost(self.without.filled, self.with_filter.filled)

    @property
    def revenue_kept_share(self) -> float:
        if self.without.revenue <= 0:
            return 1.0
        return self.with_filter.revenue / self.without.revenue

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "auction": self.auction,
            "without_filter": self.without.to_dict(),
            "with_filter": self.with_filter.to_dict(),
            "partner_calls_saved_pct": round(100 * self.calls_saved_share, 3),
            "bids_lost_pct": round(100 * self.bids_lost_share, 3),
            "filled_lost_pct": round(100 * self.filled_lost_share, 3),
            "revenue_kept_pct": round(100 * self.revenue_kept_share, 3),
            "errors": dict(self.errors),
            "outcomes": dict(self.outcomes),
            "elapsed_s": round(self.elapsed_s, 3),
            "png": None if self.png is None else str(self.png),
        }

    def to_table(self) -> str:
        without, with_filter = self.without, self.with_filter
        rows = [
            ("partner calls", without.partner_calls, with_filter.partner_calls,
             f"{self.calls_saved_share:.1%} saved"),
            ("bids", without.bids, with_filter.bids, f"{self.bids_lost_share:.2%} lost"),
            ("filled auctions", without.filled, with_filter.filled,
             f"{self.filled_lost_share:.2%} lost"),
            ("revenue", f"{without.revenue:,.2f}", f"{with_filter.revenue:,.2f}",
             f"{self.revenue_kept_share:.2%} kept"),
        ]  # fmt: skip
        header = ("", "without filter", "with filter", "change")
        cells = [header, *((str(a), str(b), str(c), d) for a, b, c, d in rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(4)]
        lines = [
            f"{self.without.requests} logged requests, {self.auction.replace('_', ' ')} "
            f"auctions, filter {self.target}"
        ]
        for index, row in enumerate(cells):
            lines.append(
                "  ".join(
                    cell.ljust(width) if column == 0 else cell.rjust(width)
                    for column, (cell, width) in enumerate(zip(row, widths, strict=True))
                )
            )
            if index == 0:
                lines.append("  ".join("-" * width for width in widths))
        failed = sum(self.errors.values())
        if failed:
            kinds = ", ".join(f"{kind} {n}" for kind, n in self.errors.items() if n)
            lines.append(f"{failed} filter calls failed and were sent to everyone ({kinds})")
        return "\n".join(lines)


def _share_lost(before: int, after: int) -> float:
    return (before - after) / before if before else 0.0


def simulate(
    target: tuple[str, int],
    logs: Path,
    *,
    auction: AuctionKind = "second_price",
    limit: int | None = None,
    out_png: Path | None = None,
    protocol: Protocol = Protocol.BINARY,
    transport: Transport = Transport.FRAMED,
    connections: int = 4,
    in_flight: int = DEFAULT_IN_FLIGHT,
    timeout: float = 1.0,
    retries: int = 2,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> SimulationReport:
    """Settle the first ``limit`` logged auctions (all when ``None``) with and without the
    filter at ``target``; also plot them to ``out_png`` when given. ``in_flight`` bounds the
    calls pipelined at once. ``tls_ca``, ``tls_cert``, ``tls_key``: TLS, as
    ``ConnectionSettings`` says.

    Raises ``BidFilterUnavailableError`` if the server cannot be reached at the start, and
    ``LogFormatError`` if ``logs`` holds no records.
    """
    if auction not in AUCTION_KINDS:
        raise ValueError(f"auction must be one of {AUCTION_KINDS}, not {auction!r}")
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, not {in_flight}")
    host, port = target
    auctions = read_logged_auctions(logs, limit=limit)
    began = time.perf_counter()
    client = AsyncBidFilterClient(
        host,
        port,
        protocol=protocol,
        transport=transport,
        connections=connections,
        timeout=timeout,
        retries=retries,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    answers = asyncio.run(_ask_filter(client, auctions, in_flight))
    elapsed = time.perf_counter() - began
    report = settle(auctions, answers, auction, target=f"{host}:{port}", elapsed_s=elapsed)
    if out_png is not None:
        # Imported here: matplotlib takes most of a second to import, and is needed for this only.
        from bidfilter.client.simulation_plot import plot_simulation

        plot_simulation(report, out_png)
        report = SimulationReport(**{**report.__dict__, "png": Path(out_png)})
    return report


def settle(
    auctions: list[LoggedAuction],
    answers: list[FilterResponse | str],
    auction: AuctionKind,
    *,
    target: str = "",
    elapsed_s: float = 0.0,
) -> SimulationReport:
    """Both columns from the logged auctions and the filter's answer to each (a response, or
    the kind of error the call failed with: that request fails open)."""
    errors: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    without, with_filter = _Column(auction), _Column(auction)
    for logged, answer in zip(auctions, answers, strict=True):
        if isinstance(answer, str):
            errors[answer] += 1
            sends: dict[str, bool] = {}
        else:
            outcomes[answer.outcome.name] += 1
            sends = {decision.partner: decision.send for decision in answer.decisions}
        floor = floor_of(logged.openrtb)
        every_bid: list[float] = []
        sent_bids: list[float] = []
        sent_calls = 0
        for partner, bid, price in zip(logged.partners, logged.bids, logged.prices, strict=True):
            # A partner the answer leaves out is sent to: failing open is the safe side.
            sent = sends.get(partner, True)
            sent_calls += sent
            if bid:
                every_bid.append(price)
                if sent:
                    sent_bids.append(price)
        without.add(len(logged.partners), every_bid, floor)
        with_filter.add(sent_calls, sent_bids, floor)
    return SimulationReport(
        target=target,
        auction=auction,
        without=without.totals(),
        with_filter=with_filter.totals(),
        errors=dict(errors),
        outcomes=dict(outcomes),
        elapsed_s=elapsed_s,
    )


class _Column:
    """Running sums of one column (without, or with the filter)."""

    def __init__(self, auction: AuctionKind) -> None:
        self.auction = auction
        self.requests = self.partner_calls = self.bids = self.filled = 0
        self.revenue = 0.0

    def add(self, calls: int, bids: list[float], floor: float) -> None:
        self.requests += 1
        self.partner_calls += calls
        self.bids += len(bids)
        self.filled += bool(bids)
        self.revenue += revenue(bids, floor, self.auction)

    def totals(self) -> AuctionTotals:
        return AuctionTotals(
            self.requests, self.partner_calls, self.bids, self.filled, self.revenue
        )


async def _ask_filter(
    client: AsyncBidFilterClient, auctions: list[LoggedAuction], in_flight: int
) -> list[FilterResponse | str]:
    """The filter's answer to every logged request, ``in_flight`` calls pipelined at a time."""
    answers: list[FilterResponse | str] = ["unasked"] * len(auctions)
    next_index = iter(range(len(auctions)))

    async def ask() -> None:
        for index in next_index:  # shared: each caller takes the next request
            logged = auctions[index]
            try:
                answers[index] = await client.filter(logged.openrtb, logged.partners)
            except RemoteInvalidRequestError:
                answers[index] = "invalid_request"
            except RemoteApplicationError:
                answers[index] = "application"
            except BidFilterTimeoutError:
                answers[index] = "timeout"
            except BidFilterUnavailableError:
                answers[index] = "connection"
            except ThriftProtocolError:
                answers[index] = "protocol"

    async with client:
        await client.connect()
        await asyncio.gather(*(ask() for _ in range(min(in_flight, len(auctions)))))
    return answers

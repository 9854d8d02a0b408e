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
from pathlib import Path
from typing import Final

from bidfilter.client import (
    AsyncBidFilterClient,
    BidFilterTimeoutError,
    BidFilterUnavailableError,
    ConnectionSettings,
    FilterResponse,
    Protocol,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    Transport,
)
from bidfilter.replay.auction import AUCTION_KINDS, AuctionKind, floor_of, revenue
from bidfilter.replay.logged_auctions import LoggedAuction, read_logged_auctions
from bidfilter.replay.simulation_report import AuctionTotals, SimulationReport
from bidfilter.thrift import ThriftProtocolError

DEFAULT_IN_FLIGHT: Final = 256


def simulate(
    target: tuple[str, int],
    logs: Path,
    *,
    auction: AuctionKind = "second_price",
    limit: int | None = None,
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
    filter at ``target`` (``simulation_plot`` draws the report). ``in_flight`` bounds the
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
    settings = ConnectionSettings(
        host,
        port,
        protocol=protocol,
        transport=transport,
        timeout=timeout,
        retries=retries,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    client = AsyncBidFilterClient(settings, connections=connections)
    answers = asyncio.run(_ask_filter(client, auctions, in_flight))
    elapsed = time.perf_counter() - began
    return settle(auctions, answers, auction, target=f"{host}:{port}", elapsed_s=elapsed)


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

"""The SSP's auctions with and without the filter, on the same logged traffic.

For each logged request, *without* the filter every logged partner is called; *with* it, only
the partners the server says to send to (explored ones included). The bids an auction receives
are the logged bids (``bid = true``, at the logged price) of the partners it called, and it is
settled as ``auction.py`` says. A call to the filter that fails (no answer, refused) fails open
as an SSP would: every partner is called, and the failure is counted.

With ``qps_cap_share``, each partner is also capped at that share of its unfiltered calls per
second, and the filter's sends are throttled to the caps client-side, value-ranked and at
random, by the server's budget controller (``qps_caps`` says how, and on which clock); the
report gains both columns. The server is asked the same either way.

The calls are pipelined over a few connections by the async client, so tens of thousands of
logged requests take seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
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
from bidfilter.replay.qps_caps import DEFAULT_REPLAY_RATE, cap_sends
from bidfilter.replay.simulation_report import AuctionTotals, CapReport, SimulationReport
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
    qps_cap_share: float | None = None,
    replay_rate: float | None = DEFAULT_REPLAY_RATE,
    seed: int = 0,
) -> SimulationReport:
    """Settle the first ``limit`` logged auctions (all when ``None``) with and without the
    filter at ``target`` (``simulation_plot`` draws the report). ``in_flight`` bounds the
    calls pipelined at once. ``tls_ca``, ``tls_cert``, ``tls_key``: TLS, as
    ``ConnectionSettings`` says. ``qps_cap_share`` (in (0, 1]): also under per-partner QPS
    caps, replayed at ``replay_rate`` requests per simulated second (``None``: logged time),
    random throttling drawn from ``seed``; ``qps_caps`` defines them.

    Raises ``BidFilterUnavailableError`` if the server cannot be reached at the start, and
    ``LogFormatError`` if ``logs`` holds no records.
    """
    if auction not in AUCTION_KINDS:
        raise ValueError(f"auction must be one of {AUCTION_KINDS}, not {auction!r}")
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, not {in_flight}")
    _check_caps(qps_cap_share, replay_rate)
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
    return settle(
        auctions,
        answers,
        auction,
        target=f"{host}:{port}",
        elapsed_s=elapsed,
        qps_cap_share=qps_cap_share,
        replay_rate=replay_rate,
        seed=seed,
    )


def settle(
    auctions: list[LoggedAuction],
    answers: list[FilterResponse | str],
    auction: AuctionKind,
    *,
    target: str = "",
    elapsed_s: float = 0.0,
    qps_cap_share: float | None = None,
    replay_rate: float | None = DEFAULT_REPLAY_RATE,
    seed: int = 0,
) -> SimulationReport:
    """The columns from the logged auctions and the filter's answer to each (a response, or
    the kind of error the call failed with: that request fails open)."""
    _check_caps(qps_cap_share, replay_rate)
    errors: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    filter_sends: list[list[bool]] = []
    for logged, answer in zip(auctions, answers, strict=True):
        if isinstance(answer, str):
            errors[answer] += 1
            sends: dict[str, bool] = {}
        else:
            outcomes[answer.outcome.name] += 1
            sends = {decision.partner: decision.send for decision in answer.decisions}
        # A partner the answer leaves out is sent to: failing open is the safe side.
        filter_sends.append([sends.get(partner, True) for partner in logged.partners])
    floors = [floor_of(logged.openrtb) for logged in auctions]
    caps = None
    if qps_cap_share is not None:
        capped = cap_sends(
            auctions, answers, filter_sends, qps_cap_share, replay_rate=replay_rate, seed=seed
        )
        caps = CapReport(
            share=qps_cap_share,
            replay_rate=replay_rate,
            duration_s=capped.duration_s,
            with_caps=_settled(auctions, floors, capped.ranked, auction),
            random=_settled(auctions, floors, capped.random, auction),
            partners=capped.partners,
        )
    return SimulationReport(
        target=target,
        auction=auction,
        without=_settled(auctions, floors, None, auction),
        with_filter=_settled(auctions, floors, filter_sends, auction),
        errors=dict(errors),
        outcomes=dict(outcomes),
        elapsed_s=elapsed_s,
        caps=caps,
    )


def _check_caps(qps_cap_share: float | None, replay_rate: float | None) -> None:
    if qps_cap_share is not None and not 0 < qps_cap_share <= 1:
        raise ValueError(f"qps_cap_share must be in (0, 1], not {qps_cap_share}")
    if replay_rate is not None and not replay_rate > 0:
        raise ValueError(f"replay_rate must be positive, not {replay_rate}")


def _settled(
    auctions: list[LoggedAuction],
    floors: list[float],
    sends: Sequence[Sequence[bool]] | None,
    auction: AuctionKind,
) -> AuctionTotals:
    """One column: every auction settled from its floor with the logged partners ``sends``
    says were called (``sends[i][j]`` for auction i's partner j; all of them when ``None``)."""
    column = _Column(auction)
    for index, (logged, floor) in enumerate(zip(auctions, floors, strict=True)):
        called = sends[index] if sends is not None else [True] * len(logged.partners)
        bids = [
            price
            for bid, price, sent in zip(logged.bids, logged.prices, called, strict=True)
            if bid and sent
        ]
        column.add(sum(called), bids, floor)
    return column.totals()


class _Column:
    """Running sums of one column (without the filter, with it, under caps)."""

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

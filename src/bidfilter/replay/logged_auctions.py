"""Logged auctions to replay: each request's OpenRTB bytes and what each partner did with it.

The load generator and the auction simulator both replay the auction logs
(``bidfilter.logs``): the request as the SSP built it, when it came (the simulator's QPS caps
replay in time order), and per logged partner whether it bid and at what price. Only the
``ts``, ``request`` and ``partners`` columns are read. A partner the logged
SSP did not call (``sent`` false) is left out of the replayed auction: what it would have done
is unknown, and replaying it as a no-bid would credit the filter for dropping it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow as pa

from bidfilter.logs import LogFormatError, iter_log_batches


@dataclass(frozen=True, slots=True)
class LoggedAuction:
    """One logged bid request: ``partners[i]`` bid (``bids[i]``) at ``prices[i]`` CPM; it came
    at ``ts_ms`` (epoch milliseconds, UTC)."""

    openrtb: bytes
    partners: tuple[str, ...]
    bids: tuple[bool, ...]
    prices: tuple[float, ...]
    ts_ms: int = 0
    bidders: frozenset[str] = field(init=False)
    """The partners that bid (a set, for the load generator's per-decision lookups)."""

    def __post_init__(self) -> None:
        if not len(self.partners) == len(self.bids) == len(self.prices):
            raise LogFormatError("partners", "partners, bids and prices differ in length")
        bidders = frozenset(p for p, bid in zip(self.partners, self.bids, strict=True) if bid)
        object.__setattr__(self, "bidders", bidders)


def read_logged_auctions(
    logs: str | os.PathLike[str], *, limit: int | None = None
) -> list[LoggedAuction]:
    """The first ``limit`` auctions of the logs (all when ``None``), oldest partition first.

    Raises ``LogFormatError`` when the directory holds no logs, or no records.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    auctions: list[LoggedAuction] = []
    batch_size = min(limit, 65_536) if limit is not None else 65_536
    columns = ["ts", "request", "partners"]
    for batch in iter_log_batches(logs, columns=columns, batch_size=batch_size):
        times = batch.column(0).cast(pa.int64()).to_pylist()
        requests = batch.column(1).to_pylist()
        partner_lists = batch.column(2)
        offsets = partner_lists.offsets.to_pylist()
        base = offsets[0]
        outcomes = partner_lists.flatten()  # honours a sliced array's offset
        names = outcomes.field("partner").to_pylist()
        bids = outcomes.field("bid").to_pylist()
        prices = outcomes.field("price").to_pylist()
        sent = outcomes.field("sent").to_pylist()
        for row, text in enumerate(requests):
            first, last = offsets[row] - base, offsets[row + 1] - base
            known = [i for i in range(first, last) if sent[i]]
            auctions.append(
                LoggedAuction(
                    text.encode(),
                    tuple(names[i] for i in known),
                    tuple(bids[i] for i in known),
                    tuple(prices[i] for i in known),
                    times[row],
                )
            )
            if limit is not None and len(auctions) >= limit:
                return auctions
    if not auctions:
        raise LogFormatError("logs", f"no auction records under {logs}")
    return auctions

"""Tiny auction logs written by hand, for replay tests that must know every bid."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bidfilter.logs import AuctionLogWriter, auction_batch

# (partner, bid, price)
Outcomes = Sequence[tuple[str, bool, float]]

TS_MS = 1_741_000_000_000  # 2025-03-03, any day will do


def bid_request(request_id: str, floors: Sequence[float] = ()) -> str:
    """A small valid BidRequest with one banner imp per floor (one imp without a floor if none)."""
    imps = [
        {"id": str(i + 1), "banner": {"w": 300, "h": 250}, "bidfloor": floor}
        for i, floor in enumerate(floors or [0.0])
    ]
    return json.dumps({"id": request_id, "imp": imps, "tmax": 100}, separators=(",", ":"))


def write_auction_log(root: Path, records: Sequence[tuple[str, Outcomes]]) -> Path:
    """Write ``records`` (request JSON text, partner outcomes) as one day of auction logs."""
    offsets = [0]
    partners: list[str] = []
    bids: list[bool] = []
    prices: list[float] = []
    request_ids: list[str] = []
    for index, (text, outcomes) in enumerate(records):
        try:
            request_id = str(json.loads(text)["id"])
        except (ValueError, KeyError, TypeError):
            request_id = f"unparsable-{index}"
        request_ids.append(request_id)
        for partner, bid, price in outcomes:
            partners.append(partner)
            bids.append(bid)
            prices.append(price)
        offsets.append(len(partners))
    batch = auction_batch(
        np.full(len(records), TS_MS, dtype=np.int64),
        request_ids,
        [text for text, _ in records],
        np.array(offsets, dtype=np.int32),
        partners,
        np.array(bids, dtype=np.bool_),
        np.array(prices, dtype=np.float64),
    )
    with AuctionLogWriter(root) as writer:
        writer.write(batch)
    return root

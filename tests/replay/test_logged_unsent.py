"""Replaying filtered logs: a partner the logged SSP did not call is not replayed as a no-bid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from replay_test_logs import TS_MS, bid_request

from bidfilter.logs import AuctionLogWriter, auction_batch
from bidfilter.replay.logged_auctions import read_logged_auctions


def test_unsent_partners_are_left_out_of_the_replayed_auction(tmp_path: Path) -> None:
    batch = auction_batch(
        np.array([TS_MS, TS_MS]),
        ["r1", "r2"],
        [bid_request("r1"), bid_request("r2")],
        np.array([0, 3, 4], dtype=np.int32),
        ["dsp-a", "dsp-b", "dsp-c", "dsp-b"],
        np.array([True, False, False, False]),
        np.array([2.0, 0.0, 0.0, 0.0]),
        sent=np.array([True, False, True, False]),
        propensity=np.array([1.0, 0.1, 0.1, 0.1]),
    )
    with AuctionLogWriter(tmp_path) as writer:
        writer.write(batch)

    first, second = read_logged_auctions(tmp_path)

    assert (first.partners, first.bids, first.prices) == (
        ("dsp-a", "dsp-c"),
        (True, False),
        (2.0, 0.0),
    )
    assert first.bidders == {"dsp-a"}
    assert second.partners == ()

"""Fixtures for the client tests: a fake BidFilter server, always stopped, and small logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from client_fake_server import FakeBidFilterServer
from client_test_logs import bid_request, write_auction_log


@pytest.fixture
def fake_server() -> Iterator[FakeBidFilterServer]:
    """A running fake server on 127.0.0.1 (switches off; tests flip them as they need)."""
    server = FakeBidFilterServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def replay_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 logged requests to 4 partners (dsp-01..04), about a quarter of the outcomes bids."""
    rng = np.random.default_rng(11)
    records = []
    for index in range(60):
        outcomes = [
            (f"dsp-0{k}", bool(bid), round(float(price), 2) if bid else 0.0)
            for k, bid, price in zip(
                range(1, 5), rng.random(4) < 0.25, rng.uniform(0.1, 5.0, 4), strict=True
            )
        ]
        records.append((bid_request(f"req-{index}", [0.3]), outcomes))
    return write_auction_log(tmp_path_factory.mktemp("replay") / "logs", records)

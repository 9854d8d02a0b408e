"""Fixtures for the replay tests: the client tests' fake server, and small logs to replay."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# The fake server is the client tests' (tests/client): the replay tools are its other users.
sys.path.insert(0, str(Path(__file__).parents[1] / "client"))

from client_fake_server import fake_server
from replay_test_logs import bid_request, write_auction_log

__all__ = ["fake_server", "replay_log"]


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

"""The auction simulator: its arithmetic on a tiny log worked out by hand, and its picture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from client_fake_server import FakeBidFilterServer
from replay_test_logs import bid_request, write_auction_log

from bidfilter.replay import clearing_price, floor_of, simulate
from bidfilter.replay.simulation_plot import plot_simulation

# The fake sends dsp-01 and dsp-03 (odd), filters dsp-02 and dsp-04, refuses b"bad" (which then
# fails open: every partner called).
ALL = ("dsp-01", "dsp-02", "dsp-03", "dsp-04")


def outcomes(**prices: float) -> list[tuple[str, bool, float]]:
    """Every partner, those named bidding at their price: outcomes(dsp_01=2.0)."""
    named = {name.replace("_", "-"): price for name, price in prices.items()}
    return [(p, p in named, named.get(p, 0.0)) for p in ALL]


# request, outcomes; with the clearing prices (CPM) worked out by hand:
#   second price without | with the filter      first price without | with
RECORDS = [
    # 1. floor 0.5, three bids; with the filter dsp-02 (3.0) is lost
    #    2nd: max(2.0, 0.5) = 2.0 | max(1.0, 0.5) = 1.0       1st: 3.0 | 2.0
    (bid_request("r1", [0.5]), outcomes(dsp_01=2.0, dsp_02=3.0, dsp_03=1.0)),
    # 2. no floor, one bid from a filtered partner
    #    2nd: lone bid, no floor: 4.0 | not filled            1st: 4.0 | 0
    (bid_request("r2"), outcomes(dsp_02=4.0)),
    # 3. two imps, floors 1.5 and 0.2: the floor is 1.5; one bid, kept
    #    2nd: lone bid pays the floor: 1.5 | 1.5              1st: 3.0 | 3.0
    (bid_request("r3", [1.5, 0.2]), outcomes(dsp_03=3.0)),
    # 4. no bid at all: not filled either way
    (bid_request("r4", [0.8]), outcomes()),
    # 5. refused by the server: fails open, the same auction both ways
    #    2nd: min(1.0, max(0.5, 0)) = 0.5 | 0.5               1st: 1.0 | 1.0
    ("bad", outcomes(dsp_02=1.0, dsp_04=0.5)),
    # 6. both bids under the floor (2.0): never pay above the highest bid
    #    2nd: min(1.5, max(1.0, 2.0)) = 1.5 | 1.5             1st: 1.5 | 1.5
    (bid_request("r6", [2.0]), outcomes(dsp_01=1.0, dsp_03=1.5)),
]
SECOND_PRICE = (2.0 + 4.0 + 1.5 + 0.5 + 1.5, 1.0 + 1.5 + 0.5 + 1.5)
FIRST_PRICE = (3.0 + 4.0 + 3.0 + 1.0 + 1.5, 2.0 + 3.0 + 1.0 + 1.5)


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_auction_log(tmp_path_factory.mktemp("tiny") / "logs", RECORDS)


@pytest.mark.parametrize(
    ("auction", "revenues"), [("second_price", SECOND_PRICE), ("first_price", FIRST_PRICE)]
)
def test_arithmetic_on_a_tiny_log(
    fake_server: FakeBidFilterServer,
    tiny_log: Path,
    auction: str,
    revenues: tuple[float, float],
) -> None:
    report = simulate(("127.0.0.1", fake_server.port), tiny_log, auction=auction)  # type: ignore[arg-type]
    without, with_filter = report.without, report.with_filter
    assert (without.requests, with_filter.requests) == (6, 6)
    assert without.partner_calls == 24
    assert with_filter.partner_calls == 5 * 2 + 4  # two sent each; the refused one to all four
    assert (without.bids, with_filter.bids) == (9, 7)
    assert (without.filled, with_filter.filled) == (5, 4)
    assert without.revenue == pytest.approx(revenues[0] / 1000)
    assert with_filter.revenue == pytest.approx(revenues[1] / 1000)
    assert report.errors == {"invalid_request": 1}
    assert report.outcomes == {"SCORED": 5}
    assert report.calls_saved_share == pytest.approx(10 / 24)
    assert report.bids_lost_share == pytest.approx(2 / 9)
    assert report.filled_lost_share == pytest.approx(1 / 5)
    assert report.revenue_kept_share == pytest.approx(revenues[1] / revenues[0])

    document = json.loads(json.dumps(report.to_dict()))
    assert document["partner_calls_saved_pct"] == pytest.approx(100 * 10 / 24, abs=1e-3)
    table = report.to_table()
    assert "revenue" in table and "41.7% saved" in table and "invalid_request 1" in table


def test_limit_and_the_png(
    fake_server: FakeBidFilterServer, tiny_log: Path, tmp_path: Path
) -> None:
    png = tmp_path / "plots" / "simulation.png"
    report = simulate(("127.0.0.1", fake_server.port), tiny_log, limit=2)
    assert report.without.requests == 2
    assert plot_simulation(report, png) == png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_clearing_price_rules() -> None:
    assert clearing_price([], 1.0, "second_price") == 0.0
    assert clearing_price([3.0], 0.0, "second_price") == 3.0  # lone bid, no floor: the bid
    assert clearing_price([3.0], 1.0, "second_price") == 1.0  # lone bid: the floor
    assert clearing_price([3.0], 5.0, "second_price") == 3.0  # ... never above the bid
    assert clearing_price([3.0, 2.0, 1.0], 0.0, "second_price") == 2.0
    assert clearing_price([3.0, 2.0], 2.5, "second_price") == 2.5
    assert clearing_price([3.0, 2.0], 2.5, "first_price") == 3.0
    with pytest.raises(ValueError, match="auction"):
        clearing_price([1.0], 0.0, "vickrey")  # type: ignore[arg-type]


def test_floor_of() -> None:
    assert floor_of(bid_request("a", [0.5, 2.25, 1.0]).encode()) == 2.25
    assert floor_of(b'{"id":"a","imp":[{"id":"1"}]}') == 0.0
    assert floor_of(b"not json") == 0.0

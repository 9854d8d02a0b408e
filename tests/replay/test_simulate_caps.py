"""The auction simulator under per-partner QPS caps: its clock, its caps, value-ranked sending
against random dropping, the 1-second excess, the report, and the command's flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from client_fake_server import FakeBidFilterServer
from replay_test_logs import TS_MS, bid_request

from bidfilter.cli import main
from bidfilter.client import FilterResponse
from bidfilter.logs import AuctionLogWriter, auction_batch
from bidfilter.replay import LoggedAuction, simulate
from bidfilter.replay.qps_caps import max_window_excess, simulated_times
from bidfilter.replay.simulate import settle
from bidfilter.thrift import Outcome, PartnerDecision

PARTNERS = ("dsp-01", "dsp-02", "dsp-03", "dsp-04")


def test_the_simulated_clock() -> None:
    ts = np.array([0, 500, 500, 3000], dtype=np.int64) + TS_MS
    times, duration = simulated_times(ts, replay_rate=2.0)
    # The logged span (3 s) becomes (N - 1) / R = 1.5 simulated seconds, its shape kept.
    assert times.tolist() == pytest.approx([0.0, 0.25, 0.25, 1.5])
    assert duration == 2.0  # N / R: the mean rate is R
    times, duration = simulated_times(ts, replay_rate=None)
    assert times.tolist() == pytest.approx([0.0, 0.5, 0.5, 3.0])
    assert duration == pytest.approx(4.0)  # 3 s * N / (N - 1)
    # Every ts the same: evenly spaced at the replay rate.
    times, duration = simulated_times(np.full(3, TS_MS), replay_rate=10.0)
    assert times.tolist() == pytest.approx([0.0, 0.1, 0.2]) and duration == pytest.approx(0.3)
    with pytest.raises(ValueError, match="replay rate"):
        simulated_times(np.full(3, TS_MS), replay_rate=None)


def test_max_window_excess() -> None:
    assert max_window_excess([], 5.0) == 0.0
    assert max_window_excess([0.0, 0.5, 0.99, 1.0, 1.5], 2.0) == pytest.approx(0.5)  # 3 in [0, 1)
    assert max_window_excess([0.0, 1.0, 2.0], 1.0) == 0.0


def synthetic_traffic(
    count: int, seed: int
) -> tuple[list[LoggedAuction], list[FilterResponse | str]]:
    """Auctions over an hour, listed out of time order, and a filter whose bid probability is
    the true one: it sends at or above 0.2. Every 50th call failed (fails open)."""
    rng = np.random.default_rng(seed)
    ts = TS_MS + rng.integers(0, 3_600_000, count)
    auctions: list[LoggedAuction] = []
    answers: list[FilterResponse | str] = []
    for index in range(count):
        probability = rng.beta(1, 3, len(PARTNERS))
        bids = rng.random(len(PARTNERS)) < probability
        prices = np.where(bids, rng.uniform(0.5, 5.0, len(PARTNERS)), 0.0)
        auctions.append(
            LoggedAuction(
                bid_request(f"r{index}").encode(),
                PARTNERS,
                tuple(bids.tolist()),
                tuple(prices.tolist()),
                int(ts[index]),
            )
        )
        decisions = [
            PartnerDecision(name, float(p), bool(p >= 0.2), False, 0.2, 1.0)
            for name, p in zip(PARTNERS, probability.tolist(), strict=True)
        ]
        failed = index % 50 == 0
        answers.append(
            "timeout" if failed else FilterResponse(f"r{index}", decisions, "m", Outcome.SCORED)
        )
    return auctions, answers


def test_value_ranked_caps_keep_more_revenue_than_random_dropping() -> None:
    auctions, answers = synthetic_traffic(4000, seed=1)
    report = settle(
        auctions, answers, "second_price", qps_cap_share=0.25, replay_rate=200.0, seed=3
    )
    caps = report.caps
    assert caps is not None and caps.duration_s == pytest.approx(20.0)
    for figures in caps.partners.values():
        assert figures.unfiltered_calls == 4000
        assert figures.cap == pytest.approx(0.25 * 4000 / 20.0)  # 50 calls per simulated second
        assert figures.sent <= figures.filter_sends <= figures.unfiltered_calls
        assert figures.sent / figures.duration_s <= figures.cap * 1.05
        assert figures.sent / figures.duration_s > 0.8 * figures.cap  # the cap is used
        assert figures.max_cap_excess <= 0.05 and figures.random_max_cap_excess <= 0.05
        assert 0.2 < figures.threshold < 1.0
    assert report.with_filter.revenue > caps.with_caps.revenue > caps.random.revenue
    assert caps.with_caps.partner_calls == pytest.approx(caps.random.partner_calls, rel=0.05)

    document = json.loads(json.dumps(report.to_dict()))
    assert document["revenue_kept"] == pytest.approx(
        caps.with_caps.revenue / report.without.revenue, abs=1e-6
    )
    assert document["revenue_kept"] > document["random_throttling"]["revenue_kept"] + 0.05
    assert document["max_cap_excess"] <= 0.05
    assert set(document["qps_caps"]["partners"]) == set(PARTNERS)
    assert document["qps_caps"]["partners"]["dsp-01"]["cap_qps"] == 50.0
    assert "revenue kept" in report.to_table()

    again = settle(auctions, answers, "second_price", qps_cap_share=0.25, replay_rate=200.0, seed=3)
    assert again.caps == caps  # seeded: the same random throttling


def test_caps_at_the_unfiltered_rate_hardly_bind() -> None:
    auctions, answers = synthetic_traffic(500, seed=2)
    report = settle(auctions, answers, "first_price", qps_cap_share=1.0, replay_rate=50.0)
    assert report.caps is not None
    # The filter sends about half the unfiltered rate: only the busiest moments of the logged
    # (random) arrivals reach a cap.
    for column in (report.caps.with_caps, report.caps.random):
        assert column.partner_calls >= 0.99 * report.with_filter.partner_calls
        assert column.revenue >= 0.99 * report.with_filter.revenue
    assert "revenue_kept" not in settle(auctions, answers, "first_price").to_dict()


@pytest.fixture
def spread_log(tmp_path: Path) -> Path:
    """200 logged requests over 10 minutes to four partners, about a third of them bids."""
    rng = np.random.default_rng(5)
    count = 200
    ids = [f"req-{i}" for i in range(count)]
    bids = rng.random(count * len(PARTNERS)) < 0.3
    batch = auction_batch(
        TS_MS + np.sort(rng.integers(0, 600_000, count)),
        ids,
        [bid_request(request_id, [0.2]) for request_id in ids],
        np.arange(0, count * len(PARTNERS) + 1, len(PARTNERS), dtype=np.int32),
        list(PARTNERS) * count,
        bids,
        np.where(bids, rng.uniform(0.5, 3.0, len(bids)), 0.0),
    )
    with AuctionLogWriter(tmp_path / "logs") as writer:
        writer.write(batch)
    return tmp_path / "logs"


def test_simulate_with_caps_against_a_server(
    fake_server: FakeBidFilterServer, spread_log: Path
) -> None:
    # The fake sends dsp-01 and dsp-03, every request: at a cap of 0.3 of their unfiltered
    # rate, 70% of those sends are dropped; dsp-02 and dsp-04 get nothing either way.
    report = simulate(
        ("127.0.0.1", fake_server.port), spread_log, qps_cap_share=0.3, replay_rate=20.0
    )
    caps = report.caps
    assert caps is not None and caps.duration_s == pytest.approx(10.0)
    for name in ("dsp-01", "dsp-03"):
        figures = caps.partners[name]
        assert figures.filter_sends == 200 and figures.cap == pytest.approx(6.0)
        assert 40 <= figures.sent <= 63 and 40 <= figures.random_sent <= 63
        assert figures.max_cap_excess <= 1 / 6  # a cap under 20 calls/s: one call of tolerance
    assert caps.partners["dsp-02"].sent == 0
    assert caps.with_caps.partner_calls < report.with_filter.partner_calls


def test_the_command_reports_caps_and_checks_its_flags(
    fake_server: FakeBidFilterServer,
    spread_log: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = f"127.0.0.1:{fake_server.port}"
    common = ["simulate", "--target", target, "--logs", str(spread_log), "--png", ""]
    assert main([*common, "--json", "--qps-cap-share", "0.5", "--replay-rate", "logged"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["qps_caps"]["replay_rate"] is None
    assert 0 <= document["revenue_kept"] <= 1
    assert 0 <= document["random_throttling"]["revenue_kept"] <= 1
    assert document["max_cap_excess"] >= 0
    for flag, value in [("--qps-cap-share", "0"), ("--qps-cap-share", "1.5"),
                        ("--qps-cap-share", "half"), ("--replay-rate", "-3")]:  # fmt: skip
        with pytest.raises(SystemExit):
            main([*common, "--qps-cap-share", "0.5", flag, value])
        assert flag in capsys.readouterr().err

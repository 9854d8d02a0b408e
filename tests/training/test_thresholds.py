from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.training.config import MIN_BIDS_TO_FILTER
from bidfilter.training.thresholds import (
    confident_target,
    partner_thresholds,
    recall_threshold,
    smoothed_threshold,
)


@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=200),
    st.floats(0.01, 1.0),
)
def test_threshold_keeps_the_target_share_and_is_the_largest_that_does(
    scores: list[float], target: float
) -> None:
    values = np.array(scores)
    threshold = recall_threshold(values, target)
    kept = (values >= threshold).mean()
    assert kept >= target - 1e-9
    higher = values[values > threshold]
    if len(higher):
        # Any larger threshold would drop below the target.
        assert (values >= higher.min()).mean() < target - 1e-12


def test_no_bids_means_send_everything() -> None:
    assert recall_threshold(np.array([]), 0.99) == 0.0


def test_bad_target_is_refused() -> None:
    with pytest.raises(ValueError):
        recall_threshold(np.array([0.5]), 1.5)


def test_per_partner_thresholds_and_overrides() -> None:
    # Each score three times: twelve bids a partner, enough to be filtered at all.
    scores = np.repeat([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6], 3)
    bids = np.ones(len(scores), dtype=bool)
    codes = np.repeat([0, 1], 12)
    result = partner_thresholds(scores, bids, codes, ["a", "b"], 0.75, {"b": 1.0})
    assert result == {"a": pytest.approx(0.2), "b": pytest.approx(0.6)}
    with pytest.raises(ValueError, match="unknown partner"):
        partner_thresholds(scores, bids, codes, ["a", "b"], 0.75, {"zz": 0.9})


def test_a_smoothed_threshold_varies_less_between_samples_than_the_lowest_bid() -> None:
    """A sparse partner: 60 validation bids. The plain order statistic at 0.99 recall is the
    lowest score, so it swings with one bid; the smoothed one leans on all of the low ones."""
    for target in (0.99, 0.95):
        rng = np.random.default_rng(0)
        plain, smoothed = [], []
        for _ in range(300):
            scores = rng.beta(2, 5, size=60)
            plain.append(recall_threshold(scores, target))
            smoothed.append(smoothed_threshold(scores, target))
        assert np.std(smoothed) < 0.97 * np.std(plain)
        # Near the same place on average: it estimates the same quantile.
        assert abs(np.mean(smoothed) - np.mean(plain)) < 0.01


def test_too_few_bids_are_not_filtered_and_sparse_partners_are_smoothed() -> None:
    assert smoothed_threshold(np.array([0.5] * (MIN_BIDS_TO_FILTER - 1)), 0.99) == 0.0
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.random(50), rng.random(500)])
    codes = np.repeat([0, 1], [50, 500])
    bids = np.ones(len(scores), dtype=bool)
    result = partner_thresholds(scores, bids, codes, ["sparse", "busy"], 0.99, min_bids=200)
    assert result["sparse"] == pytest.approx(smoothed_threshold(scores[:50], 0.99))
    assert result["busy"] == recall_threshold(scores[50:], 0.99)
    # With smoothing for everyone, the busy partner's threshold is the Harrell-Davis one too.
    smoothed = partner_thresholds(
        scores, bids, codes, ["sparse", "busy"], 0.99, min_bids=200, smoothed=True
    )
    assert smoothed["busy"] == pytest.approx(smoothed_threshold(scores[50:], 0.99))
    assert smoothed["busy"] != result["busy"]
    assert smoothed["sparse"] == result["sparse"]


def test_a_confident_target_is_stricter_the_fewer_the_effective_bids() -> None:
    assert confident_target(0.99, 500.0, 0.0) == 0.99
    many, few = confident_target(0.99, 10_000.0, 1.28), confident_target(0.99, 400.0, 1.28)
    assert 0.99 < many < few < 1.0
    # One standard error at 10,000 bids: sqrt(0.99 * 0.01 / 10,000) ~ 0.000995.
    assert many == pytest.approx(1 - (0.01 - 1.28 * 0.000995), abs=1e-5)
    # So few that the bound leaves no miss allowed: keep every validation bid.
    assert confident_target(0.99, 50.0, 1.28) == 1.0


def test_thresholds_on_a_confidence_bound_keep_more_where_exploration_is_thin() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 4000)
    partner_codes = np.repeat([0, 1], 2000).astype(np.int32)
    bids = np.ones(4000, dtype=bool)
    # Partner a's bids all seen (weight 1); partner b's seen through 5% exploration (weight 20):
    # same scores, same point estimate, a twentieth of the effective count.
    weights = np.where(partner_codes == 0, 1.0, 20.0)
    weights[2000::2] = 1.0  # b: half its bids at propensity 1, half explored
    plain = partner_thresholds(scores, bids, partner_codes, ["a", "b"], 0.99, weights=weights)
    bound = partner_thresholds(
        scores, bids, partner_codes, ["a", "b"], 0.99, weights=weights, confidence_z=1.28
    )
    assert bound["a"] < plain["a"] and bound["b"] < plain["b"]
    # b's bound, on fewer effective bids, gives up more of its threshold than a's.
    assert plain["b"] - bound["b"] > plain["a"] - bound["a"]


def test_a_negative_confidence_z_is_refused() -> None:
    from bidfilter.training.config import TrainConfig

    with pytest.raises(ValueError, match="recall_confidence_z"):
        TrainConfig(recall_confidence_z=-0.5)

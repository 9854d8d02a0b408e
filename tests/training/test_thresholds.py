from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.training.config import MIN_BIDS_TO_FILTER
from bidfilter.training.thresholds import (
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

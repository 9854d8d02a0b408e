from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.training.thresholds import partner_thresholds, recall_threshold


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
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6])
    bids = np.array([True, True, True, True, True, True, True, True])
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = partner_thresholds(scores, bids, codes, ["a", "b"], 0.75, {"b": 1.0})
    assert result == {"a": pytest.approx(0.2), "b": pytest.approx(0.6)}
    with pytest.raises(ValueError, match="unknown partner"):
        partner_thresholds(scores, bids, codes, ["a", "b"], 0.75, {"zz": 0.9})

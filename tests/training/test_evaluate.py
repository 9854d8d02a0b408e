from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.training.evaluate import (
    calibration_table,
    drift,
    evaluate,
    log_loss,
    roc_auc,
    savings_recall_curve,
)

DAY_MS = 86_400_000


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = scores[labels]
    neg = scores[~labels]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.booleans()),
        min_size=2,
        max_size=40,
    )
)
def test_auc_matches_pairwise_definition(rows: list[tuple[float, bool]]) -> None:
    scores = np.array([r[0] for r in rows])
    labels = np.array([r[1] for r in rows])
    auc = roc_auc(scores, labels)
    if labels.all() or not labels.any():
        assert auc is None
    else:
        assert auc == pytest.approx(brute_force_auc(scores, labels))


def test_log_loss() -> None:
    assert log_loss(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(np.log(2))


def test_evaluate_counts_recall_savings_and_oracle() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.05, 0.6, 0.02])
    bids = np.array([True, False, True, False, False, False])
    codes = np.array([0, 0, 0, 1, 1, 1])
    oracle = np.array([0.95, 0.01, 0.9, 0.02, 0.03, 0.01])
    result = evaluate(scores, bids, codes, ["a", "b"], {"a": 0.5, "b": 0.5}, oracle)
    overall = result["overall"]
    assert overall["bids"] == 2
    assert overall["bid_recall"] == 1.0
    assert overall["calls_sent"] == 3  # 0.9, 0.8 and 0.6
    assert overall["call_savings"] == pytest.approx(0.5)
    # A perfect model sends only the two bids' calls for partner a and nothing for b.
    assert overall["oracle_call_savings"] == pytest.approx(4 / 6)
    assert result["partners"]["b"]["bids"] == 0
    assert result["partners"]["b"]["bid_recall"] == 1.0


def test_oracle_of_a_partner_whose_bids_were_all_filtered_sends_nothing() -> None:
    # Partner b's only bid scored under its threshold: recall 0, and the oracle at recall 0
    # sends none of b's calls (this used to raise on the zero target recall).
    scores = np.array([0.9, 0.1, 0.05, 0.3, 0.02])
    bids = np.array([True, False, True, False, False])
    codes = np.array([0, 0, 1, 1, 1])
    oracle = np.array([0.95, 0.01, 0.4, 0.02, 0.01])
    result = evaluate(scores, bids, codes, ["a", "b"], {"a": 0.5, "b": 0.5}, oracle)
    b = result["partners"]["b"]
    assert b["bid_recall"] == 0.0
    assert b["oracle_calls_sent"] == 0
    assert b["oracle_call_savings"] == 1.0
    assert result["overall"]["oracle_call_savings"] == pytest.approx(4 / 5)


def test_savings_recall_curve_ends() -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    bids = np.array([True, False, True, False])
    recall, savings = savings_recall_curve(scores, bids)
    assert recall[-1] == 1.0 and savings[-1] == 0.0
    assert recall[0] == 0.5 and savings[0] == 0.75
    assert np.all(np.diff(recall) >= 0)


def test_calibration_table_bins() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = rng.random(20_000) < p
    table = calibration_table(p, y, bins=10)
    assert len(table["predicted"]) == 10
    assert np.allclose(table["predicted"], table["observed"], atol=0.03)


def test_drift_flags_a_partner_whose_latest_day_departs_from_the_model() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    ts = np.sort(rng.integers(0, 4 * DAY_MS, n))
    codes = rng.integers(0, 2, n)
    scores = rng.random(n)
    bids = rng.random(n) < scores  # calibrated, a good ranking: for both partners...
    latest = ts >= ts.max() - DAY_MS
    changed = latest & (codes == 1)
    bids[changed] = rng.random(int(changed.sum())) < 1 - scores[changed]  # ...until partner b's
    result = drift(scores, bids, codes, ["a", "b"], ts)
    assert result["drifted"] == ["b"]
    a, b = result["partners"]["a"], result["partners"]["b"]
    assert abs(a["auc_latest"] - a["auc"]) < 0.03 and 0.8 < a["calibration_latest"] < 1.25
    assert b["auc_latest"] < 0.4 < b["auc"]


def test_drift_says_nothing_from_a_few_bids() -> None:
    ts = np.arange(100) * (DAY_MS // 10)
    scores = np.linspace(0, 1, 100)
    bids = scores > 0.95  # 5 bids in all
    bids[-3:] = False
    assert drift(scores, bids, np.zeros(100, dtype=np.int64), ["a"], ts)["drifted"] == []

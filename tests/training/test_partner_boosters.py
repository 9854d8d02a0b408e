"""Per-partner boosters merged into one model predict what each booster predicts alone."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from bidfilter.training.partner_boosters import merge_partner_boosters

TYPES = ["q", "c", "q", "c"]  # a number, a category, another number, the partner code
PARTNER = 3


def _booster(rng: np.random.Generator, code: int, rounds: int) -> xgb.Booster:
    n = 400
    features = np.column_stack(
        [rng.random(n), rng.integers(0, 5, n), rng.random(n), np.full(n, code)]
    ).astype(np.float32)
    features[rng.random(n) < 0.1, 0] = np.nan
    labels = (rng.random(n) < 0.2 + 0.5 * (features[:, 1] == code % 5)).astype(np.float32)
    matrix = xgb.DMatrix(features, label=labels, feature_types=TYPES, enable_categorical=True)
    params = {"objective": "binary:logistic", "max_depth": 3, "base_score": 0.3}
    return xgb.train({**params, "max_cat_to_onehot": 1}, matrix, num_boost_round=rounds)


def test_each_partner_gets_its_own_boosters_prediction() -> None:
    rng = np.random.default_rng(1)
    boosters = {code: _booster(rng, code, rounds=3 + code) for code in (0, 1, 4)}
    merged = merge_partner_boosters(boosters, PARTNER)
    assert merged.num_boosted_rounds() == sum(b.num_boosted_rounds() for b in boosters.values())
    n = 300
    rows = np.column_stack(
        [rng.random(n), rng.integers(0, 5, n), rng.random(n), rng.integers(0, 6, n)]
    ).astype(np.float32)
    rows[rng.random(n) < 0.1, 0] = np.nan
    rows[:5, PARTNER] = np.nan

    def predict(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
        matrix = xgb.DMatrix(x, feature_types=TYPES, enable_categorical=True)
        return np.asarray(booster.predict(matrix))

    served = predict(merged, rows)
    for code, booster in boosters.items():
        mine = rows[:, PARTNER] == code
        np.testing.assert_allclose(served[mine], predict(booster, rows[mine]), atol=1e-6)
    # A partner without a booster, or no partner code: the shared base score alone.
    rest = ~np.isin(rows[:, PARTNER], list(boosters))
    assert rest.sum() > 5
    np.testing.assert_allclose(served[rest], 0.3, atol=1e-6)


def test_boosters_with_different_base_scores_are_refused() -> None:
    rng = np.random.default_rng(2)
    features = rng.random((100, 4)).astype(np.float32)
    labels = (rng.random(100) < 0.5).astype(np.float32)
    other = xgb.train(
        {"objective": "binary:logistic", "base_score": 0.6},
        xgb.DMatrix(features, label=labels),
        num_boost_round=1,
    )
    with pytest.raises(ValueError, match="base scores"):
        merge_partner_boosters({0: _booster(rng, 0, 2), 1: other}, PARTNER)

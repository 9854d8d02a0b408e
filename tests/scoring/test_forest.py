"""The compiled evaluator gives XGBoost's own predictions, and serving falls back without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

from bidfilter.features.spec import fill_keyed
from bidfilter.logs import iter_log_batches
from bidfilter.openrtb import parse_bid_request
from bidfilter.scoring import ServingModel, decide, forest
from bidfilter.scoring.forest import ForestError, compile_forest, probe_rows
from bidfilter.training.model import BidModel

pytestmark = pytest.mark.skipif(
    forest._forest is None, reason="compiled evaluator not built (no C compiler at install)"
)


@pytest.fixture(scope="module")
def reference(model: ServingModel, version_dir: Path) -> xgb.Booster:
    """XGBoost's predict through a DMatrix, on a booster loaded separately."""
    return BidModel.load(version_dir / "model.ubj", model.spec).booster


def _xgboost_predict(reference: xgb.Booster, model: ServingModel, rows: np.ndarray) -> np.ndarray:
    matrix = xgb.DMatrix(
        rows,
        feature_names=model.spec.names,
        feature_types=model.spec.feature_types,
        enable_categorical=True,
    )
    return np.asarray(reference.predict(matrix), dtype=np.float64)


Logged = tuple[np.ndarray, bytes, bytes]  # every partner's rows; the row and block served


@pytest.fixture(scope="module")
def logged_rows(model: ServingModel, synth_logs: Path) -> list[Logged]:
    batch = next(iter_log_batches(synth_logs, columns=["ts", "request"], batch_size=400))
    texts = batch.column("request").to_pylist()
    stamps = batch.column("ts").cast(pa.int64()).to_pylist()
    logged = []
    for text, ts in zip(texts, stamps, strict=True):
        request = parse_bid_request(text)
        rows = model.encoder.rows(request, ts, model.partners)
        logged.append((rows, *model.encoder.request_inputs(request, ts)))
    return logged


def test_the_model_has_per_partner_columns(model: ServingModel) -> None:
    """The walk below covers splits on the partner-affinity columns, not only the partner's."""
    keyed = set(model.spec.keyed_columns)
    assert keyed
    arrays, _, _ = forest._flatten_booster(model.booster)
    assert keyed & set(arrays["feature"].tolist())


def test_the_served_model_uses_the_compiled_evaluator(model: ServingModel) -> None:
    assert model.forest is not None


def test_shared_walk_equals_xgboost_on_logged_requests(
    model: ServingModel, reference: xgb.Booster, logged_rows: list[Logged]
) -> None:
    for rows, row, keyed in logged_rows:
        served = model.score_request(row, rows[:, -1].copy(), keyed)
        np.testing.assert_allclose(
            served, _xgboost_predict(reference, model, rows), rtol=0, atol=1e-6
        )


def test_row_walk_equals_xgboost_on_probe_rows(model: ServingModel, reference: xgb.Booster) -> None:
    """Probe rows hit thresholds exactly, just below them, missing values, and category codes
    in, out of and past the split sets (the edge cases of the split semantics)."""
    assert model.forest is not None
    rows = probe_rows(model.booster, model.spec, 5000, seed=7)
    assert np.isnan(rows).any()
    served = np.empty(len(rows))
    model.forest.predict_rows(rows, served)
    np.testing.assert_allclose(served, _xgboost_predict(reference, model, rows), rtol=0, atol=1e-6)


def test_unknown_and_many_partners(
    model: ServingModel, reference: xgb.Booster, logged_rows: list[Logged]
) -> None:
    """More than 64 candidates (the evaluator works in groups of 64), repeats, and a missing or
    out-of-vocabulary partner code, all against XGBoost."""
    n = len(model.partners)
    codes = np.array([i % n for i in range(150)] + [np.nan, n + 5, -1], dtype=np.float32)
    _, row, keyed = logged_rows[3]
    rows = np.repeat(np.frombuffer(row, dtype=np.float32)[None, :], len(codes), axis=0)
    rows[:, -1] = codes
    fill_keyed(rows, model.spec.keyed_columns, keyed, codes)
    np.testing.assert_allclose(
        model.score_request(row, codes, keyed), _xgboost_predict(reference, model, rows), atol=1e-6
    )


def test_a_wrong_evaluator_is_caught_by_the_load_check(model: ServingModel) -> None:
    """The check ServingModel.load runs (compiled vs XGBoost on probe rows) notices a forest that
    is off: here one built with the base margin shifted."""
    arrays, n_features, base_margin = forest._flatten_booster(model.booster)
    shifted = forest._forest.Forest(
        **arrays,
        n_features=n_features,
        partner_feature=model.spec.partner_column,
        base_margin=base_margin + 0.01,
    )
    rows = probe_rows(model.booster, model.spec, 256)
    served = np.empty(len(rows))
    shifted.predict_rows(rows, served)
    assert np.abs(served - model.booster.inplace_predict(rows)).max() > 1e-4


def test_malformed_arrays_are_refused(model: ServingModel) -> None:
    arrays, n_features, base_margin = forest._flatten_booster(model.booster)
    looping = dict(arrays, left=np.zeros_like(arrays["left"]))
    with pytest.raises(ValueError, match="children"):
        forest._forest.Forest(
            **looping, n_features=n_features, partner_feature=-1, base_margin=base_margin
        )
    with pytest.raises(ValueError, match="value: expected"):
        forest._forest.Forest(
            **dict(arrays, feature=arrays["feature"][:-1]),
            n_features=n_features,
            partner_feature=-1,
            base_margin=base_margin,
        )
    beyond = arrays["feature"].copy()
    beyond[0] = n_features + 3
    with pytest.raises(ValueError, match="splits on feature"):
        forest._forest.Forest(
            **dict(arrays, feature=beyond),
            n_features=n_features,
            partner_feature=-1,
            base_margin=base_margin,
        )


def test_other_objectives_are_left_to_xgboost() -> None:
    rng = np.random.default_rng(0)
    data = xgb.DMatrix(rng.random((200, 3)), label=rng.random(200))
    booster = xgb.train({"objective": "reg:squarederror"}, data, num_boost_round=2)
    with pytest.raises(ForestError, match="objective"):
        compile_forest(booster, partner_feature=2)


def test_without_the_extension_xgboost_serves_the_same_decisions(
    version_dir: Path, model: ServingModel, monkeypatch: pytest.MonkeyPatch, synth_logs: Path
) -> None:
    monkeypatch.setattr(forest, "_forest", None)
    fallback = ServingModel.load(version_dir)
    assert fallback.forest is None
    batch = next(iter_log_batches(synth_logs, columns=["ts", "request"], batch_size=50))
    for text, ts in zip(
        batch.column("request").to_pylist(),
        batch.column("ts").cast(pa.int64()).to_pylist(),
        strict=True,
    ):
        request = parse_bid_request(text)
        fast = decide(model, request, None, ts).decisions
        slow = decide(fallback, request, None, ts).decisions
        assert [d.send for d in fast] == [d.send for d in slow]
        np.testing.assert_allclose(
            [d.bid_probability for d in fast], [d.bid_probability for d in slow], atol=1e-6
        )


def test_varying_a_numeric_column_walks_row_by_row(
    model: ServingModel, reference: xgb.Booster, logged_rows: list[Logged]
) -> None:
    """The general walk (rows differing in a column that is not a small categorical, here the
    floor) against XGBoost; bidfilter's partner column takes the code-space walk instead."""
    arrays, n_features, base_margin = forest._flatten_booster(model.booster)
    column = model.spec.names.index("floor_max")
    varying = forest._forest.Forest(
        **arrays, n_features=n_features, partner_feature=column, base_margin=base_margin
    )
    floors = np.array([np.nan, 0.0, 0.05, 0.5, 1.0, 2.5, 7.0, 50.0] * 9, dtype=np.float32)
    row = logged_rows[5][0][0]
    rows = np.repeat(row[None, :], len(floors), axis=0)
    rows[:, column] = floors
    served = np.empty(len(floors))
    varying.predict_shared(row, floors, served)
    np.testing.assert_allclose(served, _xgboost_predict(reference, model, rows), atol=1e-6)


def test_per_partner_columns_beyond_code_space() -> None:
    """With more partners than code space holds, the walk goes partner by partner; the
    per-partner columns still come from the block, by partner code, as XGBoost reads them
    from the rows."""
    rng = np.random.default_rng(3)
    partners, n = 70, 4000
    codes = rng.integers(0, partners, n)
    affinity = rng.random((partners,)).astype(np.float32)
    shared = rng.random(n).astype(np.float32)
    features = np.column_stack([shared, affinity[codes], codes]).astype(np.float32)
    labels = (rng.random(n) < affinity[codes] * shared).astype(np.float32)
    matrix = xgb.DMatrix(
        features, label=labels, feature_types=["q", "q", "c"], enable_categorical=True
    )
    params = {"objective": "binary:logistic", "max_depth": 4, "max_cat_to_onehot": 1}
    booster = xgb.train(params, matrix, num_boost_round=20)
    compiled = compile_forest(booster, partner_feature=2, keyed=[1])
    assert compiled is not None
    candidates = np.array([*range(partners), np.nan, partners + 3], dtype=np.float32)
    block = affinity
    row = np.array([0.6, np.nan, np.nan], dtype=np.float32)
    served = np.empty(len(candidates))
    compiled.predict_shared(row, candidates, served, block.tobytes())
    rows = np.repeat(row[None, :], len(candidates), axis=0)
    rows[:, 2] = candidates
    known = candidates < partners
    rows[known, 1] = affinity[candidates[known].astype(int)]
    expected = booster.predict(
        xgb.DMatrix(rows, feature_types=["q", "q", "c"], enable_categorical=True)
    )
    np.testing.assert_allclose(served, expected, atol=1e-6)
    with pytest.raises(ValueError, match="keyed"):
        compiled.predict_shared(row, candidates, served)

"""Training on logs a filter shaped: rows weigh 1/propensity, thresholds and figures are
inverse-propensity estimates, and a partner with too little exploration is not filtered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from filtered_logs import as_filtered

from bidfilter.artifact import open_store
from bidfilter.logs import AuctionLogWriter, iter_log_batches
from bidfilter.synth import generate
from bidfilter.training.config import DatasetConfig, ModelConfig, TrainConfig
from bidfilter.training.dataset import build_dataset
from bidfilter.training.evaluate import evaluate
from bidfilter.training.pipeline import train
from bidfilter.training.thresholds import (
    effective_count,
    partner_thresholds,
    recall_threshold,
    smoothed_threshold,
)


def test_weighted_thresholds_agree_with_repeated_rows_and_equal_weights() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(300)
    repeats = rng.integers(1, 5, 300)
    expanded = np.repeat(scores, repeats)
    for target in (0.9, 0.99):
        assert recall_threshold(scores, target, repeats.astype(float)) == recall_threshold(
            expanded, target
        )
        assert smoothed_threshold(scores, target, np.full(300, 2.5)) == pytest.approx(
            smoothed_threshold(scores, target)
        )
    assert effective_count(np.full(40, 20.0), 40) == pytest.approx(40)
    assert effective_count(np.array([1.0] * 10 + [100.0]), 11) < 2


def test_a_partner_seen_through_too_little_exploration_is_not_filtered() -> None:
    scores = np.linspace(0.01, 1, 400)
    codes = np.repeat([0, 1], 200)
    bids = np.ones(400, dtype=bool)
    # Partner 1's bids: 195 sent above its threshold, 5 explored at propensity 0.01, each
    # standing for 100: worth only about six bids in all, too few to set a threshold on.
    weights = np.ones(400)
    weights[200:205] = 100.0
    result = partner_thresholds(scores, bids, codes, ["busy", "thin"], 0.99, weights=weights)
    assert result["busy"] > 0 and result["thin"] == 0.0


def test_inverse_propensity_estimates_recover_the_full_traffic() -> None:
    """A filter sends calls scored >= 0.5 and explores 10% of the rest; from what it logged
    alone, the figures of another threshold come out as they are on the whole traffic."""
    rng = np.random.default_rng(11)
    n = 200_000
    scores = rng.random(n)
    bids = rng.random(n) < scores**3
    propensity = np.where(scores >= 0.5, 1.0, 0.1)
    logged = rng.random(n) < propensity
    truth = evaluate(scores, bids, np.zeros(n, np.int32), ["p"], {"p": 0.3})["overall"]
    estimate = evaluate(
        scores[logged],
        bids[logged],
        np.zeros(int(logged.sum()), np.int32),
        ["p"],
        {"p": 0.3},
        weights=1.0 / propensity[logged],
    )["overall"]
    naive = evaluate(
        scores[logged], bids[logged], np.zeros(int(logged.sum()), np.int32), ["p"], {"p": 0.3}
    )["overall"]
    assert estimate["estimate"] == "inverse_propensity"
    for key in ("bid_recall", "call_savings"):
        low, high = estimate[f"{key}_ci"]
        assert low <= truth[key] <= high, key
        assert abs(estimate[key] - truth[key]) < 0.01, key
    # Taken at face value the logs miss most of the calls the filter dropped.
    assert abs(naive["call_savings"] - truth["call_savings"]) > 0.1


def _filtered_copy(source: Path, out: Path) -> None:
    """The synthetic logs as a filter would have left them: every partner called when its true
    bid probability is high, else explored at 0.25, but dsp-02 at 0.001, an exploration that on
    this little traffic almost never fires; every 10th request in the control group."""
    rng = np.random.default_rng(5)
    with AuctionLogWriter(out) as writer:
        for batch in iter_log_batches(source):
            writer.write(as_filtered(batch, rng))


@pytest.fixture(scope="module")
def filtered_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("debiased")
    generate(root / "full", requests=8000, partners=3, seed=4, days=8)
    _filtered_copy(root / "full", root / "filtered")
    return root / "filtered"


def test_rows_weigh_their_inverse_propensity(filtered_logs: Path) -> None:
    data = build_dataset(filtered_logs, DatasetConfig(negative_rate=1.0))
    assert data.valid.propensity is not None and data.valid.weights is not None
    np.testing.assert_allclose(data.valid.weights, 1.0 / np.maximum(data.valid.propensity, 0.01))
    assert data.valid.control is not None and 0.05 < data.valid.control.mean() < 0.2


def test_train_reports_estimates_and_leaves_the_unexplored_partner_unfiltered(
    filtered_logs: Path, tmp_path: Path
) -> None:
    store = open_store(str(tmp_path / "store"))
    config = TrainConfig(model=ModelConfig(trees=30))
    result = train(filtered_logs, store, config)
    report = json.loads(store.read_text(result.version))
    test = report["test"]
    assert test["estimate"] == "inverse_propensity"
    assert test["bid_recall_ci"][0] <= test["bid_recall"] <= test["bid_recall_ci"][1]
    # The others were explored at 0.25: their explored bids (if any) weigh 4 each.
    explored = max(
        (entry for name, entry in report["partners"].items() if name != "dsp-02"),
        key=lambda entry: entry["validation_bids"],
    )
    assert explored["effective_validation_bids"] <= explored["validation_bids"]
    assert explored["exploration"]["explored"] >= 200 and explored["threshold"] > 0
    # dsp-02 was filtered and hardly ever explored: nothing says what it would have bid on the
    # calls not made, so it is sent everything, and the report says why.
    thin = report["partners"]["dsp-02"]
    assert thin["exploration"]["explored"] < 200 < thin["exploration"]["filtered"]
    assert thin["threshold_method"] == "unexplored" and thin["threshold"] == 0.0
    assert any("dsp-02" in w and "exploration" in w for w in report["warnings"])
    # The control group's requests called everyone: its figures need no weights.
    assert report["control"] is not None and "estimate" not in report["control"]
    assert report["control"]["calls"] < test["calls"]


def test_records_weigh_their_sample_rate_relative_to_the_window(tmp_path: Path) -> None:
    """A day logged at rate 0.25 beside days logged at 1: its rows stand for four each; logs
    all sampled alike keep weight 1."""
    full = tmp_path / "full"
    generate(full, requests=3000, partners=3, seed=5, days=4)
    mixed = tmp_path / "mixed"
    with AuctionLogWriter(mixed) as writer:
        for batch in iter_log_batches(full):
            day = batch.column("ts").cast("int64").to_numpy() // 86_400_000
            rates = np.where(day % 2 == 0, 0.25, 1.0)
            writer.write(batch.set_column(5, "sample_rate", pa.array(rates)))
    unweighted = DatasetConfig(negative_rate=1.0, recency_half_life_days=None)
    data = build_dataset(mixed, unweighted)
    assert data.train.weights is not None
    day = data.train.ts // 86_400_000
    np.testing.assert_allclose(data.train.weights, np.where(day % 2 == 0, 4.0, 1.0))
    uniform = tmp_path / "uniform"
    with AuctionLogWriter(uniform) as writer:
        for batch in iter_log_batches(full):
            writer.write(batch.set_column(5, "sample_rate", pa.array(np.full(len(batch), 0.1))))
    assert build_dataset(uniform, unweighted).train.weights is None

"""End to end on small synthetic logs: train, thresholds, report, plots, publish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bidfilter.artifact import open_store, verify
from bidfilter.features import FeatureSpec
from bidfilter.training.config import MIN_BIDS_TO_FILTER, DatasetConfig, ModelConfig, TrainConfig
from bidfilter.training.dataset import build_dataset, recency_weights
from bidfilter.training.model import BidModel
from bidfilter.training.pipeline import train
from bidfilter.training.thresholds import partner_thresholds

FAST = ModelConfig(trees=40, learning_rate=0.3, early_stopping_rounds=5)


@pytest.fixture(scope="module")
def published(synth_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store_dir = tmp_path_factory.mktemp("store")
    result = train(synth_logs, open_store(str(store_dir)), TrainConfig(model=FAST))
    return store_dir, result.version


def test_version_is_published_and_verifies(published: tuple[Path, str]) -> None:
    store_dir, version = published
    store = open_store(str(store_dir))
    assert store.latest() == version
    manifest = verify(store_dir / "versions" / version)
    assert set(manifest.files) == {
        "model.ubj",
        "report.json",
        "savings_vs_recall.png",
        "calibration.png",
        "drift.png",
        "signals.png",
    }
    assert manifest.model_file == "model.ubj"
    assert len(manifest.partners) == 6
    assert set(manifest.thresholds) == set(manifest.partners)
    assert manifest.data_start < manifest.data_end
    assert FeatureSpec.from_dict(manifest.feature_spec).partners == manifest.partners
    for plot in ("savings_vs_recall.png", "calibration.png", "drift.png", "signals.png"):
        assert (store_dir / "versions" / version / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_has_the_promised_metrics(published: tuple[Path, str]) -> None:
    store_dir, version = published
    report = json.loads((store_dir / "versions" / version / "report.json").read_text())
    test = report["test"]
    for key in ("auc", "logloss", "bid_recall", "call_savings", "oracle_call_savings"):
        assert isinstance(test[key], float), key
    assert 0.5 < test["auc"] <= 1.0
    assert 0.0 < test["call_savings"] < 1.0
    # Perfect knowledge can only save more at the same recall.
    assert test["oracle_call_savings"] >= test["call_savings"] - 0.02
    assert set(report["partners"]) == {f"dsp-{i:02d}" for i in range(1, 7)}
    names = set(FeatureSpec.from_dict(verify(store_dir / "versions" / version).feature_spec).names)
    for partner in report["partners"].values():
        top = partner["top_signals"]
        assert top and {signal["feature"] for signal in top} <= names - {"partner"}
        weights = [signal["mean_abs_contribution"] for signal in top]
        assert weights == sorted(weights, reverse=True) and weights[0] > 0
    assert set(report["drift"]["partners"]) == set(report["partners"])
    for partner in report["partners"].values():
        assert 0.0 <= partner["threshold"] <= 1.0
        # The default smooths every partner's threshold; few bids also make it sparse, warned.
        expected = "unfiltered" if partner["validation_bids"] < MIN_BIDS_TO_FILTER else "smoothed"
        assert partner["threshold_method"] == expected
        assert partner["sparse"] == (partner["validation_bids"] < 200)
        assert "bid_recall" in partner["test"]
        assert "oracle_call_savings" in partner["test"]


def test_time_split_puts_latest_traffic_in_test(synth_logs: Path) -> None:
    data = build_dataset(synth_logs, DatasetConfig())
    assert data.data_start < data.valid_start < data.test_start < data.data_end
    hour = data.spec.names.index("hour_utc")
    assert len(data.test) > 0 and len(data.valid) > 0
    # Negatives are subsampled in training only, and weighted back up.
    assert data.train.weights is not None
    assert data.valid.weights is None and data.test.weights is None
    config = DatasetConfig()
    assert config.recency_half_life_days is not None
    valid_start_ms = data.valid_start.timestamp() * 1000
    recency = recency_weights(data.train.ts, int(valid_start_ms), config.recency_half_life_days)
    assert 0 < recency.min() < recency.max() <= 1  # older rows weigh less
    sampling = np.round(data.train.weights / recency, 3)
    assert set(np.unique(sampling)) == {1.0, 1.0 / config.negative_rate}
    assert (sampling[data.train.bids] == 1.0).all()
    assert np.isfinite(data.test.features[:, hour]).all()


def test_thresholds_reach_target_recall_on_validation(synth_logs: Path) -> None:
    data = build_dataset(synth_logs, DatasetConfig())
    model = BidModel.fit(data.train, data.valid, data.spec, FAST)
    scores = model.predict(data.valid.features)
    thresholds = partner_thresholds(
        scores, data.valid.bids, data.valid.partners, data.spec.partners, 0.95
    )
    for code, partner in enumerate(data.spec.partners):
        mine = (data.valid.partners == code) & data.valid.bids
        if mine.any():
            assert (scores[mine] >= thresholds[partner]).mean() >= 0.95


def test_model_round_trips_through_ubj(synth_logs: Path, tmp_path: Path) -> None:
    data = build_dataset(synth_logs, DatasetConfig())
    model = BidModel.fit(data.train, data.valid, data.spec, FAST)
    path = model.save(tmp_path)
    loaded = BidModel.load(path, data.spec)
    np.testing.assert_array_equal(
        loaded.predict(data.test.features[:500]), model.predict(data.test.features[:500])
    )


def test_publish_to_s3(synth_logs: Path, s3_server: str, s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/models", endpoint_url=s3_server)
    result = train(synth_logs, store, TrainConfig(model=FAST))
    assert store.latest() == result.version
    assert json.loads(store.read_text(result.version))["test"]["bid_recall"] > 0.8

"""``bidfilter train``: logs -> dataset -> model -> thresholds -> report -> published version.

The steps after fitting (thresholds, report, plots, publish) are shared with the Spark engine
(:mod:`bidfilter.training.spark`): both hand them a :class:`DatasetSummary` and the scored
validation and test rows, so the two engines publish the same kind of version.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bidfilter.artifact import ModelStore, new_version_id, write_manifest
from bidfilter.features import FEATURE_SPEC_VERSION, FeatureSpec
from bidfilter.training.config import MIN_BIDS_TO_FILTER, TrainConfig
from bidfilter.training.dataset import TrainingData, build_dataset, count_rows
from bidfilter.training.evaluate import calibration_table, drift, evaluate
from bidfilter.training.model import MODEL_FILE, BidModel
from bidfilter.training.plots import (
    CALIBRATION_PLOT,
    DRIFT_PLOT,
    SAVINGS_PLOT,
    SIGNALS_PLOT,
    plot_calibration,
    plot_drift,
    plot_savings_vs_recall,
    plot_signals,
)
from bidfilter.training.thresholds import partner_thresholds

log = logging.getLogger(__name__)
REPORT_FILE = "report.json"


@dataclass(frozen=True, slots=True)
class TrainResult:
    version: str
    store_uri: str
    report: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        test = self.report["test"]
        return {
            "version": self.version,
            "store": self.store_uri,
            "seconds": round(self.seconds, 1),
            "trees": self.report["model"]["trees"],
            "test": {
                key: test.get(key)
                for key in ("auc", "logloss", "bid_recall", "call_savings", "oracle_call_savings")
            },
        }


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """What the report and the manifest say about the data a model was trained on."""

    spec: FeatureSpec
    data_start: dt.datetime
    data_end: dt.datetime
    valid_start: dt.datetime
    test_start: dt.datetime
    requests: int
    skipped_requests: int
    skipped_fields: dict[str, int]
    rows: dict[str, int]  # "train" (after negative sampling), "valid", "test"
    unknown_currencies: dict[str, int] = field(default_factory=dict)  # requests per currency

    @classmethod
    def of(cls, data: TrainingData) -> DatasetSummary:
        return cls(
            spec=data.spec,
            data_start=data.data_start,
            data_end=data.data_end,
            valid_start=data.valid_start,
            test_start=data.test_start,
            requests=data.requests,
            skipped_requests=data.skipped_requests,
            skipped_fields=data.skipped_fields,
            rows={"train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
            unknown_currencies=data.unknown_currencies,
        )

    def describe(self, negative_rate: float) -> str:
        return (
            f"{self.requests} requests, {len(self.spec.partners)} partners;"
            f" rows: train {self.rows['train']}"
            f" (negatives sampled at {negative_rate}), valid {self.rows['valid']},"
            f" test {self.rows['test']}"
        )


@dataclass(frozen=True, slots=True)
class ScoredRows:
    """A validation or test split scored by the trained model: all that thresholds, the report
    and the plots read (the feature matrix is no longer needed)."""

    scores: np.ndarray  # (n,) float64 bid probabilities
    bids: np.ndarray  # (n,) bool
    partners: np.ndarray  # (n,) int32 partner codes
    oracle_p: np.ndarray  # (n,) float32, NaN where the logs carry no oracle
    ts: np.ndarray | None = None  # (n,) int64 epoch ms; None where the engine does not keep it

    @property
    def oracle(self) -> np.ndarray | None:
        """The true bid probabilities if every row has one (synthetic logs), else None."""
        if len(self.oracle_p) > 0 and not np.isnan(self.oracle_p).any():
            return self.oracle_p
        return None


def stage_reporter(on_stage: Callable[[str], None] | None) -> Callable[[str], None]:
    """Logs each stage of a training run, and passes it to ``on_stage`` (the demo's display)."""

    def stage(message: str) -> None:
        log.info(message)
        if on_stage is not None:
            on_stage(message)

    return stage


def _bar(total: int, desc: str, enabled: bool) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit_scale=True, disable=not enabled, leave=False)


def _report(
    data: DatasetSummary,
    model: BidModel,
    config: TrainConfig,
    thresholds: dict[str, float],
    valid: ScoredRows,
    test: ScoredRows,
    signals: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    spec = data.spec
    oracle = test.oracle
    metrics = evaluate(test.scores, test.bids, test.partners, spec.partners, thresholds, oracle)
    validation_bids = np.bincount(valid.partners[valid.bids], minlength=len(spec.partners))
    partners = {
        partner: {
            "threshold": thresholds[partner],
            "target_recall": config.partner_recall.get(partner, config.target_recall),
            "validation_bids": int(validation_bids[code]),
            "threshold_method": _threshold_method(int(validation_bids[code]), config),
            "sparse": int(validation_bids[code]) < config.min_validation_bids,
            "test": metrics["partners"][partner],
            "top_signals": signals.get(partner, []),
        }
        for code, partner in enumerate(spec.partners)
    }
    warnings = [
        f"{partner}: {entry['validation_bids']} validation bids (< {config.min_validation_bids}):"
        + (
            " not filtered"
            if entry["threshold_method"] == "unfiltered"
            else " smoothed threshold, less certain recall"
        )
        for partner, entry in partners.items()
        if entry["sparse"]
    ]
    drifts = (
        drift(test.scores, test.bids, test.partners, spec.partners, test.ts)
        if test.ts is not None
        else None
    )
    if drifts is not None:
        warnings += [
            f"{partner}: behaviour on the latest day departs from the model"
            f" (AUC {_figure(entry['auc_latest'])} vs {_figure(entry['auc'])}, calibration"
            f" {_figure(entry['calibration_latest'])} vs {_figure(entry['calibration'])})"
            for partner, entry in drifts["partners"].items()
            if entry["drifted"]
        ]
    return {
        "target_recall": config.target_recall,
        "test": metrics["overall"],
        "partners": partners,
        "warnings": warnings,
        "drift": drifts,
        "calibration": calibration_table(test.scores, test.bids),
        "data": {
            "start": data.data_start.isoformat(),
            "end": data.data_end.isoformat(),
            "valid_start": data.valid_start.isoformat(),
            "test_start": data.test_start.isoformat(),
            "requests": data.requests,
            "skipped_requests": data.skipped_requests,
            "skipped_by_field": data.skipped_fields,
            "unknown_currencies": data.unknown_currencies,
            "rows": dict(data.rows),
            "negative_rate": config.dataset.negative_rate,
            "oracle_available": oracle is not None,
        },
        "model": {**asdict(config.model), "trees": model.trees},
    }


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _threshold_method(validation_bids: int, config: TrainConfig) -> str:
    if validation_bids < MIN_BIDS_TO_FILTER:
        return "unfiltered"
    if config.smoothed_thresholds or validation_bids < config.min_validation_bids:
        return "smoothed"
    return "quantile"


def train(
    logs: str | os.PathLike[str],
    store: ModelStore,
    config: TrainConfig | None = None,
    *,
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train on ``logs``, choose thresholds, evaluate, and publish a new version to ``store``."""
    config = config or TrainConfig()
    started = time.monotonic()
    stage = stage_reporter(on_stage)

    stage(f"reading logs from {logs}")
    with _bar(count_rows(logs), "features", progress) as bar:
        data = build_dataset(logs, config.dataset, progress=bar.update)
    summary = DatasetSummary.of(data)
    stage(summary.describe(config.dataset.negative_rate))
    boosters = len(data.spec.partners) if config.model.per_partner else 1
    with _bar(config.model.trees * boosters, "trees", progress) as bar:
        model = BidModel.fit(data.train, data.valid, data.spec, config.model, progress=bar.update)
    stage(f"trained {model.trees} trees")

    valid, test = (
        ScoredRows(model.predict_rows(rows), rows.bids, rows.partners, rows.oracle_p, rows.ts)
        for rows in (data.valid, data.test)
    )
    signals = model.partner_signals(data.valid)
    return publish_trained(model, summary, valid, test, config, store, stage, started, signals)


def publish_trained(
    model: BidModel,
    data: DatasetSummary,
    valid: ScoredRows,
    test: ScoredRows,
    config: TrainConfig,
    store: ModelStore,
    stage: Callable[[str], None],
    started: float,
    signals: dict[str, list[dict[str, Any]]],
) -> TrainResult:
    """Choose each partner's threshold on ``valid``, evaluate on ``test``, and publish a version
    (model, report, plots, manifest) to ``store``: the steps after fitting, for either engine.

    ``started`` is the ``time.monotonic()`` at which the run began.
    """
    thresholds = partner_thresholds(
        valid.scores,
        valid.bids,
        valid.partners,
        data.spec.partners,
        config.target_recall,
        config.partner_recall,
        min_bids=config.min_validation_bids,
        smoothed=config.smoothed_thresholds,
    )
    report = _report(data, model, config, thresholds, valid, test, signals)
    metrics = report["test"]
    stage(
        f"test: auc {metrics['auc']:.4f}, bid recall {metrics['bid_recall']:.4f},"
        f" call savings {metrics['call_savings']:.4f}"
        + (
            f" (oracle {metrics['oracle_call_savings']:.4f})"
            if "oracle_call_savings" in metrics
            else ""
        )
    )

    version = new_version_id()
    with tempfile.TemporaryDirectory(prefix="bidfilter-train-") as tmp:
        folder = Path(tmp) / version
        folder.mkdir()
        model.save(folder)
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        plot_savings_vs_recall(
            folder / SAVINGS_PLOT,
            test.scores,
            test.bids,
            test.partners,
            data.spec.partners,
            thresholds,
            test.oracle,
        )
        plot_calibration(folder / CALIBRATION_PLOT, test.scores, test.bids)
        plot_signals(folder / SIGNALS_PLOT, signals)
        if report["drift"] is not None:
            plot_drift(folder / DRIFT_PLOT, report["drift"])
        write_manifest(
            folder,
            version=version,
            data_start=data.data_start,
            data_end=data.data_end,
            feature_spec=data.spec.to_dict(),
            feature_spec_version=FEATURE_SPEC_VERSION,
            model_file=MODEL_FILE,
            partners=data.spec.partners,
            thresholds=thresholds,
            metrics={"test": metrics},
        )
        stage(f"publishing version {version} to {store.uri}")
        store.publish(folder)
    return TrainResult(
        version=version, store_uri=store.uri, report=report, seconds=time.monotonic() - started
    )

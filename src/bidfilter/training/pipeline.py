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
from bidfilter.training.dataset import (
    ExplorationCount,
    ExtractedCache,
    SplitRows,
    TrainingData,
    build_dataset,
    count_rows,
)
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
from bidfilter.training.thresholds import effective_count, partner_thresholds

log = logging.getLogger(__name__)
REPORT_FILE = "report.json"


# Decides, before a version is published, whether LATEST moves to it: called with the complete
# version directory; returns (promote, a record of why, kept in the report as "promotion").
PromotionGate = Callable[[Path], tuple[bool, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class TrainResult:
    version: str
    store_uri: str
    report: dict[str, Any]
    seconds: float
    promoted: bool = True  # LATEST points at the version (a gate may have held it back)

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
    exploration: dict[str, ExplorationCount] = field(default_factory=dict)

    def unexplored(self, min_explored: int) -> set[str]:
        """Partners the logs filtered but explored fewer than ``min_explored`` times: what they
        would have done with the calls not made cannot be estimated."""
        return {p for p, count in self.exploration.items() if count.explored < min_explored}

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
            exploration=data.exploration,
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
    # (n,) inverse propensities when the logs were shaped by a filter; None: all rows count 1.
    weights: np.ndarray | None = None
    control: np.ndarray | None = None  # (n,) bool: the request was in the control group

    @classmethod
    def of(cls, scores: np.ndarray, rows: SplitRows) -> ScoredRows:
        return cls(
            scores, rows.bids, rows.partners, rows.oracle_p, rows.ts, rows.weights, rows.control
        )

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
    unexplored: set[str],
) -> dict[str, Any]:
    spec = data.spec
    oracle = test.oracle
    metrics = evaluate(
        test.scores, test.bids, test.partners, spec.partners, thresholds, oracle, test.weights
    )
    validation_bids = np.bincount(valid.partners[valid.bids], minlength=len(spec.partners))
    effective_bids = [
        effective_count(
            None if valid.weights is None else valid.weights[mine], int(np.count_nonzero(mine))
        )
        for mine in (valid.bids & (valid.partners == code) for code in range(len(spec.partners)))
    ]
    partners = {
        partner: {
            "threshold": thresholds[partner],
            "target_recall": config.partner_recall.get(partner, config.target_recall),
            "validation_bids": int(validation_bids[code]),
            "effective_validation_bids": round(effective_bids[code], 1),
            "threshold_method": "unexplored"
            if partner in unexplored
            else _threshold_method(effective_bids[code], config),
            "exploration": asdict(data.exploration[partner])
            if partner in data.exploration
            else None,
            "sparse": effective_bids[code] < config.min_validation_bids,
            "test": metrics["partners"][partner],
            "top_signals": signals.get(partner, []),
        }
        for code, partner in enumerate(spec.partners)
    }
    warnings = [
        f"{partner}: filtered in the logs but explored only"
        f" {data.exploration[partner].explored} times (< {config.min_explored_calls}): too little"
        " exploration data to estimate it, not filtered"
        for partner in sorted(unexplored & set(partners))
    ]
    warnings += [
        f"{partner}: {entry['validation_bids']} validation bids"
        + (
            f" (worth {entry['effective_validation_bids']:g} once weighted by propensity)"
            if valid.weights is not None
            else ""
        )
        + f" (< {config.min_validation_bids}):"
        + (
            " not filtered"
            + (" (too little exploration data to estimate it)" if valid.weights is not None else "")
            if entry["threshold_method"] == "unfiltered"
            else " smoothed threshold, less certain recall"
        )
        for partner, entry in partners.items()
        if entry["sparse"] and partner not in unexplored
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
    control = None
    if test.control is not None and test.control.any():
        # Every candidate of a control request was called: an unbiased check, weights aside.
        mine = test.control
        control = evaluate(
            test.scores[mine], test.bids[mine], test.partners[mine], spec.partners, thresholds
        )["overall"]
    return {
        "target_recall": config.target_recall,
        "test": metrics["overall"],
        "control": control,
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


def _threshold_method(validation_bids: float, config: TrainConfig) -> str:
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
    gate: PromotionGate | None = None,
    extracted: ExtractedCache | None = None,
) -> TrainResult:
    """Train on ``logs``, choose thresholds, evaluate, and publish a new version to ``store``
    (pointing LATEST at it unless ``gate`` says otherwise; ``extracted``: see
    :data:`~bidfilter.training.dataset.ExtractedCache`)."""
    config = config or TrainConfig()
    started = time.monotonic()
    stage = stage_reporter(on_stage)

    stage(f"reading logs from {logs}")
    with _bar(count_rows(logs), "features", progress) as bar:
        data = build_dataset(logs, config.dataset, progress=bar.update, extracted=extracted)
    summary = DatasetSummary.of(data)
    stage(summary.describe(config.dataset.negative_rate))
    boosters = len(data.spec.partners) if config.model.per_partner else 1
    with _bar(config.model.trees * boosters, "trees", progress) as bar:
        model = BidModel.fit(data.train, data.valid, data.spec, config.model, progress=bar.update)
    stage(f"trained {model.trees} trees")

    valid, test = (
        ScoredRows.of(model.predict_rows(rows), rows) for rows in (data.valid, data.test)
    )
    signals = model.partner_signals(data.valid)
    return publish_trained(
        model, summary, valid, test, config, store, stage, started, signals, gate
    )


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
    gate: PromotionGate | None = None,
) -> TrainResult:
    """Choose each partner's threshold on ``valid``, evaluate on ``test``, and publish a version
    (model, report, plots, manifest) to ``store``: the steps after fitting, for either engine.
    With ``gate``, LATEST moves to it only if the gate says so (the version is published
    either way, its report saying why).

    ``started`` is the ``time.monotonic()`` at which the run began.
    """
    unexplored = data.unexplored(config.min_explored_calls)
    thresholds = partner_thresholds(
        valid.scores,
        valid.bids,
        valid.partners,
        data.spec.partners,
        config.target_recall,
        config.partner_recall,
        min_bids=config.min_validation_bids,
        smoothed=config.smoothed_thresholds,
        weights=valid.weights,
        unfiltered=unexplored,
        confidence_z=config.recall_confidence_z,
    )
    report = _report(data, model, config, thresholds, valid, test, signals, unexplored)
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
        if config.plots:
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

        def manifest() -> None:
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

        manifest()
        promote = True
        if gate is not None:
            promote, report["promotion"] = gate(folder)
            (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
            manifest()  # the report changed: its checksum with it
        stage(f"publishing version {version} to {store.uri}" + ("" if promote else " (not LATEST)"))
        store.publish(folder, promote=promote)
    return TrainResult(
        version=version,
        store_uri=store.uri,
        report=report,
        seconds=time.monotonic() - started,
        promoted=promote,
    )

"""``bidfilter train``: logs -> dataset -> model -> thresholds -> report -> published version."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bidfilter.artifact import ModelStore, new_version_id, write_manifest
from bidfilter.features import FEATURE_SPEC_VERSION
from bidfilter.training.config import TrainConfig
from bidfilter.training.dataset import TrainingData, build_dataset, count_rows
from bidfilter.training.evaluate import calibration_table, evaluate
from bidfilter.training.model import MODEL_FILE, BidModel
from bidfilter.training.plots import (
    CALIBRATION_PLOT,
    SAVINGS_PLOT,
    plot_calibration,
    plot_savings_vs_recall,
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


def _bar(total: int, desc: str, enabled: bool) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit_scale=True, disable=not enabled, leave=False)


def _report(
    data: TrainingData,
    model: BidModel,
    config: TrainConfig,
    thresholds: dict[str, float],
    test_scores: Any,
) -> dict[str, Any]:
    spec = data.spec
    test = data.test
    oracle = test.oracle_p if test.has_oracle else None
    metrics = evaluate(test_scores, test.bids, test.partners, spec.partners, thresholds, oracle)
    partners = {
        partner: {
            "threshold": thresholds[partner],
            "target_recall": config.partner_recall.get(partner, config.target_recall),
            "test": metrics["partners"][partner],
        }
        for partner in spec.partners
    }
    return {
        "target_recall": config.target_recall,
        "test": metrics["overall"],
        "partners": partners,
        "calibration": calibration_table(test_scores, test.bids),
        "data": {
            "start": data.data_start.isoformat(),
            "end": data.data_end.isoformat(),
            "valid_start": data.valid_start.isoformat(),
            "test_start": data.test_start.isoformat(),
            "requests": data.requests,
            "skipped_requests": data.skipped_requests,
            "skipped_by_field": data.skipped_fields,
            "rows": {"train": len(data.train), "valid": len(data.valid), "test": len(test)},
            "negative_rate": config.dataset.negative_rate,
            "oracle_available": oracle is not None,
        },
        "model": {**asdict(config.model), "trees": model.trees},
    }


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

    def stage(message: str) -> None:
        log.info(message)
        if on_stage is not None:
            on_stage(message)

    stage(f"reading logs from {logs}")
    with _bar(count_rows(logs), "features", progress) as bar:
        data = build_dataset(logs, config.dataset, progress=bar.update)
    stage(
        f"{data.requests} requests, {len(data.spec.partners)} partners;"
        f" rows: train {len(data.train)}"
        f" (negatives sampled at {config.dataset.negative_rate}), valid {len(data.valid)},"
        f" test {len(data.test)}"
    )
    with _bar(config.model.trees, "trees", progress) as bar:
        model = BidModel.fit(data.train, data.valid, data.spec, config.model, progress=bar.update)
    stage(f"trained {model.trees} trees")

    valid_scores = model.predict(data.valid.features)
    thresholds = partner_thresholds(
        valid_scores,
        data.valid.bids,
        data.valid.partners,
        data.spec.partners,
        config.target_recall,
        config.partner_recall,
    )
    test_scores = model.predict(data.test.features)
    report = _report(data, model, config, thresholds, test_scores)
    test = report["test"]
    stage(
        f"test: auc {test['auc']:.4f}, bid recall {test['bid_recall']:.4f},"
        f" call savings {test['call_savings']:.4f}"
        + (f" (oracle {test['oracle_call_savings']:.4f})" if "oracle_call_savings" in test else "")
    )

    version = new_version_id()
    with tempfile.TemporaryDirectory(prefix="bidfilter-train-") as tmp:
        folder = Path(tmp) / version
        folder.mkdir()
        model.save(folder)
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        oracle = data.test.oracle_p if data.test.has_oracle else None
        plot_savings_vs_recall(
            folder / SAVINGS_PLOT,
            test_scores,
            data.test.bids,
            data.test.partners,
            data.spec.partners,
            thresholds,
            oracle,
        )
        plot_calibration(folder / CALIBRATION_PLOT, test_scores, data.test.bids)
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
            metrics={"test": test},
        )
        stage(f"publishing version {version} to {store.uri}")
        store.publish(folder)
    return TrainResult(
        version=version, store_uri=store.uri, report=report, seconds=time.monotonic() - started
    )

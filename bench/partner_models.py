"""One shared model, one booster per partner, or shared with partner affinities: which filters best?

    python bench/partner_models.py LOGS [--json] [--variants shared,affinity,per_partner]

Builds the dataset from ``LOGS`` (a folder of bidfilter auction logs, e.g. the ``logs`` folder a
``bench/quality.py --workdir`` run keeps) once per feature set, fits each variant with
``train``'s defaults (``ModelConfig()``, early stopping, thresholds at recall 0.99 on the
validation period with the smoothed rule for sparse partners) and evaluates on the test period
exactly as ``train`` does. Variants:

* ``shared``: one booster for all partners, without the partner-affinity columns.
* ``affinity``: one booster with them (``train``'s default).
* ``per_partner``: one booster per partner on its own rows (with the affinity columns),
  early-stopped on its own validation loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from bidfilter.training.config import DatasetConfig, ModelConfig, TrainConfig
from bidfilter.training.dataset import TrainingData, build_dataset
from bidfilter.training.evaluate import evaluate
from bidfilter.training.model import BidModel
from bidfilter.training.thresholds import partner_thresholds

VARIANTS = ("shared", "affinity", "per_partner")


def _scores_per_partner(data: TrainingData, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    valid_scores = np.zeros(len(data.valid))
    test_scores = np.zeros(len(data.test))
    for code in range(len(data.spec.partners)):
        train = data.train.take(np.flatnonzero(data.train.partners == code))
        valid_rows = np.flatnonzero(data.valid.partners == code)
        test_rows = np.flatnonzero(data.test.partners == code)
        if len(train) == 0 or len(valid_rows) == 0:
            continue
        valid = data.valid.take(valid_rows)
        model = BidModel.fit(train, valid, data.spec, config)
        valid_scores[valid_rows] = model.predict_rows(valid)
        test_scores[test_rows] = model.predict_rows(data.test.take(test_rows))
    return valid_scores, test_scores


def _figures(
    data: TrainingData, valid_scores: np.ndarray, test_scores: np.ndarray, config: TrainConfig
) -> dict[str, Any]:
    thresholds = partner_thresholds(
        valid_scores,
        data.valid.bids,
        data.valid.partners,
        data.spec.partners,
        config.target_recall,
        min_bids=config.min_validation_bids,
        smoothed=config.smoothed_thresholds,
    )
    metrics = evaluate(
        test_scores,
        data.test.bids,
        data.test.partners,
        data.spec.partners,
        thresholds,
        data.test.oracle_p,
    )
    overall = metrics["overall"]
    return {
        "bid_recall": overall["bid_recall"],
        "call_savings": overall["call_savings"],
        "oracle_call_savings": overall.get("oracle_call_savings"),
        "gap_pp": 100 * (overall.get("oracle_call_savings", np.nan) - overall["call_savings"]),
        "auc": overall.get("auc"),
    }


def run(logs: str, variants: list[str]) -> dict[str, Any]:
    config = TrainConfig()
    results: dict[str, Any] = {}
    datasets: dict[bool, TrainingData] = {}
    for variant in variants:
        with_affinity = variant != "shared"
        if with_affinity not in datasets:
            datasets[with_affinity] = build_dataset(
                logs, replace(DatasetConfig(), partner_affinity=with_affinity)
            )
        data = datasets[with_affinity]
        started = time.monotonic()
        if variant == "per_partner":
            valid_scores, test_scores = _scores_per_partner(data, config.model)
        else:
            model = BidModel.fit(data.train, data.valid, data.spec, config.model)
            valid_scores, test_scores = (
                model.predict_rows(data.valid),
                model.predict_rows(data.test),
            )
        results[variant] = {
            **_figures(data, valid_scores, test_scores, config),
            "fit_seconds": round(time.monotonic() - started, 1),
        }
        print(f"{variant}: {results[variant]}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", help="a folder of bidfilter auction logs")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    results = run(args.logs, variants)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("| variant | bid recall | call savings | oracle | gap | fit seconds |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, figures in results.items():
            print(
                f"| {name} | {figures['bid_recall']:.4f} | {100 * figures['call_savings']:.1f}% |"
                f" {100 * (figures['oracle_call_savings'] or 0):.1f}% |"
                f" {figures['gap_pp']:.1f} pp | {figures['fit_seconds']} |"
            )


if __name__ == "__main__":
    main()

"""Training settings: plain dataclasses, importable without loading XGBoost (the CLI's defaults)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Fewer validation bids than this and a partner is not filtered at all: no estimate of a low
# quantile from a handful of scores is worth a lost bid.
MIN_BIDS_TO_FILTER = 10


@dataclass(frozen=True, slots=True)
class DatasetConfig:
    """How logs become rows. Fractions are of requests, taken from the end of the time range."""

    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    negative_rate: float = 0.2
    vocabulary_size: int = 5000
    vocabulary_min_count: int = 10
    # Training rows weigh 0.5 ** (age / half-life), age counted back from the validation period:
    # partners change what they buy, and the latest days say most about the next ones. None: all
    # days alike.
    recency_half_life_days: float | None = 14.0
    # US dollars per unit of each currency (features/data/usd_rates.json layout); None: the
    # table bidfilter ships. Saved in the feature spec: serving converts as training did.
    currency_rates: Path | None = None
    # Per partner x publisher, domain/bundle and tag: smoothed bid rates and value counts, out of
    # fold for training rows (features/affinity.py). The long tail's signal.
    partner_affinity: bool = True
    # Logs a filter shaped hold only what it sent (plus exploration): a row weighs
    # 1 / max(propensity, min_propensity), so that rare explored calls stand for the calls not
    # made without one of them outweighing a hundred others (the clip bounds the variance, at
    # the cost of a bias where propensities fall below it). Logs with every propensity 1 (every
    # partner called) are not weighted at all.
    min_propensity: float = 0.01
    seed: int = 0
    batch_size: int = 32_768

    def __post_init__(self) -> None:
        if not 0 < self.valid_fraction < 1 or not 0 < self.test_fraction < 1:
            raise ValueError("valid_fraction and test_fraction must be between 0 and 1")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must leave rows to train on")
        if not 0 < self.negative_rate <= 1:
            raise ValueError("negative_rate must be in (0, 1]")
        if not 0 < self.min_propensity <= 1:
            raise ValueError("min_propensity must be in (0, 1]")
        if self.recency_half_life_days is not None and not self.recency_half_life_days > 0:
            raise ValueError("recency_half_life_days must be positive (or None: no weighting)")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Tree-booster settings; the defaults are what ``bidfilter train`` uses."""

    trees: int = 300
    max_depth: int = 7
    learning_rate: float = 0.25
    early_stopping_rounds: int = 20
    # Regularisation matters here: partition splits over thousands of publishers and domains
    # overfit fast (measured in docs/benchmarks.md: without it, early stopping hits at ~40 trees).
    min_child_weight: float = 5.0
    reg_lambda: float = 5.0
    max_bin: int = 64
    # Row and column subsampling per tree: each tree is cheaper, and the ensemble overfits less.
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    # Early stopping watches this many validation rows at most (a random, fixed subset): scoring
    # all of them after every tree costs more than the tree itself on a million requests.
    early_stopping_rows: int = 500_000
    # Early stopping watches the mean of the partners' validation log-losses, not the pooled
    # one: pooled, the busiest partners decide when to stop and the others get too few trees.
    early_stopping_per_partner: bool = True
    # One booster per partner, each early-stopped on its own validation rows, merged into one
    # model (training/partner_boosters.py); False: one booster shared by every partner. Measured
    # in docs/benchmarks.md: per partner filters better on both synthetic worlds.
    per_partner: bool = True
    threads: int | None = None
    seed: int = 0

    def params(self) -> dict[str, object]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "max_bin": self.max_bin,
            "max_cat_to_onehot": 1,
            "nthread": self.threads or os.cpu_count() or 1,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class TrainConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    target_recall: float = 0.99
    partner_recall: Mapping[str, float] = field(default_factory=dict)
    # Below this many validation bids a partner is reported as sparse, and its threshold is a
    # smoothed quantile of its bids' scores even with smoothed_thresholds off: the plain order
    # statistic hinges on the single lowest bid.
    min_validation_bids: int = 200
    # Every partner's threshold is the Harrell-Davis estimate of the quantile, not the one order
    # statistic: on the same scores it saved 1.6 to 1.8 points more calls at the same test recall
    # (docs/benchmarks.md, "Thresholds"), because the order statistic overfits the validation
    # period's few lowest-scored bids.
    smoothed_thresholds: bool = True
    # A partner the logs filtered (entries with propensity under 1) needs this many explored
    # calls before it is filtered again: with fewer, its bids among the calls not made cannot be
    # estimated, and it is sent everything (the report says so).
    min_explored_calls: int = 200
    # Each partner's threshold keeps its target recall on a lower confidence bound, this many
    # standard errors under the (weighted) estimate, the error from the partner's effective
    # (Kish) count of validation bids (thresholds.confident_target): thin exploration data,
    # a more cautious threshold. 0: on the estimate itself.
    recall_confidence_z: float = 0.0
    # The PNGs beside report.json; a simulation that retrains daily goes without them.
    plots: bool = True

    def __post_init__(self) -> None:
        if self.recall_confidence_z < 0:
            raise ValueError(f"recall_confidence_z must be >= 0, not {self.recall_confidence_z}")
        for partner, recall in {"*": self.target_recall, **self.partner_recall}.items():
            if not 0 < recall <= 1:
                raise ValueError(f"target recall for {partner} must be in (0, 1], not {recall}")

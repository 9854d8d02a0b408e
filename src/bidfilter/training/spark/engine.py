"""``bidfilter train --engine spark``: the local engine's training run, on Apache Spark.

Rows come from :mod:`bidfilter.training.spark.dataset` (the same features, split and sampling
rules); XGBoost's Spark estimator fits the trees with the local engine's hyperparameters; the
validation and test rows are scored on the cluster by :meth:`BidModel.predict`, and only
(score, bid, partner, oracle, time, weight, control flag) come back to the driver, where the
local engine's own steps choose thresholds, write the report and publish
(:func:`~bidfilter.training.pipeline.publish_trained`).
A version trained here is indistinguishable in form from one trained locally.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pyarrow.compute as pc
from pyspark import SparkConf
from pyspark.sql import SparkSession
from pyspark.sql import functions as sf
from xgboost.spark import SparkXGBClassifier

from bidfilter.artifact import ModelStore
from bidfilter.training.config import ModelConfig, TrainConfig
from bidfilter.training.dataset import SplitRows
from bidfilter.training.model import BidModel
from bidfilter.training.pipeline import ScoredRows, TrainResult, publish_trained, stage_reporter
from bidfilter.training.spark.dataset import SparkDataset, build_spark_dataset, uniform_draw
from bidfilter.training.spark.workers import SCORES_SCHEMA, bid_probabilities

DEFAULT_MASTER = "local[2]"


def spark_session(master: str | None = None) -> SparkSession:
    """The session ``bidfilter train --engine spark`` runs in.

    ``master`` None keeps the master that ``spark-submit`` (or ``spark-defaults.conf``) set, and
    falls back to ``local[2]`` when there is none.
    """
    if master is None and not SparkConf().contains("spark.master"):
        master = DEFAULT_MASTER
    builder = SparkSession.builder.appName("bidfilter-train")
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            # Local Python workers must be this interpreter, the one bidfilter is installed in;
            # Spark would otherwise start whichever `python3` comes first on PATH.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return builder.getOrCreate()


def _task_threads(spark: SparkSession) -> int:
    return int(spark.sparkContext.getConf().get("spark.task.cpus", "1") or "1")


def default_workers(spark: SparkSession) -> int:
    """One XGBoost worker per task slot the cluster has now (cores / ``spark.task.cpus``)."""
    return max(1, int(spark.sparkContext.defaultParallelism) // _task_threads(spark))


def fit_on_spark(data: SparkDataset, config: ModelConfig, num_workers: int) -> BidModel:
    """Boost on ``num_workers`` Spark tasks, stopping early on validation log-loss as locally."""
    spec = data.summary.spec
    watched = sf.col("split") == 1
    valid_rows = data.summary.rows["valid"]
    if valid_rows > config.early_stopping_rows:
        # As locally, early stopping watches a fixed random subset of the validation rows.
        draw = uniform_draw(sf.lit(config.seed), sf.lit("early-stopping"), "request_id", "partner")
        watched = watched & (draw < config.early_stopping_rows / valid_rows)
    fit_rows = data.rows.where((sf.col("split") == 0) | watched).select(
        "features",
        sf.col("bid").cast("double").alias("label"),
        "weight",
        (sf.col("split") == 1).alias("watched"),
    )
    # The estimator refuses `nthread` (a worker's threads are spark.task.cpus) and `objective`
    # (a classifier's is binary:logistic, as the local engine's).
    params: dict[str, Any] = {
        name: value
        for name, value in config.params().items()
        if name not in ("nthread", "objective")
    }
    estimator = SparkXGBClassifier(
        features_col="features",
        label_col="label",
        weight_col="weight",
        validation_indicator_col="watched",
        num_workers=num_workers,
        n_estimators=config.trees,
        early_stopping_rounds=config.early_stopping_rounds,
        feature_names=spec.names,
        feature_types=spec.feature_types,
        # Spread training and watched rows evenly over the workers, whatever the input layout.
        force_repartition=True,
        verbose=False,  # as locally: no log line per tree
        **params,
    )
    return BidModel.best_trees(estimator.fit(fit_rows).get_booster(), spec)


def score_on_spark(data: SparkDataset, model: BidModel) -> tuple[ScoredRows, ScoredRows]:
    """The validation and test rows scored on the cluster, brought back without their features."""
    spark = data.rows.sparkSession
    scored = (
        data.rows.where(sf.col("split") != 0)
        .select(
            "split", "ts_ms", "partner_code", "bid", "oracle_p", "weight", "control", "features"
        )
        .mapInArrow(
            partial(
                bid_probabilities,
                model_bytes=bytes(model.booster.save_raw("ubj")),
                spec=model.spec,
                threads=_task_threads(spark),
            ),
            SCORES_SCHEMA,
        )
        .toArrow()
    )
    split, scores, bids, partners, oracle, ts, weights, control = (
        scored.column(name).to_numpy()
        for name in (
            "split",
            "score",
            "bid",
            "partner_code",
            "oracle_p",
            "ts_ms",
            "weight",
            "control",
        )
    )
    del scored  # the largest thing the driver holds: keep one copy of it

    def rows_of(code: int) -> ScoredRows:
        chosen = split == code
        return ScoredRows(
            scores[chosen],
            bids[chosen],
            partners[chosen],
            oracle[chosen],
            ts[chosen],
            # As locally: validation and test rows weigh their inverse propensity (nothing else)
            # when a filter shaped the logs, and are unweighted otherwise.
            weights[chosen] if data.inverse_propensity else None,
            control[chosen],
        )

    return rows_of(1), rows_of(2)


def train_on_spark(
    spark: SparkSession,
    logs: str,
    store: ModelStore,
    config: TrainConfig | None = None,
    *,
    num_workers: int | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train on the logs at ``logs`` (a path or URI Spark reads) with ``spark``, choose
    thresholds, evaluate, and publish a new version to ``store``, as
    :func:`~bidfilter.training.pipeline.train` does on one machine.

    ``num_workers`` XGBoost workers (default: one per task slot, :func:`default_workers`).
    """
    config = config or TrainConfig()
    started = time.monotonic()
    stage = stage_reporter(on_stage)

    stage(f"reading logs from {logs} on Spark ({spark.sparkContext.master})")
    data = build_spark_dataset(spark, logs, config.dataset)
    try:
        stage(data.summary.describe(config.dataset.negative_rate))
        workers = num_workers or default_workers(spark)
        stage(f"training on {workers} XGBoost workers")
        model = fit_on_spark(data, config.model, workers)
        stage(f"trained {model.trees} trees")
        valid, test = score_on_spark(data, model)
        signals = model.partner_signals(_validation_sample(data, config.model.seed))
    finally:
        data.rows.unpersist()
    return publish_trained(model, data.summary, valid, test, config, store, stage, started, signals)


def _validation_sample(data: SparkDataset, seed: int, rows: int = 20_000) -> SplitRows:
    """A random share of the validation rows, on the driver: what the signals are read from."""
    share = min(1.0, rows / max(data.summary.rows["valid"], 1))
    draw = uniform_draw(sf.lit(seed), sf.lit("signals"), "request_id", "partner")
    sample = (
        data.rows.where((sf.col("split") == 1) & (draw < share))
        .select("features", "partner_code", "bid", "oracle_p", "ts_ms")
        .toArrow()
    )
    width = len(data.summary.spec.names)
    features = pc.list_flatten(sample.column("features")).to_numpy().reshape(-1, width)
    return SplitRows(
        request_matrix=np.ascontiguousarray(features[:, :-1]),
        bids=sample.column("bid").to_numpy(zero_copy_only=False),
        partners=sample.column("partner_code").to_numpy(),
        weights=None,
        oracle_p=sample.column("oracle_p").to_numpy(zero_copy_only=False),
        requests=np.arange(len(features)),
        ts=sample.column("ts_ms").to_numpy(),
    )

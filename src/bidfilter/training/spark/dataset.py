"""From auction logs to (request, partner) training rows on Apache Spark: the twin of
:mod:`bidfilter.training.dataset` for logs that outgrow one machine.

No feature is defined here. Python workers (``mapInArrow``) parse each logged request with the
server's parser and run the same :func:`~bidfilter.features.extract`; model rows come from the
server's :class:`~bidfilter.features.FeatureEncoder`; the time split comes from
:func:`~bidfilter.training.dataset.split_points` and :func:`~bidfilter.training.dataset.split_of`.
Spark counts, samples and moves data. The logs are read twice:

1. per request: its split, why the parser refused it (if it did), its partners and its raw
   categorical values, from which Spark counts the training period's vocabularies and partners;
2. per (request, partner), once the feature spec is known: the model row, the bid and the oracle.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as sf

from bidfilter.features import CATEGORICAL_FEATURES, SET_FEATURES, FeatureSpec, load_usd_rates
from bidfilter.features.batch import SET_SIZES, choose_vocabulary
from bidfilter.training.config import DatasetConfig
from bidfilter.training.dataset import split_points
from bidfilter.training.pipeline import DatasetSummary
from bidfilter.training.spark.workers import (
    MODEL_ROWS_SCHEMA,
    REQUEST_FACTS_SCHEMA,
    model_rows,
    request_facts,
)

log = logging.getLogger(__name__)

_DRAW_BITS = 53  # a double holds 53 bits exactly: draws are uniform on a 2**-53 grid


@dataclass(frozen=True, slots=True)
class SparkDataset:
    """The summary the report needs, and the rows themselves, kept on the cluster.

    ``rows`` is persisted (call ``rows.unpersist()`` when done) and has one row per (request,
    partner): ``request_id``, ``partner``, ``partner_code``, ``split`` (0 train, 1 validation,
    2 test), ``bid``, ``oracle_p`` (NaN without an oracle), ``weight`` and ``features`` (float
    array in ``spec.names`` order). Training non-bids are already sampled and weighted.
    """

    summary: DatasetSummary
    rows: DataFrame


def uniform_draw(*columns: Column | str) -> Column:
    """A draw in [0, 1) that depends only on ``columns``: the same for a row whatever the cluster
    size or partitioning, which ``rand(seed)`` does not promise."""
    mask = sf.lit((1 << _DRAW_BITS) - 1)
    return sf.xxhash64(*columns).bitwiseAND(mask).cast("double") / float(1 << _DRAW_BITS)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _vocabularies(requests: DataFrame, config: DatasetConfig) -> dict[str, list[str]]:
    """The training period's vocabularies, by the local engine's rule (``choose_vocabulary``) over
    valid training requests. Spark counts; only the values frequent enough come back to the
    driver."""
    counted = (
        requests.where(sf.col("refused_field").isNull() & (sf.col("split") == 0))
        .select(sf.posexplode(sf.array(*CATEGORICAL_FEATURES)).alias("feature", "value"))
        .where(sf.col("value").isNotNull())
        .groupBy("feature", "value")
        .count()
        .where(sf.col("count") >= config.vocabulary_min_count)
        .collect()
    )
    counts: list[dict[str, int]] = [{} for _ in CATEGORICAL_FEATURES]
    for feature, value, count in counted:
        counts[feature][value] = count
    return {
        name: choose_vocabulary(
            values, max_size=config.vocabulary_size, min_count=config.vocabulary_min_count
        )
        for name, values in zip(CATEGORICAL_FEATURES, counts, strict=True)
    }


def _sets(requests: DataFrame, config: DatasetConfig) -> dict[str, list[str]]:
    """The members kept of each set feature, by the local engine's rule (``SET_SIZES``)."""
    chosen = {}
    for name in SET_FEATURES:
        counted = (
            requests.where(sf.col("refused_field").isNull() & (sf.col("split") == 0))
            .select(sf.explode(f"set_{name}").alias("member"))
            .groupBy("member")
            .count()
            .where(sf.col("count") >= config.vocabulary_min_count)
            .collect()
        )
        chosen[name] = choose_vocabulary(
            {member: count for member, count in counted},
            max_size=SET_SIZES[name],
            min_count=config.vocabulary_min_count,
        )
    return chosen


def _unknown_currencies(requests: DataFrame, rates: Mapping[str, float]) -> dict[str, int]:
    """Valid requests per floor currency without a rate, as the local engine counts them."""
    counted = (
        requests.where(
            sf.col("refused_field").isNull()
            & sf.col("floor_currency").isNotNull()
            & ~sf.col("floor_currency").isin(list(rates))
        )
        .groupBy("floor_currency")
        .count()
        .collect()
    )
    return {currency: count for currency, count in counted}


def _partners(requests: DataFrame) -> list[str]:
    """The partners of the training period, sorted (their codes are their positions)."""
    pairs = (
        requests.where(sf.col("refused_field").isNull())
        .select("split", sf.explode("partner_names").alias("partner"))
        .groupBy("partner")
        .agg(
            sf.sum((sf.col("split") == 0).cast("long")).alias("train_pairs"),
            sf.count("*").alias("pairs"),
        )
        .collect()
    )
    partners = sorted(partner for partner, train_pairs, _ in pairs if train_pairs > 0)
    unknown = sum(count for _, train_pairs, count in pairs if train_pairs == 0)
    if unknown:
        # Partners the training period never saw get no code: serving fails open for them.
        log.warning("%d rows are for partners absent from the training period", unknown)
    return partners


def build_spark_dataset(
    spark: SparkSession, logs: str, config: DatasetConfig | None = None
) -> SparkDataset:
    """Read the logs at ``logs`` (a path or URI Spark can read, e.g. ``s3://bucket/logs``) and
    return the same split, vocabularies and rows as the local
    :func:`~bidfilter.training.dataset.build_dataset`, except for which training non-bids are
    sampled: each row's draw is a hash of the row here, one random generator's walk there.

    The driver holds every request's timestamp (8 bytes each) to place the split exactly as the
    local engine does; everything else stays on the cluster.
    """
    config = config or DatasetConfig()
    if config.partner_affinity:
        # Out-of-fold tables need per-fold aggregates shipped to every worker; not built yet.
        log.warning("the Spark engine does not compute partner affinities; training without them")
    rates = load_usd_rates(config.currency_rates)
    logged = spark.read.parquet(logs).select(
        sf.unix_millis("ts").alias("ts_ms"), "request_id", "request", "partners"
    )
    timestamps = logged.select("ts_ms").toArrow().column("ts_ms").to_numpy()
    valid_start, test_start = split_points(timestamps, config, logs)
    del timestamps

    requests = (
        logged.select("ts_ms", "request", sf.col("partners.partner").alias("partner_names"))
        .mapInArrow(
            partial(
                request_facts,
                valid_start=valid_start,
                test_start=test_start,
                usd_per_unit=rates,
            ),
            REQUEST_FACTS_SCHEMA,
        )
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        outcomes = (
            requests.groupBy("refused_field")
            .agg(sf.count("*"), sf.min("ts_ms"), sf.max("ts_ms"))
            .collect()
        )
        skipped = {field: count for field, count, _, _ in outcomes if field is not None}
        valid = [(count, first, last) for field, count, first, last in outcomes if field is None]
        if not valid:
            raise ValueError(f"{logs}: no logged request is a valid bid request")
        [(kept, first_ms, last_ms)] = valid
        if skipped:
            log.warning("skipped %d invalid logged requests: %s", sum(skipped.values()), skipped)
        spec = FeatureSpec(
            vocabularies=_vocabularies(requests, config),
            partners=_partners(requests),
            sets=_sets(requests, config),
            usd_per_unit=rates,
        )
        unknown_currencies = _unknown_currencies(requests, rates)
    finally:
        requests.unpersist()

    rows = logged.mapInArrow(
        partial(model_rows, spec=spec, valid_start=valid_start, test_start=test_start),
        MODEL_ROWS_SCHEMA,
    )
    is_train, is_bid = sf.col("split") == 0, sf.col("bid")
    if config.negative_rate < 1:
        # As locally: keep every bid and a share of the training non-bids, weighted back up.
        draw = uniform_draw(sf.lit(config.seed), sf.lit("negatives"), "request_id", "partner")
        rows = rows.where(~is_train | is_bid | (draw < config.negative_rate))
    weight = sf.when(is_train & ~is_bid, 1.0 / config.negative_rate).otherwise(1.0)
    if config.recency_half_life_days is not None:
        # As locally (recency_weights): older training rows weigh less.
        age_days = sf.greatest(sf.lit(valid_start) - sf.col("ts_ms"), sf.lit(0)) / 86_400_000
        recency = sf.pow(sf.lit(0.5), age_days / config.recency_half_life_days)
        weight = sf.when(is_train, weight * recency).otherwise(weight)
    rows = rows.withColumn("weight", weight.cast("float")).persist(StorageLevel.MEMORY_AND_DISK)
    split_rows: dict[int, int] = dict(rows.groupBy("split").count().collect())
    summary = DatasetSummary(
        spec=spec,
        data_start=_utc(first_ms),
        data_end=_utc(last_ms),
        valid_start=_utc(valid_start),
        test_start=_utc(test_start),
        requests=kept,
        skipped_requests=sum(skipped.values()),
        skipped_fields=skipped,
        unknown_currencies=unknown_currencies,
        rows={
            name: split_rows.get(code, 0) for code, name in enumerate(("train", "valid", "test"))
        },
    )
    return SparkDataset(summary=summary, rows=rows)

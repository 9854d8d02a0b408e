"""From auction logs to (request, partner) training rows on Apache Spark: the twin of
:mod:`bidfilter.training.dataset` for logs that outgrow one machine.

No feature is defined here. Python workers (``mapInArrow``) parse each logged request with the
server's parser and run the same :func:`~bidfilter.features.extract`; model rows come from the
server's :class:`~bidfilter.features.FeatureEncoder`; the time split comes from
:func:`~bidfilter.training.dataset.split_points` and :func:`~bidfilter.training.dataset.split_of`.
Spark counts, samples and moves data. The logs are read twice (and their partner entries once
more, for the exploration counts of :class:`~bidfilter.training.dataset.ExplorationCount`):

1. per request: its split, why the parser refused it (if it did), the partners it was sent to and
   its raw categorical values, from which Spark counts the training period's vocabularies and
   partners;
2. per (request, partner it was sent to), once the feature spec is known: the model row, the bid,
   the oracle, the propensity and the control flag.

Like the local reader (:func:`~bidfilter.logs.iter_log_batches`), :func:`read_logs` takes a
directory mixing files of every version of the log schema: what a file predates reads as the old
logs' values (every partner sent, at propensity 1, no request in a control group).
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
from pyspark.sql.types import ArrayType, StructType

from bidfilter.features import CATEGORICAL_FEATURES, SET_FEATURES, FeatureSpec, load_usd_rates
from bidfilter.features.batch import SET_SIZES, choose_vocabulary
from bidfilter.logs import LogFormatError
from bidfilter.training.config import DatasetConfig
from bidfilter.training.dataset import ExplorationCount, split_points
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
    partner it was sent to): ``request_id``, ``partner``, ``partner_code``, ``split`` (0 train,
    1 validation, 2 test), ``bid``, ``oracle_p`` (NaN without an oracle), ``propensity``,
    ``control`` (its request was in the control group), ``weight`` and ``features`` (float array
    in ``spec.names`` order). Training non-bids are already sampled and weighted; when
    ``inverse_propensity``, every row's weight also holds 1 / max(propensity,
    ``min_propensity``), as the local engine weighs rows of logs a filter shaped.
    """

    summary: DatasetSummary
    rows: DataFrame
    inverse_propensity: bool = False


def uniform_draw(*columns: Column | str) -> Column:
    """A draw in [0, 1) that depends only on ``columns``: the same for a row whatever the cluster
    size or partitioning, which ``rand(seed)`` does not promise."""
    mask = sf.lit((1 << _DRAW_BITS) - 1)
    return sf.xxhash64(*columns).bitwiseAND(mask).cast("double") / float(1 << _DRAW_BITS)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


# What a log written before a partner field existed holds in its place (as the local reader
# fills it in: bidfilter.logs.schema); null in a merged schema means the file predates it.
_ENTRY_DEFAULTS: dict[str, bool | float] = {"sent": True, "propensity": 1.0}
_ENTRY_TYPES = {"bid": "boolean", "price": "double", "oracle_p": "double", "propensity": "double"}


def read_logs(spark: SparkSession, logs: str) -> DataFrame:
    """The logs at ``logs`` as ``ts_ms``, ``request_id``, ``request``, ``partners`` (``partner``,
    ``bid``, ``price``, ``oracle_p``, ``sent``, ``propensity`` per entry) and ``control``,
    whichever versions of the log schema its files were written with: the files' schemas are
    merged, and what a file lacks is filled in as the local reader fills it (``sent`` true,
    ``propensity`` 1, ``control`` false)."""
    frame = spark.read.option("mergeSchema", "true").parquet(logs)
    for column in ("ts", "request_id", "request", "partners"):
        if column not in frame.columns:
            raise LogFormatError(column, f"column missing from {logs}")
    listed = frame.schema["partners"].dataType
    if not isinstance(listed, ArrayType) or not isinstance(listed.elementType, StructType):
        raise LogFormatError("partners", f"{logs}: expected a list of structs, not {listed}")
    present = set(listed.elementType.fieldNames())
    for name in ("partner", "bid", "price", "oracle_p"):
        if name not in present:
            raise LogFormatError(f"partners.{name}", f"{logs}: field missing")

    def entry(outcome: Column) -> Column:
        fields = []
        for name in ("partner", "bid", "price", "oracle_p", "sent", "propensity"):
            if name not in present:  # only a field with a default can be (checked above)
                value = sf.lit(_ENTRY_DEFAULTS[name])
            elif name in _ENTRY_DEFAULTS:
                value = sf.coalesce(outcome[name], sf.lit(_ENTRY_DEFAULTS[name]))
            else:
                value = outcome[name]
            if name in _ENTRY_TYPES:
                value = value.cast(_ENTRY_TYPES[name])
            fields.append(value.alias(name))
        return sf.struct(*fields)

    control = (
        sf.coalesce(sf.col("control"), sf.lit(False))
        if "control" in frame.columns
        else sf.lit(False)
    )
    return frame.select(
        sf.unix_millis("ts").alias("ts_ms"),
        "request_id",
        "request",
        sf.transform("partners", entry).alias("partners"),
        control.alias("control"),
    )


def _exploration(logged: DataFrame, logs: str) -> dict[str, ExplorationCount]:
    """Per partner the logs filtered, as the local engine counts it (every entry, the requests
    the parser refuses included): its entries with propensity under 1, and the sent ones of
    them. Refuses what the local reader refuses (``validate_batch``): a propensity outside
    (0, 1], a bid or a price on an unsent entry."""
    outcome = sf.col("outcome")
    below = outcome["propensity"] < 1
    unsent = ~outcome["sent"]
    counted = (
        logged.select(sf.explode("partners").alias("outcome"))
        .groupBy(outcome["partner"].alias("partner"))
        .agg(
            sf.sum(below.cast("long")).alias("filtered"),
            sf.sum((below & outcome["sent"]).cast("long")).alias("explored"),
            # NaN compares above every number in Spark: out of range too.
            sf.sum((~((outcome["propensity"] > 0) & (outcome["propensity"] <= 1))).cast("long")),
            sf.sum((unsent & outcome["bid"]).cast("long")),
            sf.sum((unsent & (outcome["price"] != 0)).cast("long")),
        )
        .collect()
    )
    problems = {
        "propensity": "must be in (0, 1]",
        "bid": "an unsent entry (sent=false) has no label: bid must be false",
        "price": "an unsent entry (sent=false) must have price 0",
    }
    for column, (field, message) in enumerate(problems.items(), start=3):
        bad = sum(row[column] or 0 for row in counted)
        if bad:
            raise LogFormatError(field, f"{logs}: {bad} partner entries: {message}")
    return {
        partner: ExplorationCount(int(filtered), int(explored))
        for partner, filtered, explored, *_ in sorted(counted, key=lambda row: str(row[0]))
        if filtered
    }


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
    logged = read_logs(spark, logs)
    timestamps = logged.select("ts_ms").toArrow().column("ts_ms").to_numpy()
    valid_start, test_start = split_points(timestamps, config, logs)
    del timestamps

    # An unsent entry (its partner was not called) has no label: no row, and no partner either.
    sent = sf.filter("partners", lambda outcome: outcome["sent"])
    requests = (
        logged.select(
            "ts_ms",
            "request",
            sf.transform(sent, lambda outcome: outcome["partner"]).alias("partner_names"),
            # float, as the local engine compares its rows' propensities with 1.
            sf.array_min(
                sf.transform(sent, lambda outcome: outcome["propensity"].cast("float"))
            ).alias("least_propensity"),
        )
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
            .agg(sf.count("*"), sf.min("ts_ms"), sf.max("ts_ms"), sf.min("least_propensity"))
            .collect()
        )
        skipped = {field: count for field, count, *_ in outcomes if field is not None}
        valid = [tuple(facts) for field, *facts in outcomes if field is None]
        if not valid:
            raise ValueError(f"{logs}: no logged request is a valid bid request")
        [(kept, first_ms, last_ms, least_propensity)] = valid
        # As locally: rows weigh their inverse propensity when a filter shaped the logs, that is
        # when some row (a sent entry of a valid request) was called with a propensity under 1.
        inverse_propensity = least_propensity is not None and least_propensity < 1
        if skipped:
            log.warning("skipped %d invalid logged requests: %s", sum(skipped.values()), skipped)
        spec = FeatureSpec(
            vocabularies=_vocabularies(requests, config),
            partners=_partners(requests),
            sets=_sets(requests, config),
            usd_per_unit=rates,
        )
        unknown_currencies = _unknown_currencies(requests, rates)
        exploration = _exploration(logged, logs)
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
    if inverse_propensity:
        # As locally: every row (training, validation, test) stands for 1 / propensity calls,
        # clipped at min_propensity, on top of the sampling and recency weights.
        clipped = sf.greatest(sf.col("propensity").cast("double"), sf.lit(config.min_propensity))
        weight = weight / clipped
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
        exploration=exploration,
        rows={
            name: split_rows.get(code, 0) for code, name in enumerate(("train", "valid", "test"))
        },
    )
    return SparkDataset(summary=summary, rows=rows, inverse_propensity=inverse_propensity)

"""Partner affinities: how often each partner bid on each publisher, domain or bundle, and tag.

Partners buy by allowlists and blocklists of publishers and placements, most of them in the
long tail: a vocabulary of frequent values gives every rare one the same out-of-vocabulary code,
and trees cannot learn a per-partner list over thousands of categories anyway. So for each of
:data:`AFFINITY_FIELDS` training computes, once, two kinds of column:

* ``<field>_count``: how many training requests carried the value (0: never seen). The same for
  every partner; it tells a value seen a handful of times from one never seen.
* ``<field>_affinity``: the partner's bid rate on the value, smoothed towards the partner's overall
  rate by :data:`SMOOTHING` pseudo-rows (a value seen once says little). It differs by partner,
  so the compiled forest takes it as a per-partner column (``scoring/_forest.c``).

For training rows both are *out of fold*: computed from the other :data:`FOLDS` folds of
requests, so a row never sees its own label, and values seen in one fold only look to the model
as an unseen value will look in serving. The tables travel in the feature spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

AFFINITY_FIELDS: tuple[str, ...] = ("publisher", "domain", "tagid")
# Pseudo-rows of the partner's overall bid rate added to every value's counts: with 20 rows a
# value's own rate has as much say as the prior, and a value seen once moves it a little.
SMOOTHING = 20.0
FOLDS = 5
# The most frequent values kept per field (each costs 4 bytes per partner in every worker).
MAX_VALUES = 100_000


class AffinityTable(msgspec.Struct, frozen=True):
    """One field's values as training saw them, with per-partner smoothed bid rates."""

    values: list[str]
    counts: list[int]  # training requests per value
    priors: list[float]  # per partner code: its rate on a value never seen
    rates: bytes  # float32, (len(values), partners) row-major

    def rate_matrix(self) -> np.ndarray:
        return np.frombuffer(self.rates, dtype=np.float32).reshape(
            len(self.values), len(self.priors)
        )


def count_column(field: str) -> str:
    return f"{field}_count"


def affinity_column(field: str) -> str:
    return f"{field}_affinity"


@dataclass(frozen=True, slots=True)
class TrainingPairs:
    """The training rows the tables are computed from (bid-rate weights: negatives' sampling
    weight, no recency)."""

    requests: np.ndarray  # (n,) int64 request of each row
    partners: np.ndarray  # (n,) int32 partner code
    bids: np.ndarray  # (n,) bool
    weights: np.ndarray  # (n,) float64
    partner_count: int


def fold_of(requests: np.ndarray) -> np.ndarray:
    """Each request's fold: interleaved by position, so every fold spans the whole period."""
    folds: np.ndarray = (requests % FOLDS).astype(np.int64)
    return folds


def fit_table(
    values: Sequence[str], ids: np.ndarray, training_requests: np.ndarray, pairs: TrainingPairs
) -> tuple[AffinityTable, np.ndarray]:
    """The table for one field, and the kept index of every local id (-1: not kept).

    ``values`` are the field's distinct values by local id, ``ids`` each request's local id (-1:
    absent), ``training_requests`` the requests of the training period.
    """
    train_ids = ids[training_requests]
    counts = np.bincount(train_ids[train_ids >= 0], minlength=len(values))
    seen = np.flatnonzero(counts)
    order = sorted(seen.tolist(), key=lambda i: (-int(counts[i]), values[i]))[:MAX_VALUES]
    kept_of_local = np.full(len(values) + 1, -1, dtype=np.int64)  # last slot: absent (-1)
    kept_of_local[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    bid_sum, weight_sum = _sums(kept_of_local[ids[pairs.requests]], pairs, len(order))
    priors = _priors(pairs)
    rates = (bid_sum + SMOOTHING * priors[:, None]) / (weight_sum + SMOOTHING)
    table = AffinityTable(
        values=[values[i] for i in order],
        counts=[int(counts[i]) for i in order],
        priors=[float(p) for p in priors],
        rates=np.ascontiguousarray(rates.T, dtype=np.float32).tobytes(),
    )
    return table, kept_of_local


def _priors(pairs: TrainingPairs) -> np.ndarray:
    weight = np.bincount(pairs.partners, pairs.weights, minlength=pairs.partner_count)
    bids = np.bincount(pairs.partners, pairs.weights * pairs.bids, minlength=pairs.partner_count)
    priors: np.ndarray = np.divide(bids, weight, out=np.zeros_like(bids), where=weight > 0)
    return priors


def _sums(
    kept: np.ndarray, pairs: TrainingPairs, n_values: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted bids and weights per (partner, kept value), over ``rows`` (all by default)."""
    partners, weights, bids = pairs.partners, pairs.weights, pairs.bids
    if rows is not None:
        kept, partners, weights, bids = kept[rows], partners[rows], weights[rows], bids[rows]
    present = kept >= 0
    cell = partners[present].astype(np.int64) * max(n_values, 1) + kept[present]
    size = pairs.partner_count * max(n_values, 1)
    weight = np.bincount(cell, weights[present], minlength=size)
    bid = np.bincount(cell, (weights * bids)[present], minlength=size)
    shape = (pairs.partner_count, max(n_values, 1))
    return bid.reshape(shape)[:, :n_values], weight.reshape(shape)[:, :n_values]


def out_of_fold_columns(
    table: AffinityTable,
    kept_of_local: np.ndarray,
    ids: np.ndarray,
    training_requests: np.ndarray,
    pairs: TrainingPairs,
    requests: np.ndarray,
    partners: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Count and affinity of training rows (``requests``, ``partners``), each from the folds
    other than its request's (the sums over ``pairs``, all of the training period's rows).

    Counts are scaled up by FOLDS / (FOLDS - 1), to the whole training period's scale that
    serving reads."""
    n_values = len(table.values)
    priors = np.asarray(table.priors)
    request_kept = kept_of_local[ids]  # per request
    pair_kept = request_kept[pairs.requests]
    pair_fold = fold_of(pairs.requests)
    bid_all, weight_all = _sums(pair_kept, pairs, n_values)
    train_kept = request_kept[training_requests]
    train_fold = fold_of(training_requests)
    present = train_kept >= 0
    count_all = np.bincount(train_kept[present], minlength=n_values).astype(np.float64)
    counts = np.empty(len(requests), dtype=np.float32)
    affinity = np.empty(len(requests), dtype=np.float32)
    row_kept, row_fold = request_kept[requests], fold_of(requests)
    for fold in range(FOLDS):
        bid_in, weight_in = _sums(pair_kept, pairs, n_values, np.flatnonzero(pair_fold == fold))
        count_in = np.bincount(train_kept[present & (train_fold == fold)], minlength=n_values)
        count_out = (count_all - count_in) * FOLDS / (FOLDS - 1)
        rate = (bid_all - bid_in + SMOOTHING * priors[:, None]) / (
            weight_all - weight_in + SMOOTHING
        )
        rows = np.flatnonzero(row_fold == fold)
        kept, partner = row_kept[rows], partners[rows]
        known, at = kept >= 0, np.maximum(kept, 0)
        counts[rows] = np.where(known, count_out[at] if n_values else 0.0, 0.0)
        affinity[rows] = np.where(known, rate[partner, at] if n_values else 0.0, priors[partner])
    absent = ids[requests] < 0
    counts[absent] = np.nan
    affinity[absent] = np.nan
    return counts, affinity


def lookup_rows(
    table: AffinityTable,
    kept_of_local: np.ndarray,
    ids: np.ndarray,
    requests: np.ndarray,
    partners: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Count and affinity of rows outside training, from the whole table (what serving does)."""
    local = ids[requests]
    kept = kept_of_local[local]
    known = kept >= 0
    counts_of = np.asarray(table.counts, dtype=np.float32)
    counts = np.where(known, counts_of[np.maximum(kept, 0)] if len(counts_of) else 0.0, 0.0)
    priors = np.asarray(table.priors, dtype=np.float32)
    if len(table.values):
        rates = table.rate_matrix()[np.maximum(kept, 0), partners]
    else:
        rates = np.zeros(len(kept), dtype=np.float32)
    affinity = np.where(known, rates, priors[partners])
    counts = np.where(local < 0, np.nan, counts).astype(np.float32)
    affinity = np.where(local < 0, np.nan, affinity).astype(np.float32)
    return counts, affinity


class AffinityLookup:
    """Serving side: one request's count columns and per-partner affinity block."""

    def __init__(self, tables: dict[str, AffinityTable], partners: int) -> None:
        self.fields = [field for field in AFFINITY_FIELDS if field in tables]
        self._index = [
            {value: i for i, value in enumerate(tables[field].values)} for field in self.fields
        ]
        self._counts = [[float(c) for c in tables[field].counts] for field in self.fields]
        self._rates = [memoryview(tables[field].rates) for field in self.fields]
        self._priors = [
            np.asarray(tables[field].priors, dtype=np.float32).tobytes() for field in self.fields
        ]
        self._width = partners * 4  # bytes of one value's rates
        self._absent = np.full(partners, np.nan, dtype=np.float32).tobytes()

    def lookup(self, values: Sequence[str | None]) -> tuple[list[float], bytes]:
        """The count of each field's value (NaN: absent) and the affinity block: per field,
        one float32 per partner code."""
        counts: list[float] = []
        blocks: list[bytes | memoryview] = []
        width = self._width
        for value, index, count_of, rates, prior in zip(
            values, self._index, self._counts, self._rates, self._priors, strict=True
        ):
            if value is None:
                counts.append(float("nan"))
                blocks.append(self._absent)
                continue
            i = index.get(value)
            if i is None:
                counts.append(0.0)
                blocks.append(prior)
            else:
                counts.append(count_of[i])
                blocks.append(rates[i * width : (i + 1) * width])
        return counts, b"".join(blocks)


class PartnerAffinities:
    """Training side: every affinity field's table, and the columns of any rows."""

    def __init__(
        self,
        tables: dict[str, AffinityTable],
        kept: dict[str, np.ndarray],
        ids: dict[str, np.ndarray],
        training_requests: np.ndarray,
        pairs: TrainingPairs,
    ) -> None:
        self.tables = tables
        self._kept, self._ids = kept, ids
        self._training_requests, self._pairs = training_requests, pairs

    @classmethod
    def fit(
        cls,
        value_ids: dict[str, tuple[list[str], np.ndarray]],
        training_requests: np.ndarray,
        pairs: TrainingPairs,
    ) -> PartnerAffinities:
        """Tables for every field of :data:`AFFINITY_FIELDS`, from the training rows ``pairs``.
        ``value_ids``: per field, its distinct values and each request's index (-1: absent)."""
        tables, kept, ids = {}, {}, {}
        for field in AFFINITY_FIELDS:
            values, ids[field] = value_ids[field]
            tables[field], kept[field] = fit_table(values, ids[field], training_requests, pairs)
        return cls(tables, kept, ids, training_requests, pairs)

    def columns(self, requests: np.ndarray, partners: np.ndarray, out_of_fold: bool) -> np.ndarray:
        """(n, 2 x fields) float32: every field's count, then every field's affinity, of the
        rows (``requests``, ``partners``); training rows ``out_of_fold``."""
        n_fields = len(AFFINITY_FIELDS)
        result = np.empty((len(requests), 2 * n_fields), dtype=np.float32)
        for column, field in enumerate(AFFINITY_FIELDS):
            table, kept, ids = self.tables[field], self._kept[field], self._ids[field]
            if out_of_fold:
                counts, affinity = out_of_fold_columns(
                    table, kept, ids, self._training_requests, self._pairs, requests, partners
                )
            else:
                counts, affinity = lookup_rows(table, kept, ids, requests, partners)
            result[:, column] = counts
            result[:, n_fields + column] = affinity
        return result

"""Training-side feature extraction: the same :func:`extract` over millions of logged requests.

Rows are appended as requests stream in; categorical strings are interned to local ids as they
arrive, so memory holds one float32 matrix and small dictionaries, never the raw strings. Once
every request is in, vocabularies are chosen (from the rows the caller marks, i.e. training rows
only) and local ids are remapped to vocabulary codes in one vectorised step.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bidfilter.features.affinity import AFFINITY_FIELDS
from bidfilter.features.extract import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    SET_FEATURES,
    USD_PER_UNIT,
    Features,
    extract,
)
from bidfilter.features.spec import OUT_OF_VOCABULARY
from bidfilter.openrtb.model import BidRequest

_CHUNK = 8192
# How many members of each set feature become columns: every column is a float32 per training
# row, so the long tail of identity providers and categories stays out.
SET_SIZES: Mapping[str, int] = {"eid_source": 16, "category": 24}
_CURRENCY = CATEGORICAL_FEATURES.index("floor_currency")


def choose_vocabulary(counts: Mapping[str, int], *, max_size: int, min_count: int) -> list[str]:
    """The vocabulary rule, for every training engine: the values seen at least ``min_count``
    times, the ``max_size`` most frequent of them, most frequent first, ties by value (so the
    result does not depend on the order values were met in)."""
    frequent = [value for value, count in counts.items() if count >= min_count]
    return sorted(frequent, key=lambda value: (-counts[value], value))[:max_size]


class RequestFeatureBuilder:
    """Accumulates request-level feature rows (numeric + categorical, partner column excluded)."""

    def __init__(self, usd_per_unit: Mapping[str, float] = USD_PER_UNIT) -> None:
        self._rates = usd_per_unit
        self._interned: list[dict[str, int]] = [{} for _ in CATEGORICAL_FEATURES]
        # Set members: interned per feature, and (request, member) pairs as they come.
        self._set_interned: list[dict[str, int]] = [{} for _ in SET_FEATURES]
        self._set_requests: list[list[int]] = [[] for _ in SET_FEATURES]
        self._set_members: list[list[int]] = [[] for _ in SET_FEATURES]
        self._count = 0
        # Requests whose floor currency has no rate (their floors stay in their own unit).
        self.unknown_currencies: dict[str, int] = {}
        self._numeric_chunks: list[np.ndarray] = []
        self._local_chunks: list[np.ndarray] = []
        self._numeric_rows: list[list[float]] = []
        self._local_rows: list[list[int]] = []
        # After build: each affinity field's distinct values and every request's index into
        # them (-1: absent), for the partner-affinity tables (features/affinity.py).
        self.value_ids: dict[str, tuple[list[str], np.ndarray]] = {}

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self._numeric_chunks) + len(self._numeric_rows)

    def add(self, request: BidRequest, ts_ms: int) -> Features:
        """Add the request's row; what :func:`extract` made of it (for :meth:`add_extracted`)."""
        extracted = extract(request, ts_ms, self._rates)
        self.add_extracted(extracted)
        return extracted

    def add_extracted(self, extracted: Features) -> None:
        """Add a row :func:`extract` made before with this builder's rates (a caller that
        trains again and again on overlapping logs keeps them rather than parse again)."""
        numeric, categorical, sets = extracted
        self._numeric_rows.append(numeric)
        for set_interned, requests, members, values in zip(
            self._set_interned, self._set_requests, self._set_members, sets, strict=True
        ):
            for member in values:
                members.append(set_interned.setdefault(member, len(set_interned)))
                requests.append(self._count)
        self._count += 1
        currency = categorical[_CURRENCY]
        if currency is not None and currency not in self._rates:
            self.unknown_currencies[currency] = self.unknown_currencies.get(currency, 0) + 1
        local = []
        for interned, value in zip(self._interned, categorical, strict=True):
            if value is None:
                local.append(-1)
            else:
                code = interned.get(value)
                if code is None:
                    code = interned[value] = len(interned)
                local.append(code)
        self._local_rows.append(local)
        if len(self._numeric_rows) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._numeric_rows:
            self._numeric_chunks.append(np.array(self._numeric_rows, dtype=np.float32))
            self._local_chunks.append(np.array(self._local_rows, dtype=np.int32))
            self._numeric_rows.clear()
            self._local_rows.clear()

    def build(
        self,
        vocabulary_rows: np.ndarray | None = None,
        *,
        max_size: int = 2000,
        min_count: int = 10,
    ) -> tuple[np.ndarray, dict[str, list[str]], dict[str, list[str]]]:
        """The request matrix (N x (numeric + set columns + categorical), float32), the
        vocabularies, and the members kept of each set feature (by the same rule, at most
        ``SET_SIZES`` of each).

        ``vocabulary_rows`` (bool mask over requests) restricts which rows count towards the
        vocabularies, so values seen only in the validation or test period stay out of vocabulary.
        A value enters a vocabulary when seen in at least ``min_count`` rows; the ``max_size`` most
        frequent are kept, most frequent first (ties by value, so the result is deterministic).
        """
        self._flush()
        n_numeric, n_categorical = len(NUMERIC_FEATURES), len(CATEGORICAL_FEATURES)
        sets = self._chosen_sets(vocabulary_rows, min_count)
        n_sets = sum(len(members) for members in sets.values())
        if not self._numeric_chunks:
            return (
                np.empty((0, n_numeric + n_sets + n_categorical), np.float32),
                {name: [] for name in CATEGORICAL_FEATURES},
                sets,
            )
        numeric = np.concatenate(self._numeric_chunks)
        local = np.concatenate(self._local_chunks)
        self._numeric_chunks, self._local_chunks = [], []
        matrix = np.zeros((len(numeric), n_numeric + n_sets + n_categorical), dtype=np.float32)
        matrix[:, :n_numeric] = numeric
        del numeric
        start = n_numeric
        for name, interned, requests, members in zip(
            SET_FEATURES, self._set_interned, self._set_requests, self._set_members, strict=True
        ):
            column_of = np.full(len(interned), -1, dtype=np.int64)
            column_of[[interned[member] for member in sets[name]]] = np.arange(len(sets[name]))
            columns = column_of[np.asarray(members, dtype=np.int64)]
            kept = columns >= 0
            matrix[np.asarray(requests, dtype=np.int64)[kept], start + columns[kept]] = 1.0
            start += len(sets[name])
        n_numeric = start  # the categorical columns follow the set columns
        vocabularies: dict[str, list[str]] = {}
        for column, (name, interned) in enumerate(
            zip(CATEGORICAL_FEATURES, self._interned, strict=True)
        ):
            values = list(interned)
            codes = local[:, column]
            if name in AFFINITY_FIELDS:
                self.value_ids[name] = (values, codes.copy())
            counted = codes if vocabulary_rows is None else codes[vocabulary_rows]
            counts = np.bincount(counted[counted >= 0], minlength=len(values))
            seen = {values[index]: int(counts[index]) for index in np.flatnonzero(counts)}
            vocabularies[name] = choose_vocabulary(seen, max_size=max_size, min_count=min_count)
            order = [interned[value] for value in vocabularies[name]]  # value -> local id
            # local id -> vocabulary code; the extra last slot maps "absent" (-1) to NaN.
            remap = np.full(len(values) + 1, OUT_OF_VOCABULARY, dtype=np.float32)
            remap[np.asarray(order, dtype=np.int64)] = np.arange(
                1, len(order) + 1, dtype=np.float32
            )
            remap[-1] = np.nan
            matrix[:, n_numeric + column] = remap[codes]
        return matrix, vocabularies, sets

    def _chosen_sets(
        self, vocabulary_rows: np.ndarray | None, min_count: int
    ) -> dict[str, list[str]]:
        chosen: dict[str, list[str]] = {}
        for name, interned, requests, members in zip(
            SET_FEATURES, self._set_interned, self._set_requests, self._set_members, strict=True
        ):
            values = list(interned)
            ids = np.asarray(members, dtype=np.int64)
            if vocabulary_rows is not None and len(ids):
                ids = ids[vocabulary_rows[np.asarray(requests, dtype=np.int64)]]
            counts = np.bincount(ids, minlength=len(values))
            seen = {values[index]: int(counts[index]) for index in np.flatnonzero(counts)}
            chosen[name] = choose_vocabulary(seen, max_size=SET_SIZES[name], min_count=min_count)
        return chosen

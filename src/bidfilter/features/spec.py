"""The feature spec: column order, types and vocabularies, saved inside every model artifact.

A model is only valid with the exact spec it was trained with, so the spec travels in the
manifest and serving rebuilds its encoder from it (currency rates and partner-affinity tables
included). Column order: the numeric features, one 0/1 column per kept member of each set feature
(``eid_source=uidapi.com``), the categorical ones, the affinity fields' counts and their
per-partner affinities (features/affinity.py), then ``partner``. A categorical column holds a
vocabulary code: 1..n for the values seen often enough in training, 0 for any other value (out of
vocabulary), NaN when absent.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from bidfilter.features.affinity import (
    AFFINITY_FIELDS,
    AffinityLookup,
    AffinityTable,
    affinity_column,
    count_column,
)
from bidfilter.features.extract import (
    CATEGORICAL_FEATURES,
    NAN,
    NUMERIC_FEATURES,
    SET_FEATURES,
    USD_PER_UNIT,
    extract,
)
from bidfilter.openrtb.model import BidRequest

FEATURE_SPEC_VERSION = 3
# Version 2 specs (before partner affinities) still load: they are version 3 without tables.
READABLE_VERSIONS = (2, FEATURE_SPEC_VERSION)
OUT_OF_VOCABULARY = 0
PARTNER_FEATURE = "partner"


class FeatureSpecError(ValueError):
    """A saved spec that this version of bidfilter cannot reproduce; ``field`` names the part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class FeatureSpec(msgspec.Struct, frozen=True):
    """Everything needed to turn a bid request and a partner into the model's input row."""

    vocabularies: dict[str, list[str]]
    partners: list[str]
    sets: dict[str, list[str]] = msgspec.field(
        default_factory=lambda: {name: [] for name in SET_FEATURES}
    )
    usd_per_unit: dict[str, float] = msgspec.field(default_factory=lambda: dict(USD_PER_UNIT))
    numeric: list[str] = msgspec.field(default_factory=lambda: list(NUMERIC_FEATURES))
    categorical: list[str] = msgspec.field(default_factory=lambda: list(CATEGORICAL_FEATURES))
    affinities: dict[str, AffinityTable] = msgspec.field(default_factory=dict)
    version: int = FEATURE_SPEC_VERSION

    @property
    def affinity_fields(self) -> list[str]:
        return [field for field in AFFINITY_FIELDS if field in self.affinities]

    @property
    def affinity_columns(self) -> list[str]:
        """The count columns, then the per-partner affinity columns."""
        fields = self.affinity_fields
        return [*map(count_column, fields), *map(affinity_column, fields)]

    @property
    def keyed_columns(self) -> list[int]:
        """Indices of the per-partner columns (the affinities), in the affinity block's order."""
        end = self.partner_column
        return list(range(end - len(self.affinity_fields), end))

    @property
    def set_columns(self) -> list[str]:
        return [f"{name}={member}" for name in SET_FEATURES for member in self.sets[name]]

    @property
    def names(self) -> list[str]:
        return [
            *self.numeric,
            *self.set_columns,
            *self.categorical,
            *self.affinity_columns,
            PARTNER_FEATURE,
        ]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost feature types: ``q`` (quantitative) or ``c`` (categorical)."""
        quantitative = len(self.numeric) + len(self.set_columns)
        return (
            ["q"] * quantitative
            + ["c"] * len(self.categorical)
            + ["q"] * len(self.affinity_columns)
            + ["c"]
        )

    @property
    def partner_column(self) -> int:
        return len(self.names) - 1

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result

    @classmethod
    def from_dict(cls, data: object) -> FeatureSpec:
        try:
            spec = msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise FeatureSpecError("feature_spec", str(exc)) from None
        if spec.version not in READABLE_VERSIONS:
            raise FeatureSpecError(
                "feature_spec.version",
                f"version {spec.version}; this bidfilter reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}",
            )
        for field, table in spec.affinities.items():
            if field not in AFFINITY_FIELDS:
                raise FeatureSpecError(f"feature_spec.affinities.{field}", "not an affinity field")
            if len(table.priors) != len(spec.partners) or len(table.counts) != len(table.values):
                raise FeatureSpecError(
                    f"feature_spec.affinities.{field}", "tables do not match the partners"
                )
            if len(table.rates) != 4 * len(table.values) * len(table.priors):
                raise FeatureSpecError(
                    f"feature_spec.affinities.{field}.rates", "not one rate per value x partner"
                )
        if (
            tuple(spec.numeric) != NUMERIC_FEATURES
            or tuple(spec.categorical) != CATEGORICAL_FEATURES
        ):
            raise FeatureSpecError("feature_spec", "feature names differ from this bidfilter's")
        missing = [name for name in spec.categorical if name not in spec.vocabularies]
        if missing:
            raise FeatureSpecError(f"feature_spec.vocabularies.{missing[0]}", "missing")
        missing = [name for name in SET_FEATURES if name not in spec.sets]
        if missing:
            raise FeatureSpecError(f"feature_spec.sets.{missing[0]}", "missing")
        return spec


class FeatureEncoder:
    """Serving-side encoding of one request, using the same :func:`extract` as training."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._lookups = [
            {value: code for code, value in enumerate(spec.vocabularies[name], start=1)}
            for name in spec.categorical
        ]
        # One lookup for every set feature's members: member -> its column past the numeric ones.
        self._set_lookups: list[dict[str, int]] = []
        offset = 0
        for name in SET_FEATURES:
            members = spec.sets[name]
            self._set_lookups.append({m: offset + i for i, m in enumerate(members)})
            offset += len(members)
        self._no_members = [0.0] * offset
        self._rates = spec.usd_per_unit
        self.partner_codes = {partner: code for code, partner in enumerate(spec.partners)}
        self.width = len(spec.names)
        self._pack = struct.Struct(f"={self.width}f").pack
        fields = spec.affinity_fields
        self._affinity = AffinityLookup(spec.affinities, len(spec.partners)) if fields else None
        self._affinity_at = [CATEGORICAL_FEATURES.index(field) for field in fields]
        # The per-partner columns' places in the row hold NaN: their values come per partner.
        self._keyed_placeholders = [NAN] * len(fields)

    def request_vector(self, request: BidRequest, ts_ms: int) -> np.ndarray:
        """The request's row with the partner column left NaN (float32)."""
        return np.frombuffer(self.request_inputs(request, ts_ms)[0], dtype=np.float32)

    def request_inputs(self, request: BidRequest, ts_ms: int) -> tuple[bytes, bytes]:
        """What the serving hot path hands to the compiled evaluator: the request's row as packed
        float32 bytes (packing costs a fraction of a numpy array's set-up), its per-partner
        columns left NaN, and their values: per affinity field, one float32 per partner code
        (empty without affinities)."""
        numeric, categorical, sets = extract(request, ts_ms, self._rates)
        values: list[float] = numeric
        block = self._no_members
        for lookup, members in zip(self._set_lookups, sets, strict=True):
            for member in members:
                column = lookup.get(member)
                if column is not None:
                    if block is self._no_members:  # most requests set none: no copy for them
                        block = block.copy()
                    block[column] = 1.0
        values.extend(block)
        values.extend(
            [
                NAN if value is None else lookup.get(value, OUT_OF_VOCABULARY)
                for lookup, value in zip(self._lookups, categorical, strict=True)
            ]
        )
        keyed = b""
        if self._affinity is not None:
            counts, keyed = self._affinity.lookup([categorical[i] for i in self._affinity_at])
            values.extend(counts)
            values.extend(self._keyed_placeholders)
        values.append(NAN)
        return self._pack(*values), keyed

    def rows(self, request: BidRequest, ts_ms: int, partners: Sequence[str]) -> np.ndarray:
        """One row per partner (K x F); a partner unknown to the spec gets a NaN partner code."""
        row, keyed = self.request_inputs(request, ts_ms)
        matrix = np.repeat(np.frombuffer(row, dtype=np.float32)[None, :], len(partners), axis=0)
        codes = np.array([self.partner_codes.get(p, np.nan) for p in partners], dtype=np.float32)
        matrix[:, -1] = codes
        fill_keyed(matrix, self.spec.keyed_columns, keyed, codes)
        return matrix


def fill_keyed(matrix: np.ndarray, columns: Sequence[int], keyed: bytes, codes: np.ndarray) -> None:
    """Write the per-partner columns of rows whose partner codes are ``codes`` from the block
    ``keyed`` (one float32 per column x partner code); an unknown code reads NaN."""
    if not columns:
        return
    block = np.frombuffer(keyed, dtype=np.float32).reshape(len(columns), -1)
    with np.errstate(invalid="ignore"):
        known = (codes >= 0) & (codes < block.shape[1])
    at = np.where(known, codes, 0).astype(np.intp)
    for j, column in enumerate(columns):
        matrix[:, column] = np.where(known, block[j, at], np.nan)

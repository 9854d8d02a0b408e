"""The feature spec: column order, types and vocabularies, saved inside every model artifact.

A model is only valid with the exact spec it was trained with, so the spec travels in the
manifest and serving rebuilds its encoder from it (currency rates included). Column order: the
numeric features, one 0/1 column per kept member of each set feature (``eid_source=uidapi.com``),
the categorical ones, then ``partner``. A categorical column holds a vocabulary code: 1..n for
the values seen often enough in training, 0 for any other value (out of vocabulary), NaN when
absent.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from bidfilter.features.extract import (
    CATEGORICAL_FEATURES,
    NAN,
    NUMERIC_FEATURES,
    SET_FEATURES,
    USD_PER_UNIT,
    extract,
)
from bidfilter.openrtb.model import BidRequest

FEATURE_SPEC_VERSION = 2
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
    version: int = FEATURE_SPEC_VERSION

    @property
    def set_columns(self) -> list[str]:
        return [f"{name}={member}" for name in SET_FEATURES for member in self.sets[name]]

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.set_columns, *self.categorical, PARTNER_FEATURE]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost feature types: ``q`` (quantitative) or ``c`` (categorical)."""
        quantitative = len(self.numeric) + len(self.set_columns)
        return ["q"] * quantitative + ["c"] * (len(self.categorical) + 1)

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
        if spec.version != FEATURE_SPEC_VERSION:
            raise FeatureSpecError(
                "feature_spec.version",
                f"version {spec.version}; this bidfilter builds version {FEATURE_SPEC_VERSION}",
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

    def request_vector(self, request: BidRequest, ts_ms: int) -> np.ndarray:
        """The request's row with the partner column left NaN (float32)."""
        return np.frombuffer(self.request_values(request, ts_ms), dtype=np.float32)

    def request_values(self, request: BidRequest, ts_ms: int) -> bytes:
        """:meth:`request_vector` as packed float32 bytes: what the serving hot path hands to the
        compiled evaluator (packing costs a fraction of a numpy array's set-up)."""
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
        values.append(NAN)
        return self._pack(*values)

    def rows(self, request: BidRequest, ts_ms: int, partners: Sequence[str]) -> np.ndarray:
        """One row per partner (K x F); a partner unknown to the spec gets a NaN partner code."""
        matrix = np.repeat(self.request_vector(request, ts_ms)[None, :], len(partners), axis=0)
        matrix[:, -1] = [self.partner_codes.get(partner, np.nan) for partner in partners]
        return matrix

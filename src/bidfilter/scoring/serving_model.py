"""A model version ready to serve: verified, loaded, and smoke-tested before anyone relies on it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xgboost as xgb

from bidfilter.artifact import ArtifactError, Manifest, verify
from bidfilter.features import FeatureEncoder, FeatureSpec, FeatureSpecError
from bidfilter.features.spec import fill_keyed
from bidfilter.openrtb import parse_bid_request

if TYPE_CHECKING:
    from bidfilter.scoring._forest import Forest as CompiledForest
from bidfilter.scoring.forest import ForestError, compile_forest, probe_rows

log = logging.getLogger(__name__)

# The fast path must give XGBoost's answer: checked at load on these many probe rows.
_PROBE_ROWS = 2048
_FOREST_TOLERANCE = 1e-6
# The plan cache is bounded by entries and by an estimate of the bytes its keys and plans hold:
# ids are the client's to choose, so 256 lists of one 900 KB id each must not cost 441 MiB.
_MAX_PLANS = 256
_MAX_PLAN_BYTES = 16 << 20
_PLAN_BYTES_PER_CANDIDATE = 128  # the key's tuple slot, str header and the plan's arrays
_MAX_CACHED_PLAN_BYTES = _MAX_PLAN_BYTES // 16  # a list bigger than this is planned, not kept


def _plan_bytes(key: tuple[str, ...]) -> int:
    return sum(map(len, key)) + _PLAN_BYTES_PER_CANDIDATE * len(key)


class _PlanCache:
    """Plans by candidate list (``None``: every partner), and the bytes they are taken to hold."""

    __slots__ = ("bytes", "plans")

    def __init__(self) -> None:
        self.plans: dict[tuple[str, ...] | None, CandidatePlan] = {}
        self.bytes = 0


# A request every model must score: if this fails or gives nonsense, the version is refused.
_SMOKE_REQUEST = (
    b'{"id":"bidfilter-smoke","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":0.5}],'
    b'"site":{"domain":"example.com","publisher":{"id":"p"}},'
    b'"device":{"devicetype":2,"os":"Windows","geo":{"country":"USA"}},"tmax":200}'
)


@dataclass(frozen=True, slots=True)
class ServingModel:
    """Everything scoring needs from one version, immutable once loaded (swapped as a whole)."""

    version: str
    manifest: Manifest
    spec: FeatureSpec
    encoder: FeatureEncoder
    booster: xgb.Booster
    partners: tuple[str, ...]
    thresholds: np.ndarray  # float64, by partner code
    loaded_at: str
    forest: CompiledForest | None = None  # None: scored by XGBoost itself
    # Partners the version's report calls sparse (too few validation bids): explored more.
    sparse_partners: frozenset[str] = frozenset()
    _plans: _PlanCache = field(default_factory=_PlanCache, compare=False, repr=False)

    @classmethod
    def load(cls, version_dir: Path) -> ServingModel:
        """Verify ``version_dir`` against its manifest, load the booster, and smoke-test it.

        Raises ``ArtifactError`` naming what is wrong; a refused version is never half-loaded.
        """
        manifest = verify(version_dir)
        try:
            spec = FeatureSpec.from_dict(manifest.feature_spec)
        except FeatureSpecError as error:
            raise ArtifactError(error.field, error.message) from None
        if list(spec.partners) != list(manifest.partners):
            raise ArtifactError("partners", "manifest and feature spec list different partners")
        missing = [p for p in spec.partners if p not in manifest.thresholds]
        if missing:
            raise ArtifactError(f"thresholds.{missing[0]}", "no threshold for this partner")
        booster = xgb.Booster()
        try:
            booster.load_model(os.fspath(version_dir / manifest.model_file))
        except xgb.core.XGBoostError as error:
            raise ArtifactError(manifest.model_file, f"XGBoost cannot load it: {error}") from None
        # One request is scored on one thread; parallelism comes from worker processes.
        booster.set_param({"nthread": 1})
        if booster.feature_names is not None and list(booster.feature_names) != spec.names:
            raise ArtifactError(manifest.model_file, "model features differ from the feature spec")
        model = cls(
            forest=_compiled(booster, spec),
            version=manifest.version,
            manifest=manifest,
            spec=spec,
            encoder=FeatureEncoder(spec),
            booster=booster,
            partners=tuple(spec.partners),
            thresholds=np.array([manifest.thresholds[p] for p in spec.partners], dtype=np.float64),
            loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            sparse_partners=_sparse_partners(version_dir, manifest),
        )
        model.smoke_test()
        return model

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Bid probabilities for feature rows (N x F float32), by XGBoost itself."""
        return np.asarray(self.booster.inplace_predict(rows), dtype=np.float64)

    def score_request(
        self, row: np.ndarray | bytes, codes: np.ndarray, keyed: bytes = b""
    ) -> np.ndarray:
        """Bid probabilities of one request (its float32 row, partner column aside; ``keyed``
        its per-partner columns, as :meth:`FeatureEncoder.request_inputs` gives them) for each
        partner code in ``codes`` (float32): the serving hot path."""
        if self.forest is not None:
            out = np.empty(len(codes), dtype=np.float64)
            if keyed:
                self.forest.predict_shared(row, codes, out, keyed)
            else:
                self.forest.predict_shared(row, codes, out)
            return out
        rows = np.repeat(np.frombuffer(row, dtype=np.float32)[None, :], len(codes), axis=0)
        rows[:, -1] = codes
        fill_keyed(rows, self.encoder.spec.keyed_columns, keyed, codes)
        return self.predict(rows)

    def plan(self, candidates: Sequence[str] | None) -> CandidatePlan:
        """What scoring needs to know about a candidate list, worked out once per distinct list
        (an SSP sends the same few lists over and over)."""
        key = None if candidates is None else tuple(candidates)
        cache = self._plans
        plan = cache.plans.get(key)
        if plan is None:
            plan = CandidatePlan.build(self, self.partners if key is None else key)
            size = 0 if key is None else _plan_bytes(key)
            if size <= _MAX_CACHED_PLAN_BYTES:
                if len(cache.plans) >= _MAX_PLANS or cache.bytes + size > _MAX_PLAN_BYTES:
                    cache.plans.clear()
                    cache.bytes = 0
                cache.plans[key] = plan
                cache.bytes += size
        return plan

    def smoke_test(self) -> None:
        request = parse_bid_request(_SMOKE_REQUEST)
        rows = self.encoder.rows(request, 0, self.partners)
        try:
            scores = self.predict(rows)
        except (xgb.core.XGBoostError, ValueError) as error:
            raise ArtifactError(
                self.manifest.model_file, f"smoke prediction failed: {error}"
            ) from None
        if scores.shape != (len(self.partners),) or not np.all((scores >= 0) & (scores <= 1)):
            raise ArtifactError(self.manifest.model_file, "smoke prediction out of [0, 1]")
        row, keyed = self.encoder.request_inputs(request, 0)
        served = self.score_request(row, rows[:, -1].copy(), keyed)
        if not np.allclose(served, scores, rtol=0, atol=_FOREST_TOLERANCE):
            raise ArtifactError(self.manifest.model_file, "fast path differs from XGBoost")


@dataclass(frozen=True, slots=True)
class CandidatePlan:
    """A candidate list resolved against one model: partner codes, thresholds, hash keys."""

    names: list[str]
    codes: np.ndarray  # float32 partner code of each known candidate, for the model
    known: np.ndarray | None  # positions of the known candidates; None when all are known
    cutoffs: np.ndarray  # float64 per candidate; -inf for unknown ones (always sent)
    thresholds: list[float]  # per candidate as reported; 0.0 for unknown ones
    hash_keys: list[bytes]  # what exploration hashes, per candidate
    partner_index: np.ndarray  # intp per candidate: the model's partner code, -1 if unknown
    sparse: list[bool]  # per candidate: the model reports the partner as sparse
    open_cutoffs: np.ndarray  # -inf per candidate: the control group's cutoffs (send everyone)
    # Per-candidate exploration probabilities and whether any is above 0, by policy (see
    # scoring.decide.Exploration).
    explore_probabilities: dict[object, tuple[list[float], bool]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, model: ServingModel, names: Sequence[str]) -> CandidatePlan:
        codes = model.encoder.partner_codes
        index = np.array([codes.get(name, -1) for name in names], dtype=np.intp)
        known_at = np.flatnonzero(index >= 0)
        all_known = len(known_at) == len(names)
        cutoffs = np.full(len(names), -math.inf)
        cutoffs[known_at] = model.thresholds[index[known_at]]
        return cls(
            names=list(names),
            codes=index[known_at].astype(np.float32),
            known=None if all_known else known_at,
            cutoffs=cutoffs,
            thresholds=np.where(index >= 0, cutoffs, 0.0).tolist(),
            hash_keys=[name.encode() for name in names],
            partner_index=index,
            sparse=[name in model.sparse_partners for name in names],
            open_cutoffs=np.full(len(names), -math.inf),
        )


# A partner with these threshold methods in the report is sparse (when the report has no
# ``sparse`` flag of its own): trained on too few validation bids for the usual quantile.
_SPARSE_METHODS = frozenset({"smoothed", "unfiltered"})


def _sparse_partners(version_dir: Path, manifest: Manifest) -> frozenset[str]:
    """The partners ``report.json`` calls sparse: ``partners.<id>.sparse`` if it says, else a
    ``threshold_method`` other than ``quantile``. No report (or one unreadable): none; a report
    is advice on how much to explore, never a reason to refuse a version."""
    if "report.json" not in manifest.files:
        return frozenset()
    try:
        report = json.loads((version_dir / "report.json").read_text())
        entries = report.get("partners", {})
        return frozenset(
            partner
            for partner, entry in entries.items()
            if partner in manifest.partners
            and entry.get("sparse", entry.get("threshold_method") in _SPARSE_METHODS) is True
        )
    except (OSError, ValueError, AttributeError, TypeError) as error:
        log.warning("report.json unreadable (%s): no partner is treated as sparse", error)
        return frozenset()


def _compiled(booster: xgb.Booster, spec: FeatureSpec) -> CompiledForest | None:
    """The compiled evaluator if it is built and agrees with XGBoost on probe rows; else None,
    and XGBoost serves (slower, never wrong)."""
    try:
        forest = compile_forest(booster, spec.partner_column, spec.keyed_columns)
    except (ForestError, ValueError, KeyError, TypeError) as error:
        log.warning("compiled evaluator unavailable for this model (%s); using XGBoost", error)
        return None
    if forest is None:
        log.warning("compiled evaluator not built (no C compiler at install); using XGBoost")
        return None
    rows = probe_rows(booster, spec, _PROBE_ROWS)
    served = np.empty(len(rows), dtype=np.float64)
    forest.predict_rows(rows, served)
    expected = booster.inplace_predict(rows)
    worst = float(np.max(np.abs(served - expected))) if len(rows) else 0.0
    if worst > _FOREST_TOLERANCE:
        log.error("compiled evaluator differs from XGBoost by %.3g; using XGBoost", worst)
        return None
    return forest

"""A model version ready to serve: verified, loaded, and smoke-tested before anyone relies on it."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

from bidfilter.artifact import ArtifactError, Manifest, verify
from bidfilter.features import FeatureEncoder, FeatureSpec, FeatureSpecError
from bidfilter.openrtb import parse_bid_request

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
            version=manifest.version,
            manifest=manifest,
            spec=spec,
            encoder=FeatureEncoder(spec),
            booster=booster,
            partners=tuple(spec.partners),
            thresholds=np.array([manifest.thresholds[p] for p in spec.partners], dtype=np.float64),
            loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        model.smoke_test()
        return model

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Bid probabilities for feature rows (K x F float32)."""
        return np.asarray(self.booster.inplace_predict(rows), dtype=np.float64)

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

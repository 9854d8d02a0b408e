"""The bid-probability model: gradient-boosted trees (XGBoost) over (request, partner) rows."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from bidfilter.features import FeatureSpec
from bidfilter.training.config import ModelConfig
from bidfilter.training.dataset import SplitRows
from bidfilter.training.partner_boosters import merge_partner_boosters

MODEL_FILE = "model.ubj"


class _Progress(xgb.callback.TrainingCallback):
    def __init__(self, step: Callable[[int], object]) -> None:
        super().__init__()
        self._step = step

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: object) -> bool:
        self._step(1)
        return False


class _Chunks(xgb.DataIter):
    """A split's rows for XGBoost, chunk by chunk: its quantised matrix (a byte per value) is
    built without the float32 rows ever being held whole."""

    def __init__(self, rows: SplitRows, spec: FeatureSpec) -> None:
        super().__init__(release_data=True)
        self._rows, self._spec = rows, spec
        self._chunks = rows.chunks()

    def next(self, input_data: Callable[..., None]) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        rows, (start, features) = self._rows, chunk
        end = start + len(features)
        input_data(
            data=features,
            label=rows.bids[start:end].astype(np.float32),
            weight=None if rows.weights is None else rows.weights[start:end],
            feature_names=self._spec.names,
            feature_types=self._spec.feature_types,
        )
        return True

    def reset(self) -> None:
        self._chunks = self._rows.chunks()


def _matrix(
    rows: SplitRows, spec: FeatureSpec, max_bin: int, ref: xgb.DMatrix | None = None
) -> xgb.DMatrix:
    return xgb.QuantileDMatrix(
        _Chunks(rows, spec), enable_categorical=True, max_bin=max_bin, ref=ref
    )


def partner_balanced_weights(partners: np.ndarray) -> np.ndarray:
    """Row weights under which every partner's rows weigh the same in total (mean weight 1), so
    that a weighted log-loss is the mean of the partners' own log-losses."""
    counts = np.bincount(partners).astype(np.float64)
    present = int(np.count_nonzero(counts))
    per_row = np.zeros(len(counts))
    np.divide(len(partners) / max(present, 1), counts, where=counts > 0, out=per_row)
    weights: np.ndarray = per_row[partners].astype(np.float32)
    return weights


class BidModel:
    """A trained booster together with the feature spec it expects."""

    def __init__(self, booster: xgb.Booster, spec: FeatureSpec) -> None:
        self.booster = booster
        self.spec = spec

    @classmethod
    def fit(
        cls,
        train: SplitRows,
        valid: SplitRows,
        spec: FeatureSpec,
        config: ModelConfig | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> BidModel:
        """Boost up to ``config.trees`` trees, stopping early on validation log-loss: one booster
        for every partner (``config.per_partner``, merged into one model) or one shared."""
        config = config or ModelConfig()
        if config.per_partner:
            return cls._fit_per_partner(train, valid, spec, config, progress)
        train_matrix = _matrix(train, spec, config.max_bin)
        if len(valid) > config.early_stopping_rows:
            rng = np.random.default_rng(config.seed)
            valid = valid.take(
                np.sort(rng.choice(len(valid), config.early_stopping_rows, replace=False))
            )
        if config.early_stopping_per_partner:
            balanced = partner_balanced_weights(valid.partners)
            valid = replace(
                valid, weights=balanced if valid.weights is None else balanced * valid.weights
            )
        valid_matrix = _matrix(valid, spec, config.max_bin, ref=train_matrix)
        booster = xgb.train(
            config.params(),
            train_matrix,
            num_boost_round=config.trees,
            evals=[(valid_matrix, "valid")],
            early_stopping_rounds=config.early_stopping_rounds,
            verbose_eval=False,
            callbacks=[_Progress(progress)] if progress is not None else None,
        )
        return cls.best_trees(booster, spec)

    @classmethod
    def _fit_per_partner(
        cls,
        train: SplitRows,
        valid: SplitRows,
        spec: FeatureSpec,
        config: ModelConfig,
        progress: Callable[[int], object] | None,
    ) -> BidModel:
        """A booster per partner on its own rows, early-stopped on its own validation loss, all
        from one base score (the training rows' bid rate), merged behind partner splits."""
        weights = np.ones(len(train)) if train.weights is None else train.weights
        rate = float(np.clip((weights * train.bids).sum() / max(weights.sum(), 1e-12), 1e-6, 0.5))
        params = {**config.params(), "base_score": rate}
        rng = np.random.default_rng(config.seed)
        budget = max(config.early_stopping_rows // max(len(spec.partners), 1), 1)
        boosters: dict[int, xgb.Booster] = {}
        for code in range(len(spec.partners)):
            mine = train.take(np.flatnonzero(train.partners == code))
            watched = np.flatnonzero(valid.partners == code)
            if not mine.bids.any() or len(watched) == 0:
                continue  # nothing to learn: the base score alone, and no threshold to set
            if len(watched) > budget:
                watched = np.sort(rng.choice(watched, budget, replace=False))
            train_matrix = _matrix(mine, spec, config.max_bin)
            booster = xgb.train(
                params,
                train_matrix,
                num_boost_round=config.trees,
                evals=[(_matrix(valid.take(watched), spec, config.max_bin, ref=train_matrix), "v")],
                early_stopping_rounds=config.early_stopping_rounds,
                verbose_eval=False,
                callbacks=[_Progress(progress)] if progress is not None else None,
            )
            boosters[code] = cls.best_trees(booster, spec).booster
        if not boosters:
            raise ValueError("no partner has a bid in the training period")
        return cls(merge_partner_boosters(boosters, spec.partner_column), spec)

    @classmethod
    def best_trees(cls, booster: xgb.Booster, spec: FeatureSpec) -> BidModel:
        """The model cut to the trees early stopping found best (all of them without it): the
        served model is smaller and just as good."""
        best = getattr(booster, "best_iteration", None)
        if best is not None and best + 1 < booster.num_boosted_rounds():
            booster = booster[: best + 1]
        return cls(booster, spec)

    @property
    def trees(self) -> int:
        return int(self.booster.num_boosted_rounds())

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Bid probabilities for rows laid out as ``spec.names`` (float32, NaN = missing)."""
        return np.asarray(self.booster.inplace_predict(features), dtype=np.float64)

    def partner_signals(
        self, rows: SplitRows, per_partner: int = 500, top: int = 8, seed: int = 0
    ) -> dict[str, list[dict[str, Any]]]:
        """Per partner, the features its predictions move with most: the mean |contribution|
        (XGBoost's per-row attribution, the fast Saabas approximation of SHAP) over up to
        ``per_partner`` of its rows, the ``top`` largest. The partner column itself is left out:
        it is who, not what."""
        spec = self.spec
        rng = np.random.default_rng(seed)
        signals: dict[str, list[dict[str, Any]]] = {}
        for code, partner in enumerate(spec.partners):
            mine = np.flatnonzero(rows.partners == code)
            if len(mine) > per_partner:
                mine = np.sort(rng.choice(mine, per_partner, replace=False))
            if len(mine) == 0:
                signals[partner] = []
                continue
            matrix = xgb.DMatrix(
                rows.take(mine).features,
                feature_names=spec.names,
                feature_types=spec.feature_types,
                enable_categorical=True,
            )
            contributions = self.booster.predict(matrix, pred_contribs=True, approx_contribs=True)
            weight = np.abs(contributions[:, : spec.partner_column]).mean(axis=0)
            order = np.argsort(-weight, kind="stable")[:top]
            signals[partner] = [
                {"feature": spec.names[i], "mean_abs_contribution": float(weight[i])}
                for i in order
                if weight[i] > 0
            ]
        return signals

    def predict_rows(self, rows: SplitRows) -> np.ndarray:
        """:meth:`predict` of a whole split, chunk by chunk."""
        scores = np.empty(len(rows), dtype=np.float64)
        for start, features in rows.chunks():
            scores[start : start + len(features)] = self.predict(features)
        return scores

    def save(self, folder: Path) -> Path:
        """Write the booster in XGBoost's own UBJSON format (never pickle)."""
        path = folder / MODEL_FILE
        self.booster.save_model(os.fspath(path))
        return path

    @classmethod
    def load(cls, path: Path, spec: FeatureSpec) -> BidModel:
        booster = xgb.Booster()
        booster.load_model(os.fspath(path))
        if booster.feature_names is not None and list(booster.feature_names) != spec.names:
            raise ValueError(f"{path}: model features differ from the feature spec")
        return cls(booster, spec)

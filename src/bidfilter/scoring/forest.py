"""The fast path's tree evaluator: an XGBoost model flattened into arrays for compiled code.

XGBoost's in-place predict costs about 180 µs a call whatever the row count (its per-call
set-up, not the trees). The compiled evaluator in ``_forest.c`` walks each tree once per bid
request and forks only at splits on the partner column, so one request x 20 partners costs a
few microseconds. It is built when the package is installed with a C compiler; without one,
:func:`compile_forest` returns ``None`` and serving keeps XGBoost's own predict.

The arrays are read from the model's JSON dump, the format XGBoost documents as stable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from bidfilter.features import FeatureSpec

if TYPE_CHECKING:
    from bidfilter.scoring._forest import Forest as CompiledForest

try:
    from bidfilter.scoring import _forest
except ImportError:  # installed without a C compiler
    _forest = None  # type: ignore[assignment]

_DEFAULT_LEFT = 1
_CATEGORICAL = 2


class ForestError(ValueError):
    """A model the compiled evaluator does not handle (it is then served by XGBoost)."""


def compile_forest(
    booster: xgb.Booster, partner_feature: int, keyed: Sequence[int] = ()
) -> CompiledForest | None:
    """The compiled copy of ``booster`` (``None`` without the extension); ``keyed`` lists the
    per-partner columns, whose values ``predict_shared`` takes per partner code.

    Raises ``ForestError`` for models outside what it evaluates: other objectives, several
    outputs, linear boosters, or XGBoost's own category re-coding.
    """
    if _forest is None:
        return None
    arrays, n_features, base_margin = _flatten_booster(booster)
    return _forest.Forest(
        **arrays,
        n_features=n_features,
        partner_feature=partner_feature,
        base_margin=base_margin,
        keyed=np.asarray(keyed, dtype=np.int32),
    )


def probe_rows(booster: xgb.Booster, spec: FeatureSpec, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows (float32) that exercise the model's splits: each value is missing, a split
    threshold, the float just below one, or a category code in or out of the split sets."""
    arrays, n_features, _ = _flatten_booster(booster)
    feature, value = arrays["feature"], arrays["value"]
    categorical = arrays["flags"] & _CATEGORICAL > 0
    rng = np.random.default_rng(seed)
    rows = np.full((n, n_features), np.nan, dtype=np.float32)
    categorical_columns = {i for i, kind in enumerate(spec.feature_types) if kind == "c"}
    for column in range(n_features):
        if column in categorical_columns:
            top = int(arrays["cat_words"][(feature == column) & categorical].max(initial=0)) * 32
            choices = np.arange(-1, top + 2, dtype=np.float32)
        else:
            thresholds = value[(feature == column) & ~categorical]
            choices = np.concatenate(
                [thresholds, np.nextafter(thresholds, np.float32(-np.inf)), [0.0]]
            ).astype(np.float32)
        drawn = rng.choice(choices, size=n)
        rows[:, column] = np.where(rng.random(n) < 0.1, np.nan, drawn)
    return rows


def _flatten_booster(booster: xgb.Booster) -> tuple[dict[str, np.ndarray], int, float]:
    return _flatten(json.loads(booster.save_raw("json")))


def _flatten(model: dict[str, Any]) -> tuple[dict[str, np.ndarray], int, float]:
    learner = model["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise ForestError(f"objective {objective!r}; only binary:logistic is compiled")
    booster = learner["gradient_booster"]
    if booster.get("name") != "gbtree":
        raise ForestError(f"booster {booster.get('name')!r}; only gbtree is compiled")
    params = learner["learner_model_param"]
    if int(params.get("num_target", "1")) != 1 or int(params.get("num_class", "0")) > 1:
        raise ForestError("several outputs; only one is compiled")
    trees_model = booster["model"]
    # XGBoost >= 3 can re-code categories itself; bidfilter always passes its own codes.
    if any((trees_model.get("cats") or {}).get(key) for key in ("enc", "feature_segments")):
        raise ForestError("the model re-codes categories; bidfilter passes codes itself")
    n_features = int(params["num_feature"])
    base_score = float(json.loads(params["base_score"])[0])
    # binary:logistic stores its base score as a probability; trees add to its logit.
    base_margin = -math.log(1.0 / base_score - 1.0)

    trees = trees_model["trees"]
    offsets = np.cumsum([0] + [len(tree["left_children"]) for tree in trees])
    n = int(offsets[-1])
    feature = np.empty(n, dtype=np.int32)
    value = np.empty(n, dtype=np.float32)
    left = np.empty(n, dtype=np.int32)
    right = np.empty(n, dtype=np.int32)
    flags = np.zeros(n, dtype=np.uint8)
    cat_offset = np.zeros(n, dtype=np.int32)
    cat_words = np.zeros(n, dtype=np.int32)
    bit_words: list[np.ndarray] = []
    bit_count = 0
    for tree, start in zip(trees, offsets[:-1].tolist(), strict=True):
        size = len(tree["left_children"])
        span = slice(start, start + size)
        left_children = np.asarray(tree["left_children"], dtype=np.int64)
        leaf = left_children == -1
        feature[span] = np.where(leaf, -1, tree["split_indices"])
        value[span] = tree["split_conditions"]
        left[span] = np.where(leaf, -1, left_children + start)
        right[span] = np.where(leaf, -1, np.asarray(tree["right_children"]) + start)
        flags[span] = np.asarray(tree["default_left"], dtype=np.uint8) * _DEFAULT_LEFT
        split_type = np.asarray(tree.get("split_type", [0] * size))
        flags[span] |= np.where(split_type == 1, _CATEGORICAL, 0).astype(np.uint8)
        segments = tree.get("categories_segments", [])
        sizes = tree.get("categories_sizes", [])
        categories = tree.get("categories", [])
        nodes = tree.get("categories_nodes", [])
        for node, begin, count in zip(nodes, segments, sizes, strict=True):
            chosen = np.asarray(categories[begin : begin + count], dtype=np.int64)
            words = int(chosen.max()) // 32 + 1 if count else 0
            bits = np.zeros(words, dtype=np.uint32)
            if count:
                np.bitwise_or.at(bits, chosen // 32, (1 << (chosen % 32)).astype(np.uint32))
            cat_offset[start + node] = bit_count
            cat_words[start + node] = words
            bit_words.append(bits)
            bit_count += words
    roots = offsets[:-1].astype(np.int32)
    cat_bits = np.concatenate(bit_words) if bit_words else np.zeros(0, dtype=np.uint32)
    arrays: dict[str, np.ndarray] = {
        "feature": feature,
        "value": value,
        "left": left,
        "right": right,
        "flags": flags,
        "cat_offset": cat_offset,
        "cat_words": cat_words,
        "cat_bits": cat_bits,
        "roots": roots,
    }
    return arrays, n_features, base_margin

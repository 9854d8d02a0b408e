"""One booster per partner, served as one: each partner's trees behind a root split on its code.

Boosting every partner on its own rows, early-stopped on its own validation loss, filters better
than one shared booster (docs/training.md: one shared model's trees go where the busy partners'
loss is, and its early stopping sees a pooled loss). Serving still makes one call per bid
request: the per-partner boosters are merged into one XGBoost model in which every tree of
partner k starts with the categorical split ``partner in {k}`` (its own tree on the right, a
leaf of 0 on the left), so a row of partner k sums exactly partner k's trees. XGBoost predicts the
merged model as any other, and the compiled evaluator pays one bitmask AND per tree of a partner
not asked for.

All boosters share one base score (set in the parameters), the merged model's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import xgboost as xgb

_NO_PARENT = 2147483647  # XGBoost's parent index of a root


def _shift(children: list[int]) -> list[int]:
    return [child + 2 if child != -1 else -1 for child in children]


def _behind_partner_split(tree: dict[str, Any], code: int, partner_column: int) -> dict[str, Any]:
    """``tree`` under a new root that sends partner ``code`` right, into it, and every other
    code (and a missing one) left, to a leaf of 0. Nodes move down by two, so children stay
    allocated in pairs (right = left + 1), as XGBoost and the compiled evaluator expect."""
    size = len(tree["left_children"])
    segments = tree.get("categories_segments", [])
    return {
        "base_weights": [0.0, 0.0, *tree["base_weights"]],
        "categories": [code, *tree.get("categories", [])],
        "categories_nodes": [0, *(node + 2 for node in tree.get("categories_nodes", []))],
        "categories_segments": [0, *(segment + 1 for segment in segments)],
        "categories_sizes": [1, *tree.get("categories_sizes", [])],
        "default_left": [1, 0, *tree["default_left"]],
        "id": tree["id"],
        "left_children": [1, -1, *_shift(tree["left_children"])],
        "loss_changes": [0.0, 0.0, *tree["loss_changes"]],
        "parents": [_NO_PARENT, 0, *(0 if p == _NO_PARENT else p + 2 for p in tree["parents"])],
        "right_children": [2, -1, *_shift(tree["right_children"])],
        "split_conditions": [0.0, 0.0, *tree["split_conditions"]],
        "split_indices": [partner_column, 0, *tree["split_indices"]],
        "split_type": [1, 0, *tree.get("split_type", [0] * size)],
        "sum_hessian": [tree["sum_hessian"][0], 0.0, *tree["sum_hessian"]],
        "tree_param": {**tree["tree_param"], "num_nodes": str(size + 2)},
    }


def merge_partner_boosters(boosters: Mapping[int, xgb.Booster], partner_column: int) -> xgb.Booster:
    """One booster whose prediction for a row of partner code k is ``boosters[k]``'s (and the
    base score alone for a partner without a booster)."""
    if not boosters:
        raise ValueError("no partner boosters to merge")
    models = {code: json.loads(booster.save_raw("json")) for code, booster in boosters.items()}
    merged = next(iter(models.values()))
    base_scores = {m["learner"]["learner_model_param"]["base_score"] for m in models.values()}
    if len(base_scores) != 1:
        raise ValueError(f"partner boosters have different base scores: {sorted(base_scores)}")
    trees: list[dict[str, Any]] = []
    for code in sorted(models):
        gbtree = models[code]["learner"]["gradient_booster"]["model"]
        if int(gbtree["gbtree_model_param"]["num_parallel_tree"]) != 1:
            raise ValueError("partner boosters must grow one tree per round")
        for tree in gbtree["trees"]:
            wrapped = _behind_partner_split(tree, code, partner_column)
            wrapped["id"] = len(trees)
            trees.append(wrapped)
    model = merged["learner"]["gradient_booster"]["model"]
    model["trees"] = trees
    model["tree_info"] = [0] * len(trees)
    model["iteration_indptr"] = list(range(len(trees) + 1))
    model["gbtree_model_param"] = {**model["gbtree_model_param"], "num_trees": str(len(trees))}
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(merged).encode()))
    return booster

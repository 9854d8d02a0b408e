"""Per-partner thresholds: the highest score that still keeps the target share of bids."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import beta

from bidfilter.training.config import MIN_BIDS_TO_FILTER


def recall_threshold(scores_of_bids: np.ndarray, target_recall: float) -> float:
    """The largest threshold t with share(scores_of_bids >= t) >= target_recall.

    With no bids to learn from, 0.0: everything is sent, which is the safe answer.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall must be in (0, 1], not {target_recall}")
    n = len(scores_of_bids)
    if n == 0:
        return 0.0
    # Allowed misses: floor((1 - target) * n); the threshold sits on the next bid's score.
    misses = math.floor((1.0 - target_recall) * n + 1e-9)
    return float(np.sort(scores_of_bids)[misses])


def smoothed_threshold(scores_of_bids: np.ndarray, target_recall: float) -> float:
    """The Harrell-Davis estimate of the (1 - target) quantile of the bids' scores: a weighted
    mean of all order statistics (Beta weights) instead of one, so that with a few dozen bids
    the threshold does not hinge on the single lowest-scored one."""
    n = len(scores_of_bids)
    if n < MIN_BIDS_TO_FILTER:
        return 0.0
    ordered = np.sort(scores_of_bids)
    p = 1.0 - target_recall
    if p <= 0:
        return float(ordered[0])
    edges = beta.cdf(np.arange(n + 1) / n, p * (n + 1), (1 - p) * (n + 1))
    return float(np.diff(edges) @ ordered)


def partner_thresholds(
    scores: np.ndarray,
    bids: np.ndarray,
    partner_codes: np.ndarray,
    partners: Sequence[str],
    target_recall: float,
    overrides: Mapping[str, float] | None = None,
    min_bids: int = 0,
    smoothed: bool = False,
) -> dict[str, float]:
    """One threshold per partner from validation rows; ``overrides`` maps partner -> recall.

    Every partner gets :func:`smoothed_threshold` with ``smoothed``, else only those with fewer
    than ``min_bids`` validation bids; the others :func:`recall_threshold`.
    """
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(partners))
    if unknown:
        raise ValueError(f"recall override for unknown partner {unknown[0]!r}")
    thresholds = {}
    for code, partner in enumerate(partners):
        mine = scores[(partner_codes == code) & bids]
        choose = smoothed_threshold if smoothed or len(mine) < min_bids else recall_threshold
        thresholds[partner] = choose(mine, overrides.get(partner, target_recall))
    return thresholds

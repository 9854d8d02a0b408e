"""Per-partner thresholds: the highest score that still keeps the target share of bids."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from scipy.stats import beta

from bidfilter.training.config import MIN_BIDS_TO_FILTER


def effective_count(weights: np.ndarray | None, n: int) -> float:
    """Kish's effective sample size of weighted rows, (sum w)^2 / sum w^2: ``n`` unweighted.

    Bids seen only through exploration weigh 1/propensity each; twenty of them at propensity
    0.05 stand for 400 bids but carry the information of about twenty."""
    if weights is None:
        return float(n)
    total = float(weights.sum())
    squares = float(np.square(weights, dtype=np.float64).sum())
    return total * total / squares if squares > 0 else 0.0


def recall_threshold(
    scores_of_bids: np.ndarray, target_recall: float, weights: np.ndarray | None = None
) -> float:
    """The largest threshold t with share(scores_of_bids >= t) >= target_recall, the share
    weighted by ``weights`` if given (inverse propensities: the bids the logs stand for).

    With no bids to learn from, 0.0: everything is sent, which is the safe answer.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall must be in (0, 1], not {target_recall}")
    n = len(scores_of_bids)
    if n == 0:
        return 0.0
    if weights is None:
        # Allowed misses: floor((1 - target) * n); the threshold sits on the next bid's score.
        misses = math.floor((1.0 - target_recall) * n + 1e-9)
        return float(np.sort(scores_of_bids)[misses])
    order = np.argsort(scores_of_bids, kind="stable")
    below = np.cumsum(weights[order], dtype=np.float64) - weights[order]  # weight under each
    allowed = (1.0 - target_recall) * float(weights.sum()) * (1 + 1e-9)
    return float(scores_of_bids[order][np.flatnonzero(below <= allowed)[-1]])


def smoothed_threshold(
    scores_of_bids: np.ndarray, target_recall: float, weights: np.ndarray | None = None
) -> float:
    """The Harrell-Davis estimate of the (1 - target) quantile of the bids' scores: a weighted
    mean of all order statistics (Beta weights) instead of one, so that with a few dozen bids
    the threshold does not hinge on the single lowest-scored one.

    With ``weights``, the weighted Harrell-Davis estimator (Akinshin, 2023): the Beta cells
    are cut at the cumulative weight shares, and the Beta's size is the effective count; equal
    weights give the plain estimate. Under :data:`MIN_BIDS_TO_FILTER` (effective) bids, 0.0."""
    n = len(scores_of_bids)
    size = effective_count(weights, n)
    if size < MIN_BIDS_TO_FILTER:
        return 0.0
    order = np.argsort(scores_of_bids, kind="stable")
    ordered = scores_of_bids[order]
    p = 1.0 - target_recall
    if p <= 0:
        return float(ordered[0])
    if weights is None:
        cuts = np.arange(n + 1) / n
    else:
        cuts = np.concatenate([[0.0], np.cumsum(weights[order], dtype=np.float64)])
        cuts /= cuts[-1]
    edges = beta.cdf(cuts, p * (size + 1), (1 - p) * (size + 1))
    return float(np.diff(edges) @ ordered)


def confident_target(target_recall: float, size: float, z: float) -> float:
    """The recall to aim the threshold at so that the target holds at ``z`` standard errors.

    A threshold kept at the point estimate of the recall misses the target about half the time,
    and by more the noisier the estimate: with ``size`` (effective, Kish) bids, the share of
    bids under the threshold has a standard error of about sqrt(r (1 - r) / size). The allowed
    share of missed bids shrinks by ``z`` of those (never below 0: keep every validation bid).
    ``z`` 0: the target itself."""
    if z <= 0 or size <= 0:
        return target_recall
    allowed = (1.0 - target_recall) - z * math.sqrt(target_recall * (1 - target_recall) / size)
    return 1.0 - max(allowed, 0.0)


def partner_thresholds(
    scores: np.ndarray,
    bids: np.ndarray,
    partner_codes: np.ndarray,
    partners: Sequence[str],
    target_recall: float,
    overrides: Mapping[str, float] | None = None,
    min_bids: int = 0,
    smoothed: bool = False,
    weights: np.ndarray | None = None,
    unfiltered: Collection[str] = (),
    confidence_z: float = 0.0,
) -> dict[str, float]:
    """One threshold per partner from validation rows; ``overrides`` maps partner -> recall.

    Every partner gets :func:`smoothed_threshold` with ``smoothed``, else only those with fewer
    than ``min_bids`` (effective) validation bids; the others :func:`recall_threshold`. Rows
    weigh ``weights`` (inverse propensities) if given; a partner whose bids' effective count is
    under :data:`MIN_BIDS_TO_FILTER` (too little exploration to estimate it) is not filtered,
    nor is any partner in ``unfiltered`` (threshold 0). With ``confidence_z``, each partner's
    target is raised by :func:`confident_target` on its effective count of validation bids: the
    threshold keeps the target on a lower confidence bound of the recall, not its estimate.
    """
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(partners))
    if unknown:
        raise ValueError(f"recall override for unknown partner {unknown[0]!r}")
    thresholds = {}
    for code, partner in enumerate(partners):
        rows = (partner_codes == code) & bids
        mine = scores[rows]
        weight = None if weights is None else weights[rows]
        size = effective_count(weight, len(mine))
        target = confident_target(overrides.get(partner, target_recall), size, confidence_z)
        if size < MIN_BIDS_TO_FILTER or partner in unfiltered:
            thresholds[partner] = 0.0
        elif smoothed or size < min_bids:
            thresholds[partner] = smoothed_threshold(mine, target, weight)
        else:
            thresholds[partner] = recall_threshold(mine, target, weight)
    return thresholds

"""Metrics of a filter: ranking quality, calibration, and what the thresholds keep and save."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bidfilter.training.thresholds import recall_threshold


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    labels = labels.astype(bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average rank of each distinct score (1-based), so tied scores share their rank.
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse][labels].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-15, 1 - 1e-15)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    calls: int
    sent: int
    bids: int
    bids_kept: int

    @property
    def bid_recall(self) -> float:
        return self.bids_kept / self.bids if self.bids else 1.0

    @property
    def call_savings(self) -> float:
        return 1.0 - self.sent / self.calls if self.calls else 0.0


def filter_outcome(sent: np.ndarray, bids: np.ndarray) -> FilterOutcome:
    return FilterOutcome(
        calls=len(sent),
        sent=int(sent.sum()),
        bids=int(bids.sum()),
        bids_kept=int((sent & bids).sum()),
    )


def savings_recall_curve(
    scores: np.ndarray, bids: np.ndarray, points: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """(bid recall, call savings) when sending the top-k scored calls, for k across the range."""
    if len(scores) == 0:
        return np.array([1.0]), np.array([0.0])
    order = np.argsort(-scores, kind="stable")
    kept = np.cumsum(bids[order])
    total = max(int(kept[-1]), 1)
    k = np.unique(np.linspace(1, len(scores), num=min(points, len(scores))).astype(np.int64))
    return kept[k - 1] / total, 1.0 - k / len(scores)


# Inverse-propensity estimates come with percentile intervals from this many Poisson-bootstrap
# replicates (each row weighted again by a Poisson(1) draw), at this confidence.
BOOTSTRAP_REPLICATES = 200
CONFIDENCE = 0.95


def _weighted_figures(
    sent: np.ndarray, bids: np.ndarray, weights: np.ndarray
) -> tuple[float, float]:
    """(bid recall, call savings) of ``sent`` with each row standing for ``weights`` rows."""
    calls = float(weights.sum())
    bid_weight = float(weights[bids].sum())
    recall = float(weights[sent & bids].sum()) / bid_weight if bid_weight else 1.0
    savings = 1.0 - float(weights[sent].sum()) / calls if calls else 0.0
    return recall, savings


def _intervals(
    sent: np.ndarray, bids: np.ndarray, weights: np.ndarray, seed: int = 0
) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    figures = np.array(
        [
            _weighted_figures(sent, bids, weights * rng.poisson(1.0, len(weights)))
            for _ in range(BOOTSTRAP_REPLICATES)
        ]
    ).reshape(-1, 2)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(figures, [tail, 100 - tail], axis=0)
    return {
        "bid_recall_ci": [float(low[0]), float(high[0])],
        "call_savings_ci": [float(low[1]), float(high[1])],
    }


def _metrics(
    scores: np.ndarray,
    bids: np.ndarray,
    sent: np.ndarray,
    oracle_p: np.ndarray | None,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    outcome = filter_outcome(sent, bids)
    result: dict[str, Any] = {
        "auc": roc_auc(scores, bids),
        "logloss": log_loss(scores, bids) if len(scores) else None,
        "bid_recall": outcome.bid_recall,
        "call_savings": outcome.call_savings,
        "calls": outcome.calls,
        "calls_sent": outcome.sent,
        "bids": outcome.bids,
        "bids_kept": outcome.bids_kept,
        "bid_rate": outcome.bids / outcome.calls if outcome.calls else 0.0,
    }
    if weights is not None:
        # The logged rows are a biased sample (what the serving filter sent, plus exploration):
        # each stands for 1/propensity rows of the traffic, so the figures are estimates.
        recall, savings = _weighted_figures(sent, bids, weights)
        result |= {"bid_recall": recall, "call_savings": savings, "estimate": "inverse_propensity"}
        result |= _intervals(sent, bids, weights)
    if oracle_p is not None:
        # The savings a perfect model (one that knows each call's true bid probability) would
        # reach while keeping at least the same share of bids as ours did.
        if outcome.bids_kept:
            oracle_weights = None if weights is None else weights[bids]
            cut = recall_threshold(oracle_p[bids], result["bid_recall"], oracle_weights)
            oracle_sent = oracle_p >= cut
        else:  # we kept none of the bids (or there were none): so does the oracle, sending nothing
            oracle_sent = np.zeros(len(oracle_p), dtype=bool)
        if weights is None:
            result["oracle_call_savings"] = filter_outcome(oracle_sent, bids).call_savings
            result["oracle_calls_sent"] = int(oracle_sent.sum())
        else:
            result["oracle_call_savings"] = _weighted_figures(oracle_sent, bids, weights)[1]
            result["oracle_calls_sent"] = float(weights[oracle_sent].sum())
    return result


def evaluate(
    scores: np.ndarray,
    bids: np.ndarray,
    partner_codes: np.ndarray,
    partners: Sequence[str],
    thresholds: Mapping[str, float],
    oracle_p: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Overall and per-partner metrics of filtering ``scores`` at each partner's threshold.

    With ``weights`` (inverse propensities of logs a filter shaped) bid recall, call savings and
    the oracle's are inverse-propensity estimates, with bootstrap intervals."""
    threshold_of_row = np.array([thresholds[p] for p in partners], dtype=np.float64)[partner_codes]
    sent = scores >= threshold_of_row
    per_partner: dict[str, Any] = {}
    oracle_sent_total = 0.0
    for code, partner in enumerate(partners):
        mine = partner_codes == code
        metrics = _metrics(
            scores[mine],
            bids[mine],
            sent[mine],
            None if oracle_p is None else oracle_p[mine],
            None if weights is None else weights[mine],
        )
        oracle_sent_total += metrics.get("oracle_calls_sent", 0)
        per_partner[partner] = metrics
    overall = _metrics(scores, bids, sent, None, weights)
    if oracle_p is not None:
        calls = len(scores) if weights is None else float(weights.sum())
        overall["oracle_call_savings"] = 1.0 - oracle_sent_total / calls if calls else 0.0
    return {"overall": overall, "partners": per_partner}


def calibration_table(
    scores: np.ndarray, bids: np.ndarray, bins: int = 20
) -> dict[str, list[float]]:
    """Mean predicted vs observed bid rate in equal-count bins of the predicted probability."""
    if len(scores) == 0:
        return {"predicted": [], "observed": [], "count": []}
    order = np.argsort(scores, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(scores))) if len(g)]
    return {
        "predicted": [float(scores[g].mean()) for g in groups],
        "observed": [float(bids[g].mean()) for g in groups],
        "count": [float(len(g)) for g in groups],
    }


# A partner is flagged as drifting when, on the latest day of the test period, its AUC is this
# much below the whole period's, or its calibration (mean score over bid rate) off by this factor.
DRIFT_AUC_DROP = 0.05
DRIFT_CALIBRATION_FACTOR = 1.5
DRIFT_MIN_BIDS = 20  # on the latest day; fewer say nothing either way
_DAY_MS = 86_400_000


def drift(
    scores: np.ndarray,
    bids: np.ndarray,
    partner_codes: np.ndarray,
    partners: Sequence[str],
    ts_ms: np.ndarray,
) -> dict[str, Any]:
    """Per partner, how its behaviour on the latest day of the test rows departs from what the
    model learned: AUC and calibration on that day vs the whole test period."""
    if len(ts_ms) == 0:
        return {"latest_day_start_ms": None, "partners": {}, "drifted": []}
    latest_start = int(ts_ms.max()) - _DAY_MS
    latest = ts_ms >= latest_start
    per_partner: dict[str, Any] = {}
    for code, partner in enumerate(partners):
        mine = partner_codes == code
        recent = mine & latest
        entry = {
            "auc": roc_auc(scores[mine], bids[mine]),
            "auc_latest": roc_auc(scores[recent], bids[recent]),
            "calibration": _calibration(scores[mine], bids[mine]),
            "calibration_latest": _calibration(scores[recent], bids[recent]),
            "bids_latest": int(bids[recent].sum()),
        }
        entry["drifted"] = _drifted(entry)
        per_partner[partner] = entry
    return {
        "latest_day_start_ms": latest_start,
        "partners": per_partner,
        "drifted": [partner for partner, entry in per_partner.items() if entry["drifted"]],
    }


def _calibration(scores: np.ndarray, bids: np.ndarray) -> float | None:
    """Mean predicted over observed bid rate: 1 is calibrated, above 1 the model expects more."""
    observed = float(bids.mean()) if len(bids) else 0.0
    return float(scores.mean()) / observed if observed > 0 else None


def _drifted(entry: dict[str, Any]) -> bool:
    if entry["bids_latest"] < DRIFT_MIN_BIDS:
        return False
    auc, latest = entry["auc"], entry["auc_latest"]
    if auc is not None and latest is not None and auc - latest > DRIFT_AUC_DROP:
        return True
    ratio = entry["calibration_latest"]
    return (
        ratio is not None and not 1 / DRIFT_CALIBRATION_FACTOR <= ratio <= DRIFT_CALIBRATION_FACTOR
    )

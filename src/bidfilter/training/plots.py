"""PNG plots for the evaluation report: savings vs recall per partner, calibration, drift per
partner, and the signals each partner responds to."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from bidfilter.training.evaluate import calibration_table, savings_recall_curve

SAVINGS_PLOT = "savings_vs_recall.png"
CALIBRATION_PLOT = "calibration.png"
DRIFT_PLOT = "drift.png"
SIGNALS_PLOT = "signals.png"


def plot_savings_vs_recall(
    path: Path,
    scores: np.ndarray,
    bids: np.ndarray,
    partner_codes: np.ndarray,
    partners: Sequence[str],
    thresholds: Mapping[str, float],
    oracle_p: np.ndarray | None,
) -> Path:
    """One panel per partner: call savings against bid recall, model vs oracle, with the
    operating point the partner's threshold gives."""
    columns = min(5, max(1, len(partners)))
    rows = math.ceil(len(partners) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.flat[len(partners) :]:
        axis.set_visible(False)
    for code, (axis, partner) in enumerate(zip(axes.flat, partners, strict=False)):
        mine = partner_codes == code
        recall, savings = savings_recall_curve(scores[mine], bids[mine])
        axis.plot(recall, savings, label="model", color="tab:blue")
        if oracle_p is not None:
            o_recall, o_savings = savings_recall_curve(oracle_p[mine], bids[mine])
            axis.plot(o_recall, o_savings, label="oracle", color="tab:gray", linestyle="--")
        sent = scores[mine] >= thresholds[partner]
        n_bids = max(int(bids[mine].sum()), 1)
        point = ((sent & bids[mine]).sum() / n_bids, 1 - sent.mean() if sent.size else 0)
        axis.plot(*point, "o", color="tab:red", label="threshold")
        axis.set_title(f"{partner} (bid rate {bids[mine].mean():.1%})", fontsize=9)
        axis.set_xlim(0.8, 1.001)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    figure.supxlabel("bid recall (share of bids kept)")
    figure.supylabel("call savings (share of calls filtered)")
    figure.suptitle("Savings vs recall per partner, test set")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_calibration(path: Path, scores: np.ndarray, bids: np.ndarray) -> Path:
    """Reliability diagram: mean predicted bid probability vs observed bid rate."""
    table = calibration_table(scores, bids, bins=30)
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="tab:gray", linestyle="--", label="perfect")
    axis.plot(table["predicted"], table["observed"], "o-", label="model (equal-count bins)")
    axis.set_xscale("symlog", linthresh=0.01)
    axis.set_yscale("symlog", linthresh=0.01)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("predicted bid probability")
    axis.set_ylabel("observed bid rate")
    axis.set_title("Calibration, test set")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_drift(path: Path, drift: Mapping[str, Any]) -> Path:
    """Per partner: AUC on the whole test period and on its latest day; drifting ones in red."""
    partners = list(drift["partners"])
    whole = [_or_nan(drift["partners"][p]["auc"]) for p in partners]
    latest = [_or_nan(drift["partners"][p]["auc_latest"]) for p in partners]
    positions = np.arange(len(partners))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(partners)), 3.6))
    axis.bar(positions - 0.2, whole, 0.4, label="test period", color="tab:blue")
    colours = ["tab:red" if p in drift["drifted"] else "tab:gray" for p in partners]
    axis.bar(positions + 0.2, latest, 0.4, label="latest day", color=colours)
    axis.axhline(0.5, color="black", linewidth=0.6, linestyle=":")
    axis.set_xticks(positions, partners, rotation=60, ha="right", fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_ylabel("AUC")
    axis.set_title("Drift: AUC per partner (red: flagged as drifting)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_signals(path: Path, signals: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Heat map: each partner's mean |contribution| of its top signals (by row, so partners of
    different bid rates read alike)."""
    partners = [p for p, top in signals.items() if top]
    features = sorted({s["feature"] for p in partners for s in signals[p][:4]})
    grid = np.zeros((len(partners), len(features)))
    for row, partner in enumerate(partners):
        for signal in signals[partner]:
            if signal["feature"] in features:
                grid[row, features.index(signal["feature"])] = signal["mean_abs_contribution"]
        peak = grid[row].max()
        if peak > 0:
            grid[row] /= peak
    figure, axis = plt.subplots(
        figsize=(max(6.0, 0.35 * len(features) + 2), max(3.0, 0.3 * len(partners) + 1.5))
    )
    axis.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    axis.set_xticks(range(len(features)), features, rotation=70, ha="right", fontsize=6)
    axis.set_yticks(range(len(partners)), partners, fontsize=7)
    axis.set_title("What each partner responds to (mean |contribution|, scaled per partner)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value

"""The closed loop's picture: bid recall and call savings per day, one line per policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_STYLE = {"debiased": "tab:blue", "naive": "tab:red", "full_information": "tab:green"}


def plot_loop(report: dict[str, Any], path: Path) -> Path:
    figure, (recall, savings, watched) = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for name, days in report["policies"].items():
        x = [d["day"] for d in days]
        colour = _STYLE.get(name)
        recall.plot(x, [d["bid_recall"] for d in days], marker="o", ms=3, color=colour, label=name)
        savings.plot(
            x, [d["call_savings"] for d in days], marker="o", ms=3, color=colour, label=name
        )
        savings.plot(
            x,
            [d["oracle_call_savings"] for d in days],
            ls=":",
            color=colour,
            alpha=0.6,
            label=f"{name}: oracle at its recall",
        )
        watched.plot(
            x,
            [d["watched"].get("retargeted", {}).get("bid_recall") for d in days],
            marker="o",
            ms=3,
            color=colour,
            label=f"{name}: {report['changes']['retarget']}",
        )
    change = report["changes"]["retarget_day"]
    for axis in (recall, savings, watched):
        axis.axvline(change, color="grey", ls="--", lw=1)
        axis.axvline(report["changes"]["join_day"], color="grey", ls=":", lw=1)
        axis.grid(alpha=0.3)
    recall.axhline(0.98, color="black", lw=0.8)
    recall.set_ylabel("bid recall (all partners)")
    savings.set_ylabel("call savings")
    watched.set_ylabel("bid recall of the retargeted partner")
    watched.axhline(0.97, color="black", lw=0.8)
    watched.set_xlabel(
        f"day (dashed: {report['changes']['retarget']} retargets;"
        f" dotted: {report['changes']['join']} joins)"
    )
    recall.legend(fontsize=8)
    savings.legend(fontsize=7, ncol=2)
    figure.suptitle("Closed loop: each day filtered by the model retrained after the day before")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

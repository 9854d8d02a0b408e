"""The simulator's picture: calls, bids, filled auctions, revenue, without and with the filter."""

from __future__ import annotations

from pathlib import Path

# A bare Figure, not pyplot: no global backend or figure registry is touched, so plotting is
# safe from any thread and leaves the caller's matplotlib setup alone. PNG output uses Agg.
from matplotlib.figure import Figure

from bidfilter.replay.simulation_report import SimulationReport

_WITHOUT_COLOR = "tab:gray"
_WITH_COLOR = "tab:blue"


def plot_simulation(report: SimulationReport, path: Path) -> Path:
    """Four panels of grouped bars (without | with the filter), each titled with its change."""
    without, with_filter = report.without, report.with_filter
    panels = [
        ("partner calls", without.partner_calls, with_filter.partner_calls,
         f"{report.calls_saved_share:.1%} saved"),
        ("bids received", without.bids, with_filter.bids,
         f"{report.bids_lost_share:.2%} lost"),
        ("filled auctions", without.filled, with_filter.filled,
         f"{report.filled_lost_share:.2%} lost"),
        ("revenue", without.revenue, with_filter.revenue,
         f"{report.revenue_kept_share:.2%} kept"),
    ]  # fmt: skip
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels))
    for axis, (name, before, after, change) in zip(axes, panels, strict=True):
        bars = axis.bar(
            ["without", "with"], [before, after], color=[_WITHOUT_COLOR, _WITH_COLOR], width=0.6
        )
        axis.bar_label(bars, labels=[_label(before), _label(after)], fontsize=8, padding=2)
        axis.set_title(f"{name}\n{change}", fontsize=10)
        axis.set_ylim(0, max(before, after, 1e-9) * 1.15)
        axis.grid(axis="y", alpha=0.3)
        axis.tick_params(labelsize=8)
    figure.suptitle(
        f"{without.requests:,} logged requests, {report.auction.replace('_', ' ')} auctions:"
        " without and with the filter"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _label(value: float) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"

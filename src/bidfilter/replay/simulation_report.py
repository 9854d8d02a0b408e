"""What the auction simulator reports: both columns (``AuctionTotals``), without and with the
filter, their changes, and how the filter calls went."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bidfilter.replay.auction import AuctionKind


@dataclass(frozen=True)
class AuctionTotals:
    """One column of the simulation: sums over every simulated auction."""

    requests: int
    partner_calls: int
    bids: int
    filled: int  # auctions with at least one bid
    revenue: float  # currency units: clearing prices (CPM) / 1000, summed

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "partner_calls": self.partner_calls,
            "bids": self.bids,
            "filled": self.filled,
            "revenue": round(self.revenue, 6),
        }


@dataclass(frozen=True)
class SimulationReport:
    """Both columns, the deltas, and how the filter calls went. ``to_dict``, ``to_table``."""

    target: str
    auction: AuctionKind
    without: AuctionTotals
    with_filter: AuctionTotals
    errors: dict[str, int]  # failed filter calls (they failed open), by kind
    outcomes: dict[str, int]  # the server's outcomes, by name
    elapsed_s: float
    png: Path | None = None  # where the picture was drawn (by the caller: plot_simulation)

    @property
    def calls_saved_share(self) -> float:
        return _share_lost(self.without.partner_calls, self.with_filter.partner_calls)

    @property
    def bids_lost_share(self) -> float:
        return _share_lost(self.without.bids, self.with_filter.bids)

    @property
    def filled_lost_share(self) -> float:
        return _share_lost(self.without.filled, self.with_filter.filled)

    @property
    def revenue_kept_share(self) -> float:
        if self.without.revenue <= 0:
            return 1.0
        return self.with_filter.revenue / self.without.revenue

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "auction": self.auction,
            "without_filter": self.without.to_dict(),
            "with_filter": self.with_filter.to_dict(),
            "partner_calls_saved_pct": round(100 * self.calls_saved_share, 3),
            "bids_lost_pct": round(100 * self.bids_lost_share, 3),
            "filled_lost_pct": round(100 * self.filled_lost_share, 3),
            "revenue_kept_pct": round(100 * self.revenue_kept_share, 3),
            "errors": dict(self.errors),
            "outcomes": dict(self.outcomes),
            "elapsed_s": round(self.elapsed_s, 3),
            "png": None if self.png is None else str(self.png),
        }

    def to_table(self) -> str:
        without, with_filter = self.without, self.with_filter
        rows = [
            ("partner calls", without.partner_calls, with_filter.partner_calls,
             f"{self.calls_saved_share:.1%} saved"),
            ("bids", without.bids, with_filter.bids, f"{self.bids_lost_share:.2%} lost"),
            ("filled auctions", without.filled, with_filter.filled,
             f"{self.filled_lost_share:.2%} lost"),
            ("revenue", f"{without.revenue:,.2f}", f"{with_filter.revenue:,.2f}",
             f"{self.revenue_kept_share:.2%} kept"),
        ]  # fmt: skip
        header = ("", "without filter", "with filter", "change")
        cells = [header, *((str(a), str(b), str(c), d) for a, b, c, d in rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(4)]
        lines = [
            f"{self.without.requests} logged requests, {self.auction.replace('_', ' ')} "
            f"auctions, filter {self.target}"
        ]
        for index, row in enumerate(cells):
            lines.append(
                "  ".join(
                    cell.ljust(width) if column == 0 else cell.rjust(width)
                    for column, (cell, width) in enumerate(zip(row, widths, strict=True))
                )
            )
            if index == 0:
                lines.append("  ".join("-" * width for width in widths))
        failed = sum(self.errors.values())
        if failed:
            kinds = ", ".join(f"{kind} {n}" for kind, n in self.errors.items() if n)
            lines.append(f"{failed} filter calls failed and were sent to everyone ({kinds})")
        return "\n".join(lines)


def _share_lost(before: int, after: int) -> float:
    return (before - after) / before if before else 0.0

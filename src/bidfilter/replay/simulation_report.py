"""What the auction simulator reports: both columns (``AuctionTotals``), without and with the
filter, their changes, and how the filter calls went; with QPS caps (``CapReport``), the
auctions under the caps, value-ranked and random, and each partner's cap figures."""

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
class PartnerCapFigures:
    """One partner under its cap: calls (over the whole replay) and rates (calls per simulated
    second, over ``duration_s``)."""

    cap: float  # calls per simulated second
    unfiltered_calls: int  # its logged calls: what it gets without the filter
    filter_sends: int  # what the filter sends it before the cap
    sent: int  # value-ranked, under the cap
    random_sent: int  # random throttling, under the cap
    duration_s: float
    max_cap_excess: float  # the largest share over the cap in any 1-second window, value-ranked
    random_max_cap_excess: float
    threshold: float  # the budget threshold on the bid probability at the end of the replay

    def to_dict(self) -> dict[str, Any]:
        return {
            "cap_qps": round(self.cap, 3),
            "unfiltered_calls": self.unfiltered_calls,
            "filter_sends": self.filter_sends,
            "sent": self.sent,
            "random_sent": self.random_sent,
            "filter_send_qps": round(self.filter_sends / self.duration_s, 3),
            "sent_qps": round(self.sent / self.duration_s, 3),
            "max_cap_excess": round(self.max_cap_excess, 4),
            "random_max_cap_excess": round(self.random_max_cap_excess, 4),
            "threshold": round(self.threshold, 6),
        }


@dataclass(frozen=True)
class CapReport:
    """The auctions under per-partner QPS caps (``share`` of each partner's unfiltered rate):
    value-ranked (``with_caps``) and random throttling (``random``), over ``duration_s``
    simulated seconds at ``replay_rate`` requests per simulated second (``None``: logged time)."""

    share: float
    replay_rate: float | None
    duration_s: float
    with_caps: AuctionTotals
    random: AuctionTotals
    partners: dict[str, PartnerCapFigures]

    @property
    def max_cap_excess(self) -> float:
        return max((p.max_cap_excess for p in self.partners.values()), default=0.0)

    @property
    def random_max_cap_excess(self) -> float:
        return max((p.random_max_cap_excess for p in self.partners.values()), default=0.0)


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
    caps: CapReport | None = None  # with per-partner QPS caps only

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
        return self.kept_of_unfiltered(self.with_filter)

    def kept_of_unfiltered(self, column: AuctionTotals) -> float:
        """The share of the unfiltered revenue a column keeps (1 when there was none)."""
        if self.without.revenue <= 0:
            return 1.0
        return column.revenue / self.without.revenue

    def to_dict(self) -> dict[str, Any]:
        document = {
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
        caps = self.caps
        if caps is not None:
            document |= {
                "revenue_kept": round(self.kept_of_unfiltered(caps.with_caps), 6),
                "random_throttling": {
                    "revenue_kept": round(self.kept_of_unfiltered(caps.random), 6),
                    "max_cap_excess": round(caps.random_max_cap_excess, 4),
                    **caps.random.to_dict(),
                },
                "max_cap_excess": round(caps.max_cap_excess, 4),
                "qps_caps": {
                    "share": caps.share,
                    "replay_rate": caps.replay_rate,
                    "simulated_s": round(caps.duration_s, 3),
                    "with_caps": caps.with_caps.to_dict(),
                    "partners": {name: p.to_dict() for name, p in caps.partners.items()},
                },
            }
        return document

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
        if self.caps is not None:
            lines.append(self._caps_line(self.caps))
        failed = sum(self.errors.values())
        if failed:
            kinds = ", ".join(f"{kind} {n}" for kind, n in self.errors.items() if n)
            lines.append(f"{failed} filter calls failed and were sent to everyone ({kinds})")
        return "\n".join(lines)

    def _caps_line(self, caps: CapReport) -> str:
        clock = "logged time" if caps.replay_rate is None else f"{caps.replay_rate:g} requests/s"
        return (
            f"caps at {caps.share:g} of each partner's unfiltered rate ({clock}): revenue kept"
            f" {self.kept_of_unfiltered(caps.with_caps):.2%} value-ranked,"
            f" {self.kept_of_unfiltered(caps.random):.2%} random; partner calls"
            f" {caps.with_caps.partner_calls}; largest 1-second excess over a cap"
            f" {caps.max_cap_excess:.1%}"
        )


def _share_lost(before: int, after: int) -> float:
    return (before - after) / before if before else 0.0

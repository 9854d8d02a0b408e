"""Per-partner QPS budgets: which of the filter's sends each partner's cap lets through.

A partner may accept at most ``caps[p]`` calls per second (``inf``: uncapped). When the sends
the model decides for it would exceed that, :class:`PartnerBudgets` keeps the ones of highest
value, by raising a per-partner *budget threshold* on the value smoothly rather than dropping at
random. It is sans-IO: the caller passes the time in, nothing reads a clock, and the state is a
few numpy arrays indexed by partner code, updated in place.

Two mechanisms, one for the mean and one for the worst second:

- **The threshold** targets ``target_share`` (0.95) of the cap. Exponentially-weighted rates
  (time constant ``time_constant_s``, 0.25 s) estimate what the model offers each partner per
  second; from them the share ``f`` of offered sends that fits under the target, and the
  threshold tracks the value above which ``f`` of the offered values lie: an online quantile
  (Robbins-Monro). Each offer moves it by ``step`` (8) of the partner's typical value, shared
  among the offers of one time constant, so it rises and falls smoothly as traffic does, as
  fast for a partner offered 10 calls/s as for one offered 10,000. When everything offered
  fits, it drops to 0 at once. (On Poisson streams offered at 2 and 8 times the cap, the sent
  rate settles at 94% and 92% of it, keeping 99% of the value the best choice of as many
  sends would; random dropping to the same rate keeps 58% and 38% of it:
  ``tests/scoring/test_budget.py``.)
- **The guard** is exact: it remembers a partner's last ``limit`` send times (a ring), and
  refuses a send while the oldest of them is less than 1 second old. Whatever the arrivals, no
  1-second window then holds more than ``limit = max(floor(cap * (1 + tolerance_share)), 1)``
  sends: **the tolerance is 5% of the cap** (rounded down to whole calls, and at least one call
  per second however small the cap). The guard is what catches a burst the threshold has not
  caught up with; it drops in arrival order. (A token bucket needs no ring, but one small
  enough to bound every second by 5% let through 66% of the cap where the ring lets 93%, on
  Poisson arrivals aimed at 95%; the ring costs 8 bytes per call/s of cap.)

*Protected* sends (exploration and the control group, whose point is to be sent whatever their
score, and sends whose value is unknown) skip the threshold but count inside the cap and pass
the guard like any other: the threshold leaves room for them. The value is an input array (the
bid probability today; bid probability times expected price later), assumed non-negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_TARGET_SHARE: Final = 0.95
DEFAULT_TOLERANCE_SHARE: Final = 0.05
DEFAULT_TIME_CONSTANT_S: Final = 0.25
DEFAULT_STEP: Final = 8.0
# The typical offered value, which scales the threshold's step, is a slower average than the
# rates: it sets the controller's units, not its response.
_UNIT_WEIGHT: Final = 0.01
_TINY_RATE: Final = 1e-12
# The rates start at 0, so early estimates are divided by the share of the time constant seen
# so far; this floor keeps the first calls from reading as an enormous rate.
_WARM_UP_FLOOR: Final = 0.1


class Admission(NamedTuple):
    """One request's sends after the budgets, and the budget threshold each candidate faced
    (-inf for an uncapped partner; 0 for one under its cap: no value is refused)."""

    allowed: np.ndarray  # bool per candidate
    thresholds: np.ndarray  # float per candidate


@dataclass(frozen=True)
class BudgetSnapshot:
    """Per partner code, for metrics: the cap, the recent rates (calls/s, exponentially
    weighted) and the budget threshold now in force."""

    caps: np.ndarray
    sent_rate: np.ndarray
    offered_rate: np.ndarray  # the model's sends, protected ones included, before the budget
    thresholds: np.ndarray


class PartnerBudgets:
    """The budgets of ``len(caps)`` partners, indexed by partner code. Call :meth:`admit` once per
    request, with non-decreasing times (a time before the last is read as the last)."""

    def __init__(
        self,
        caps: ArrayLike,
        *,
        target_share: float = DEFAULT_TARGET_SHARE,
        tolerance_share: float = DEFAULT_TOLERANCE_SHARE,
        time_constant_s: float = DEFAULT_TIME_CONSTANT_S,
        step: float = DEFAULT_STEP,
        start_s: float = 0.0,
    ) -> None:
        caps = np.array(caps, dtype=np.float64, ndmin=1)
        if caps.ndim != 1 or np.isnan(caps).any() or (caps <= 0).any():
            raise ValueError("caps must be one positive number (or inf) per partner")
        if not 0 < target_share <= 1:
            raise ValueError(f"target_share must be in (0, 1], not {target_share}")
        if not tolerance_share >= 0:
            raise ValueError(f"tolerance_share must be at least 0, not {tolerance_share}")
        if not time_constant_s > 0 or not step > 0:
            raise ValueError("time_constant_s and step must be positive")
        n = len(caps)
        self.caps = caps
        self.caps.flags.writeable = False
        capped = np.isfinite(caps)
        self.any_capped = bool(capped.any())
        # An uncapped partner goes through the same arithmetic as the others, with an infinite
        # target, a threshold pinned at -inf and a ring slot that never fills: it is never
        # refused, and no branch per candidate is needed.
        self.target = np.where(capped, target_share * caps, np.inf)
        self.limits = np.where(
            capped, np.maximum(np.floor(np.where(capped, caps, 1.0) * (1 + tolerance_share)), 1), 1
        ).astype(np.intp)
        self.limits.flags.writeable = False
        self._floor = np.where(capped, 0.0, -np.inf)
        self.thresholds = self._floor.copy()
        # One flat ring of send times; partner p's is ``limits[p]`` long from ``_ring_start[p]``.
        # Every uncapped partner shares slot 0, wiped after each write: never a refusal, and no
        # branch per candidate.
        lengths = np.where(capped, self.limits, 0)
        self._ring_start = np.concatenate(([1], 1 + np.cumsum(lengths)[:-1]))
        self._ring_start[~capped] = 0
        self._ring = np.full(1 + int(lengths.sum()), -np.inf)
        self._ring_next = np.zeros(n, dtype=np.intp)  # where each partner's oldest send is
        self.time_constant_s = time_constant_s
        self.step = step
        # Exponentially-weighted sums (calls/s times the time constant, before warm-up).
        self._offered = np.zeros(n)  # the model's unprotected sends
        self._protected = np.zeros(n)
        self._sent = np.zeros(n)
        self._unit = np.zeros(n)  # typical offered value: the threshold's step is in these units
        self._start_s = self._last_s = start_s

    def admit(
        self,
        partners: np.ndarray,
        values: np.ndarray,
        sends: np.ndarray,
        now_s: float,
        protected: np.ndarray | None = None,
    ) -> Admission:
        """Which of one request's ``sends`` the budgets allow, at time ``now_s`` (seconds).

        ``partners``: each candidate's partner code (distinct within a request); ``values``:
        what a send is worth (the bid probability); ``sends``: the model's decisions
        (explored and control sends included); ``protected``: the sends that skip the
        threshold (exploration, control, unknown value), which still count inside the cap.
        """
        thresholds = self.thresholds[partners]
        if not self.any_capped:
            return Admission(np.array(sends, dtype=np.bool_), thresholds)
        self._advance(now_s)
        ranked = np.array(sends, dtype=np.bool_)
        passes = ranked & (values >= thresholds)
        if protected is not None:
            shielded = ranked & protected
            ranked ^= shielded
            passes |= shielded
            self._protected[partners] += shielded
        self._offered[partners] += ranked
        self._track_quantile(partners, values, thresholds, ranked)
        # The guard: refused while the partner's ``limit``-th last send is under a second old.
        slots = self._ring_start[partners] + self._ring_next[partners]
        passes &= self._ring[slots] <= now_s - 1.0
        self._ring[slots[passes]] = now_s
        self._ring[0] = -np.inf
        sent = partners[passes]
        following = self._ring_next[sent] + 1
        self._ring_next[sent] = np.where(following < self.limits[sent], following, 0)
        self._sent[partners] += passes
        return Admission(passes, thresholds)

    def snapshot(self, now_s: float) -> BudgetSnapshot:
        """The budgets' figures at ``now_s`` (copies: safe to keep)."""
        self._advance(now_s)
        scale = self._rate_scale()
        return BudgetSnapshot(
            caps=self.caps.copy(),
            sent_rate=self._sent * scale,
            offered_rate=(self._offered + self._protected) * scale,
            thresholds=np.maximum(self.thresholds, 0.0),
        )

    def _advance(self, now_s: float) -> None:
        """Decay every rate to ``now_s``: one pass over all partners, in place, rather than a
        clock per partner (a few dozen partners cost less than indexing)."""
        elapsed = now_s - self._last_s
        if elapsed <= 0:
            return
        self._last_s = now_s
        decay = math.exp(-elapsed / self.time_constant_s)
        self._offered *= decay
        self._protected *= decay
        self._sent *= decay

    def _rate_scale(self) -> float:
        """From an exponentially-weighted sum to calls/s, corrected for the sums having started
        at 0."""
        seen = 1.0 - math.exp(-(self._last_s - self._start_s) / self.time_constant_s)
        return 1.0 / (self.time_constant_s * max(seen, _WARM_UP_FLOOR))

    def _track_quantile(
        self, partners: np.ndarray, values: np.ndarray, thresholds: np.ndarray, ranked: np.ndarray
    ) -> None:
        """Move each ranked offer's threshold towards the value above which the share ``f`` of
        offers that fits under its target lies: up by ``step * (1 - f)`` units when the offer is
        at or above it, down by ``step * f`` units when below."""
        scale = self._rate_scale()
        room = self.target[partners] - self._protected[partners] * scale
        # An offer was just counted, so a ranked candidate's sum is positive; the others' share
        # is multiplied by 0 below, and only must not be NaN.
        offered = np.maximum(self._offered[partners] * scale, _TINY_RATE)
        fits = np.minimum(np.maximum(room / offered, 0.0), 1.0)
        unit = self._unit[partners]
        # A partner's first offer sets its unit; later ones nudge it.
        unit = np.where(unit > 0, unit + _UNIT_WEIGHT * ranked * (values - unit), values * ranked)
        self._unit[partners] = unit
        # The step is per time constant, shared among its offers: the threshold moves as fast
        # for a partner offered 10 calls/s as for one offered 10,000, and jitters less the more
        # offers there are to average.
        per_offer = (self.step * ranked) / np.maximum(offered * self.time_constant_s, 1.0)
        moved = thresholds + per_offer * unit * ((values >= thresholds) - fits)
        # Everything fits: nothing to refuse (rather than waiting for low offers to pull the
        # threshold down, which takes long when they are rare).
        moved[fits >= 1.0] = -np.inf
        self.thresholds[partners] = np.maximum(moved, self._floor[partners])

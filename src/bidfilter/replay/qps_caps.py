"""Per-partner QPS caps on the filter's sends, applied as the SSP would, in logged time order.

The server is not involved: it answered every request already (scores and sends), and the caps
are applied to its answers client-side with the controller the server is meant to adopt,
``bidfilter.scoring.budget.PartnerBudgets``. Two throttles run to the same caps, over the same
clock, with the same protected sends:

- **value-ranked** (bidfilter's): the controller ranks the filter's sends by their bid
  probability;
- **random**: the same controller fed uniform random values (seeded) instead, which makes its
  threshold drop a random share of the sends: random dropping at the rate the caps need, with
  the same rate estimate and the same 1-second guard, so only the choice of requests differs.

**The simulated clock.** The requests are replayed in their logged time order (``ts``; ties in
log order). With ``replay_rate`` R (requests per simulated second), the logged span is scaled
so that the N requests take N / R simulated seconds: request i is at
``(ts_i - ts_first) / (ts_last - ts_first) * (N - 1) / R`` (at ``i / R`` when every ``ts`` is
the same), which keeps the logged traffic's shape (its peaks and troughs) and sets its mean
rate to R. With ``replay_rate=None`` the logged clock is used as is, over
``(ts_last - ts_first) * N / (N - 1)`` seconds.

**The caps.** Partner p's cap is ``share * calls_p / duration`` calls per simulated second,
where ``calls_p`` is the number of replayed requests that logged p (its calls without the
filter) and ``duration`` the simulated span above: ``share`` of its mean unfiltered rate.

**Protected sends** skip the ranking but count inside the cap: explored sends, every send of a
control-group request, sends of a partner the model does not know (score below 0) and every
send of a request whose filter call failed (it failed open: no score to rank by).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from bidfilter.client import FilterResponse
from bidfilter.replay.logged_auctions import LoggedAuction
from bidfilter.replay.simulation_report import PartnerCapFigures

DEFAULT_REPLAY_RATE: Final = 1000.0
"""Requests per simulated second: fast enough that a partner logged on a tenth of the requests
gets caps of tens of calls per second, so the 1-second windows hold enough calls to measure."""


@dataclass(frozen=True)
class CappedSends:
    """Whether each logged partner of each auction is called under the caps (value-ranked and
    random throttling), and the per-partner figures."""

    ranked: list[list[bool]]
    random: list[list[bool]]
    partners: dict[str, PartnerCapFigures]
    duration_s: float


def simulated_times(ts_ms: np.ndarray, replay_rate: float | None) -> tuple[np.ndarray, float]:
    """Each request's simulated time (seconds from the first, in the order given: sorted by
    ``ts``), and the simulated span, as the module docstring defines them."""
    count = len(ts_ms)
    span_ms = float(ts_ms[-1] - ts_ms[0]) if count else 0.0
    if replay_rate is None:
        if span_ms <= 0 or count < 2:
            raise ValueError("the logged requests span no time: give a replay rate")
        return (ts_ms - ts_ms[0]) / 1000.0, span_ms / 1000.0 * count / (count - 1)
    if not replay_rate > 0:
        raise ValueError(f"replay_rate must be positive, not {replay_rate}")
    if span_ms <= 0:
        return np.arange(count) / replay_rate, count / replay_rate
    return (ts_ms - ts_ms[0]) / span_ms * ((count - 1) / replay_rate), count / replay_rate


def cap_sends(
    auctions: Sequence[LoggedAuction],
    answers: Sequence[FilterResponse | str],
    filter_sends: Sequence[Sequence[bool]],
    share: float,
    *,
    replay_rate: float | None = DEFAULT_REPLAY_RATE,
    seed: int = 0,
) -> CappedSends:
    """The filter's sends (``filter_sends[i][j]``: auction i's logged partner j) under caps of
    ``share`` of each partner's unfiltered rate, both throttles."""
    # Imported here: the scoring package imports XGBoost (seconds), and only a run with caps
    # needs the controller.
    from bidfilter.scoring.budget import PartnerBudgets

    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], not {share}")
    order = np.argsort(np.array([a.ts_ms for a in auctions], dtype=np.int64), kind="stable")
    times, duration = simulated_times(
        np.array([auctions[i].ts_ms for i in order], dtype=np.int64), replay_rate
    )
    names = sorted({partner for logged in auctions for partner in logged.partners})
    code_of = {name: code for code, name in enumerate(names)}
    unfiltered = np.zeros(len(names), dtype=np.int64)
    for logged in auctions:
        for partner in logged.partners:
            unfiltered[code_of[partner]] += 1
    caps = share * unfiltered / duration
    ranked_budgets, random_budgets = PartnerBudgets(caps), PartnerBudgets(caps)
    draws = np.random.default_rng(seed)
    ranked: list[list[bool]] = [[] for _ in auctions]
    random: list[list[bool]] = [[] for _ in auctions]
    ranked_times: list[list[float]] = [[] for _ in names]  # per partner code, in time order
    random_times: list[list[float]] = [[] for _ in names]
    offered = np.zeros(len(names), dtype=np.int64)
    for position, now in zip(order.tolist(), times.tolist(), strict=True):
        logged = auctions[position]
        codes = np.array([code_of[p] for p in logged.partners], dtype=np.intp)
        sends = np.array(filter_sends[position], dtype=np.bool_)
        values, protected = _values(logged, answers[position])
        offered[codes[sends]] += 1
        for budgets, ranked_by, out, out_times in (
            (ranked_budgets, values, ranked, ranked_times),
            (random_budgets, draws.random(len(codes)), random, random_times),
        ):
            allowed = budgets.admit(codes, ranked_by, sends, now, protected).allowed
            out[position] = allowed.tolist()
            for code in codes[allowed].tolist():
                out_times[code].append(now)
    thresholds = ranked_budgets.snapshot(float(times[-1])).thresholds
    partners = {
        name: PartnerCapFigures(
            cap=float(caps[code]),
            unfiltered_calls=int(unfiltered[code]),
            filter_sends=int(offered[code]),
            sent=len(ranked_times[code]),
            random_sent=len(random_times[code]),
            duration_s=duration,
            max_cap_excess=max_window_excess(ranked_times[code], float(caps[code])),
            random_max_cap_excess=max_window_excess(random_times[code], float(caps[code])),
            threshold=float(thresholds[code]),
        )
        for code, name in enumerate(names)
    }
    return CappedSends(ranked, random, partners, duration)


def max_window_excess(send_times: Sequence[float], cap: float) -> float:
    """The largest share by which the sends in any 1-second window ``[t, t + 1)`` exceed
    ``cap`` (0 when none does). ``send_times`` are sorted."""
    if not send_times:
        return 0.0
    times = np.asarray(send_times)
    # The busiest windows start at a send: count the sends from each one to a second later.
    in_window = np.searchsorted(times, times + 1.0, side="left") - np.arange(len(times))
    return max(0.0, float(in_window.max()) / cap - 1.0)


def _values(logged: LoggedAuction, answer: FilterResponse | str) -> tuple[np.ndarray, np.ndarray]:
    """Each logged partner's value (its bid probability) and whether its send is protected."""
    count = len(logged.partners)
    if isinstance(answer, str):  # the call failed, and failed open: nothing to rank by
        return np.zeros(count), np.ones(count, dtype=np.bool_)
    decisions = {decision.partner: decision for decision in answer.decisions}
    values = np.zeros(count)
    protected = np.ones(count, dtype=np.bool_)
    for index, partner in enumerate(logged.partners):
        decision = decisions.get(partner)
        if decision is not None and decision.bid_probability >= 0:
            values[index] = decision.bid_probability
            protected[index] = decision.explore or bool(answer.control)
    return values, protected

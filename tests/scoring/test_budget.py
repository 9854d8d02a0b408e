"""The per-partner budget controller: the 1-second guard under any arrivals (hypothesis), value
ranking against random dropping, uncapped partners untouched, steady-state convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bidfilter.scoring.budget import PartnerBudgets


def window_limit(cap: float, tolerance_share: float = 0.05) -> int:
    """What the module promises: at most this many sends in any 1-second window."""
    return max(math.floor(cap * (1 + tolerance_share)), 1)


def busiest_window(times: list[float]) -> int:
    """The most sends in any window [t, t + 1): the obvious quadratic count, as a reference."""
    return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


def poisson_stream(rate: float, seconds: float, partners: int, seed: int) -> tuple[np.ndarray, ...]:
    """Arrival times, values (a skewed bid probability) and the model's sends (80%)."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1 / rate, int(rate * seconds)))
    values = rng.beta(1, 4, (len(times), partners))
    sends = rng.random((len(times), partners)) < 0.8
    return times, values, sends


def replay(
    budgets: PartnerBudgets,
    times: np.ndarray,
    values: np.ndarray,
    sends: np.ndarray,
    protected: np.ndarray | None = None,
) -> np.ndarray:
    codes = np.arange(values.shape[1])
    allowed = np.zeros_like(sends)
    for row, now in enumerate(times.tolist()):
        shielded = None if protected is None else protected[row]
        allowed[row] = budgets.admit(codes, values[row], sends[row], now, shielded).allowed
    return allowed


# Bursts: gaps of 0 (simultaneous), a few microseconds, or whole seconds of silence.
gaps = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-6, 1e-3), st.floats(1e-3, 0.1), st.floats(0.5, 3.0)),
    min_size=1,
    max_size=400,
)


@settings(max_examples=60, deadline=None)
@given(
    gaps=gaps,
    cap=st.one_of(st.floats(0.2, 5.0), st.floats(5.0, 300.0)),
    protected_share=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_no_one_second_window_exceeds_the_cap_plus_the_tolerance(
    gaps: list[float], cap: float, protected_share: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    times = np.cumsum(gaps)
    values = rng.random((len(times), 1))
    sends = rng.random((len(times), 1)) < 0.9
    protected = rng.random((len(times), 1)) < protected_share
    allowed = replay(PartnerBudgets([cap]), times, values, sends, protected)
    assert not (allowed & ~sends).any()  # never sends what the model did not
    assert busiest_window(times[allowed[:, 0]].tolist()) <= window_limit(cap)


def test_the_guard_holds_a_burst_to_the_limit_then_refills() -> None:
    budgets = PartnerBudgets([40.0])
    one, value, send = np.array([0]), np.array([0.5]), np.array([True])

    def admitted(now: float) -> bool:
        # Protected: the threshold, which a burst raises, stays out of the way of the guard.
        return bool(budgets.admit(one, value, send, now, protected=send).allowed[0])

    assert sum(admitted(10.0) for _ in range(200)) == window_limit(40.0) == 42
    assert not admitted(10.999)
    # A second later the window has moved past all of them.
    assert admitted(11.0)


def test_value_ranking_keeps_more_value_than_random_dropping_to_the_same_cap() -> None:
    times, values, sends = poisson_stream(rate=400, seconds=30, partners=2, seed=3)
    caps = np.array([40.0, 150.0])  # offered ~320/s each: 12% and 45% of it fits
    ranked = replay(PartnerBudgets(caps), times, values, sends)
    rng = np.random.default_rng(4)
    randomly = replay(PartnerBudgets(caps), times, rng.random(values.shape), sends)
    warm = times > 2.0  # after the first seconds
    for partner in range(2):
        offered = values[warm & sends[:, partner], partner]
        kept = values[warm & ranked[:, partner], partner]
        kept_at_random = values[warm & randomly[:, partner], partner]
        # Close to the same number of calls...
        assert len(kept) == pytest.approx(len(kept_at_random), rel=0.1)
        # ... and most of the value the best possible choice of that many keeps.
        best = np.sort(offered)[::-1][: len(kept)].sum()
        assert kept.sum() >= 0.85 * best
        assert kept.sum() >= 1.3 * kept_at_random.sum()


def test_uncapped_partners_are_untouched() -> None:
    times, values, sends = poisson_stream(rate=500, seconds=5, partners=3, seed=5)
    budgets = PartnerBudgets([np.inf, 30.0, np.inf])
    allowed = replay(budgets, times, values, sends)
    assert (allowed[:, [0, 2]] == sends[:, [0, 2]]).all()
    assert allowed[:, 1].sum() < sends[:, 1].sum()
    assert (
        PartnerBudgets([np.inf])
        .admit(np.array([0]), np.array([0.0]), np.array([True]), 0.0)
        .thresholds[0]
        == -np.inf
    )
    snapshot = budgets.snapshot(float(times[-1]))
    assert snapshot.thresholds[0] == snapshot.thresholds[2] == 0.0
    assert snapshot.thresholds[1] > 0.0


def test_steady_state_converges_near_the_target() -> None:
    times, values, sends = poisson_stream(rate=400, seconds=40, partners=1, seed=6)
    budgets = PartnerBudgets([100.0])
    codes = np.array([0])
    thresholds, allowed = [], []
    for row, now in enumerate(times.tolist()):
        admission = budgets.admit(codes, values[row], sends[row], now)
        thresholds.append(admission.thresholds[0])
        allowed.append(admission.allowed[0])
    late = times > 20.0
    sent_rate = np.sum(np.array(allowed)[late]) / (times[-1] - 20.0)
    assert 0.88 * 100 <= sent_rate <= 1.0 * 100  # the target is 95 calls/s
    settled = np.array(thresholds)[late]
    # The threshold that lets 95 of 320 offers/s through: the 70th percentile of Beta(1, 4).
    expected = 1 - (95 / (0.8 * 400)) ** (1 / 4)
    assert settled.mean() == pytest.approx(expected, rel=0.1)
    assert settled.std() < 0.15 * settled.mean()  # smooth, not flapping
    snapshot = budgets.snapshot(float(times[-1]))
    assert snapshot.caps[0] == 100.0
    assert snapshot.sent_rate[0] == pytest.approx(95, rel=0.2)
    assert snapshot.offered_rate[0] == pytest.approx(320, rel=0.2)


def test_the_threshold_falls_back_when_traffic_drops_under_the_cap() -> None:
    budgets = PartnerBudgets([50.0])
    times, values, sends = poisson_stream(rate=400, seconds=5, partners=1, seed=7)
    replay(budgets, times, values, sends)
    assert budgets.thresholds[0] > 0.1
    quiet, quiet_values, quiet_sends = poisson_stream(rate=20, seconds=10, partners=1, seed=8)
    allowed = replay(budgets, quiet + times[-1], quiet_values, quiet_sends)
    late = quiet > 5.0
    assert (allowed[late] == quiet_sends[late]).all()  # 16 calls/s: everything fits
    assert budgets.thresholds[0] == 0.0


def test_protected_sends_skip_the_threshold_but_count_inside_the_cap() -> None:
    times, values, sends = poisson_stream(rate=400, seconds=20, partners=1, seed=9)
    rng = np.random.default_rng(10)
    protected = sends & (rng.random(sends.shape) < 0.1)  # ~32/s explored, some worth 0
    values[protected] = 0.0
    allowed = replay(PartnerBudgets([60.0]), times, values, sends, protected)
    late = times > 5.0
    # Nearly every protected send goes (only the 1-second guard may refuse one)...
    assert allowed[late & protected[:, 0], 0].mean() > 0.9
    # ... and the ranked ones fill what is left of the target, not the whole cap.
    total = allowed[late, 0].sum() / (times[-1] - 5.0)
    assert total == pytest.approx(57, rel=0.1)
    assert busiest_window(times[allowed[:, 0]].tolist()) <= window_limit(60.0)


def test_time_going_backwards_is_read_as_the_last_time() -> None:
    budgets = PartnerBudgets([2.0])
    one, half, send = np.array([0]), np.array([0.5]), np.array([True])
    assert budgets.admit(one, half, send, 5.0, send).allowed[0]
    assert budgets.admit(one, half, send, 5.0, send).allowed[0]
    # Read as 5.0: the window of the two sends is still full.
    assert not budgets.admit(one, half, send, 1.0, send).allowed[0]
    assert budgets.admit(one, half, send, 6.0, send).allowed[0]


@pytest.mark.parametrize("caps", [[0.0], [-1.0], [float("nan")], [[1.0, 2.0]]])
def test_bad_caps_are_refused(caps: list[float]) -> None:
    with pytest.raises(ValueError, match="caps"):
        PartnerBudgets(caps)

"""The counters the hot path adds to: one row per worker in shared memory, and its layout.

Each worker owns one row of a float64 matrix in shared memory and only ever adds to it; the
supervisor sums the rows when ``/metrics`` is scraped. A replaced worker takes over its
predecessor's row, so counters never go backwards. The hot path only adds to plain Python lists;
they reach the row at most every ``FLUSH_INTERVAL_NS``, with no locks and no syscalls.

The row's layout is private to this module: readers take a vector of summed rows
(:meth:`MetricsBoard.totals`) and read it through :func:`call_count`, :func:`call_latency`,
:func:`partner_counts` and :func:`gauge_value`.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from multiprocessing import shared_memory

import numpy as np


class Method(IntEnum):
    """The method a call named; ``OTHER`` for a name the IDL does not have."""

    FILTER = 0
    FILTER_BATCH = 1
    MODEL_INFO = 2
    PING = 3
    REPORT_OUTCOMES = 4
    OTHER = 5

    @property
    def label(self) -> str:
        """The name on the wire and in ``/metrics``."""
        return self.name.lower()


class Result(IntEnum):
    """How a call was answered. The first five are the IDL's ``Outcome`` values, by name."""

    SCORED = 0
    FAIL_OPEN_NO_MODEL = 1
    FAIL_OPEN_DEADLINE = 2
    FAIL_OPEN_OVERLOAD = 3
    FAIL_OPEN_ERROR = 4
    INVALID = 5
    OK = 6
    REJECTED = 7

    @property
    def label(self) -> str:
        """The name in ``/metrics``."""
        return self.name.lower()


LATENCY_BOUNDS_US = (
    50,
    100,
    200,
    300,
    500,
    750,
    1000,
    2000,
    5000,
    10_000,
    50_000,
    250_000,
    1_000_000,
)
MAX_PARTNERS = 1024
UNKNOWN_PARTNER_SLOT = MAX_PARTNERS - 1  # candidates the model does not know
GAUGES = (
    "connections_open",
    "connections_total",
    "connections_refused",
    "connections_timed_out",
    "protocol_errors",
    "pending_calls",
    "model_generation",
    "model_load_failures",
    "control_requests",
    # The decision log (server/outcome_log.py): counters, but the bytes held, a gauge.
    "decisions_held",
    "decisions_not_held",
    "decisions_expired",
    "outcomes_accepted",
    "outcomes_unknown",
    "outcomes_duplicate",
    "outcome_records_written",
    "outcome_files_written",
    "outcome_write_failures",
    "outcome_records_lost",
    "decision_log_bytes",
)

_N_RESULTS = len(Result)
_N_BUCKETS = len(LATENCY_BOUNDS_US) + 1
_CALLS = 0
_LATENCY = _CALLS + len(Method) * _N_RESULTS  # per method: buckets, then sum (µs)
_PARTNERS = _LATENCY + len(Method) * (_N_BUCKETS + 1)  # decisions, sent, explored
_GAUGES = _PARTNERS + 3 * MAX_PARTNERS
WIDTH = _GAUGES + len(GAUGES)
"""Columns of one row (and of :meth:`MetricsBoard.totals`)."""
_GAUGE_INDEX = {name: _GAUGES + i for i, name in enumerate(GAUGES)}

FLUSH_INTERVAL_NS = 100_000_000
"""Call and per-partner counters reach the shared row at most this late (workers also flush when
idle)."""


class MetricsBoard:
    """The shared matrix: one row per worker slot. Create in the supervisor, attach in workers."""

    def __init__(self, slots: int, name: str | None = None) -> None:
        size = slots * WIDTH * 8
        if name is None:
            self._memory = shared_memory.SharedMemory(create=True, size=size)
            self._owner = True
        else:
            self._memory = shared_memory.SharedMemory(name=name)
            self._owner = False
        self.name = self._memory.name
        self.slots = slots
        self.matrix: np.ndarray = np.ndarray(
            (slots, WIDTH), dtype=np.float64, buffer=self._memory.buf
        )
        if self._owner:
            self.matrix[:] = 0.0

    def worker(self, slot: int) -> WorkerMetrics:
        return WorkerMetrics(self.matrix[slot])

    def close(self) -> None:
        del self.matrix
        self._memory.close()
        if self._owner:
            self._memory.unlink()

    def totals(self) -> np.ndarray:
        return np.asarray(self.matrix.sum(axis=0))

    def gauge(self, slot: int, name: str) -> float:
        return float(self.matrix[slot, _GAUGE_INDEX[name]])


@dataclass(slots=True)
class _Pending:
    """Decisions recorded for one candidate plan since the last flush."""

    partner_index: np.ndarray
    calls: int
    sent: list[int]
    explored: list[int]


class WorkerMetrics:
    """One worker's row, with the few operations the hot path needs."""

    __slots__ = ("_calls", "_flushed_ns", "_pending", "_row")

    def __init__(self, row: np.ndarray) -> None:
        self._row = row
        self._pending: dict[int, _Pending] = {}
        # Call counts and latency histograms (the row's columns _CALLS to _PARTNERS), kept in a
        # plain list until the flush: a list item costs a fraction of a numpy element update.
        self._calls = [0.0] * (_PARTNERS - _CALLS)
        self._flushed_ns = 0

    def call(self, method: Method, result: Result, latency_us: float) -> None:
        """Record one answered call. Counted in the shared row at the next :meth:`flush`."""
        calls = self._calls
        calls[method * _N_RESULTS + result] += 1
        base = _LATENCY - _CALLS + method * (_N_BUCKETS + 1)
        calls[base + bisect.bisect_left(LATENCY_BOUNDS_US, latency_us)] += 1
        calls[base + _N_BUCKETS] += latency_us

    def partners(
        self, partner_index: np.ndarray, sent: Sequence[bool], explored: Sequence[bool]
    ) -> None:
        """Record one decision per partner: ``partner_index`` holds the model's partner codes
        (-1 for a partner it does not know). Counted in the shared row at the next :meth:`flush`.

        Calls with the same candidate plan share ``partner_index`` (one array per plan), so they
        are summed here in plain Python, and the numpy work happens once per plan per flush.
        Holding the array in the pending entry keeps its ``id`` from being reused meanwhile.
        """
        entry = self._pending.get(id(partner_index))
        if entry is None:
            self._pending[id(partner_index)] = _Pending(partner_index, 1, [*sent], [*explored])
            return
        entry.calls += 1
        entry.sent = list(map(operator.add, entry.sent, sent))
        if any(explored):
            entry.explored = list(map(operator.add, entry.explored, explored))

    def flush_due(self, now_ns: int) -> None:
        """:meth:`flush` if the last one is older than the flush interval."""
        if now_ns - self._flushed_ns >= FLUSH_INTERVAL_NS:
            self._flushed_ns = now_ns
            self.flush()

    def flush(self) -> None:
        """Add the recorded calls and decisions to the shared row."""
        row = self._row
        if any(self._calls):
            row[_CALLS:_PARTNERS] += self._calls
            self._calls = [0.0] * (_PARTNERS - _CALLS)
        for entry in self._pending.values():
            codes = entry.partner_index
            slots = np.where(
                (codes < 0) | (codes >= UNKNOWN_PARTNER_SLOT), UNKNOWN_PARTNER_SLOT, codes
            )
            slots += _PARTNERS
            # add.at: a partner named twice in one list must count twice.
            np.add.at(row, slots, entry.calls)
            np.add.at(row, slots + MAX_PARTNERS, entry.sent)
            np.add.at(row, slots + 2 * MAX_PARTNERS, entry.explored)
        self._pending.clear()

    def add(self, gauge: str, amount: float = 1.0) -> None:
        self._row[_GAUGE_INDEX[gauge]] += amount

    def set(self, gauge: str, value: float) -> None:
        self._row[_GAUGE_INDEX[gauge]] = value


# --- reading summed rows ---------------------------------------------------------------------


def call_count(totals: np.ndarray, method: Method, result: Result) -> float:
    """Calls to ``method`` answered with ``result``."""
    return float(totals[_CALLS + method * _N_RESULTS + result])


@dataclass(frozen=True, slots=True)
class CallLatency:
    """One method's latency histogram: calls per bucket (bounds ``LATENCY_BOUNDS_US``, then
    +Inf), not cumulative, and the sum of the latencies in microseconds."""

    buckets: np.ndarray
    sum_us: float


def call_latency(totals: np.ndarray, method: Method) -> CallLatency:
    base = _LATENCY + method * (_N_BUCKETS + 1)
    return CallLatency(totals[base : base + _N_BUCKETS], float(totals[base + _N_BUCKETS]))


@dataclass(frozen=True, slots=True)
class PartnerCounts:
    """Per-partner decisions, indexed by the model's partner code; the ones for partners it does
    not know at ``UNKNOWN_PARTNER_SLOT``."""

    decisions: np.ndarray
    sent: np.ndarray
    explored: np.ndarray


def partner_counts(totals: np.ndarray) -> PartnerCounts:
    return PartnerCounts(
        decisions=totals[_PARTNERS : _PARTNERS + MAX_PARTNERS],
        sent=totals[_PARTNERS + MAX_PARTNERS : _PARTNERS + 2 * MAX_PARTNERS],
        explored=totals[_PARTNERS + 2 * MAX_PARTNERS : _PARTNERS + 3 * MAX_PARTNERS],
    )


def gauge_value(totals: np.ndarray, name: str) -> float:
    return float(totals[_GAUGE_INDEX[name]])

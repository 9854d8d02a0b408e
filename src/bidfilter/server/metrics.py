"""Counters shared by the worker processes, and their Prometheus text rendering.

Each worker owns one row of a float64 matrix in shared memory and only ever adds to it; the
supervisor sums the rows when ``/metrics`` is scraped. A replaced worker takes over its
predecessor's row, so counters never go backwards. The hot path only adds to plain Python lists;
they reach the row at most every ``FLUSH_INTERVAL_NS``, with no locks and no syscalls.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bidfilter.server.http_side import SidePortStats

METHODS = ("filter", "filter_batch", "model_info", "ping", "other")
RESULTS = (
    "scored",
    "fail_open_no_model",
    "fail_open_deadline",
    "fail_open_overload",
    "fail_open_error",
    "invalid",
    "ok",
    "rejected",
)
RESULT_OF_OUTCOME = RESULTS[:5]  # Outcome enum value -> result name
INVALID, OK, REJECTED = 5, 6, 7
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

_N_BUCKETS = len(LATENCY_BOUNDS_US) + 1
_CALLS = 0
_LATENCY = _CALLS + len(METHODS) * len(RESULTS)  # per method: buckets, then sum (µs)
_PARTNERS = _LATENCY + len(METHODS) * (_N_BUCKETS + 1)  # decisions, sent, explored
_GAUGES = _PARTNERS + 3 * MAX_PARTNERS
GAUGES = (
    "connections_open",
    "connections_total",
    "connections_refused",
    "connections_timed_out",
    "protocol_errors",
    "pending_calls",
    "model_generation",
    "model_load_failures",
)
WIDTH = _GAUGES + len(GAUGES)
_GAUGE_INDEX = {name: _GAUGES + i for i, name in enumerate(GAUGES)}


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


FLUSH_INTERVAL_NS = 100_000_000
"""Call and per-partner counters reach the shared row at most this late (workers also flush when
idle)."""


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

    def call(self, method: int, result: int, latency_us: float) -> None:
        """Record one answered call. Counted in the shared row at the next :meth:`flush`."""
        calls = self._calls
        calls[method * len(RESULTS) + result] += 1
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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def render(
    totals: np.ndarray,
    *,
    partners: Sequence[str],
    model_version: str | None,
    workers_alive: int,
    workers_configured: int,
    worker_restarts: int,
    reloads: dict[str, int],
    store_poll_failures: int = 0,
    background_errors: dict[str, int] | None = None,
    side_port: SidePortStats | None = None,
    tls_not_after: float | None = None,
) -> str:
    """Prometheus text exposition (format 0.0.4) of the summed counters."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    metric("bidfilter_calls_total", "counter", "Thrift calls answered, by method and result.")
    for m, method in enumerate(METHODS):
        for r, result in enumerate(RESULTS):
            value = totals[_CALLS + m * len(RESULTS) + r]
            if value:
                lines.append(
                    f"bidfilter_calls_total{_labels(method=method, result=result)} {value:.0f}"
                )

    metric(
        "bidfilter_call_latency_seconds", "histogram", "Time from receiving a call to its reply."
    )
    for m, method in enumerate(METHODS):
        base = _LATENCY + m * (_N_BUCKETS + 1)
        buckets = totals[base : base + _N_BUCKETS]
        if not buckets.any():
            continue
        cumulative = np.cumsum(buckets)
        bucket = "bidfilter_call_latency_seconds_bucket"
        for bound, count in zip(LATENCY_BOUNDS_US, cumulative, strict=False):
            lines.append(f"{bucket}{_labels(method=method, le=f'{bound / 1e6:g}')} {count:.0f}")
        lines.append(f"{bucket}{_labels(method=method, le='+Inf')} {cumulative[-1]:.0f}")
        total_s = totals[base + _N_BUCKETS] / 1e6
        lines.append(f"bidfilter_call_latency_seconds_sum{_labels(method=method)} {total_s:.6f}")
        lines.append(
            f"bidfilter_call_latency_seconds_count{_labels(method=method)} {cumulative[-1]:.0f}"
        )

    names = [*partners[: MAX_PARTNERS - 1]]
    slots = [*range(len(names)), UNKNOWN_PARTNER_SLOT]
    names.append("_unknown")
    decisions = totals[_PARTNERS : _PARTNERS + MAX_PARTNERS]
    sent = totals[_PARTNERS + MAX_PARTNERS : _PARTNERS + 2 * MAX_PARTNERS]
    explored = totals[_PARTNERS + 2 * MAX_PARTNERS : _PARTNERS + 3 * MAX_PARTNERS]
    for name, kind, values, help_text in (
        ("bidfilter_partner_decisions_total", "counter", decisions, "Per-partner decisions made."),
        ("bidfilter_partner_sent_total", "counter", sent, "Decisions to send the request."),
        (
            "bidfilter_partner_explored_total",
            "counter",
            explored,
            "Sent below threshold, to explore.",
        ),
    ):
        metric(name, kind, help_text)
        for partner, slot in zip(names, slots, strict=True):
            if decisions[slot]:
                lines.append(f"{name}{_labels(partner=partner)} {values[slot]:.0f}")
    for name, values, help_text in (
        ("bidfilter_partner_send_rate", sent, "Share of decisions that send, since start."),
        (
            "bidfilter_partner_explore_rate",
            explored,
            "Share of decisions that explore, since start.",
        ),
    ):
        metric(name, "gauge", help_text)
        for partner, slot in zip(names, slots, strict=True):
            if decisions[slot]:
                lines.append(
                    f"{name}{_labels(partner=partner)} {values[slot] / decisions[slot]:.6f}"
                )

    metric("bidfilter_model_info", "gauge", "The model version being served (value 1).")
    if model_version is not None:
        lines.append(f"bidfilter_model_info{_labels(version=model_version)} 1")
    metric("bidfilter_model_loaded", "gauge", "1 when a model is loaded, else 0 (fail open).")
    lines.append(f"bidfilter_model_loaded {1 if model_version else 0}")
    metric("bidfilter_model_reloads_total", "counter", "Model versions loaded or refused.")
    for result in ("success", "failure"):
        lines.append(
            f"bidfilter_model_reloads_total{_labels(result=result)} {reloads.get(result, 0)}"
        )

    metric(
        "bidfilter_store_poll_failures_total",
        "counter",
        "Looks at the model store that failed (unreachable, refused, or a bad LATEST).",
    )
    lines.append(f"bidfilter_store_poll_failures_total {store_poll_failures}")

    metric("bidfilter_workers", "gauge", "Worker processes alive and configured.")
    lines.append(f"bidfilter_workers{_labels(state='alive')} {workers_alive}")
    lines.append(f"bidfilter_workers{_labels(state='configured')} {workers_configured}")
    metric("bidfilter_worker_restarts_total", "counter", "Worker processes replaced after dying.")
    lines.append(f"bidfilter_worker_restarts_total {worker_restarts}")
    metric(
        "bidfilter_background_errors_total",
        "counter",
        "Unexpected errors in one round of a supervisor task (logged; the task went on).",
    )
    for task, count in sorted((background_errors or {}).items()):
        lines.append(f"bidfilter_background_errors_total{_labels(task=task)} {count}")
    if side_port is not None:
        metric("bidfilter_side_port_connections_open", "gauge", "HTTP side port connections open.")
        lines.append(f"bidfilter_side_port_connections_open {side_port.open}")
        metric(
            "bidfilter_side_port_connections_total",
            "counter",
            "HTTP side port connections: accepted, refused (over the limit), timed out.",
        )
        for result, count in (
            ("accepted", side_port.accepted),
            ("refused", side_port.refused),
            ("timed_out", side_port.timed_out),
        ):
            lines.append(f"bidfilter_side_port_connections_total{_labels(result=result)} {count}")
    if tls_not_after is not None:  # alert on it: an expired certificate fails every handshake
        metric(
            "bidfilter_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the Thrift port's certificate stops being valid (Unix time).",
        )
        lines.append(f"bidfilter_tls_certificate_expiry_timestamp_seconds {tls_not_after:.0f}")
    for gauge, name, kind, help_text in (
        ("connections_open", "bidfilter_connections_open", "gauge", "Thrift connections open."),
        ("connections_total", "bidfilter_connections_total", "counter", "Connections accepted."),
        (
            "connections_refused",
            "bidfilter_connections_refused_total",
            "counter",
            "Connections closed at once: over the limit.",
        ),
        (
            "connections_timed_out",
            "bidfilter_connections_timed_out_total",
            "counter",
            "Connections closed for idleness or a stalled message.",
        ),
        (
            "protocol_errors",
            "bidfilter_protocol_errors_total",
            "counter",
            "Connections closed for bytes that are not Thrift.",
        ),
        ("pending_calls", "bidfilter_pending_calls", "gauge", "Calls received, not yet answered."),
    ):
        metric(name, kind, help_text)
        lines.append(f"{name} {totals[_GAUGE_INDEX[gauge]]:.0f}")
    return "\n".join(lines) + "\n"

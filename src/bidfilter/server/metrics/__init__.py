"""Counters shared by the worker processes (``counters``: the hot path's), and their Prometheus
text rendering for ``/metrics`` (``exposition``)."""

from bidfilter.server.metrics.counters import (
    FLUSH_INTERVAL_NS,
    GAUGES,
    LATENCY_BOUNDS_US,
    MAX_PARTNERS,
    UNKNOWN_PARTNER_SLOT,
    WIDTH,
    CallLatency,
    Method,
    MetricsBoard,
    PartnerCounts,
    Result,
    WorkerMetrics,
    call_count,
    call_latency,
    gauge_value,
    partner_counts,
)
from bidfilter.server.metrics.exposition import render

__all__ = [
    "FLUSH_INTERVAL_NS",
    "GAUGES",
    "LATENCY_BOUNDS_US",
    "MAX_PARTNERS",
    "UNKNOWN_PARTNER_SLOT",
    "WIDTH",
    "CallLatency",
    "Method",
    "MetricsBoard",
    "PartnerCounts",
    "Result",
    "WorkerMetrics",
    "call_count",
    "call_latency",
    "gauge_value",
    "partner_counts",
    "render",
]

"""``/metrics``: the summed counters, and what the supervisor knows, as Prometheus text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bidfilter.server.metrics.counters import (
    LATENCY_BOUNDS_US,
    MAX_PARTNERS,
    UNKNOWN_PARTNER_SLOT,
    Method,
    Result,
    call_count,
    call_latency,
    gauge_value,
    partner_counts,
)

if TYPE_CHECKING:
    from bidfilter.server.http_side import SidePortStats


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
    for method in Method:
        for call_result in Result:
            value = call_count(totals, method, call_result)
            if value:
                labels = _labels(method=method.label, result=call_result.label)
                lines.append(f"bidfilter_calls_total{labels} {value:.0f}")

    metric(
        "bidfilter_call_latency_seconds", "histogram", "Time from receiving a call to its reply."
    )
    for method in Method:
        latency = call_latency(totals, method)
        if not latency.buckets.any():
            continue
        cumulative = np.cumsum(latency.buckets)
        bucket = "bidfilter_call_latency_seconds_bucket"
        label = method.label
        for bound, count in zip(LATENCY_BOUNDS_US, cumulative, strict=False):
            lines.append(f"{bucket}{_labels(method=label, le=f'{bound / 1e6:g}')} {count:.0f}")
        lines.append(f"{bucket}{_labels(method=label, le='+Inf')} {cumulative[-1]:.0f}")
        total_s = latency.sum_us / 1e6
        lines.append(f"bidfilter_call_latency_seconds_sum{_labels(method=label)} {total_s:.6f}")
        lines.append(
            f"bidfilter_call_latency_seconds_count{_labels(method=label)} {cumulative[-1]:.0f}"
        )

    names = [*partners[: MAX_PARTNERS - 1]]
    slots = [*range(len(names)), UNKNOWN_PARTNER_SLOT]
    names.append("_unknown")
    counts = partner_counts(totals)
    decisions = counts.decisions
    for name, kind, values, help_text in (
        ("bidfilter_partner_decisions_total", "counter", decisions, "Per-partner decisions made."),
        ("bidfilter_partner_sent_total", "counter", counts.sent, "Decisions to send the request."),
        (
            "bidfilter_partner_explored_total",
            "counter",
            counts.explored,
            "Sent below threshold, to explore.",
        ),
    ):
        metric(name, kind, help_text)
        for partner, slot in zip(names, slots, strict=True):
            if decisions[slot]:
                lines.append(f"{name}{_labels(partner=partner)} {values[slot]:.0f}")
    for name, values, help_text in (
        ("bidfilter_partner_send_rate", counts.sent, "Share of decisions that send, since start."),
        (
            "bidfilter_partner_explore_rate",
            counts.explored,
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
        (
            "control_requests",
            "bidfilter_control_requests_total",
            "counter",
            "Requests in the control group: scored, sent to every candidate, flagged control.",
        ),
        (
            "decisions_held",
            "bidfilter_decisions_held_total",
            "counter",
            "Decisions the decision log held (the sampled share), waiting for their outcome.",
        ),
        (
            "decisions_not_held",
            "bidfilter_decisions_not_held_total",
            "counter",
            "Sampled decisions not held: the decision log's memory budget was spent.",
        ),
        (
            "decisions_expired",
            "bidfilter_decisions_expired_total",
            "counter",
            "Held decisions whose outcome was not reported within the outcome wait.",
        ),
        (
            "outcomes_accepted",
            "bidfilter_outcomes_accepted_total",
            "counter",
            "Reported outcomes joined with a held decision (each becomes a log record).",
        ),
        (
            "outcomes_unknown",
            "bidfilter_outcomes_unknown_total",
            "counter",
            "Reported outcomes with no held decision: not sampled, expired, or held elsewhere.",
        ),
        (
            "outcomes_duplicate",
            "bidfilter_outcomes_duplicate_total",
            "counter",
            "Reported outcomes of a decision already reported (the first report stands).",
        ),
        (
            "outcome_records_written",
            "bidfilter_outcome_records_written_total",
            "counter",
            "Auction-log records written to the log store.",
        ),
        (
            "outcome_files_written",
            "bidfilter_outcome_files_written_total",
            "counter",
            "Auction-log files written to the log store.",
        ),
        (
            "outcome_write_failures",
            "bidfilter_outcome_write_failures_total",
            "counter",
            "Failed writes to the log store (the records are kept and written again).",
        ),
        (
            "outcome_records_lost",
            "bidfilter_outcome_records_lost_total",
            "counter",
            "Accepted records never written: the log store still failed at shutdown.",
        ),
        (
            "decision_log_bytes",
            "bidfilter_decision_log_bytes",
            "gauge",
            "Memory the decision log holds: decisions waiting and records not yet written.",
        ),
    ):
        metric(name, kind, help_text)
        lines.append(f"{name} {gauge_value(totals, gauge):.0f}")
    return "\n".join(lines) + "\n"

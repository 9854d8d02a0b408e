"""How the server's Prometheus metrics reach CloudWatch.

An AWS Distro for OpenTelemetry (ADOT) collector runs beside the server in every task, scrapes
``localhost:9100/metrics`` and writes embedded-metric-format (EMF) events to a log group;
CloudWatch extracts them as metrics in the deployment's namespace. ADOT rather than the
CloudWatch agent because the agent drops Prometheus histograms, and latency is one. Counters
arrive as per-scrape deltas (Sum over a period = events in it); the latency histogram as a
statistic set (Average = mean latency).

Only the metrics and dimension sets declared here become CloudWatch metrics; everything is
tagged with a ``Deployment`` dimension so several deployments can share a namespace.
"""

from __future__ import annotations

from typing import Any

DEPLOYMENT_DIMENSION = "Deployment"
SCRAPE_INTERVAL_S = 30

CALLS = "bidfilter_calls_total"
CALL_LATENCY = "bidfilter_call_latency_seconds"
PARTNER_DECISIONS = "bidfilter_partner_decisions_total"
PARTNER_SENT = "bidfilter_partner_sent_total"
PARTNER_EXPLORED = "bidfilter_partner_explored_total"
PARTNER_SEND_RATE = "bidfilter_partner_send_rate"
PARTNER_EXPLORE_RATE = "bidfilter_partner_explore_rate"
MODEL_INFO = "bidfilter_model_info"
MODEL_LOADED = "bidfilter_model_loaded"
MODEL_RELOADS = "bidfilter_model_reloads_total"
WORKERS = "bidfilter_workers"
WORKER_RESTARTS = "bidfilter_worker_restarts_total"
CONNECTIONS_OPEN = "bidfilter_connections_open"
CONNECTIONS_REFUSED = "bidfilter_connections_refused_total"
CONNECTIONS_TIMED_OUT = "bidfilter_connections_timed_out_total"
PROTOCOL_ERRORS = "bidfilter_protocol_errors_total"
PENDING_CALLS = "bidfilter_pending_calls"

# metric name -> the label sets (besides Deployment) it is published under
DIMENSIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    CALLS: ((), ("method",), ("method", "result")),
    CALL_LATENCY: (("method",),),
    PARTNER_DECISIONS: ((), ("partner",)),
    PARTNER_SENT: ((), ("partner",)),
    PARTNER_EXPLORED: ((), ("partner",)),
    PARTNER_SEND_RATE: (("partner",),),
    PARTNER_EXPLORE_RATE: (("partner",),),
    MODEL_INFO: (("version",),),
    MODEL_LOADED: ((),),
    MODEL_RELOADS: (("result",),),
    WORKERS: (("state",),),
    WORKER_RESTARTS: ((),),
    CONNECTIONS_OPEN: ((),),
    CONNECTIONS_REFUSED: ((),),
    CONNECTIONS_TIMED_OUT: ((),),
    PROTOCOL_ERRORS: ((),),
    PENDING_CALLS: ((),),
}


def collector_config(
    *, namespace: str, log_group_name: str, region: str, deployment: str, metrics_port: int
) -> dict[str, Any]:
    """The ADOT collector configuration (its AOT_CONFIG_CONTENT; JSON is valid YAML)."""
    by_dimensions: dict[tuple[tuple[str, ...], ...], list[str]] = {}
    for name, label_sets in DIMENSIONS.items():
        by_dimensions.setdefault(label_sets, []).append(name)
    declarations = [
        {
            "dimensions": [[DEPLOYMENT_DIMENSION, *labels] for labels in label_sets],
            "metric_name_selectors": [f"^{name}$" for name in names],
        }
        for label_sets, names in by_dimensions.items()
    ]
    return {
        "receivers": {
            "prometheus": {
                "config": {
                    "scrape_configs": [
                        {
                            "job_name": "bidfilter",
                            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                            "static_configs": [
                                {
                                    "targets": [f"localhost:{metrics_port}"],
                                    "labels": {DEPLOYMENT_DIMENSION: deployment},
                                }
                            ],
                        }
                    ]
                }
            }
        },
        "processors": {"batch/metrics": {"timeout": "60s"}},
        "exporters": {
            "awsemf": {
                "namespace": namespace,
                "log_group_name": log_group_name,
                "region": region,
                # Only the declared dimension sets: each extra combination is a billed metric.
                "dimension_rollup_option": "NoDimensionRollup",
                "metric_declarations": declarations,
            }
        },
        "service": {
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": ["batch/metrics"],
                    "exporters": ["awsemf"],
                }
            }
        },
    }

"""A local cluster: N ``bidfilter serve`` processes on 127.0.0.1 behind a real HAProxy.

``bidfilter cluster up|status|down`` in code: ``plan_cluster`` decides the ports and paths,
``up`` starts everything detached and waits until HAProxy's health checks (``GET /readyz`` on
each server's side port) pass, ``status`` reports each process, its readiness and model version
and HAProxy's view, ``down`` drains and stops it all. The state directory holds the plan
(``cluster.json``), the HAProxy config and stats socket, and each process's pid file and log.

- ``plan``: ``ClusterPlan``/``ServerSpec``, written to and read from the state directory;
- ``haproxy``: finding HAProxy, rendering its config, parsing ``show stat``;
- ``processes``: detached processes with pid files;
- ``lifecycle``: ``up``, ``status``, ``down``.
"""

from bidfilter.cluster.errors import ClusterError
from bidfilter.cluster.haproxy import (
    APT_PACKAGE,
    BACKEND,
    FRONTEND,
    ServerStat,
    find_haproxy,
    parse_show_stat,
    render_config,
    show_stat,
)
from bidfilter.cluster.lifecycle import (
    ClusterStatus,
    HaproxyStatus,
    ServerStatus,
    Stopped,
    cluster_status,
    down,
    status,
    stop,
    up,
)
from bidfilter.cluster.plan import HOST, ClusterPlan, ServerSpec, plan_cluster, read_plan

__all__ = [
    "APT_PACKAGE",
    "BACKEND",
    "FRONTEND",
    "HOST",
    "ClusterError",
    "ClusterPlan",
    "ClusterStatus",
    "HaproxyStatus",
    "ServerSpec",
    "ServerStat",
    "ServerStatus",
    "Stopped",
    "cluster_status",
    "down",
    "find_haproxy",
    "parse_show_stat",
    "plan_cluster",
    "read_plan",
    "render_config",
    "show_stat",
    "status",
    "stop",
    "up",
]

"""Helpers for tests that run a local cluster (real servers behind a real HAProxy): finding
HAProxy, free ports for a cluster, logged requests to replay, and a cluster that always stops."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bidfilter.cluster import ClusterError, ClusterPlan, find_haproxy, stop, up
from bidfilter.logs import iter_log_batches

STARTUP_TIMEOUT_S = 120.0  # servers import numpy and xgboost: slow on a busy 2-core machine


def haproxy_or_skip() -> Path:
    try:
        return find_haproxy()
    except ClusterError as error:
        pytest.skip(f"{error.message} (CI installs it: scripts/install-system)")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(ports: Callable[[], int], size: int) -> int:
    """The first of ``size`` consecutive free ports (what ``--base-port`` needs)."""
    for _ in range(50):
        base = ports()
        if base + size <= 65536 and all(port_is_free(base + k) for k in range(size)):
            return base
    raise AssertionError(f"no {size} consecutive free ports found in 50 tries")


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # no answer (yet): not a refusal
    return False


def logged_requests(logs: Path, count: int = 200) -> list[tuple[bytes, list[str]]]:
    """(OpenRTB JSON, logged partners) of the first ``count`` logged requests."""
    batch = next(iter_log_batches(logs, columns=["request", "partners"], batch_size=count))
    return [
        (text.encode(), [p["partner"] for p in partners])
        for text, partners in zip(
            batch.column("request").to_pylist(), batch.column("partners").to_pylist(), strict=True
        )
    ]


@contextmanager
def running_cluster(plan: ClusterPlan) -> Iterator[ClusterPlan]:
    """``up(plan)``, and whatever happens in the block, everything stopped afterwards."""
    try:
        up(plan, timeout=STARTUP_TIMEOUT_S)
        yield plan
    finally:
        stop(plan, timeout=15)

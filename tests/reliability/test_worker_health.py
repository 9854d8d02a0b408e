"""Per-worker readiness and heartbeats: one worker lost is not the whole server lost.

A load balancer takes a server out when ``/readyz`` fails, cutting every session it holds. So
``/readyz`` stays 200 while a share of the workers (``--ready-share``, half by default) can
serve; a worker that crashed is replaced; a worker that is alive but not answering (stopped,
or its loop stuck) misses its heartbeats and is killed and replaced too.
Real ``bidfilter serve`` processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import time
from pathlib import Path

from bidfilter.client import BidFilterClient, ConnectionSettings
from bidfilter.thrift import Outcome

WORKER_LINE = re.compile(r"^worker (\d+) pid (\d+): (\S+)", re.MULTILINE)


def worker_pids(server) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """slot -> pid, as ``/readyz`` lists them."""
    _, body = server.http("/readyz")
    return {int(slot): int(pid) for slot, pid, _ in WORKER_LINE.findall(body)}


def states(server) -> dict[int, str]:  # type: ignore[no-untyped-def]
    _, body = server.http("/readyz")
    return {int(slot): state for slot, _, state in WORKER_LINE.findall(body)}


def scored(server, request: bytes) -> bool:  # type: ignore[no-untyped-def]
    with BidFilterClient(ConnectionSettings("127.0.0.1", server.port, timeout=5.0)) as client:
        return client.filter(request, deadline_ms=5000).outcome == Outcome.SCORED


def test_readyz_lists_every_worker(
    server_pool,
    trained_store: tuple[Path, str],  # type: ignore[no-untyped-def]
) -> None:
    server = server_pool(trained_store[0], workers=2)  # returns once every worker is ready
    status, body = server.http("/readyz")
    assert status == 200
    assert body.startswith(f"ready: {trained_store[1]}")
    assert states(server) == {0: "ready", 1: "ready"}
    assert all(os.path.exists(f"/proc/{pid}") for pid in worker_pids(server).values())


def test_one_worker_crashing_keeps_the_server_ready(
    server_pool,
    trained_store: tuple[Path, str],
    replay_requests,  # type: ignore[no-untyped-def]
) -> None:
    server = server_pool(trained_store[0], workers=2)
    before = worker_pids(server)
    os.kill(before[0], signal.SIGKILL)
    # From the kill until the replacement is serving, /readyz never fails: 1 of 2 is half.
    deadline = time.monotonic() + 30
    statuses = []
    while time.monotonic() < deadline:
        status, _ = server.http("/readyz")
        statuses.append(status)
        pids = worker_pids(server)
        if pids.get(0) not in (None, before[0]) and states(server).get(0) == "ready":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"worker 0 was not replaced: {server.http('/readyz')[1]}")
    assert set(statuses) == {200}, statuses
    assert scored(server, replay_requests[0][0])


def test_a_stopped_worker_is_noticed_and_replaced(
    server_pool,
    trained_store: tuple[Path, str],
    replay_requests,  # type: ignore[no-untyped-def]
) -> None:
    server = server_pool(trained_store[0], workers=1, heartbeat_timeout_s=2)
    stopped = worker_pids(server)[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        # Alone, a stopped worker leaves nothing to serve: /readyz says so...
        server.wait_until(lambda: server.http("/readyz")[0] == 503, timeout=15)
        # ...until the supervisor has killed it and a new worker serves.
        server.wait_until(
            lambda: server.ready() and worker_pids(server).get(0) not in (None, stopped),
            timeout=30,
        )
    finally:
        if os.path.exists(f"/proc/{stopped}"):
            os.kill(stopped, signal.SIGKILL)
    assert scored(server, replay_requests[0][0])
    log = server.log.read_text()
    assert "no heartbeat" in log
    _, metrics = server.http("/metrics")
    assert re.search(r"^bidfilter_worker_restarts_total [1-9]", metrics, re.MULTILINE)


def test_ready_share_sets_how_many_workers_must_serve(
    server_pool,
    trained_store: tuple[Path, str],  # type: ignore[no-untyped-def]
) -> None:
    server = server_pool(trained_store[0], workers=2, ready_share=1.0, heartbeat_timeout_s=2)
    stopped = worker_pids(server)[1]
    os.kill(stopped, signal.SIGSTOP)
    try:
        server.wait_until(lambda: server.http("/readyz")[0] == 503, timeout=15)
        assert "1 of 2 workers ready" in server.http("/readyz")[1]
        server.wait_until(server.ready, timeout=30)
    finally:
        if os.path.exists(f"/proc/{stopped}"):
            os.kill(stopped, signal.SIGKILL)


def test_a_worker_that_cannot_be_replaced_yet_is_retried_until_it_can(
    server_pool,
    trained_store: tuple[Path, str],
    replay_requests,  # type: ignore[no-untyped-def]
) -> None:
    """EMFILE while spawning (no descriptor left for the worker's pipe) must not end the
    monitor: it logs, counts, and replaces the worker once descriptors are free again."""
    server = server_pool(trained_store[0])
    supervisor = server.process.pid
    before = worker_pids(server)[0]
    limits = resource.prlimit(supervisor, resource.RLIMIT_NOFILE)
    open_now = len(os.listdir(f"/proc/{supervisor}/fd"))
    # The dead worker's pipe and sentinel are given back; below that nothing new can open.
    resource.prlimit(supervisor, resource.RLIMIT_NOFILE, (open_now - 2, limits[1]))
    try:
        os.kill(before, signal.SIGKILL)
        server.wait_until(lambda: "could not replace worker 0" in server.log.read_text())
    finally:
        resource.prlimit(supervisor, resource.RLIMIT_NOFILE, limits)
    server.wait_until(
        lambda: worker_pids(server).get(0) not in (None, before) and states(server)[0] == "ready"
    )
    assert scored(server, replay_requests[0][0])
    errors = re.search(
        r'^bidfilter_background_errors_total\{task="worker_monitor"\} (\d+)',
        server.http("/metrics")[1],
        re.MULTILINE,
    )
    assert errors is not None and int(errors.group(1)) >= 1

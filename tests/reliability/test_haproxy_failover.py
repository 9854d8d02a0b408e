"""A server dies under load behind HAProxy: no retried call may be lost.

Two servers behind a real HAProxy (the local cluster of ``bidfilter cluster up``), each serving
its own model version so that every answer tells which server gave it. A client with retries
sends a bounded, paced load through HAProxy; one server is killed (SIGKILL to its whole process
group, as when its machine dies) while it holds calls in flight. Every call must still be
answered, by the survivor, and HAProxy must mark the dead server down.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

# tests/ holds no packages: the cluster and server test helpers are imported from their folders.
sys.path[:0] = [
    str(Path(__file__).parents[1] / "cluster"),
    str(Path(__file__).parents[1] / "server"),
]
from cluster_harness import (  # noqa: E402
    free_port_block,
    haproxy_or_skip,
    logged_requests,
    refuses_connections,
    running_cluster,
)
from serving import copy_as_new_version  # noqa: E402

from bidfilter.client import AsyncBidFilterClient, ConnectionSettings, Outcome  # noqa: E402
from bidfilter.cluster import (  # noqa: E402
    BACKEND,
    ClusterPlan,
    ServerStat,
    parse_show_stat,
    plan_cluster,
    show_stat,
)
from bidfilter.cluster.processes import read_pid  # noqa: E402

RATE = 300.0  # calls per second, offered in total
CALLERS = 8
CONNECTIONS = 4
CALL_TIMEOUT_S = 5.0  # longer than the server is frozen before its kill: no timeouts needed
DEADLINE_MS = 5000  # a busy CI machine must not turn answers into FAIL_OPEN_DEADLINE
CALLS_BEFORE = 300  # answered before the kill, and as many started after it
CALLS_AFTER = 300


@dataclass
class Call:
    started: float
    ended: float
    version: str | None  # which server answered (each serves its own version)
    outcome: Outcome | None
    error: str | None  # set: the call is lost


@dataclass
class PacedLoad:
    """``RATE`` filter calls a second through ``port`` from a thread, until ``stop()``; bounded
    by ``max_seconds`` and ``max_calls`` whatever happens."""

    port: int
    requests: list[tuple[bytes, list[str]]]
    max_seconds: float = 60.0
    max_calls: int = 20_000
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    retried: int = 0
    connects: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(self.max_seconds + 2 * CALL_TIMEOUT_S)
        assert not self._thread.is_alive(), "the load did not stop"

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        numbers = iter(range(self.max_calls))
        async with AsyncBidFilterClient(
            ConnectionSettings("127.0.0.1", self.port, timeout=CALL_TIMEOUT_S),
            connections=CONNECTIONS,
        ) as client:

            async def caller() -> None:
                next_at = time.monotonic()
                for number in numbers:
                    now = time.monotonic()
                    if self._stop.is_set() or now > deadline:
                        return
                    # Paced, without bursts to catch up after a stall.
                    next_at = max(next_at + CALLERS / RATE, now)
                    openrtb, partners = self.requests[number % len(self.requests)]
                    self.in_flight += 1
                    try:
                        response = await client.filter(openrtb, partners, deadline_ms=DEADLINE_MS)
                    except Exception as error:  # every failure is a lost call
                        call = Call(
                            now, time.monotonic(), None, None, f"{type(error).__name__}: {error}"
                        )
                    else:
                        call = Call(
                            now, time.monotonic(), response.model_version, response.outcome, None
                        )
                    self.in_flight -= 1
                    self.calls.append(call)
                    await asyncio.sleep(next_at - time.monotonic())

            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            self.retried, self.connects = client.retried, client.connects


@pytest.fixture
def two_versions(trained_store: tuple[Path, str], tmp_path: Path) -> tuple[Path, Path, str, str]:
    """Two stores: the trained version, and a copy of it under a new version id."""
    first, version = trained_store
    second = tmp_path / "second-store"
    shutil.copytree(first, second)
    return first, second, version, copy_as_new_version(second, version)


@pytest.fixture
def cluster(
    two_versions: tuple[Path, Path, str, str],
    tmp_path: Path,
    port_allocator: Callable[[], int],
) -> Iterator[ClusterPlan]:
    haproxy = haproxy_or_skip()
    first, second, _, _ = two_versions
    base = free_port_block(port_allocator, 5)
    plan = plan_cluster(
        2,
        store=str(first),
        state_dir=tmp_path / "state",
        front_port=base + 4,
        base_port=base,
        haproxy=haproxy,
    )
    survivor = msgspec.structs.replace(plan.servers[1], store=str(second))
    with running_cluster(msgspec.structs.replace(plan, servers=(plan.servers[0], survivor))) as up:
        yield up


def haproxy_view(plan: ClusterPlan) -> dict[str, ServerStat]:
    rows = parse_show_stat(show_stat(plan.stats_socket))
    return {row.name: row for row in rows if row.proxy == BACKEND and row.is_server}


def victim_seen(plan: ClusterPlan) -> tuple[str, str]:
    row = haproxy_view(plan)["server-1"]
    return row.status, row.check_status


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.01)


@pytest.mark.slow
def test_killing_a_server_under_load_loses_no_retried_call(
    cluster: ClusterPlan,
    two_versions: tuple[Path, Path, str, str],
    synth_logs: Path,
) -> None:
    _, _, victim_version, survivor_version = two_versions
    victim = cluster.servers[0]
    victim_pid = read_pid(victim.pid_file)
    assert victim_pid is not None
    load = PacedLoad(cluster.front_port, logged_requests(synth_logs))
    load.start()
    try:
        wait_until(lambda: len(load.calls) >= CALLS_BEFORE, "calls before the kill")
        answered_by = {c.version for c in load.calls}
        assert answered_by == {victim_version, survivor_version}, "both servers take traffic"
        assert haproxy_view(cluster)["server-1"].current_sessions >= 1

        # Freeze the victim first, so that it surely holds calls when it dies (at a few
        # hundred calls a second it would otherwise often hold none at the instant of the kill).
        os.killpg(victim_pid, signal.SIGSTOP)
        wait_until(lambda: load.in_flight >= CALLERS // 2, "calls held by the frozen server", 3.0)
        held = load.in_flight
        os.killpg(victim_pid, signal.SIGKILL)
        wait_until(lambda: refuses_connections(victim.port), "the victim's port closed", 10.0)
        killed_at = time.monotonic()

        # DOWN for the right reason: its port refuses (not only the freeze's check timeouts).
        wait_until(lambda: victim_seen(cluster) == ("DOWN", "L4CON"), "victim marked down")
        wait_until(
            lambda: sum(c.started > killed_at for c in load.calls) >= CALLS_AFTER,
            "calls after the kill",
        )
    finally:
        load.stop()

    view = haproxy_view(cluster)
    lost = [c.error for c in load.calls if c.error is not None]
    after = [c for c in load.calls if c.started > killed_at]
    print(
        f"\nfailover: {len(load.calls)} calls sent, {held} in flight when the victim"
        f" was killed, {load.retried} attempts retried, {len(lost)} lost;"
        f" {load.connects} connections opened; HAProxy: victim {view['server-1'].status}"
        f" ({view['server-1'].check_status}), {view['server-1'].connection_errors} connect errors,"
        f" {view['server-1'].retries} retries, {view['server-1'].redispatches} redispatches;"
        f" slowest call {max(c.ended - c.started for c in load.calls) * 1000:.0f} ms"
    )
    assert lost == []
    assert load.retried >= 1  # the held calls were tried again, not answered by magic
    assert load.connects > CONNECTIONS  # the victim's connections were replaced, via HAProxy
    assert {(c.version, c.outcome) for c in after} == {(survivor_version, Outcome.SCORED)}
    assert (view["server-1"].status, view["server-1"].check_status) == ("DOWN", "L4CON")
    assert view["server-2"].up

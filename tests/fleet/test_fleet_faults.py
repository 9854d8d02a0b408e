"""Faults across hosts: a fleet of network namespaces (HAProxy, two servers, S3) under load.

Each test injects one fault into the fleet of ``conftest.fleet`` (see fleet_topology.py) while
a client with retries sends paced calls through HAProxy, and checks what a caller sees: every
call answered, none failed open, and the fleet back to normal afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_topology import (
    CALL_TIMEOUT_S,
    POLL_S,
    RETRIES,
    SERVERS,
    Figures,
    Fleet,
    Requests,
    host_kill,
    lossy_link,
    rolling_update,
    s3_partition,
)

P99_BOUND_MS = 2000.0  # generous: a noisy CI machine must pass


def report(figures: Figures) -> None:
    print(
        f"\n{figures.scenario}: {figures.calls_sent} sent, {figures.calls_answered} answered,"
        f" {figures.calls_lost} lost, {figures.fail_open} failed open, {figures.retried} retried;"
        f" {figures.calls_in_fault} started during the fault:"
        f" p50 {figures.p50_ms} ms, p99 {figures.p99_ms} ms,"
        f" max {figures.max_ms} ms; {figures.recover_what}: {figures.recover_s} s; {figures.notes}"
    )


def assert_every_call_scored(figures: Figures) -> None:
    assert figures.calls_lost == 0, figures.lost_errors
    assert figures.calls_answered == figures.calls_sent
    assert figures.fail_open == 0


@pytest.mark.slow
def test_a_server_host_killed_under_load_loses_no_retried_call(
    healthy_fleet: Fleet, requests: Requests
) -> None:
    result = host_kill(healthy_fleet, requests, victim="server-1")
    report(result)
    assert_every_call_scored(result)
    assert result.retried >= 1  # the dead host's calls were tried again, elsewhere
    # Marked down for answering no check at all (a dead host does not refuse: it is silent).
    assert result.victim_status == ("DOWN", "L4TOUT")
    assert result.calls_after_down >= 300
    assert result.unscored_after_down == 0
    # No call waits for ever: at worst each attempt times out once.
    assert result.max_ms < (RETRIES + 1) * CALL_TIMEOUT_S * 1000
    assert healthy_fleet.haproxy_view()["server-1"].up  # booted again, back in service


@pytest.mark.slow
def test_a_lossy_slow_link_to_one_server_delays_calls_and_loses_none(
    healthy_fleet: Fleet, requests: Requests
) -> None:
    result = lossy_link(healthy_fleet, requests, victim="server-2")
    report(result)
    assert_every_call_scored(result)
    assert result.p99_ms < P99_BOUND_MS
    # The fault was real: the calls through the victim took its 2 x 20 ms at least.
    assert result.p99_ms >= 40.0
    assert all(healthy_fleet.haproxy_view()[host].up for host in SERVERS)


@pytest.mark.slow
def test_s3_partitioned_during_a_rollout_serving_goes_on_and_the_new_version_follows(
    healthy_fleet: Fleet, requests: Requests, fleet_store: Path
) -> None:
    result = s3_partition(healthy_fleet, requests, fleet_store)
    report(result)
    assert_every_call_scored(result)
    assert result.p99_ms < P99_BOUND_MS
    # Cut off: the new version was in S3 for several polls, yet every server kept serving
    # (and answering with) the current one, and stayed ready.
    assert result.published_before_heal_s >= 3 * POLL_S
    assert result.served_during_fault == dict.fromkeys(SERVERS, result.old_version)
    assert result.versions_during_fault == [result.old_version]
    # Healed: the version published meanwhile is served everywhere, and only it.
    assert sorted(result.switched_s) == sorted(SERVERS)
    assert result.versions_after == [result.new_version]


@pytest.mark.slow
def test_a_rolling_model_update_under_load_loses_no_call(
    healthy_fleet: Fleet, requests: Requests, fleet_store: Path
) -> None:
    result = rolling_update(healthy_fleet, requests, fleet_store)
    report(result)
    assert_every_call_scored(result)
    assert result.p99_ms < P99_BOUND_MS
    assert sorted(result.switched_s) == sorted(SERVERS)
    assert result.versions_after == [result.new_version]

"""`bidfilter cluster up|status|down` as a user runs it: real servers, a real HAProxy, real TCP."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import STARTUP_TIMEOUT_S, free_port_block, refuses_connections

from bidfilter.client import AsyncBidFilterClient, ConnectionSettings, Outcome
from bidfilter.cluster import BACKEND, parse_show_stat, show_stat
from bidfilter.cluster.processes import is_running


def cluster(
    *argv: str, timeout: float = STARTUP_TIMEOUT_S + 30
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFILTER_")}
    return subprocess.run(
        [sys.executable, "-m", "bidfilter", "cluster", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def decide_through(port: int, requests: list[tuple[bytes, list[str]]]) -> list[Any]:
    # Four connections at once: HAProxy (leastconn) spreads them over both servers.
    async with AsyncBidFilterClient(
        ConnectionSettings("127.0.0.1", port, timeout=5.0), connections=4
    ) as client:
        await client.connect()
        return await asyncio.gather(
            *(client.filter(openrtb, partners, deadline_ms=5000) for openrtb, partners in requests)
        )


@pytest.mark.slow
def test_up_status_calls_and_down(
    trained_store: tuple[Path, str],
    state_dir: Path,
    port_allocator: Callable[[], int],
    haproxy: Path,
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    store, version = trained_store
    base = free_port_block(port_allocator, 5)
    front = base + 4
    up_flags = ["--store", str(store), "--port", str(front), "--base-port", str(base)]
    up_flags += ["--servers", "2", "--workers", "1", "--state-dir", str(state_dir)]
    up_flags += ["--timeout", str(STARTUP_TIMEOUT_S)]

    started = json_of(cluster("up", *up_flags, "--json"))
    assert started["all_up"]
    servers = started["servers"]
    assert [(s["name"], s["port"], s["side_port"]) for s in servers] == [
        ("server-1", base, base + 1),
        ("server-2", base + 2, base + 3),
    ]
    assert all(s["running"] and s["readyz"] == 200 for s in servers)
    assert {s["model_version"] for s in servers} == {version}
    pids = [s["pid"] for s in servers] + [started["haproxy"]["pid"]]

    again = cluster("up", *up_flags)
    assert again.returncode == 2
    assert "already up" in again.stderr
    assert "cluster down" in again.stderr  # says what to do

    shown = json_of(cluster("status", "--state-dir", str(state_dir), "--json"))
    assert shown["all_up"]
    assert [s["pid"] for s in shown["servers"]] + [shown["haproxy"]["pid"]] == pids
    assert [(s["haproxy_status"], s["haproxy_check"]) for s in shown["servers"]] == [
        ("UP", "L7OK"),
        ("UP", "L7OK"),
    ]
    text = cluster("status", "--state-dir", str(state_dir))
    assert text.returncode == 0
    assert "server-2" in text.stdout and version in text.stdout

    requests = replay_requests[:60]
    responses = asyncio.run(decide_through(front, requests))
    assert all(r.outcome == Outcome.SCORED and r.model_version == version for r in responses)
    for response, (_, partners) in zip(responses, requests, strict=True):
        assert [d.partner for d in response.decisions] == partners
    assert any(not d.send for r in responses for d in r.decisions)  # it filters, for real
    socket_path = Path(shown["haproxy"]["stats_socket"])
    sessions = {
        row.name: row.total_sessions
        for row in parse_show_stat(show_stat(socket_path))
        if row.proxy == BACKEND and row.is_server
    }
    assert sessions["server-1"] >= 1 and sessions["server-2"] >= 1, sessions

    stopped = json_of(cluster("down", "--state-dir", str(state_dir), "--json"))
    assert [(s["name"], s["outcome"]) for s in stopped["stopped"]] == [
        ("server-1", "stopped"),
        ("server-2", "stopped"),
        ("haproxy", "stopped"),
    ]
    assert not any(is_running(pid) for pid in pids)
    assert all(refuses_connections(port) for port in range(base, base + 5))
    assert not list(state_dir.rglob("*.pid")) and not (state_dir / "cluster.json").exists()
    assert (state_dir / "server-1" / "serve.log").stat().st_size > 0  # logs stay

    gone = cluster("status", "--state-dir", str(state_dir))
    assert gone.returncode == 1 and "no cluster" in gone.stdout
    assert cluster("down", "--state-dir", str(state_dir)).returncode == 0  # nothing to stop


def test_up_refuses_a_port_in_use_and_starts_nothing(
    trained_store: tuple[Path, str],
    state_dir: Path,
    port_allocator: Callable[[], int],
    haproxy: Path,
) -> None:
    base = free_port_block(port_allocator, 5)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 3))
        squatter.listen()
        done = cluster(
            "up",
            *("--store", str(trained_store[0]), "--state-dir", str(state_dir)),
            *("--port", str(base + 4), "--base-port", str(base), "--servers", "2"),
        )
    assert done.returncode == 2
    assert f"127.0.0.1:{base + 3}, server-2's side port, is not free" in done.stderr
    assert not (state_dir / "cluster.json").exists()
    assert not list(state_dir.rglob("*.pid"))


@pytest.mark.slow
def test_up_gives_up_on_a_server_that_never_gets_ready(
    tmp_path: Path,
    state_dir: Path,
    port_allocator: Callable[[], int],
    haproxy: Path,
) -> None:
    """A store without a model: the server would answer fail-open and /readyz stay 503, so
    HAProxy would never send it traffic; `up` says so at once and starts nothing."""
    base = free_port_block(port_allocator, 3)
    done = cluster(
        "up",
        *("--store", str(tmp_path / "empty-store"), "--state-dir", str(state_dir)),
        *("--port", str(base + 2), "--base-port", str(base), "--servers", "1"),
        *("--timeout", "5"),
    )
    assert done.returncode == 2
    assert "no model store at" in done.stderr and "Traceback" not in done.stderr
    assert all(refuses_connections(port) for port in range(base, base + 3))
    assert not list(state_dir.rglob("*.pid"))


def test_status_and_down_without_a_cluster(tmp_path: Path) -> None:
    state = str(tmp_path / "nothing")
    shown = cluster("status", "--state-dir", state, "--json")
    assert shown.returncode == 1
    assert json.loads(shown.stdout)["all_up"] is False
    stopped = cluster("down", "--state-dir", state, "--json")
    assert stopped.returncode == 0
    assert json.loads(stopped.stdout)["stopped"] == []

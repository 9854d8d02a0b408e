"""The supervisor's own faults: a version that makes loading raise something unexpected, a
port another server holds, a side port that cannot be had.

Background tasks survive any one round's exception (logged, counted) or stop the server loudly;
a server refuses to start rather than share its Thrift port or run without its side port.
Real ``bidfilter serve`` processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import xgboost as xgb

sys.path[:0] = [str(Path(__file__).parents[1] / "server")]
from serving import BIDFILTER, ServerPool, copy_as_new_version  # noqa: E402


def zero_base_score(model_file: Path) -> None:
    """A model XGBoost loads but whose base score (0) the flattening cannot take (log-odds)."""
    booster = xgb.Booster(model_file=str(model_file))
    document = json.loads(booster.save_raw("json"))
    document["learner"]["learner_model_param"]["base_score"] = "[0E0]"
    xgb.Booster(model_file=bytearray(json.dumps(document).encode())).save_model(str(model_file))


def test_a_version_that_makes_loading_raise_is_refused_and_the_next_one_loads(
    server_pool: ServerPool, trained_store: tuple[Path, str], tmp_path: Path
) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(trained_store[0], store)
    server = server_pool(store, poll_s=0.2)
    bad = copy_as_new_version(store, trained_store[1], edit_model=zero_base_score)
    server.wait_until(lambda: bad in server.log.read_text(), timeout=30)
    server.wait_until(
        lambda: (
            re.search(
                r'^bidfilter_model_reloads_total\{result="failure"\} [1-9]',
                server.http("/metrics")[1],
                re.MULTILINE,
            )
            is not None
        ),
        timeout=30,
    )
    assert server.http("/readyz")[1].startswith(f"ready: {trained_store[1]}")
    assert not (server.cache_dir / bad).exists()  # refused: its verified copy is not kept
    good = copy_as_new_version(store, trained_store[1])
    server.wait_until(lambda: server.http("/readyz")[1].startswith(f"ready: {good}"), timeout=30)
    assert "ZeroDivisionError" in server.log.read_text()


def serve(
    port: int, metrics_port: int, store: Path, cache: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIDFILTER), "serve", "--store", str(store), "--port", str(port),
         "--metrics-port", str(metrics_port), "--workers", "1", "--cache-dir", str(cache)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_second_server_on_a_port_in_use_refuses_to_start(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    tmp_path: Path,
    port_allocator: Callable[[], int],
) -> None:
    first = server_pool(trained_store[0])
    second = serve(first.port, port_allocator(), trained_store[0], tmp_path / "cache-2")
    assert second.returncode != 0
    assert f"Thrift port 127.0.0.1:{first.port} is not free" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.ready()


def test_a_taken_metrics_port_stops_the_server_before_it_serves(
    trained_store: tuple[Path, str], tmp_path: Path, port_allocator: Callable[[], int]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        port = port_allocator()
        result = serve(port, taken, trained_store[0], tmp_path / "cache")
    assert result.returncode != 0
    assert f"metrics port 127.0.0.1:{taken} is not free" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as probe:  # and nothing was left serving Thrift
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_serve_refuses_a_local_store_that_does_not_exist(
    tmp_path: Path, port_allocator: Callable[[], int]
) -> None:
    missing = tmp_path / "no-such-store"  # a typo would otherwise fail open for ever
    port = port_allocator()
    result = serve(port, port_allocator(), missing, tmp_path / "cache")
    assert result.returncode == 2
    assert f"no model store at {missing}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_silent_side_port_connections_cannot_take_readyz_away(
    server_pool: ServerPool, trained_store: tuple[Path, str]
) -> None:
    import time

    server = server_pool(trained_store[0])
    silent = []
    try:
        for _ in range(300):  # far past the limit; each says nothing
            sock = socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5)
            silent.append(sock)
        # Answered while they are all still open: the limit drops the ones past it at once,
        # the side port's 2 s timeout frees the rest.
        deadline = time.monotonic() + 10
        answered = False
        while not answered and time.monotonic() < deadline:
            try:
                answered = server.http("/readyz")[0] == 200
            except OSError:
                time.sleep(0.1)
        assert answered
    finally:
        for sock in silent:
            sock.close()
    _, metrics = server.http("/metrics")
    refused = re.search(
        r'^bidfilter_side_port_connections_total\{result="refused"\} (\d+)', metrics, re.M
    )
    assert refused is not None and int(refused.group(1)) > 0
    assert server.log.read_text().count("Traceback") == 0

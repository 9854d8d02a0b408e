"""The model cache under careless operators: deleted, damaged, or not writable for a while.

Workers load the version the supervisor verified from its local cache. A cache that loses the
current version must not leave a replacement worker failing open; a local error while fetching
a new version (a full or unwritable cache) must not refuse that version for ever.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "server")]
from serving import ServerPool, copy_as_new_version  # noqa: E402
from test_worker_health import scored, states, worker_pids  # noqa: E402


def _replaced_and_serving(server, before: int, request: bytes) -> bool:  # type: ignore[no-untyped-def]
    pid = worker_pids(server).get(0)
    return (
        pid not in (None, before) and states(server).get(0) == "ready" and scored(server, request)
    )


def test_a_deleted_cache_is_fetched_again_for_a_replacement_worker(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    server = server_pool(trained_store[0], poll_s=60)  # the fix must not wait for a poll
    version_dir = server.cache_dir / trained_store[1]
    assert (version_dir / "manifest.json").is_file()
    shutil.rmtree(server.cache_dir)
    before = worker_pids(server)[0]
    os.kill(before, signal.SIGKILL)
    request = replay_requests[0][0]
    server.wait_until(lambda: _replaced_and_serving(server, before, request), timeout=30)
    assert (version_dir / "manifest.json").is_file()
    assert "fetched it again" in server.log.read_text()


def test_a_damaged_cached_copy_is_fetched_again_when_a_worker_refuses_it(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    server = server_pool(trained_store[0], poll_s=60)
    version_dir = server.cache_dir / trained_store[1]
    model_file = next(p for p in version_dir.iterdir() if p.suffix == ".ubj")
    model_file.write_bytes(b"not a model")  # the manifest stays: only loading can tell
    before = worker_pids(server)[0]
    os.kill(before, signal.SIGKILL)
    request = replay_requests[0][0]
    server.wait_until(lambda: _replaced_and_serving(server, before, request), timeout=30)
    log = server.log.read_text()
    assert "refused generation 1" in log
    assert "fetched it again" in log


def test_a_local_error_fetching_a_version_is_retried_and_logged_once(
    server_pool: ServerPool, trained_store: tuple[Path, str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(trained_store[0], store)
    server = server_pool(store, poll_s=0.2)
    # A file where the cache directory should be: every fetch fails with an OSError, as a full
    # or read-only disk would. Serving goes on from memory.
    shutil.rmtree(server.cache_dir)
    server.cache_dir.write_text("in the way")
    new = copy_as_new_version(store, trained_store[1])
    line = re.compile(
        rf"could not fetch model version {new} into {re.escape(str(server.cache_dir))}"
    )
    server.wait_until(lambda: line.search(server.log.read_text()) is not None, timeout=30)
    time.sleep(2.5)  # several polls, and a retry or two with backoff
    log = server.log.read_text()
    assert len(line.findall(log)) == 1  # once per version, not once per poll
    assert log.count("could not be fetched again") == 1  # the current version: once as well
    assert server.http("/readyz")[1].startswith(f"ready: {trained_store[1]}")
    assert 'bidfilter_model_reloads_total{result="failure"} 0' in server.http("/metrics")[1]
    server.cache_dir.unlink()  # the operator frees the disk
    server.wait_until(lambda: server.http("/readyz")[1].startswith(f"ready: {new}"), timeout=30)
    assert f"fetched model version {new} after" in server.log.read_text()


def test_a_deleted_store_is_logged_and_serving_goes_on(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    shutil.copytree(trained_store[0], store)
    server = server_pool(store, poll_s=0.2)
    shutil.rmtree(store)
    server.wait_until(lambda: "has no LATEST version any more" in server.log.read_text())
    assert scored(server, replay_requests[0][0])
    assert server.http("/readyz")[1].startswith(f"ready: {trained_store[1]}")

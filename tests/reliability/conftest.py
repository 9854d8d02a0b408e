"""Fixtures for the reliability tests: servers that always stop, and logged requests to send."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# tests/ holds no packages: the server test helpers are imported from their folder.
sys.path[:0] = [str(Path(__file__).parents[1] / "server")]
from serving import ServerPool  # noqa: E402


@pytest.fixture
def server_pool(tmp_path: Path, port_allocator: Callable[[], int]) -> Iterator[ServerPool]:
    """``server_pool(store, workers=1, wait_ready=True, **flags)`` -> a running server; every
    server started is stopped after the test."""
    pool = ServerPool(tmp_path, port_allocator)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def replay_requests(synth_logs: Path) -> list[tuple[bytes, list[str]]]:
    """(OpenRTB JSON, logged partners) of the first 500 synthetic requests."""
    from bidfilter.logs import iter_log_batches

    batch = next(iter_log_batches(synth_logs, columns=["request", "partners"], batch_size=500))
    return [
        (text.encode(), [p["partner"] for p in partners])
        for text, partners in zip(
            batch.column("request").to_pylist(), batch.column("partners").to_pylist(), strict=True
        )
    ]

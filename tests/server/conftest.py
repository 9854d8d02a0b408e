"""Fixtures that start real ``bidfilter serve`` processes on 127.0.0.1 and always stop them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serving import RunningServer, ServerPool


@pytest.fixture
def start_server(tmp_path: Path, port_allocator: Callable[[], int]) -> Iterator[ServerPool]:
    """``start_server(store, workers=1, wait_ready=True, **flags)`` -> a running server."""
    pool = ServerPool(tmp_path, port_allocator)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def module_server(
    trained_store: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
    port_allocator: Callable[[], int],
) -> Iterator[RunningServer]:
    """One server with two workers on the trained store, shared by a test module."""
    pool = ServerPool(tmp_path_factory.mktemp("module-server"), port_allocator)
    yield pool(trained_store[0], workers=2)
    pool.stop_all()


@pytest.fixture
def store_copy(trained_store: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A private copy of the trained store (tests may publish into it)."""
    store_dir, version = trained_store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    return copy, version


@pytest.fixture(scope="session")
def logged_requests(synth_logs: Path) -> list[tuple[bytes, list[str]]]:
    """(OpenRTB JSON, logged partners) of the first 500 synthetic requests."""
    from bidfilter.logs import iter_log_batches

    batch = next(iter_log_batches(synth_logs, columns=["request", "partners"], batch_size=500))
    return [
        (text.encode(), [p["partner"] for p in partners])
        for text, partners in zip(
            batch.column("request").to_pylist(), batch.column("partners").to_pylist(), strict=True
        )
    ]

"""Fixtures for the local-cluster tests: HAProxy (or a skip), ports, a state dir that is always
cleaned up, and requests to send."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import haproxy_or_skip, logged_requests

from bidfilter.cluster import down


@pytest.fixture(scope="session")
def haproxy() -> Path:
    """The HAProxy executable; the test is skipped if HAProxy is not installed."""
    return haproxy_or_skip()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A cluster state dir; whatever a test left running in it is stopped afterwards."""
    state = tmp_path / "state"
    yield state
    down(state, timeout=15)


@pytest.fixture(scope="session")
def replay_requests(synth_logs: Path) -> list[tuple[bytes, list[str]]]:
    return logged_requests(synth_logs)

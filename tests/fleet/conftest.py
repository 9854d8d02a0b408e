"""The fleet of network namespaces, built once for the module and always removed."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ holds no packages: the fleet's topology is imported from this folder.
sys.path[:0] = [str(Path(__file__).parent)]
from fleet_topology import (  # noqa: E402
    Fleet,
    FleetUnavailableError,
    Requests,
    check_tools,
    logged_requests,
    running_fleet,
)


@pytest.fixture(scope="module")
def fleet_tools() -> None:
    """Skip at once, before any model is trained, where the fleet's tools are missing."""
    try:
        check_tools()
    except FleetUnavailableError as error:
        pytest.skip(f"no fleet of network namespaces here: {error}")


@pytest.fixture(scope="module")
def fleet_store(
    fleet_tools: None, trained_store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A local store to make new versions in (a copy: the session's trained store is shared)."""
    store_dir = tmp_path_factory.mktemp("fleet") / "store"
    shutil.copytree(trained_store[0], store_dir)
    return store_dir


@pytest.fixture(scope="module")
def fleet(
    fleet_store: Path, trained_store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The started fleet, serving the trained version from S3; skipped where this machine
    cannot create network namespaces or lacks tc or HAProxy."""
    initial = fleet_store / "versions" / trained_store[1]
    try:
        with running_fleet(tmp_path_factory.mktemp("fleet-run"), initial) as started:
            yield started
    except FleetUnavailableError as error:
        pytest.skip(f"no fleet of network namespaces here: {error}")


@pytest.fixture
def healthy_fleet(fleet: Fleet) -> Fleet:
    """The fleet with every link clean and both servers in service, whatever a test before
    left behind."""
    fleet.heal()
    return fleet


@pytest.fixture(scope="module")
def requests(synth_logs: Path) -> Requests:
    return logged_requests(synth_logs)

"""The benchmark harness lives in ``bench/`` at the repository root, outside the package."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `import bench` also when pytest is not run from the root


def missing_tools() -> list[str]:
    """What the harness needs that this machine lacks."""
    missing = [tool for tool in ("gcc", "taskset") if shutil.which(tool) is None]
    if not Path("/usr/bin/thrift").exists():
        missing.append("/usr/bin/thrift")
    if len(os.sched_getaffinity(0)) < 2:
        missing.append("a second CPU core")
    return missing


@pytest.fixture
def harness_tools() -> None:
    """Skip, naming what is missing, where the harness cannot run at all."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"the benchmark harness needs {', '.join(missing)}")

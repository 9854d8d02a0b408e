"""MLServer's own virtual environment, created on demand under ``bench/.venvs/mlserver``.

MLServer pins its dependencies (FastAPI, pydantic, protobuf, ...) in ways that may clash with
bidfilter's, so it never shares bidfilter's environment. The harness creates the venv the first
time a run needs MLServer and reuses it while the pinned requirements stay the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

MLSERVER_REQUIREMENTS: Final = (
    "mlserver==1.7.1",
    "mlserver-xgboost==1.7.1",
    # uvloop 0.22 broke MLServer's inference workers ("There is no current event loop" at their
    # start): https://github.com/SeldonIO/MLServer/issues/2286, unfixed in 1.7.1.
    "uvloop<0.22",
)
_INSTALL_TIMEOUT_S: Final = 1800.0
_MARKER: Final = ".bench-requirements"


def mlserver_executable(venv: Path) -> Path:
    return venv / "bin" / "mlserver"


def ensure_mlserver_venv(venv: Path, log: Callable[[str], object] = print) -> float:
    """Create (or reuse) the venv at ``venv`` with MLServer installed; seconds spent installing.

    The venv is made from this interpreter's base Python (same version as bidfilter's, so the
    same XGBoost wheel), then ``pip install``s the pinned requirements.
    """
    marker = venv / _MARKER
    wanted = "\n".join(MLSERVER_REQUIREMENTS) + "\n"
    if marker.is_file() and marker.read_text() == wanted and mlserver_executable(venv).exists():
        return 0.0
    log(f"installing MLServer into {venv} ({', '.join(MLSERVER_REQUIREMENTS)}); a few minutes")
    started = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", os.fspath(venv)], check=True, timeout=300)
        subprocess.run(
            [
                os.fspath(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *MLSERVER_REQUIREMENTS,
            ],
            check=True,
            timeout=_INSTALL_TIMEOUT_S,
        )
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)  # never leave a half-installed venv behind
        raise
    marker.write_text(wanted)
    return time.monotonic() - started


def package_versions(venv: Path) -> dict[str, str]:
    """Versions of what matters inside the venv (for the results' provenance)."""
    script = (
        "import importlib.metadata as m, json\n"
        "names = ['mlserver', 'mlserver-xgboost', 'xgboost', 'uvicorn', 'fastapi', 'numpy']\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    completed = subprocess.run(
        [os.fspath(venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    versions: dict[str, str] = json.loads(completed.stdout)
    return versions

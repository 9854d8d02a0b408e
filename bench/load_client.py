"""The compiled load generator (``bench/loadgen/loadgen.c``): build it, run it pinned, read it.

It is built with ``gcc -O2`` into ``bench/.cache/`` (named by the source's hash, so an edited
source is rebuilt) and run under ``taskset`` on the client core. Its JSON report is returned
as a dict; see the C file's header for the two modes and what is measured. The floor server
(``bench/loadgen/floor_server.c``, see ``bench.systems.FloorSystem``) is built the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SOURCE: Final = Path(__file__).resolve().parent / "loadgen" / "loadgen.c"
FLOOR_SOURCE: Final = Path(__file__).resolve().parent / "loadgen" / "floor_server.c"
_COMPILE_TIMEOUT_S: Final = 120.0
# Past its own hard deadline (duration + drain + 5 s), the generator is killed.
_RUN_GRACE_S: Final = 30.0


def build_loadgen(cache_dir: Path, compiler: str = "gcc") -> Path:
    """The compiled load generator, built now unless this source was built before."""
    return build_c(SOURCE, cache_dir, compiler)


def build_floor_server(cache_dir: Path, compiler: str = "gcc") -> Path:
    """The compiled floor server, built now unless this source was built before."""
    return build_c(FLOOR_SOURCE, cache_dir, compiler)


def build_c(source: Path, cache_dir: Path, compiler: str = "gcc") -> Path:
    """``source`` compiled to ``cache_dir/<stem>-<hash of the source>``, unless already there."""
    if shutil.which(compiler) is None:
        raise RuntimeError(f"{compiler} not found: {source.name} is compiled C")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    binary = cache_dir / f"{source.stem}-{digest}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".partial{os.getpid()}")
    subprocess.run(
        [compiler, "-O2", "-Wall", "-Wextra", "-o", os.fspath(partial), os.fspath(source)],
        check=True,
        timeout=_COMPILE_TIMEOUT_S,
    )
    os.replace(partial, binary)
    return binary


def compiler_version(compiler: str = "gcc") -> str:
    completed = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return completed.stdout.splitlines()[0] if completed.stdout else "unknown"


@dataclass(frozen=True)
class LoadSpec:
    """One run of the load generator."""

    mode: str  # "open" (a fixed offered rate) or "closed" (depth in flight per connection)
    duration_s: float
    connections: int
    rate: float | None = None
    depth: int = 1
    drain_s: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in ("open", "closed"):
            raise ValueError(f"mode must be open or closed, not {self.mode}")
        if self.mode == "open" and (self.rate is None or self.rate <= 0):
            raise ValueError("an open-loop run needs a positive rate")


def run_load(
    binary: Path,
    *,
    port: int,
    requests_file: Path,
    wire: str,
    spec: LoadSpec,
    core: int,
    report_file: Path,
) -> dict[str, Any]:
    """Run the generator pinned to ``core`` against 127.0.0.1:``port``; its JSON report."""
    command = [
        "taskset",
        "-c",
        str(core),
        os.fspath(binary),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--requests",
        os.fspath(requests_file),
        "--kind",
        wire,
        "--mode",
        spec.mode,
        "--duration",
        f"{spec.duration_s:g}",
        "--drain",
        f"{spec.drain_s:g}",
        "--connections",
        str(spec.connections),
        "--out",
        os.fspath(report_file),
    ]
    if spec.mode == "open":
        command += ["--rate", f"{spec.rate:.3f}"]
    else:
        command += ["--depth", str(spec.depth)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=spec.duration_s + spec.drain_s + _RUN_GRACE_S,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"load generator failed ({completed.returncode}): {completed.stderr.strip()}"
        )
    report: dict[str, Any] = json.loads(report_file.read_text())
    return report

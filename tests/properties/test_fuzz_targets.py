"""The fuzz targets in fuzz/ run for a bounded time in CI; a crash fails the test.

``scripts/fuzz`` runs them longer (30 s each by default, corpus kept between runs); here each
target gets a few seconds from a fresh corpus that it seeds itself, and the inputs that crashed
it once (bugs since fixed) are replayed through its checks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="the fuzz targets need atheris (pip install atheris)")

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
SECONDS = 8
TARGETS = ["openrtb_parser", "thrift_frames"]

# Inputs the fuzzer found, each a crash before its fix (see docs/reliability.md).
FOUND = {
    "openrtb_parser": {
        # str path: lone surrogates (from invalid UTF-8) raised UnicodeEncodeError
        "lone-surrogate": b"\xff",
        # an integer past float's range: OverflowError in the features
        "huge-integer": (
            b'{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":2' + b"7" * 400 + b'}}],"tmax":500}'
        ),
        # a 64-bit-plus integer: an infinite float32 feature
        "past-int64": b'{"id":"r","imp":[{"id":"1","video":{"startdelay":-8' + b"8" * 40 + b"}}]}",
        # a floor near float's top: infinite floor features
        "huge-floor": b'{"id":"r","imp":[{"id":"1","banner":{},"bidfloor":1e308}]}',
    },
    "thrift_frames": {
        # mode 1 (client, binary, framed), 1-byte chunks: an empty frame, then "00 b8", the
        # start of a 12 MiB frame length: refused whole, not when split
        "split-frame-length": bytes([1, 0]) + b"\x00\x00\x00\x00\x00\xb8",
        "split-first-frame-length": bytes([0, 0]) + b"\x00\x20",
    },
}


def run_target(target: str, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{target}.py"), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=SECONDS * 6 + 60,  # a loaded machine starts slowly; a hang still ends
    )


@pytest.mark.parametrize("target", TARGETS)
def test_fuzzing_for_a_few_seconds_finds_no_crash(target: str, tmp_path: Path) -> None:
    result = run_target(
        target,
        f"-max_total_time={SECONDS}",
        "-timeout=20",
        f"-artifact_prefix={tmp_path}/",
        tmp_path / "corpus",
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert not list(tmp_path.glob("crash-*"))
    seeds = re.search(r"^fuzz: (\d+) seed", log, re.MULTILINE)
    done = re.search(r"^Done (\d+) runs", log, re.MULTILINE)
    assert seeds is not None and done is not None, log[-5000:]
    # Past the seeds: the fuzzer mutated inputs, it did not just replay the corpus.
    assert int(seeds.group(1)) >= 50
    assert int(done.group(1)) > int(seeds.group(1))


@pytest.mark.parametrize("target", TARGETS)
def test_inputs_the_fuzzer_found_pass_its_checks_now(target: str, tmp_path: Path) -> None:
    paths = []
    for name, data in FOUND[target].items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    result = run_target(target, *paths)  # libFuzzer runs the given files, and only them
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    for path in paths:
        assert f"Executed {path}" in result.stderr

"""Seed inputs for the fuzz targets, written into libFuzzer's corpus directory at start.

Seeds are generated here rather than committed: the OpenRTB requests come from the shared
corpus committed as test data (``tests/data/openrtb-corpus``), the Thrift streams are encoded
from them with bidfilter's own encoders. A seed's file name is its content's hash, so seeding a
directory twice adds nothing, and inputs that libFuzzer saved there on earlier runs are kept.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from pathlib import Path

OPENRTB_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "openrtb-corpus"


def openrtb_documents(*, include_invalid: bool = True) -> list[bytes]:
    """Every request of the corpus (valid ones first)."""
    paths = sorted(OPENRTB_CORPUS.glob("*.json"))
    if include_invalid:
        paths += sorted((OPENRTB_CORPUS / "invalid").glob("*.json"))
    if not paths:
        raise SystemExit(f"fuzz: no OpenRTB corpus at {OPENRTB_CORPUS}")
    return [path.read_bytes() for path in paths]


def corpus_directory(argv: list[str], name: str) -> tuple[list[str], Path]:
    """libFuzzer's writable corpus directory (its first non-flag argument), created if needed.

    Without one, a new temporary directory is added to ``argv``, so a bare
    ``python fuzz/fuzz_x.py -max_total_time=10`` still starts from the seeds.
    """
    positional = [arg for arg in argv[1:] if not arg.startswith("-")]
    if positional:
        directory = Path(positional[0])
    else:
        directory = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-")) / "corpus"
        argv = [*argv, str(directory)]
    if not directory.is_file():  # a file is an input to replay (a crash), not a corpus
        directory.mkdir(parents=True, exist_ok=True)
    return argv, directory


def write_seeds(directory: Path, seeds: Iterable[bytes]) -> int:
    """Write each seed into ``directory`` under its hash; returns how many seeds there are."""
    if not directory.is_dir():  # libFuzzer was given files to replay, not a corpus to grow
        return 0
    count = 0
    for seed in seeds:
        path = directory / f"seed-{hashlib.sha1(seed).hexdigest()}"
        if not path.exists():
            path.write_bytes(seed)
        count += 1
    return count


def write_dictionary(path: Path, tokens: Iterable[bytes]) -> Path:
    """A libFuzzer dictionary (``-dict=``): tokens the mutator splices into inputs."""
    lines = []
    for token in sorted(set(tokens)):
        escaped = "".join(
            chr(byte) if 0x20 <= byte < 0x7F and byte not in b'"\\' else f"\\x{byte:02x}"
            for byte in token
        )
        lines.append(f'"{escaped}"')
    path.write_text("\n".join(lines) + "\n")
    return path

"""Opening log files that may be compressed: exported logs usually are, and decompressing them to
disk first would double the space an import needs."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open a log file for reading bytes, decompressing ``.gz``, ``.bz2`` and ``.xz`` by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    return path.open("rb")

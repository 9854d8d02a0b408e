"""Writing files so that a crash leaves either the old content or the new, never a torn mix.

The local store and ``fetch`` build a version in a staging directory and ``os.replace`` it into
place; that rename is only as good as the data under it, so every file and every directory entry
is fsynced before the rename is made visible.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_file_durably(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` (creating parent directories) and fsync the copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, _CHUNK)
        writer.flush()
        os.fsync(writer.fileno())


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old bytes or the new, never a prefix."""
    # The temporary name is a dotted sibling so it lives on the same filesystem (os.replace is
    # only atomic there) and never looks like a version directory or a published file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("wb") as writer:
            writer.write(data)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_tree(root: Path) -> None:
    """Flush every directory under ``root`` (inclusive), so new names survive a crash."""
    for directory, _, _ in os.walk(root):
        fsync_dir(Path(directory))

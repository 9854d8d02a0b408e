"""Where published model versions live, and the one interface every store implements.

A store holds immutable versions and one mutable pointer::

    <prefix>/versions/<version>/manifest.json, model.ubj, report.json, *.png
    <prefix>/LATEST                        the version id readers should load

Readers only ever follow ``LATEST`` (or ask for a version by id) and never trust what they
download until it matches its manifest. Writers upload a whole version, check the uploaded copy,
and only then move ``LATEST``, so a reader never sees a partial publish.

The shared rules (the layout's names, what a version id may be, how a fetched copy is checked and
moved into place) live here; each store only says how to move bytes. Which store a URI opens is
:mod:`bidfilter.artifact.stores`'s business: this base never names its subclasses.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from bidfilter.artifact.durable import fsync_dir, fsync_tree
from bidfilter.artifact.errors import ArtifactError, StoreError
from bidfilter.artifact.manifest import (
    Manifest,
    check_file_entry,
    check_file_name,
    check_version_id,
    decode_manifest,
    verify,
)

log = logging.getLogger(__name__)

LATEST_NAME = "LATEST"
VERSIONS_DIR = "versions"


class ModelStore(ABC):
    """Publish, list, promote and fetch model versions.

    Subclasses implement the byte-moving primitives (``_read_manifest_bytes``, ``_read_file``,
    ``_download``, ``_write_latest``) and ``publish``/``versions``/``latest``; checking what comes
    back is done here, once, for every store.
    """

    @property
    @abstractmethod
    def uri(self) -> str:
        """Where this store is, for messages (never includes credentials)."""

    @abstractmethod
    def publish(self, version_dir: Path, *, promote: bool = True) -> str:
        """Upload the version in ``version_dir``, check the copy, then point ``LATEST`` at it
        (with ``promote``; else the version waits in the store for :meth:`promote`).

        The version id comes from the manifest. Raises ``ArtifactError`` if the directory does not
        match its manifest (nothing is uploaded, ``LATEST`` is unchanged) and ``StoreError`` if
        the version already exists or the store cannot be written.
        """

    @abstractmethod
    def versions(self) -> list[str]:
        """Ids of the complete versions in the store, oldest first (ids sort by time)."""

    @abstractmethod
    def latest(self) -> str | None:
        """The version ``LATEST`` points at, or None if nothing has been published yet."""

    def promote(self, version: str) -> None:
        """Point ``LATEST`` at ``version``, forward or back (rollback); refuses unknown versions."""
        self.read_manifest(version)
        self._write_latest(version)

    def read_manifest(self, version: str) -> Manifest:
        """The validated manifest of ``version`` (its files are not checked; ``fetch`` does)."""
        self._check_version(version)
        data = self._read_manifest_bytes(version)
        if data is None:
            raise StoreError("version", f"no version {version!r} in {self.uri}")
        manifest = decode_manifest(data, source=f"{self.uri} version {version}")
        if manifest.version != version:
            raise ArtifactError(
                "version", f"the manifest stored as {version!r} says {manifest.version!r}"
            )
        return manifest

    def read_bytes(self, version: str, name: str) -> bytes:
        """One file of ``version``, checked against the manifest (e.g. ``report.json``)."""
        manifest = self.read_manifest(version)
        check_file_name(name)
        entry = manifest.files.get(name)
        if entry is None:
            raise ArtifactError(name, f"not listed in the manifest of version {version}")
        data = self._read_file(version, name)
        check_file_entry(name, entry, len(data), hashlib.sha256(data).hexdigest())
        return data

    def read_text(self, version: str, name: str = "report.json") -> str:
        """One file of ``version`` as UTF-8 text, checked against the manifest."""
        data = self.read_bytes(version, name)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ArtifactError(name, f"is not UTF-8 text: {error}") from None

    def fetch(self, version: str, dest_dir: Path) -> Path:
        """Copy ``version`` into ``dest_dir/<version>``, verified against its manifest.

        The copy is assembled in a hidden staging directory, verified (every file's size and
        sha256, no file missing, no file extra) and only then renamed into place, so
        ``dest_dir/<version>`` either does not exist or is complete. If it already exists it is
        re-verified and reused; a copy damaged since (a file deleted or changed in the cache) is
        removed and fetched again. Raises ``ArtifactError`` naming the first file of the store's
        copy that does not match.
        """
        manifest = self.read_manifest(version)
        target = dest_dir / version
        if target.exists():
            try:
                return _reuse(target, manifest)
            except ArtifactError as error:
                log.warning("%s; fetching %s again", error, version)
                shutil.rmtree(target)
        dest_dir.mkdir(parents=True, exist_ok=True)
        staging = dest_dir / f".{version}.{secrets.token_hex(4)}.partial"
        try:
            staging.mkdir()
            self._download(version, manifest, staging)
            if verify(staging) != manifest:
                raise ArtifactError("manifest.json", f"version {version} changed while fetching")
            fsync_tree(staging)
            try:
                os.replace(staging, target)
            except OSError:
                # Another process fetched the same version first; theirs is as good as ours.
                if not target.is_dir():
                    raise
                shutil.rmtree(staging, ignore_errors=True)
                return _reuse(target, manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(dest_dir)
        return target

    def _check_version(self, version: str) -> None:
        try:
            check_version_id(version)
        except ArtifactError as error:
            raise StoreError("version", error.message) from None

    @abstractmethod
    def _read_manifest_bytes(self, version: str) -> bytes | None:
        """The raw manifest of ``version``, or None if the store has no such version."""

    @abstractmethod
    def _read_file(self, version: str, name: str) -> bytes:
        """The raw bytes of one listed file (``name`` is already validated)."""

    @abstractmethod
    def _download(self, version: str, manifest: Manifest, staging: Path) -> None:
        """Write the manifest and every listed file of ``version`` under ``staging``.

        Raise ``ArtifactError`` for a file the store holds under the version but the manifest
        does not list; the caller verifies everything else.
        """

    @abstractmethod
    def _write_latest(self, version: str) -> None:
        """Atomically replace the ``LATEST`` pointer with ``version``."""


def _reuse(target: Path, manifest: Manifest) -> Path:
    """Return an earlier fetch of the same version if it still matches the store's manifest."""
    try:
        local = verify(target)
    except ArtifactError as error:
        raise ArtifactError(
            error.field, f"{error.message} (in {target}, from an earlier fetch; remove it)"
        ) from None
    if local != manifest:
        raise ArtifactError(
            "manifest.json", f"{target} holds a different {manifest.version} than the store"
        )
    return target

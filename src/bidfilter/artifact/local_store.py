"""A model store in a local directory (the default, ``./.bidfilter/store``).

Publishing copies the version into ``<root>/.staging/``, fsyncs it, verifies the copy, and
renames it to ``<root>/versions/<version>`` in one ``os.replace``; ``LATEST`` is then replaced the
same way. A crash at any point leaves either no trace in ``versions/`` or a complete version,
and ``LATEST`` always names a complete version.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from bidfilter.artifact.durable import (
    copy_file_durably,
    fsync_dir,
    fsync_tree,
    write_bytes_atomically,
)
from bidfilter.artifact.errors import ArtifactError, StoreError
from bidfilter.artifact.manifest import (
    MANIFEST_NAME,
    Manifest,
    is_version_id,
    list_files,
    verify,
)
from bidfilter.artifact.store import LATEST_NAME, VERSIONS_DIR, ModelStore

STAGING_DIR = ".staging"


class LocalModelStore(ModelStore):
    """Versions under ``root/versions/<version>/`` and the pointer in ``root/LATEST``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return str(self.root)

    def publish(self, version_dir: Path, *, promote: bool = True) -> str:
        manifest = verify(version_dir)
        version = manifest.version
        target = self._version_dir(version)
        if target.exists():
            raise StoreError("version", f"{version} is already published in {self.uri}")
        staging = self.root / STAGING_DIR / f"{version}.{secrets.token_hex(4)}"
        try:
            staging.mkdir(parents=True)
            for name in (*manifest.files, MANIFEST_NAME):
                copy_file_durably(version_dir / name, staging / name)
            # Check the copy, not only the source: a file rewritten between ``verify`` and the
            # copy, or a bad write, must not be published.
            if verify(staging) != manifest:
                raise ArtifactError(MANIFEST_NAME, f"{version_dir} changed while publishing")
            fsync_tree(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(staging, target)
            except OSError as error:
                raise StoreError(
                    "version", f"{version} was published concurrently in {self.uri}: {error}"
                ) from None
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError("uri", f"cannot publish {version} to {self.uri}: {error}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(target.parent)
        if promote:
            self._write_latest(version)
        return version

    def versions(self) -> list[str]:
        versions_dir = self.root / VERSIONS_DIR
        if not versions_dir.is_dir():
            return []
        # A directory counts as a version only once its manifest is there; a valid id keeps
        # stray entries (editor backups, .DS_Store) out of the list.
        return sorted(
            entry.name
            for entry in versions_dir.iterdir()
            if is_version_id(entry.name) and (entry / MANIFEST_NAME).is_file()
        )

    def latest(self) -> str | None:
        path = self.root / LATEST_NAME
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise StoreError("LATEST", f"cannot read {path}: {error}") from None
        if not is_version_id(text):
            raise StoreError("LATEST", f"{path} does not hold a version id: {text[:80]!r}")
        return text

    def _version_dir(self, version: str) -> Path:
        return self.root / VERSIONS_DIR / version

    def _read_manifest_bytes(self, version: str) -> bytes | None:
        try:
            return (self._version_dir(version) / MANIFEST_NAME).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(
                "uri", f"cannot read version {version} in {self.uri}: {error}"
            ) from None

    def _read_file(self, version: str, name: str) -> bytes:
        try:
            return (self._version_dir(version) / name).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(
                name, f"listed in the manifest but missing from {self.uri}"
            ) from None

    def _download(self, version: str, manifest: Manifest, staging: Path) -> None:
        source = self._version_dir(version)
        unexpected = sorted(set(list_files(source)) - manifest.files.keys())
        if unexpected:
            raise ArtifactError(unexpected[0], f"in {self.uri} but not listed in the manifest")
        for name in (*manifest.files, MANIFEST_NAME):
            if not (source / name).is_file():
                raise ArtifactError(name, f"listed in the manifest but missing from {self.uri}")
            copy_file_durably(source / name, staging / name)

    def _write_latest(self, version: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(self.root / LATEST_NAME, f"{version}\n".encode())

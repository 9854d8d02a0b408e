"""The manifest that makes a model version describe itself, and checking a directory against it.

A model version is a directory::

    <version>/
      manifest.json   what the other files are, what produced them, and their sha256 and sizes
      model.ubj       the XGBoost booster (UBJSON; nothing is ever pickled)
      report.json     the evaluation report
      *.png           plots

``write_manifest`` hashes every file (recursively) and writes ``manifest.json``; ``verify``
re-hashes and refuses anything that does not match: a changed, missing or extra file, or a name
that would escape the directory. Loaders call ``verify`` (or a store's ``fetch``, which does)
before they trust a byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import math
import os
import platform
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec

from bidfilter.artifact.durable import write_bytes_atomically
from bidfilter.artifact.errors import ArtifactError

MANIFEST_NAME = "manifest.json"

# Version ids become directory names and S3 key segments, so they are restricted to characters
# that mean nothing to a filesystem or a URL (no "/", no "..", no leading dot).
VERSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION_ID = re.compile(VERSION_ID_PATTERN)
_SHA256_PATTERN = r"^[0-9a-f]{64}$"
_CHUNK = 1 << 20

# Versions of the libraries whose behaviour the model depends on, recorded for whoever loads it.
# name recorded -> the distributions that provide it (on Linux XGBoost is the CPU-only build)
_RECORDED_LIBRARIES = {
    "bidfilter": ("bidfilter",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "numpy": ("numpy",),
    "msgspec": ("msgspec",),
    "pyarrow": ("pyarrow",),
}


class FileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one file of a version must hash to."""

    sha256: Annotated[str, msgspec.Meta(pattern=_SHA256_PATTERN)]
    bytes: Annotated[int, msgspec.Meta(ge=0)]


class Manifest(msgspec.Struct, frozen=True):
    """Everything a loader needs to know about a model version before it opens the model.

    ``files`` lists every file of the version directory except ``manifest.json`` itself, by its
    path relative to the directory with ``/`` separators.
    """

    version: Annotated[str, msgspec.Meta(pattern=VERSION_ID_PATTERN)]
    created_at: str
    data_start: str
    data_end: str
    feature_spec: dict[str, Any]
    feature_spec_version: int
    model_file: str
    partners: list[str]
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    libraries: dict[str, str]
    files: dict[str, FileEntry]


def new_version_id(now: dt.datetime | None = None) -> str:
    """A fresh version id such as ``20261126T070501Z-1a2b3c``.

    The UTC timestamp first makes ids sort chronologically as plain strings (stores list
    versions that way); the random suffix keeps two trainings in the same second apart.
    A naive ``now`` is taken to be UTC.
    """
    moment = dt.datetime.now(dt.UTC) if now is None else now
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def is_version_id(name: str) -> bool:
    """Whether ``name`` is usable as a version id (a directory name and an S3 key segment)."""
    return _VERSION_ID.fullmatch(name) is not None


def check_version_id(version: str, field: str = "version") -> str:
    """Return ``version`` if it is usable as a directory name and key segment, else raise."""
    if not is_version_id(version):
        raise ArtifactError(
            field,
            f"{version!r} is not a valid version id "
            "(letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128)",
        )
    return version


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a relative path that stays inside its version directory.

    This is where "the loader refuses paths outside the store" is enforced: a manifest naming
    ``../x``, ``/etc/passwd`` or ``C:\\x`` is rejected before any file is opened or downloaded.
    """
    if not name:
        raise ArtifactError("files", "a file name is empty")
    if name.startswith("/") or "\\" in name or ":" in name:
        raise ArtifactError(name, "file names must be relative paths with '/' separators")
    if any(ord(char) < 0x20 or char == "\x7f" for char in name):
        raise ArtifactError(name, "file names must not contain control characters")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ArtifactError(name, "file names must not contain empty, '.' or '..' components")
    if name == MANIFEST_NAME:
        raise ArtifactError(name, "the manifest does not list itself")
    return name


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks so large models do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(version_dir: Path) -> list[str]:
    """Every file under ``version_dir`` except the top-level manifest, as sorted relative names.

    Symbolic links and special files are refused rather than followed: a link could point
    outside the directory, and what gets hashed must be what gets published.
    """
    if not version_dir.is_dir():
        raise ArtifactError("version_dir", f"{version_dir} is not a directory")
    names: list[str] = []
    for directory, subdirectories, filenames in os.walk(version_dir):
        here = Path(directory)
        for entry in (*subdirectories, *filenames):
            path = here / entry
            name = path.relative_to(version_dir).as_posix()
            if path.is_symlink():
                raise ArtifactError(name, "symbolic links are not allowed in a model version")
            if entry in filenames:
                if not path.is_file():
                    raise ArtifactError(name, "only regular files are allowed in a model version")
                names.append(name)
    return sorted(name for name in names if name != MANIFEST_NAME)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a model depends on, plus the Python version."""
    versions = {"python": platform.python_version()}
    for library, distributions in _RECORDED_LIBRARIES.items():
        for distribution in distributions:
            try:
                versions[library] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def write_manifest(
    version_dir: Path,
    *,
    version: str,
    data_start: str | dt.datetime,
    data_end: str | dt.datetime,
    feature_spec: Mapping[str, Any],
    feature_spec_version: int,
    model_file: str,
    partners: Sequence[str],
    thresholds: Mapping[str, float],
    metrics: Mapping[str, Any],
    libraries: Mapping[str, str] | None = None,
    created_at: str | dt.datetime | None = None,
) -> Manifest:
    """Hash every file in ``version_dir`` and write its ``manifest.json``; return the manifest.

    Call it last, once the model, report and plots are in place. ``libraries`` defaults to
    ``library_versions()`` and ``created_at`` to now (UTC). The manifest is validated exactly as
    ``read_manifest`` would, so a version that is written can always be read back.
    """
    files = {
        name: FileEntry(
            sha256=sha256_file(version_dir / name), bytes=(version_dir / name).stat().st_size
        )
        for name in list_files(version_dir)
    }
    manifest = Manifest(
        version=version,
        created_at=_iso(created_at if created_at is not None else dt.datetime.now(dt.UTC)),
        data_start=_iso(data_start),
        data_end=_iso(data_end),
        feature_spec=dict(feature_spec),
        feature_spec_version=feature_spec_version,
        model_file=model_file,
        partners=list(partners),
        thresholds={partner: float(value) for partner, value in thresholds.items()},
        metrics=dict(metrics),
        libraries=dict(libraries) if libraries is not None else library_versions(),
        files=files,
    )
    # Round-trip through the decoder so the struct constraints (patterns, bounds) apply to what
    # we write too, not only to what we read.
    data = encode_manifest(manifest)
    checked = decode_manifest(data)
    write_bytes_atomically(version_dir / MANIFEST_NAME, data)
    return checked


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest as indented JSON with sorted map keys (stable bytes, readable diffs)."""
    compact = msgspec.json.encode(manifest, order="deterministic")
    return msgspec.json.format(compact, indent=2) + b"\n"


def decode_manifest(data: bytes, source: str = MANIFEST_NAME) -> Manifest:
    """Parse and validate manifest bytes; ``source`` says where they came from, for errors."""
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as error:
        raise ArtifactError(_error_path(error), f"invalid manifest {source}: {error}") from None
    except msgspec.DecodeError as error:
        raise ArtifactError(MANIFEST_NAME, f"{source} is not valid JSON: {error}") from None
    _check_consistency(manifest)
    return manifest


def read_manifest(version_dir: Path) -> Manifest:
    """Read and validate ``version_dir/manifest.json``; ``verify`` also checks the files."""
    path = version_dir / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(MANIFEST_NAME, f"{path} does not exist") from None
    except OSError as error:
        raise ArtifactError(MANIFEST_NAME, f"cannot read {path}: {error}") from None
    return decode_manifest(data, source=str(path))


def verify(version_dir: Path) -> Manifest:
    """Check that ``version_dir`` holds exactly the files its manifest lists, byte for byte.

    Raises ``ArtifactError`` naming the first file that is missing, unexpected, of the wrong size
    or with the wrong sha256. Returns the manifest when everything matches.
    """
    manifest = read_manifest(version_dir)
    present = set(list_files(version_dir))
    missing = sorted(manifest.files.keys() - present)
    if missing:
        raise ArtifactError(missing[0], "listed in the manifest but missing")
    unexpected = sorted(present - manifest.files.keys())
    if unexpected:
        raise ArtifactError(unexpected[0], "present but not listed in the manifest")
    for name, entry in sorted(manifest.files.items()):
        path = version_dir / name
        check_file_entry(name, entry, path.stat().st_size, sha256_file(path))
    return manifest


def check_file_entry(name: str, entry: FileEntry, size: int, sha256: str) -> None:
    """Raise ``ArtifactError`` naming ``name`` if its size or sha256 differ from the manifest."""
    if size != entry.bytes:
        raise ArtifactError(name, f"is {size} bytes, the manifest says {entry.bytes}")
    if sha256 != entry.sha256:
        raise ArtifactError(name, f"sha256 is {sha256}, the manifest says {entry.sha256}")


def _check_consistency(manifest: Manifest) -> None:
    """Rules that span fields, which the struct's per-field constraints cannot express."""
    for name in manifest.files:
        check_file_name(name)
    if manifest.model_file not in manifest.files:
        raise ArtifactError("model_file", f"{manifest.model_file!r} is not listed in files")
    _parse_aware("created_at", manifest.created_at)
    data_start = _parse_aware("data_start", manifest.data_start)
    data_end = _parse_aware("data_end", manifest.data_end)
    if data_start > data_end:
        raise ArtifactError("data_end", f"{manifest.data_end} is before data_start")
    if len(set(manifest.partners)) != len(manifest.partners) or not all(manifest.partners):
        raise ArtifactError("partners", "partner ids must be non-empty and unique")
    known = set(manifest.partners)
    for partner, threshold in manifest.thresholds.items():
        if partner not in known:
            raise ArtifactError("thresholds", f"threshold for {partner!r}, which is not a partner")
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise ArtifactError("thresholds", f"{partner!r}: {threshold} is not in [0, 1]")


def _parse_aware(field: str, value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ArtifactError(field, f"{value!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        raise ArtifactError(field, f"{value!r} has no time zone (expected UTC, e.g. '...Z')")
    return moment


def _iso(value: str | dt.datetime) -> str:
    """Datetimes become ISO-8601 UTC strings; strings pass through (validated on decode)."""
    if isinstance(value, str):
        return value
    moment = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


_ERROR_PATH = re.compile(r" - at `\$\.?(?P<path>.*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def _error_path(error: msgspec.ValidationError) -> str:
    # msgspec says where validation failed only inside its message ("... - at `$.files`", or
    # "Object missing required field `partners`"); that location is exactly what ``field`` is
    # for, so it is lifted out here, once, rather than left for callers to parse.
    text = str(error)
    at = _ERROR_PATH.search(text)
    path = at.group("path") if at else ""
    missing = _MISSING_FIELD.match(text)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return path or MANIFEST_NAME

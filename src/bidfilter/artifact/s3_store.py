"""A model store in an S3 bucket (AWS, MinIO or any S3-compatible server).

Publishing uploads every file of a version under ``<prefix>/versions/<version>/``, reads the
uploaded objects back and checks their sizes and sha256 against the manifest, uploads
``manifest.json`` last, and only then rewrites ``<prefix>/LATEST``. A single PUT replaces an object
atomically, so readers of ``LATEST`` see the old id or the new one; a version without its
manifest is not a version (``versions`` skips it, ``promote`` refuses it).

Reading back is slower than trusting a server-side checksum, but it works the same against every
S3 implementation and through multipart uploads, whose checksums are composites.

Credentials come from boto3's standard chain (environment, shared files, SSO, instance or
container roles); nothing here reads, stores or prints them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from bidfilter.artifact.errors import ArtifactError, StoreError
from bidfilter.artifact.manifest import (
    MANIFEST_NAME,
    Manifest,
    check_file_entry,
    decode_manifest,
    is_version_id,
    verify,
)
from bidfilter.artifact.store import LATEST_NAME, VERSIONS_DIR, ModelStore

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

AddressingStyle = Literal["auto", "path", "virtual"]

# What ``open_store`` and ``S3ModelStore`` use unless told otherwise (seconds; tries per request,
# the first included): an unreachable store fails after about attempts x connect timeout.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_ATTEMPTS = 3

_CHUNK = 1 << 20
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_REFUSED_CODES = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
_DELETE_BATCH = 1000


def s3_client(
    *,
    endpoint_url: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    addressing_style: AddressingStyle | None = None,
) -> S3Client:
    """A boto3 S3 client with bounded timeouts and retries (what every S3 user here opens).
    With ``endpoint_url`` (a non-AWS server), path-style addressing unless told otherwise."""
    style = addressing_style or ("path" if endpoint_url else None)
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": style} if style else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3ModelStore(ModelStore):
    """Versions under ``s3://bucket/prefix/versions/<version>/``, pointer at ``prefix/LATEST``.

    ``endpoint_url`` points at a non-AWS server (MinIO, moto); when it is set, path-style
    addressing is used unless ``addressing_style`` says otherwise, because such servers rarely
    resolve ``bucket.host`` names. ``connect_timeout`` and ``read_timeout`` are in seconds and
    ``max_attempts`` counts every try of a request, the first included, so an unreachable store
    fails after roughly ``max_attempts * connect_timeout`` plus backoff.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        addressing_style: AddressingStyle | None = None,
        client: S3Client | None = None,
    ) -> None:
        if not bucket:
            raise StoreError("bucket", "an s3:// store needs a bucket: s3://bucket/prefix")
        if max_attempts < 1:
            raise StoreError("max_attempts", f"must be at least 1, not {max_attempts}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._key_prefix = f"{self.prefix}/" if self.prefix else ""
        if client is None:
            client = s3_client(
                endpoint_url=endpoint_url,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_attempts=max_attempts,
                addressing_style=addressing_style,
            )
        self._client = client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def endpoint_url(self) -> str:
        """The endpoint boto3 resolved (explicit, from the environment, or AWS's own)."""
        return str(self._client.meta.endpoint_url)

    def publish(self, version_dir: Path, *, promote: bool = True) -> str:
        manifest = verify(version_dir)
        version = manifest.version
        manifest_bytes = (version_dir / MANIFEST_NAME).read_bytes()
        if decode_manifest(manifest_bytes) != manifest:
            raise ArtifactError(MANIFEST_NAME, f"{version_dir} changed while publishing")
        with self._store_errors(f"publishing {version}"):
            if self._any_under(self._version_prefix(version)):
                raise StoreError(
                    "version",
                    f"{version} already exists in {self.uri} (published, or a partial upload "
                    "left by a failed publish; versions are never overwritten)",
                )
        uploaded: list[str] = []
        try:
            with self._store_errors(f"publishing {version}"):
                for name in sorted(manifest.files):
                    key = self._key(version, name)
                    # Recorded before the PUT: one that times out may still have landed.
                    uploaded.append(key)
                    with (version_dir / name).open("rb") as body:
                        self._client.put_object(Bucket=self.bucket, Key=key, Body=body)
                self._check_listing(version, manifest, with_manifest=False)
                for name, entry in sorted(manifest.files.items()):
                    size, sha256 = self._hash_object(self._key(version, name))
                    check_file_entry(name, entry, size, sha256)
                # The manifest goes last: its presence is what makes the version exist.
                manifest_key = self._key(version, MANIFEST_NAME)
                uploaded.append(manifest_key)
                self._client.put_object(Bucket=self.bucket, Key=manifest_key, Body=manifest_bytes)
                if self._get(manifest_key) != manifest_bytes:
                    raise ArtifactError(
                        MANIFEST_NAME, "the uploaded manifest reads back differently"
                    )
        except BaseException:
            self._delete_quietly(uploaded)
            raise
        if promote:
            self._write_latest(version)
        return version

    def versions(self) -> list[str]:
        root = f"{self._key_prefix}{VERSIONS_DIR}/"
        found: set[str] = set()
        with self._store_errors("listing versions"):
            for key in self._list(root):
                version, _, name = key.removeprefix(root).partition("/")
                if name == MANIFEST_NAME and is_version_id(version):
                    found.add(version)
        return sorted(found)

    def latest(self) -> str | None:
        with self._store_errors("reading LATEST"):
            data = self._get(self._latest_key())
        if data is None:
            return None
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = ""
        if not is_version_id(text):
            raise StoreError("LATEST", f"{self.uri}/LATEST does not hold a version id")
        return text

    def _read_manifest_bytes(self, version: str) -> bytes | None:
        with self._store_errors(f"reading the manifest of {version}"):
            return self._get(self._key(version, MANIFEST_NAME))

    def _read_file(self, version: str, name: str) -> bytes:
        with self._store_errors(f"reading {name} of {version}"):
            data = self._get(self._key(version, name))
        if data is None:
            raise ArtifactError(name, f"listed in the manifest but missing from {self.uri}")
        return data

    def _download(self, version: str, manifest: Manifest, staging: Path) -> None:
        with self._store_errors(f"fetching {version}"):
            self._check_listing(version, manifest, with_manifest=True)
            # Only names from the validated manifest become local paths; object keys are never
            # turned into paths directly, so a hostile key cannot write outside ``staging``.
            for name in (*sorted(manifest.files), MANIFEST_NAME):
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                response = self._client.get_object(Bucket=self.bucket, Key=self._key(version, name))
                with path.open("wb") as writer:
                    for chunk in response["Body"].iter_chunks(_CHUNK):
                        writer.write(chunk)

    def _write_latest(self, version: str) -> None:
        with self._store_errors(f"moving LATEST to {version}"):
            self._client.put_object(
                Bucket=self.bucket, Key=self._latest_key(), Body=f"{version}\n".encode()
            )

    def _key(self, version: str, name: str) -> str:
        return f"{self._version_prefix(version)}{name}"

    def _version_prefix(self, version: str) -> str:
        return f"{self._key_prefix}{VERSIONS_DIR}/{version}/"

    def _latest_key(self) -> str:
        return f"{self._key_prefix}{LATEST_NAME}"

    def _check_listing(self, version: str, manifest: Manifest, *, with_manifest: bool) -> None:
        """Compare the objects under a version with the manifest: names and sizes."""
        prefix = self._version_prefix(version)
        sizes = {key.removeprefix(prefix): size for key, size in self._list(prefix).items()}
        expected = {name: entry.bytes for name, entry in manifest.files.items()}
        if not with_manifest:
            sizes.pop(MANIFEST_NAME, None)
        missing = sorted(expected.keys() - sizes.keys())
        if missing:
            raise ArtifactError(missing[0], f"listed in the manifest but missing from {self.uri}")
        unexpected = sorted(sizes.keys() - expected.keys() - {MANIFEST_NAME})
        if unexpected:
            raise ArtifactError(unexpected[0], f"in {self.uri} but not listed in the manifest")
        for name, size in sorted(expected.items()):
            if sizes[name] != size:
                raise ArtifactError(
                    name, f"is {sizes[name]} bytes in {self.uri}, manifest says {size}"
                )

    def _list(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its size."""
        found: dict[str, int] = {}
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def _any_under(self, prefix: str) -> bool:
        """Whether at least one key starts with ``prefix`` (one cheap request)."""
        response = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return bool(response.get("Contents"))

    def _get(self, key: str) -> bytes | None:
        """An object's bytes, or None if there is no such object."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                return None
            raise
        return response["Body"].read()

    def _hash_object(self, key: str) -> tuple[int, str]:
        """Stream an object back and return its size and sha256."""
        response = self._client.get_object(Bucket=self.bucket, Key=key)
        digest = hashlib.sha256()
        size = 0
        for chunk in response["Body"].iter_chunks(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def _delete_quietly(self, keys: list[str]) -> None:
        # Best effort after a failed publish: the manifest first, so the version stops counting
        # as one at once. A failure here is swallowed because the publish error is the one the
        # caller needs; leftovers without a manifest are invisible to readers.
        ordered = sorted(keys, key=lambda key: not key.endswith(f"/{MANIFEST_NAME}"))
        for start in range(0, len(ordered), _DELETE_BATCH):
            batch = ordered[start : start + _DELETE_BATCH]
            try:
                self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            except (BotoCoreError, ClientError):
                return

    @contextmanager
    def _store_errors(self, action: str) -> Iterator[None]:
        """Turn botocore's exceptions into ``StoreError`` naming the setting to look at."""
        try:
            yield
        except ClientError as error:
            code = _error_code(error)
            if code == "NoSuchBucket":
                raise StoreError(
                    "bucket",
                    f"{action}: bucket {self.bucket!r} does not exist at {self.endpoint_url}",
                ) from None
            if code in _REFUSED_CODES:
                raise StoreError(
                    "credentials", f"{action}: {self.uri} refused the credentials ({code})"
                ) from None
            raise StoreError("s3", f"{action}: {self.uri} answered {code}: {error}") from None
        except (NoCredentialsError, PartialCredentialsError):
            raise StoreError(
                "credentials",
                f"{action}: no usable AWS credentials (looked in the environment, shared "
                "credentials and config files, SSO, and instance or container roles)",
            ) from None
        except (BotocoreConnectionError, HTTPClientError) as error:
            raise StoreError(
                "endpoint_url", f"{action}: cannot reach S3 at {self.endpoint_url}: {error}"
            ) from None
        except BotoCoreError as error:
            raise StoreError("s3", f"{action}: {error}") from None


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))

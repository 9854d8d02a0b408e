"""Where a server appends auction-log files: a local directory or an S3 prefix.

Both lay files out as a log directory does (``<root>/date=YYYY-MM-DD/<name>.parquet``), so
``train``, ``retrain`` and every log reader take the result as it is (an S3 prefix after a
``aws s3 sync``). Each file appears whole or not at all: locally it is written under a dotted
temporary name (which no reader globs), fsynced and renamed; on S3 one PUT creates an object
atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bidfilter.artifact.durable import write_bytes_atomically

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


class LogSinkError(OSError):
    """A file could not be written to the log store (the caller keeps it, to try again)."""


class LogSink(Protocol):
    @property
    def uri(self) -> str:
        """Where files go, for messages (never credentials)."""
        ...

    def put(self, date: str, name: str, data: bytes) -> str:
        """Write ``data`` as file ``name`` of the ``date`` (``YYYY-MM-DD``) partition, whole or
        not at all; its URI. Raises :class:`LogSinkError`."""
        ...


class DirectorySink:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def uri(self) -> str:
        return str(self.root)

    def put(self, date: str, name: str, data: bytes) -> str:
        target = self.root / f"date={date}" / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(target, data)
        except OSError as error:
            raise LogSinkError(f"{target}: {error}") from error
        return str(target)


class S3Sink:
    def __init__(self, bucket: str, prefix: str, client: S3Client) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def put(self, date: str, name: str, data: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/date={date}/{name}" if self.prefix else f"date={date}/{name}"
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as error:
            raise LogSinkError(f"s3://{self.bucket}/{key}: {error}") from error
        return f"s3://{self.bucket}/{key}"


def open_log_sink(uri: str, *, endpoint_url: str | None = None) -> LogSink:
    """The sink at ``uri``: a directory, ``file://PATH`` or ``s3://BUCKET/PREFIX``."""
    scheme, separator, location = uri.partition("://")
    if not separator:
        return DirectorySink(Path(uri))
    if scheme == "file":
        return DirectorySink(Path(location.removeprefix("localhost")))
    if scheme == "s3":
        # Imported here: a server logging to a directory never pays for importing boto3.
        from bidfilter.artifact.s3_store import s3_client

        bucket, _, prefix = location.partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: an s3:// log store needs a bucket: s3://bucket/prefix")
        return S3Sink(bucket, prefix, s3_client(endpoint_url=endpoint_url))
    raise ValueError(f"unsupported log store {uri!r}: expected a path, file:// or s3://")

"""Which store a URI names: a table from URI scheme to the function that opens that kind of store.

:class:`~bidfilter.artifact.store.ModelStore` never names its subclasses; this table is the one
place that knows them all. A new kind of store is a module holding its ``ModelStore`` subclass
and one entry in ``STORE_FACTORIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypedDict, Unpack
from urllib.parse import unquote

from bidfilter.artifact.errors import StoreError
from bidfilter.artifact.local_store import LocalModelStore
from bidfilter.artifact.store import ModelStore


class StoreOptions(TypedDict, total=False):
    """How to reach a store behind a server; only S3 uses them, and a local store ignores them.

    The defaults are the store's own (``bidfilter.artifact.s3_store``).
    """

    endpoint_url: str | None
    connect_timeout: float
    read_timeout: float
    max_attempts: int


StoreFactory = Callable[[str, StoreOptions], ModelStore]
"""Opens a store from the part of its URI after ``scheme://``."""


def _open_file(location: str, options: StoreOptions) -> ModelStore:
    # ``file://localhost/srv`` and ``file:///srv`` name the same directory (RFC 8089).
    return LocalModelStore(Path(unquote(location.removeprefix("localhost"))))


def _open_s3(location: str, options: StoreOptions) -> ModelStore:
    # Imported on first use so that opening a local store never pays for importing boto3.
    from bidfilter.artifact.s3_store import S3ModelStore

    bucket, _, prefix = location.partition("/")
    return S3ModelStore(bucket, prefix, **options)


STORE_FACTORIES: Mapping[str, StoreFactory] = {"file": _open_file, "s3": _open_s3}


def open_store(uri: str, **options: Unpack[StoreOptions]) -> ModelStore:
    """Open the store at ``uri``: a path, ``file:///path``, or ``s3://bucket/prefix``.

    ``endpoint_url``, the timeouts (seconds) and ``max_attempts`` (total tries per request) only
    apply to S3; without ``endpoint_url`` boto3 still honours ``AWS_ENDPOINT_URL_S3`` and
    ``AWS_ENDPOINT_URL``. Credentials come from the standard AWS chain.
    """
    if not uri:
        raise StoreError("uri", "the store URI is empty")
    scheme, separator, location = uri.partition("://")
    if not separator:
        return LocalModelStore(Path(uri))
    factory = STORE_FACTORIES.get(scheme)
    if factory is None:
        schemes = " or ".join(f"{known}://" for known in STORE_FACTORIES)
        raise StoreError("uri", f"unsupported store {uri!r}: expected a path, {schemes}")
    return factory(location, options)

"""Model versions to publish, and every store kind behind one fixture (``any_store``)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from bidfilter.artifact import LocalModelStore, ModelStore, open_store, write_manifest

MakeVersion = Callable[..., Path]


def build_version(
    parent: Path,
    version: str,
    *,
    model: bytes = b"UBJ model bytes \x00\x01\x02",
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Create ``parent/version`` with a model, a report, a nested plot, and its manifest."""
    version_dir = parent / version
    (version_dir / "plots").mkdir(parents=True)
    (version_dir / "model.ubj").write_bytes(model)
    (version_dir / "report.json").write_text('{"auc": {"dsp-a": 0.81}}', encoding="utf-8")
    (version_dir / "plots" / "pr.png").write_bytes(b"\x89PNG\r\n\x1a\n" + version.encode())
    for name, data in (extra_files or {}).items():
        (version_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (version_dir / name).write_bytes(data)
    write_manifest(
        version_dir,
        version=version,
        data_start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        data_end=dt.datetime(2026, 11, 25, tzinfo=dt.UTC),
        feature_spec={"hash_buckets": 1024, "features": ["device.os", "imp.banner.w"]},
        feature_spec_version=1,
        model_file="model.ubj",
        partners=["dsp-a", "dsp-b"],
        thresholds={"dsp-a": 0.05, "dsp-b": 0.1},
        metrics={"auc": {"dsp-a": 0.81, "dsp-b": 0.77}},
    )
    return version_dir


@pytest.fixture
def make_version(tmp_path: Path) -> MakeVersion:
    """A factory: ``make_version("20261126T070501Z-aaaaaa")`` returns a fresh version directory."""
    made = itertools.count()

    def make(version: str, **options: object) -> Path:
        # A new parent per call, so one test can build two different versions with the same id.
        parent = tmp_path / "trained" / str(next(made))
        parent.mkdir(parents=True)
        return build_version(parent, version, **options)  # type: ignore[arg-type]

    return make


@dataclass
class StoreUnderTest:
    """A store plus raw access to its bytes, to play the part of disk rot or a careless hand."""

    store: ModelStore
    put_raw: Callable[[str, bytes], None]
    """Write bytes at a path relative to the store root (``versions/<v>/model.ubj``)."""
    delete_raw: Callable[[str], None]
    raw_names: Callable[[], list[str]]
    """Every path relative to the store root, sorted."""


def local_store_under_test(root: Path) -> StoreUnderTest:
    def put_raw(name: str, data: bytes) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)

    def delete_raw(name: str) -> None:
        (root / name).unlink()

    def raw_names() -> list[str]:
        return sorted(
            (Path(directory) / file).relative_to(root).as_posix()
            for directory, _, files in os.walk(root)
            for file in files
        )

    return StoreUnderTest(LocalModelStore(root), put_raw, delete_raw, raw_names)


def s3_store_under_test(endpoint_url: str, bucket: str, prefix: str) -> StoreUnderTest:
    client = boto3.client("s3", endpoint_url=endpoint_url)
    key_prefix = f"{prefix}/" if prefix else ""

    def put_raw(name: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=key_prefix + name, Body=data)

    def delete_raw(name: str) -> None:
        client.delete_object(Bucket=bucket, Key=key_prefix + name)

    def raw_names() -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix)
        return sorted(
            item["Key"].removeprefix(key_prefix)
            for page in pages
            for item in page.get("Contents", [])
        )

    store = open_store(f"s3://{bucket}/{prefix}", endpoint_url=endpoint_url, max_attempts=1)
    return StoreUnderTest(store, put_raw, delete_raw, raw_names)


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    """Each store kind in turn, empty."""
    if request.param == "local":
        return local_store_under_test(tmp_path / "store")
    endpoint_url: str = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return s3_store_under_test(endpoint_url, bucket, "models/bidfilter")

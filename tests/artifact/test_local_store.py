"""The local directory store: URIs, on-disk layout, and crash safety of publish."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import bidfilter.artifact.local_store as local_store_module
from bidfilter.artifact import (
    LocalModelStore,
    StoreError,
    durable,
    open_store,
    read_manifest,
)

MakeVersion = Callable[..., Path]  # the ``make_version`` fixture (tests/artifact/conftest.py)

OLD = "20261124T070501Z-aaaaaa"
NEW = "20261126T070501Z-cccccc"


@pytest.mark.parametrize(
    ("uri", "root"),
    [
        ("/srv/models", Path("/srv/models")),
        ("relative/models", Path("relative/models")),
        ("file:///srv/models", Path("/srv/models")),
        ("file://localhost/srv/models", Path("/srv/models")),
        ("file:///srv/with%20space", Path("/srv/with space")),
        (".bidfilter/store", Path(".bidfilter/store")),
    ],
)
def test_paths_and_file_uris_open_a_local_store(uri: str, root: Path) -> None:
    store = open_store(uri)
    assert isinstance(store, LocalModelStore)
    assert store.root == root


@pytest.mark.parametrize("uri", ["", "gs://bucket/models", "http://example.com/models"])
def test_unsupported_uris_are_refused(uri: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(uri)
    assert caught.value.field == "uri"


def test_layout_is_versions_directories_and_a_latest_file(
    make_version: MakeVersion, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = LocalModelStore(root)
    store.publish(make_version(OLD))

    assert (root / "LATEST").read_text() == f"{OLD}\n"
    published = root / "versions" / OLD
    assert sorted(p.name for p in published.iterdir()) == [
        "manifest.json",
        "model.ubj",
        "plots",
        "report.json",
    ]
    assert read_manifest(published).version == OLD
    assert list((root / ".staging").iterdir()) == []
    assert not [name for name in os.listdir(root) if name.endswith(".tmp")]


def test_fetch_copies_out_of_the_store(make_version: MakeVersion, tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalModelStore(root)
    store.publish(make_version(NEW))
    fetched = store.fetch(NEW, tmp_path / "cache")
    assert fetched == tmp_path / "cache" / NEW
    (fetched / "report.json").write_text("{}")  # editing the copy leaves the store intact
    assert store.read_text(NEW) != "{}"


def test_a_publish_that_fails_midway_leaves_no_trace(
    make_version: MakeVersion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    store = LocalModelStore(root)
    store.publish(make_version(OLD))
    real_copy = durable.copy_file_durably
    copies = 0

    def copy_then_fail(source: Path, target: Path) -> None:
        nonlocal copies
        copies += 1
        if copies == 2:
            raise OSError(28, "No space left on device")
        real_copy(source, target)

    monkeypatch.setattr(local_store_module, "copy_file_durably", copy_then_fail)
    with pytest.raises(StoreError) as caught:
        store.publish(make_version(NEW))
    assert caught.value.field == "uri"
    assert "No space left" in caught.value.message
    assert store.versions() == [OLD]
    assert store.latest() == OLD
    assert not (root / "versions" / NEW).exists()
    assert list((root / ".staging").iterdir()) == []


def test_staging_and_stray_entries_are_not_versions(
    make_version: MakeVersion, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = LocalModelStore(root)
    store.publish(make_version(OLD))
    (root / "versions" / ".DS_Store").write_text("")
    (root / "versions" / "notes.txt~").mkdir()
    (root / ".staging" / f"{NEW}.deadbeef").mkdir()
    assert store.versions() == [OLD]

"""The ModelStore contract, run against every store kind (local directory and a real S3 server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from bidfilter.artifact import ArtifactError, ModelStore, StoreError, read_manifest, verify
from bidfilter.artifact.manifest import encode_manifest

MakeVersion = Callable[..., Path]  # the ``make_version`` fixture (tests/artifact/conftest.py)


class StoreUnderTest(Protocol):
    """What the ``any_store`` fixture gives: a store, and raw access to the bytes behind it."""

    @property
    def store(self) -> ModelStore: ...

    def put_raw(self, name: str, data: bytes) -> None: ...

    def delete_raw(self, name: str) -> None: ...

    def raw_names(self) -> list[str]: ...


OLD = "20261124T070501Z-aaaaaa"
MID = "20261125T070501Z-bbbbbb"
NEW = "20261126T070501Z-cccccc"


def _files(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_an_empty_store_has_no_versions(any_store: StoreUnderTest) -> None:
    assert any_store.store.versions() == []
    assert any_store.store.latest() is None


def test_publish_then_fetch_round_trips_every_byte(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    store = any_store.store
    version_dir = make_version(NEW)

    assert store.publish(version_dir) == NEW

    assert store.versions() == [NEW]
    assert store.latest() == NEW
    assert store.read_manifest(NEW) == read_manifest(version_dir)
    fetched = store.fetch(NEW, tmp_path / "cache")
    assert fetched == tmp_path / "cache" / NEW
    assert _files(fetched) == _files(version_dir)
    assert verify(fetched).version == NEW
    assert json.loads(store.read_text(NEW, "report.json")) == {"auc": {"dsp-a": 0.81}}
    assert store.read_bytes(NEW, "plots/pr.png").startswith(b"\x89PNG")


def test_versions_are_listed_oldest_first_and_latest_follows_publish(
    any_store: StoreUnderTest, make_version: MakeVersion
) -> None:
    store = any_store.store
    for version in (MID, OLD, NEW):
        store.publish(make_version(version))
        assert store.latest() == version
    assert store.versions() == [OLD, MID, NEW]


def test_promote_rolls_back_and_forward(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    store = any_store.store
    store.publish(make_version(OLD))
    store.publish(make_version(NEW))

    store.promote(OLD)
    assert store.latest() == OLD
    assert store.versions() == [OLD, NEW]
    latest = store.latest()
    assert latest is not None
    assert verify(store.fetch(latest, tmp_path / "cache")).version == OLD

    store.promote(NEW)
    assert store.latest() == NEW


@pytest.mark.parametrize("version", [MID, "../" + OLD, "", "a/b"])
def test_promote_refuses_unknown_versions(
    any_store: StoreUnderTest, make_version: MakeVersion, version: str
) -> None:
    store = any_store.store
    store.publish(make_version(OLD))
    with pytest.raises(StoreError) as caught:
        store.promote(version)
    assert caught.value.field == "version"
    assert store.latest() == OLD


def test_a_version_is_never_overwritten(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    store = any_store.store
    store.publish(make_version(OLD))
    store.publish(make_version(NEW))
    store.promote(OLD)
    again = make_version(NEW, model=b"a different model")  # same id, other bytes
    with pytest.raises(StoreError) as caught:
        store.publish(again)
    assert caught.value.field == "version"
    assert store.latest() == OLD
    assert store.fetch(NEW, tmp_path / "cache").joinpath("model.ubj").read_bytes() != (
        b"a different model"
    )


def test_publish_refuses_files_that_do_not_match_their_manifest(
    any_store: StoreUnderTest, make_version: MakeVersion
) -> None:
    store = any_store.store
    store.publish(make_version(OLD))
    version_dir = make_version(NEW)
    (version_dir / "model.ubj").write_bytes(b"changed after the manifest was written")
    with pytest.raises(ArtifactError) as caught:
        store.publish(version_dir)
    assert caught.value.field == "model.ubj"
    assert store.latest() == OLD
    assert store.versions() == [OLD]
    assert not [name for name in any_store.raw_names() if NEW in name]


def test_fetch_names_a_file_corrupted_in_the_store(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    store = any_store.store
    store.publish(make_version(NEW))
    any_store.put_raw(f"versions/{NEW}/model.ubj", b"UBJ model bytes \x00\x01\xff")  # same size
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactError) as caught:
        store.fetch(NEW, cache)
    assert caught.value.field == "model.ubj"
    assert "sha256" in caught.value.message
    assert list(cache.iterdir()) == []  # neither the version nor a staging leftover


def test_fetch_names_a_file_missing_from_the_store(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    any_store.store.publish(make_version(NEW))
    any_store.delete_raw(f"versions/{NEW}/plots/pr.png")
    with pytest.raises(ArtifactError) as caught:
        any_store.store.fetch(NEW, tmp_path / "cache")
    assert caught.value.field == "plots/pr.png"


def test_fetch_names_a_file_the_manifest_does_not_list(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    any_store.store.publish(make_version(NEW))
    any_store.put_raw(f"versions/{NEW}/plots/sneaky.png", b"unlisted")
    with pytest.raises(ArtifactError) as caught:
        any_store.store.fetch(NEW, tmp_path / "cache")
    assert caught.value.field == "plots/sneaky.png"


def test_a_tampered_manifest_pointing_outside_the_store_is_refused(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    store = any_store.store
    store.publish(make_version(NEW))
    document = json.loads(encode_manifest(store.read_manifest(NEW)))
    document["files"]["../x"] = document["files"]["model.ubj"]
    any_store.put_raw(f"versions/{NEW}/manifest.json", json.dumps(document).encode())
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(ArtifactError) as caught:
        store.fetch(NEW, cache)
    assert caught.value.field == "../x"
    with pytest.raises(ArtifactError):
        store.read_bytes(NEW, "../x")
    assert not (tmp_path / "deep" / "x").exists()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_read_bytes_checks_the_file_against_the_manifest(
    any_store: StoreUnderTest, make_version: MakeVersion
) -> None:
    store = any_store.store
    store.publish(make_version(NEW))
    any_store.put_raw(f"versions/{NEW}/report.json", b'{"auc": {"dsp-a": 0.99}}')
    with pytest.raises(ArtifactError) as caught:
        store.read_text(NEW, "report.json")
    assert caught.value.field == "report.json"
    with pytest.raises(ArtifactError) as caught:
        store.read_text(NEW, "notes.txt")
    assert caught.value.field == "notes.txt"


def test_fetch_reuses_an_intact_earlier_copy_and_replaces_a_damaged_one(
    any_store: StoreUnderTest, make_version: MakeVersion, tmp_path: Path
) -> None:
    store = any_store.store
    store.publish(make_version(NEW))
    first = store.fetch(NEW, tmp_path / "cache")
    report = (first / "report.json").read_bytes()
    assert store.fetch(NEW, tmp_path / "cache") == first
    (first / "report.json").write_text("{}")
    (first / "model.ubj").unlink()
    # Damaged in the cache, not in the store: fetched again rather than refused.
    assert store.fetch(NEW, tmp_path / "cache") == first
    assert (first / "report.json").read_bytes() == report
    assert verify(first).version == NEW


def test_unknown_version_is_a_store_error(any_store: StoreUnderTest, tmp_path: Path) -> None:
    for action in (
        lambda: any_store.store.read_manifest(NEW),
        lambda: any_store.store.fetch(NEW, tmp_path / "cache"),
        lambda: any_store.store.read_text(NEW),
    ):
        with pytest.raises(StoreError) as caught:
            action()
        assert caught.value.field == "version"


def test_a_version_without_its_manifest_does_not_exist(
    any_store: StoreUnderTest, make_version: MakeVersion
) -> None:
    store = any_store.store
    store.publish(make_version(OLD))
    any_store.put_raw(f"versions/{NEW}/model.ubj", b"a partial upload")
    assert store.versions() == [OLD]
    with pytest.raises(StoreError):
        store.promote(NEW)
    assert store.latest() == OLD


def test_a_latest_pointer_that_is_not_a_version_id_is_a_store_error(
    any_store: StoreUnderTest,
) -> None:
    any_store.put_raw("LATEST", b"../../etc/passwd\n")
    with pytest.raises(StoreError) as caught:
        any_store.store.latest()
    assert caught.value.field == "LATEST"


def test_a_manifest_stored_under_another_version_id_is_refused(
    any_store: StoreUnderTest, make_version: MakeVersion
) -> None:
    store = any_store.store
    store.publish(make_version(OLD))
    manifest = (make_version(NEW) / "manifest.json").read_bytes()
    any_store.put_raw(f"versions/{OLD}/manifest.json", manifest)
    with pytest.raises(ArtifactError) as caught:
        store.read_manifest(OLD)
    assert caught.value.field == "version"

"""The manifest: ids, writing, reading back, and verify refusing every kind of mismatch."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.artifact import (
    ArtifactError,
    FileEntry,
    new_version_id,
    read_manifest,
    verify,
    write_manifest,
)
from bidfilter.artifact.manifest import (
    check_file_name,
    decode_manifest,
    encode_manifest,
    sha256_file,
)

MakeVersion = Callable[..., Path]  # the ``make_version`` fixture (tests/artifact/conftest.py)

VERSION = "20261126T070501Z-1a2b3c"


def _edit_manifest(version_dir: Path, edit: Any) -> None:
    path = version_dir / "manifest.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


# --- version ids -----------------------------------------------------------------------------


def test_version_id_is_utc_timestamp_then_random_suffix() -> None:
    moment = dt.datetime(2026, 11, 26, 8, 5, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    version = new_version_id(moment)
    assert re.fullmatch(r"20261126T070501Z-[0-9a-f]{6}", version)


def test_version_id_treats_naive_time_as_utc() -> None:
    assert new_version_id(dt.datetime(2026, 1, 2, 3, 4, 5)).startswith("20260102T030405Z-")


def test_version_ids_sort_chronologically_and_differ_within_a_second() -> None:
    early = new_version_id(dt.datetime(2026, 9, 30, 23, 59, 59, tzinfo=dt.UTC))
    late = new_version_id(dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
    assert sorted([late, early]) == [early, late]
    assert len({new_version_id() for _ in range(50)}) == 50


# --- writing and reading ---------------------------------------------------------------------


def test_write_manifest_lists_every_file_recursively_except_itself(
    make_version: MakeVersion,
) -> None:
    version_dir = make_version(VERSION)
    manifest = read_manifest(version_dir)
    assert sorted(manifest.files) == ["model.ubj", "plots/pr.png", "report.json"]
    model = version_dir / "model.ubj"
    assert manifest.files["model.ubj"] == FileEntry(
        sha256=sha256_file(model), bytes=model.stat().st_size
    )
    assert manifest.version == VERSION
    assert manifest.model_file == "model.ubj"


def test_write_manifest_returns_what_read_manifest_reads(make_version: MakeVersion) -> None:
    version_dir = make_version(VERSION)
    written = write_manifest(
        version_dir,
        version=VERSION,
        data_start="2026-11-01T00:00:00Z",
        data_end=dt.datetime(2026, 11, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        feature_spec={"nested": {"list": [1, 2.5, None, "x"]}},
        feature_spec_version=3,
        model_file="model.ubj",
        partners=["dsp-a"],
        thresholds={"dsp-a": 0.25},
        metrics={"logloss": 0.3},
        libraries={"xgboost": "2.1.0"},
        created_at=dt.datetime(2026, 11, 26, 7, 5, 1, tzinfo=dt.UTC),
    )
    assert read_manifest(version_dir) == written
    assert written.data_end == "2026-11-02T00:00:00Z"
    assert written.created_at == "2026-11-26T07:05:01Z"
    assert written.feature_spec == {"nested": {"list": [1, 2.5, None, "x"]}}
    assert written.libraries == {"xgboost": "2.1.0"}


def test_default_libraries_record_the_versions_a_model_depends_on(
    make_version: MakeVersion,
) -> None:
    libraries = read_manifest(make_version(VERSION)).libraries
    assert {"python", "bidfilter", "xgboost", "numpy"} <= libraries.keys()


def test_encoding_is_stable_bytes(make_version: MakeVersion) -> None:
    manifest = read_manifest(make_version(VERSION))
    assert encode_manifest(decode_manifest(encode_manifest(manifest))) == encode_manifest(manifest)


def test_write_manifest_refuses_a_model_file_that_is_not_there(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(ArtifactError) as caught:
        write_manifest(
            tmp_path,
            version=VERSION,
            data_start="2026-11-01T00:00:00Z",
            data_end="2026-11-02T00:00:00Z",
            feature_spec={},
            feature_spec_version=1,
            model_file="model.ubj",
            partners=[],
            thresholds={},
            metrics={},
        )
    assert caught.value.field == "model_file"
    assert not (tmp_path / "manifest.json").exists()


def test_write_manifest_refuses_symbolic_links(make_version: MakeVersion, tmp_path: Path) -> None:
    version_dir = make_version(VERSION)
    (tmp_path / "outside.txt").write_text("secret")
    (version_dir / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ArtifactError) as caught:
        verify(version_dir)
    assert caught.value.field == "link.txt"


# --- reading invalid manifests ---------------------------------------------------------------


def test_missing_manifest_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as caught:
        read_manifest(tmp_path)
    assert caught.value.field == "manifest.json"
    assert "does not exist" in caught.value.message


def test_manifest_that_is_not_json(make_version: MakeVersion) -> None:
    version_dir = make_version(VERSION)
    (version_dir / "manifest.json").write_text('{"version": ')
    with pytest.raises(ArtifactError) as caught:
        read_manifest(version_dir)
    assert caught.value.field == "manifest.json"
    assert "not valid JSON" in caught.value.message


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.update(feature_spec_version="1"), "feature_spec_version"),
        (lambda m: m.pop("partners"), "partners"),
        (lambda m: m.update(version="../escape"), "version"),
        (lambda m: m["files"]["model.ubj"].update(sha256="not-hex"), "files[...].sha256"),
        (lambda m: m["files"]["model.ubj"].update(bytes=-1), "files[...].bytes"),
        (lambda m: m.update(model_file="other.ubj"), "model_file"),
        (lambda m: m.update(created_at="yesterday"), "created_at"),
        (lambda m: m.update(data_start="2026-11-01T00:00:00"), "data_start"),
        (lambda m: m.update(data_start="2026-12-01T00:00:00Z"), "data_end"),
        (lambda m: m.update(partners=["dsp-a", "dsp-a"]), "partners"),
        (lambda m: m["thresholds"].update({"dsp-z": 0.5}), "thresholds"),
        (lambda m: m["thresholds"].update({"dsp-a": 1.5}), "thresholds"),
    ],
)
def test_invalid_fields_are_named(make_version: MakeVersion, edit: Any, field: str) -> None:
    version_dir = make_version(VERSION)
    _edit_manifest(version_dir, edit)
    with pytest.raises(ArtifactError) as caught:
        read_manifest(version_dir)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "plots/../../x", "a//b", "./model.ubj", "C:\\x", "a\\..\\b"]
)
def test_manifest_naming_a_path_outside_the_directory_is_refused(
    make_version: MakeVersion, name: str
) -> None:
    version_dir = make_version(VERSION)
    entry = {"sha256": "0" * 64, "bytes": 0}
    _edit_manifest(version_dir, lambda m: m["files"].update({name: entry}))
    with pytest.raises(ArtifactError) as caught:
        verify(version_dir)
    assert caught.value.field == name


@given(st.text(alphabet="ab./\\:\x00", min_size=1, max_size=12))
def test_every_accepted_file_name_stays_inside_the_directory(name: str) -> None:
    root = Path("/store/versions/v1")
    try:
        check_file_name(name)
    except ArtifactError:
        return
    assert (root / name).resolve().is_relative_to(root)
    assert (root / name) != root


# --- verify ----------------------------------------------------------------------------------


def test_verify_accepts_an_untouched_version(make_version: MakeVersion) -> None:
    version_dir = make_version(VERSION)
    assert verify(version_dir) == read_manifest(version_dir)


def test_verify_names_a_file_changed_in_place(make_version: MakeVersion) -> None:
    version_dir = make_version(VERSION)
    model = version_dir / "model.ubj"
    model.write_bytes(bytes(reversed(model.read_bytes())))  # same size, different bytes
    with pytest.raises(ArtifactError) as caught:
        verify(version_dir)
    assert caught.value.field == "model.ubj"
    assert "sha256" in caught.value.message


def test_verify_names_a_file_whose_size_changed(make_version: MakeVersion) -> None:
    version_dir = make_version(VERSION)
    (version_dir / "plots" / "pr.png").write_bytes(b"short")
    with pytest.raises(ArtifactError) as caught:
        verify(version_dir)
    assert caught.value.field == "plots/pr.png"
    assert "bytes" in caught.value.message


def test_verify_names_a_missing_file(make_version: MakeVersion) -> None:
    version_dir = make_version(VERSION)
    (version_dir / "report.json").unlink()
    with pytest.raises(ArtifactError) as caught:
        verify(version_dir)
    assert caught.value.field == "report.json"
    assert "missing" in caught.value.message


def test_verify_names_an_unexpected_file(make_version: MakeVersion) -> None:
    version_dir = make_version(VERSION)
    (version_dir / "plots" / "extra.png").write_bytes(b"not in the manifest")
    with pytest.raises(ArtifactError) as caught:
        verify(version_dir)
    assert caught.value.field == "plots/extra.png"
    assert "not listed" in caught.value.message


def test_errors_carry_field_and_message_in_their_text() -> None:
    error = ArtifactError("model.ubj", "sha256 is 00, the manifest says ff")
    assert str(error) == "model.ubj: sha256 is 00, the manifest says ff"

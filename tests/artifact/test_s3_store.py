"""The S3 store against a real S3 API server on 127.0.0.1 (moto's standalone server)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from bidfilter.artifact import ArtifactError, StoreError, open_store
from bidfilter.artifact.s3_store import S3ModelStore

MakeVersion = Callable[..., Path]  # the ``make_version`` fixture (tests/artifact/conftest.py)

OLD = "20261124T070501Z-aaaaaa"
NEW = "20261126T070501Z-cccccc"


def _keys(endpoint_url: str, bucket: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint_url)
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listing
    }


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix", "normal_uri"),
    [
        ("s3://models", "models", "", "s3://models"),
        ("s3://models/", "models", "", "s3://models"),
        ("s3://models/bidfilter/prod/", "models", "bidfilter/prod", "s3://models/bidfilter/prod"),
    ],
)
def test_s3_uris_open_an_s3_store(
    uri: str, bucket: str, prefix: str, normal_uri: str, aws_credentials: None
) -> None:
    store = open_store(uri, endpoint_url="http://127.0.0.1:9")
    assert isinstance(store, S3ModelStore)
    assert (store.bucket, store.prefix, store.uri) == (bucket, prefix, normal_uri)
    assert store.endpoint_url == "http://127.0.0.1:9"


def test_an_s3_uri_without_a_bucket_is_refused(aws_credentials: None) -> None:
    with pytest.raises(StoreError) as caught:
        open_store("s3://")
    assert caught.value.field == "bucket"


def test_layout_is_prefix_versions_and_latest(
    s3_server: str, s3_bucket: str, make_version: MakeVersion
) -> None:
    store = open_store(f"s3://{s3_bucket}/team/models", endpoint_url=s3_server)
    version_dir = make_version(NEW)
    store.publish(version_dir)
    objects = _keys(s3_server, s3_bucket)
    assert sorted(objects) == [
        "team/models/LATEST",
        f"team/models/versions/{NEW}/manifest.json",
        f"team/models/versions/{NEW}/model.ubj",
        f"team/models/versions/{NEW}/plots/pr.png",
        f"team/models/versions/{NEW}/report.json",
    ]
    assert objects["team/models/LATEST"] == f"{NEW}\n".encode()
    assert objects[f"team/models/versions/{NEW}/model.ubj"] == (
        (version_dir / "model.ubj").read_bytes()
    )


def test_stores_under_different_prefixes_are_independent(
    s3_server: str, s3_bucket: str, make_version: MakeVersion
) -> None:
    staging = open_store(f"s3://{s3_bucket}/staging", endpoint_url=s3_server)
    root = open_store(f"s3://{s3_bucket}", endpoint_url=s3_server)
    staging.publish(make_version(NEW))
    root.publish(make_version(OLD))
    assert (staging.versions(), staging.latest()) == ([NEW], NEW)
    assert (root.versions(), root.latest()) == ([OLD], OLD)


def test_the_standard_endpoint_environment_variable_is_honoured(
    s3_server: str,
    s3_bucket: str,
    make_version: MakeVersion,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    store = S3ModelStore(s3_bucket, "models", addressing_style="path")
    assert store.endpoint_url == s3_server
    store.publish(make_version(NEW))
    assert store.fetch(NEW, tmp_path / "cache").is_dir()


def test_an_upload_that_reads_back_wrong_is_rolled_back(
    s3_server: str, s3_bucket: str, make_version: MakeVersion
) -> None:
    store = open_store(f"s3://{s3_bucket}/models", endpoint_url=s3_server)
    assert isinstance(store, S3ModelStore)
    store.publish(make_version(OLD))
    client = store._client
    real_put = client.put_object

    def flip_model_bits(**request: Any) -> Any:
        # Plays a server (or proxy) that stores something other than what was sent.
        if request["Key"].endswith("/model.ubj"):
            data = request["Body"].read()
            request["Body"] = bytes(reversed(data))
        return real_put(**request)

    client.put_object = flip_model_bits  # type: ignore[method-assign]
    with pytest.raises(ArtifactError) as caught:
        store.publish(make_version(NEW))
    assert caught.value.field == "model.ubj"
    assert store.versions() == [OLD]
    assert store.latest() == OLD
    assert not [key for key in _keys(s3_server, s3_bucket) if NEW in key]


def test_a_partial_upload_blocks_its_id_but_stays_invisible(
    s3_server: str, s3_bucket: str, make_version: MakeVersion
) -> None:
    store = open_store(f"s3://{s3_bucket}/models", endpoint_url=s3_server)
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket=s3_bucket, Key=f"models/versions/{NEW}/model.ubj", Body=b"left by a crash"
    )
    assert store.versions() == []
    with pytest.raises(StoreError) as caught:
        store.publish(make_version(NEW))
    assert caught.value.field == "version"
    assert store.latest() is None


@pytest.mark.parametrize("action", ["versions", "latest", "publish", "promote", "fetch"])
def test_an_unreachable_store_fails_fast_with_a_store_error(
    action: str,
    aws_credentials: None,
    free_tcp_port: int,
    make_version: MakeVersion,
    tmp_path: Path,
) -> None:
    endpoint = f"http://127.0.0.1:{free_tcp_port}"  # nothing listens there
    store = open_store(
        "s3://models/bidfilter", endpoint_url=endpoint, connect_timeout=1, max_attempts=2
    )
    calls: dict[str, Callable[[], object]] = {
        "versions": store.versions,
        "latest": store.latest,
        "publish": lambda: store.publish(make_version(NEW)),
        "promote": lambda: store.promote(NEW),
        "fetch": lambda: store.fetch(NEW, tmp_path / "cache"),
    }
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        calls[action]()
    assert time.monotonic() - started < 5
    assert caught.value.field == "endpoint_url"
    assert endpoint in caught.value.message
    assert "cannot reach" in caught.value.message
    assert "testing-secret" not in str(caught.value)


def test_a_missing_bucket_is_a_store_error(s3_server: str, aws_credentials: None) -> None:
    store = open_store("s3://no-such-bucket-here/models", endpoint_url=s3_server)
    with pytest.raises(StoreError) as caught:
        store.versions()
    assert caught.value.field == "bucket"
    assert "no-such-bucket-here" in caught.value.message


def test_missing_credentials_are_a_store_error(
    s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store(f"s3://{s3_bucket}/models", endpoint_url=s3_server)
    with pytest.raises(StoreError) as caught:
        store.latest()
    assert caught.value.field == "credentials"

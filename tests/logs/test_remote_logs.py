"""Logs kept in S3 (where `serve --outcome-log s3://...` writes), read back by `retrain`:
against a real S3 API server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bidfilter.artifact import open_store
from bidfilter.cli import main
from bidfilter.logs import LogFormatError, iter_log_batches, log_files
from bidfilter.logs.remote import download_latest_partitions
from bidfilter.logs.sink import open_log_sink
from bidfilter.synth import generate


@pytest.fixture
def s3_logs(s3_server: str, s3_bucket: str, tmp_path: Path) -> tuple[str, Path]:
    """Five days of synthetic logs put into s3://bucket/auction-logs as the server's sink does."""
    local = tmp_path / "local"
    generate(local, requests=5000, partners=3, seed=3, days=5)
    sink = open_log_sink(f"s3://{s3_bucket}/auction-logs", endpoint_url=s3_server)
    for path in log_files(local):
        sink.put(path.parent.name.removeprefix("date="), path.name, path.read_bytes())
    return f"s3://{s3_bucket}/auction-logs", local


def test_the_newest_partitions_come_down(
    s3_logs: tuple[str, Path], s3_server: str, tmp_path: Path
) -> None:
    uri, local = s3_logs
    window = download_latest_partitions(uri, 2, tmp_path / "window", endpoint_url=s3_server)
    days = sorted(p.name for p in local.iterdir())
    assert sorted(p.name for p in window.iterdir()) == days[-2:]
    rows = sum(batch.num_rows for batch in iter_log_batches(window))
    expected = sum(batch.num_rows for batch in iter_log_batches(local / days[-1]))
    expected += sum(batch.num_rows for batch in iter_log_batches(local / days[-2]))
    assert rows == expected


def test_an_empty_prefix_says_so(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(LogFormatError) as refused:
        download_latest_partitions(f"s3://{s3_bucket}/none", 2, tmp_path, endpoint_url=s3_server)
    assert refused.value.field == "logs"


def test_retrain_reads_logs_from_s3(
    s3_logs: tuple[str, Path], s3_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, local = s3_logs
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    command = ["retrain", "--store", str(store_dir), "--logs", uri, "--window-days", "4"]
    assert main([*command, "--s3-endpoint-url", s3_server, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # Trained on the S3 window and published (promoted or not, as the judge found).
    store = open_store(str(store_dir))
    assert result["version"] in store.versions()
    report = json.loads(store.read_text(result["version"]))
    assert report["promotion"]["promoted"] == result["promoted"]
    days = sorted(p.name.removeprefix("date=") for p in local.iterdir())
    assert report["data"]["start"][:10] == days[1]  # the newest four of the five days
    assert report["data"]["end"][:10] == days[-1]

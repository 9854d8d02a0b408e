"""The auction-log schema: JSON-lines reading, the date-partitioned writer, the readers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from bidfilter.logs.schema import (
    LOG_SCHEMA,
    AuctionLogWriter,
    LogFormatError,
    auction_batch,
    iter_log_batches,
    log_files,
    read_jsonl,
)

REQUEST = {"id": "r1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
DAY_1 = dt.datetime(2024, 5, 1, 23, 59, 59, 999_000, tzinfo=dt.UTC)
DAY_2 = dt.datetime(2024, 5, 2, 0, 0, 0, tzinfo=dt.UTC)
# What the columns added for filtered traffic read as in logs where every partner was called.
SENT = {"sent": True, "propensity": 1.0, "model_version": None}


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def line(**fields: Any) -> str:
    record: dict[str, Any] = {"ts": ms(DAY_1), "request": REQUEST, "partners": []}
    record.update(fields)
    return json.dumps(record)


def records(lines: list[str], **options: Any) -> list[dict[str, Any]]:
    return [row for batch in read_jsonl(lines, **options) for row in batch.to_pylist()]


def test_read_jsonl_accepts_epoch_and_iso_timestamps() -> None:
    rows = records(
        [
            line(ts=ms(DAY_1)),
            line(ts="2024-05-02T00:00:00Z"),
            line(ts="2024-05-02T08:00:00+08:00"),
            line(ts="2024-05-02T00:00:00"),  # no offset: UTC
        ]
    )
    assert [row["ts"] for row in rows] == [DAY_1, DAY_2, DAY_2, DAY_2]


def test_read_jsonl_accepts_request_as_object_or_string() -> None:
    as_text = '{"id": "r2",  "imp": []}'  # odd spacing: kept byte for byte
    rows = records([line(request=REQUEST), line(request=as_text)])

    assert [row["request_id"] for row in rows] == ["r1", "r2"]
    assert json.loads(rows[0]["request"]) == REQUEST
    assert rows[1]["request"] == as_text


def test_read_jsonl_partners_oracle_and_default_bid() -> None:
    partners = [
        {"partner": "dsp-a", "bid": True, "price": 1.25, "oracle_p": 0.8},
        {"partner": "dsp-b", "bid": False, "price": 0, "oracle_p": None},
        {"partner": "dsp-c", "price": 0.5},  # bid defaults to price > 0
        {"partner": "dsp-d"},  # no price, no bid
    ]
    [row] = records([line(partners=partners)])

    assert row["partners"] == [
        {"partner": "dsp-a", "bid": True, "price": 1.25, "oracle_p": 0.8, **SENT},
        {"partner": "dsp-b", "bid": False, "price": 0.0, "oracle_p": None, **SENT},
        {"partner": "dsp-c", "bid": True, "price": 0.5, "oracle_p": None, **SENT},
        {"partner": "dsp-d", "bid": False, "price": 0.0, "oracle_p": None, **SENT},
    ]
    assert row["control"] is False


def test_read_jsonl_unsent_entries_default_to_no_label() -> None:
    partners = [{"partner": "dsp-a", "sent": False, "propensity": 0.1, "model_version": "v1"}]
    [row] = records([line(partners=partners, control=False)])

    assert row["partners"] == [
        {
            "partner": "dsp-a",
            "bid": False,
            "price": 0.0,
            "oracle_p": None,
            "sent": False,
            "propensity": 0.1,
            "model_version": "v1",
        }
    ]


def test_read_jsonl_without_oracle_writes_nulls() -> None:
    [batch] = read_jsonl([line(partners=[{"partner": "dsp-a", "bid": False}])])
    oracle = batch.column("partners").flatten().field("oracle_p")
    assert oracle.null_count == 1


def test_read_jsonl_batches_and_skips_blank_lines() -> None:
    lines = [line(request={**REQUEST, "id": f"r{i}"}) for i in range(5)]
    batches = list(read_jsonl(["", *lines, "   "], batch_size=2))

    assert [batch.num_rows for batch in batches] == [2, 2, 1]
    assert all(batch.schema.equals(LOG_SCHEMA) for batch in batches)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "line 1"),
        ("[1, 2]", "line 1"),
        (line(ts=True), "line 1: ts"),
        (line(ts="yesterday"), "line 1: ts"),
        (line(ts=None), "line 1: ts"),
        (line(request=None), "line 1: request"),
        (line(request="{broken"), "line 1: request"),
        (line(request={"imp": []}), "line 1: request.id"),
        (line(request={"id": 7}), "line 1: request.id"),
        (line(partners={"dsp-a": True}), "line 1: partners"),
        (line(partners=[{"bid": True}]), "line 1: partners[0].partner"),
        (line(partners=[{"partner": "a"}, {"partner": 3}]), "line 1: partners[1].partner"),
        (line(partners=[{"partner": "a", "price": "1.0"}]), "line 1: partners[0].price"),
        (line(partners=[{"partner": "a", "bid": 1}]), "line 1: partners[0].bid"),
        (line(partners=[{"partner": "a", "oracle_p": "high"}]), "line 1: partners[0].oracle_p"),
        (line(control="yes"), "line 1: control"),
        (line(partners=[{"partner": "a", "sent": 0}]), "line 1: partners[0].sent"),
        (line(partners=[{"partner": "a", "sent": False, "bid": True}]), "line 1: partners[0].bid"),
        (line(partners=[{"partner": "a", "sent": False, "price": 1}]), "line 1: partners[0].price"),
        (line(partners=[{"partner": "a", "propensity": 0.0}]), "line 1: partners[0].propensity"),
        (line(partners=[{"partner": "a", "propensity": -0.5}]), "line 1: partners[0].propensity"),
        (line(partners=[{"partner": "a", "propensity": 1.01}]), "line 1: partners[0].propensity"),
        (line(partners=[{"partner": "a", "propensity": None}]), "line 1: partners[0].propensity"),
        (
            '{"ts": 0, "request": {"id": "r"}, "partners": [{"partner": "a", "propensity": NaN}]}',
            "line 1: partners[0].propensity",
        ),
        (
            line(partners=[{"partner": "a", "model_version": 1}]),
            "line 1: partners[0].model_version",
        ),
    ],
)
def test_read_jsonl_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(LogFormatError) as caught:
        records([text])
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_read_jsonl_line_numbers_count_blank_lines() -> None:
    with pytest.raises(LogFormatError) as caught:
        records([line(), "", line(ts="soon")])
    assert caught.value.field == "line 3: ts"


def batch_at(*moments: dt.datetime) -> pa.RecordBatch:
    n = len(moments)
    return auction_batch(
        np.array([ms(moment) for moment in moments], dtype=np.int64),
        [f"r{i}" for i in range(n)],
        [json.dumps({**REQUEST, "id": f"r{i}"}) for i in range(n)],
        np.arange(n + 1, dtype=np.int32),
        ["dsp-a"] * n,
        np.array([i % 2 == 0 for i in range(n)]),
        np.array([1.5 if i % 2 == 0 else 0.0 for i in range(n)]),
        np.array([0.25] * (n - 1) + [np.nan]),
    )


def test_writer_partitions_by_utc_date(tmp_path: Path) -> None:
    with AuctionLogWriter(tmp_path) as writer:
        writer.write(batch_at(DAY_1, DAY_2, DAY_1))
        writer.write(pa.Table.from_batches([batch_at(DAY_2)]))
    assert writer.records_written == 4

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "date=2024-05-01",
        "date=2024-05-02",
    ]
    assert [path.relative_to(tmp_path).as_posix() for path in log_files(tmp_path)] == [
        "date=2024-05-01/part-00000.parquet",
        "date=2024-05-02/part-00000.parquet",
    ]
    rows = [row for batch in iter_log_batches(tmp_path) for row in batch.to_pylist()]
    assert [(row["ts"], row["request_id"]) for row in rows] == [
        (DAY_1, "r0"),
        (DAY_1, "r2"),
        (DAY_2, "r1"),
        (DAY_2, "r0"),
    ]
    # NaN in oracle_p is written as null.
    assert rows[1]["partners"] == [
        {"partner": "dsp-a", "bid": True, "price": 1.5, "oracle_p": None, **SENT}
    ]
    assert rows[0]["partners"][0]["oracle_p"] == 0.25


def test_iter_log_batches_selects_columns(tmp_path: Path) -> None:
    with AuctionLogWriter(tmp_path) as writer:
        writer.write(batch_at(DAY_1, DAY_1))
    [batch] = iter_log_batches(tmp_path, columns=["request_id"])
    assert batch.schema.names == ["request_id"]
    with pytest.raises(LogFormatError) as caught:
        list(iter_log_batches(tmp_path, columns=["request_id", "label"]))
    assert caught.value.field == "label"


def test_log_files_refuses_empty_or_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="not a directory"):
        log_files(tmp_path / "absent")
    with pytest.raises(LogFormatError, match="no Parquet log files"):
        log_files(tmp_path)

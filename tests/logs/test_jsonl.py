"""JSON-lines import: files (plain or compressed) in, date-partitioned Parquet out, a summary."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from bidfilter.logs import ImportSummary, import_jsonl
from bidfilter.logs.schema import LogFormatError, iter_log_batches

FIRST_DAY: list[dict[str, Any]] = [
    {
        "ts": "2024-05-01T10:00:00.250Z",
        "request": {"id": "r1", "imp": [{"id": "1"}]},
        "partners": [
            {"partner": "dsp-a", "bid": True, "price": 1.5, "oracle_p": 0.7},
            {"partner": "dsp-b", "bid": False, "price": 0.0, "oracle_p": None},
        ],
    },
    {
        "ts": 1714557600000,  # 2024-05-01T10:00:00Z
        "request": '{"id":"r2","imp":[{"id":"1"}]}',
        "partners": [{"partner": "dsp-a", "bid": False}],
    },
]
SENT = {"sent": True, "propensity": 1.0, "model_version": None}
SECOND_DAY: list[dict[str, Any]] = [
    {
        "ts": "2024-05-02T01:00:00+02:00",  # 2024-05-01T23:00Z: still the first UTC day
        "request": {"id": "r3"},
        "partners": [{"partner": "dsp-b", "price": 2.0}],
    },
    {
        "ts": "2024-05-02T09:30:00",
        "request": {"id": "r4"},
        "partners": [],
    },
]


def write_jsonl(path: Path, records: list[dict[str, Any]], *, blank_lines: bool = False) -> Path:
    text = "".join(json.dumps(record) + ("\n\n" if blank_lines else "\n") for record in records)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_import_jsonl_round_trip(tmp_path: Path) -> None:
    files = [
        write_jsonl(tmp_path / "a.jsonl", FIRST_DAY, blank_lines=True),
        write_jsonl(tmp_path / "b.jsonl.gz", SECOND_DAY),
    ]
    out = tmp_path / "logs"

    summary = import_jsonl(files, out)

    assert summary == ImportSummary(
        source="jsonl",
        out_dir=str(out),
        files=tuple(str(path) for path in files),
        input_lines=4,
        skipped_lines=0,
        records=4,
        outcomes=4,
        bids=2,
        days=("2024-05-01", "2024-05-02"),
    )
    assert json.loads(json.dumps(summary.to_dict()))["days"] == ["2024-05-01", "2024-05-02"]
    rows = {row["request_id"]: row for batch in iter_log_batches(out) for row in batch.to_pylist()}
    assert rows["r1"]["ts"] == dt.datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=dt.UTC)
    assert rows["r2"]["ts"] == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert rows["r3"]["ts"] == dt.datetime(2024, 5, 1, 23, tzinfo=dt.UTC)
    assert rows["r4"]["ts"] == dt.datetime(2024, 5, 2, 9, 30, tzinfo=dt.UTC)
    assert json.loads(rows["r1"]["request"]) == FIRST_DAY[0]["request"]
    assert rows["r2"]["request"] == FIRST_DAY[1]["request"]
    # Without the new keys: every partner sent, with propensity 1, by no model; no control.
    assert rows["r1"]["partners"] == [{**entry, **SENT} for entry in FIRST_DAY[0]["partners"]]
    assert rows["r2"]["partners"] == [
        {"partner": "dsp-a", "bid": False, "price": 0.0, "oracle_p": None, **SENT}
    ]
    assert rows["r3"]["partners"] == [
        {"partner": "dsp-b", "bid": True, "price": 2.0, "oracle_p": None, **SENT}
    ]
    assert rows["r4"]["partners"] == []
    assert {row["control"] for row in rows.values()} == {False}


def test_import_jsonl_reads_what_was_sent(tmp_path: Path) -> None:
    filtered = {
        "ts": "2024-05-01T10:00:00Z",
        "request": {"id": "r5"},
        "partners": [
            {"partner": "dsp-a", "bid": True, "price": 1.0, "propensity": 1, "model_version": "v7"},
            {"partner": "dsp-b", "sent": False, "propensity": 0.05, "model_version": "v7"},
            {"partner": "dsp-c", "sent": True, "bid": False, "propensity": 0.05},
        ],
    }
    control = {
        "ts": "2024-05-01T10:00:01Z",
        "request": {"id": "r6"},
        "control": True,
        "partners": [{"partner": "dsp-b", "bid": False, "model_version": None}],
    }
    out = tmp_path / "logs"

    summary = import_jsonl([write_jsonl(tmp_path / "sent.jsonl", [filtered, control])], out)

    assert (summary.records, summary.outcomes, summary.bids) == (2, 4, 1)
    rows = {row["request_id"]: row for batch in iter_log_batches(out) for row in batch.to_pylist()}
    assert rows["r5"]["control"] is False
    assert rows["r5"]["partners"] == [
        {"partner": "dsp-a", "bid": True, "price": 1.0, "oracle_p": None, "sent": True,
         "propensity": 1.0, "model_version": "v7"},
        {"partner": "dsp-b", "bid": False, "price": 0.0, "oracle_p": None, "sent": False,
         "propensity": 0.05, "model_version": "v7"},
        {"partner": "dsp-c", "bid": False, "price": 0.0, "oracle_p": None, "sent": True,
         "propensity": 0.05, "model_version": None},
    ]  # fmt: skip
    assert rows["r6"]["control"] is True
    assert rows["r6"]["partners"] == [
        {"partner": "dsp-b", "bid": False, "price": 0.0, "oracle_p": None, **SENT}
    ]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"control": 1}, "line 1: control"),
        ({"partners": [{"partner": "a", "sent": "no"}]}, "line 1: partners[0].sent"),
        ({"partners": [{"partner": "a", "sent": False, "bid": True}]}, "line 1: partners[0].bid"),
        (
            {"partners": [{"partner": "a", "sent": False, "price": 2.0}]},
            "line 1: partners[0].price",
        ),
        ({"partners": [{"partner": "a", "propensity": 0}]}, "line 1: partners[0].propensity"),
        ({"partners": [{"partner": "a", "propensity": 1.5}]}, "line 1: partners[0].propensity"),
        ({"partners": [{"partner": "a", "propensity": "1"}]}, "line 1: partners[0].propensity"),
        ({"partners": [{"partner": "a", "propensity": True}]}, "line 1: partners[0].propensity"),
        ({"partners": [{"partner": "a", "model_version": 3}]}, "line 1: partners[0].model_version"),
    ],
)
def test_import_jsonl_checks_the_new_keys(
    tmp_path: Path, record: dict[str, Any], field: str
) -> None:
    line = {"ts": 0, "request": {"id": "r"}, "partners": [], **record}
    bad = write_jsonl(tmp_path / "bad.jsonl", [line])

    with pytest.raises(LogFormatError) as caught:
        import_jsonl([bad], tmp_path / "logs")

    assert caught.value.field == f"bad.jsonl: {field}"


def test_import_jsonl_errors_name_the_file(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", FIRST_DAY)
    bad_record = {**SECOND_DAY[0], "partners": [{"partner": "dsp-b", "price": "2"}]}
    bad = write_jsonl(tmp_path / "bad.jsonl", [SECOND_DAY[1], bad_record])

    with pytest.raises(LogFormatError) as caught:
        import_jsonl([good, bad], tmp_path / "logs")

    assert caught.value.field == "bad.jsonl: line 2: partners[0].price"


def test_import_jsonl_needs_files(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="no input files"):
        import_jsonl([], tmp_path / "logs")

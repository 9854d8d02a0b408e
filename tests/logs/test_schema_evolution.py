"""What was sent: the ``sent``, ``propensity``, ``model_version`` and ``control`` columns, their
checks, and logs written before they existed (alone, or mixed with new files in one directory)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bidfilter.logs import (
    LOG_SCHEMA,
    AuctionLogWriter,
    LogFormatError,
    PartnerOutcome,
    auction_batch,
    iter_log_batches,
    logged_partners,
    read_jsonl,
)

# The schema as it was before the log could say what was sent.
OLD_PARTNER_TYPE = pa.struct(
    [
        pa.field("partner", pa.string(), nullable=False),
        pa.field("bid", pa.bool_(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("oracle_p", pa.float64(), nullable=True),
    ]
)
OLD_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("request", pa.string(), nullable=False),
        pa.field("partners", pa.list_(OLD_PARTNER_TYPE), nullable=False),
    ]
)
DAY_1 = int(dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
DAY_2 = DAY_1 + 86_400_000
OLD_DEFAULTS = {"sent": True, "propensity": 1.0, "model_version": None}


def old_table(ts_ms: int, request_id: str) -> pa.Table:
    rows = [
        {
            "ts": dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC),
            "request_id": request_id,
            "request": json.dumps({"id": request_id}),
            "partners": [
                {"partner": "dsp-a", "bid": True, "price": 2.0, "oracle_p": 0.5},
                {"partner": "dsp-b", "bid": False, "price": 0.0, "oracle_p": None},
            ],
        }
    ]
    return pa.Table.from_pylist(rows, schema=OLD_SCHEMA)


def write_old(root: Path, ts_ms: int, request_id: str) -> Path:
    day = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).date().isoformat()
    path = root / f"date={day}" / "part-00000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(old_table(ts_ms, request_id), path)
    return path


def new_batch(ts_ms: int, request_id: str, *, control: bool = False) -> pa.RecordBatch:
    return auction_batch(
        np.array([ts_ms]),
        [request_id],
        [json.dumps({"id": request_id})],
        np.array([0, 3], dtype=np.int32),
        ["dsp-a", "dsp-b", "dsp-c"],
        np.array([True, False, False]),
        np.array([1.25, 0.0, 0.0]),
        sent=np.array([True, False, True]),
        propensity=np.array([1.0, 0.02, 0.02]),
        model_version=["v3", "v3", None],
        control=np.array([control]),
    )


NEW_PARTNERS = [
    {"partner": "dsp-a", "bid": True, "price": 1.25, "oracle_p": None, "sent": True,
     "propensity": 1.0, "model_version": "v3"},
    {"partner": "dsp-b", "bid": False, "price": 0.0, "oracle_p": None, "sent": False,
     "propensity": 0.02, "model_version": "v3"},
    {"partner": "dsp-c", "bid": False, "price": 0.0, "oracle_p": None, "sent": True,
     "propensity": 0.02, "model_version": None},
]  # fmt: skip


def rows_of(root: Path) -> list[dict[str, Any]]:
    return [row for batch in iter_log_batches(root) for row in batch.to_pylist()]


def test_new_columns_round_trip(tmp_path: Path) -> None:
    with AuctionLogWriter(tmp_path) as writer:
        writer.write(new_batch(DAY_1, "r1", control=True))
        writer.write(new_batch(DAY_1 + 1, "r2"))

    schema = pq.ParquetFile(next(tmp_path.glob("date=*/*.parquet"))).schema_arrow
    assert schema.equals(LOG_SCHEMA)
    rows = rows_of(tmp_path)
    assert [(row["request_id"], row["control"]) for row in rows] == [("r1", True), ("r2", False)]
    assert rows[0]["partners"] == NEW_PARTNERS
    assert rows[1]["partners"] == NEW_PARTNERS


def test_old_schema_file_reads_with_defaults(tmp_path: Path) -> None:
    write_old(tmp_path, DAY_1, "old")

    [row] = rows_of(tmp_path)
    assert row["control"] is False
    assert row["partners"] == [
        {"partner": "dsp-a", "bid": True, "price": 2.0, "oracle_p": 0.5, **OLD_DEFAULTS},
        {"partner": "dsp-b", "bid": False, "price": 0.0, "oracle_p": None, **OLD_DEFAULTS},
    ]
    # Any choice of columns, including only the ones the file predates.
    [batch] = iter_log_batches(tmp_path, columns=["control"])
    assert batch.schema == pa.schema([LOG_SCHEMA.field("control")])
    assert batch.column(0).to_pylist() == [False]
    [batch] = iter_log_batches(tmp_path, columns=["partners", "request_id"])
    assert batch.schema.field("partners").type == LOG_SCHEMA.field("partners").type
    assert logged_partners(tmp_path) == {"dsp-a", "dsp-b"}


def test_directory_mixing_old_and_new_files_reads(tmp_path: Path) -> None:
    write_old(tmp_path, DAY_1, "old")
    with AuctionLogWriter(tmp_path) as writer:
        writer.write(new_batch(DAY_2, "new", control=True))

    batches = list(iter_log_batches(tmp_path, batch_size=1))
    assert all(batch.schema.equals(LOG_SCHEMA) for batch in batches)
    assert pa.Table.from_batches(batches).num_rows == 2  # one schema: they concatenate
    old, new = (row for batch in batches for row in batch.to_pylist())
    assert (old["request_id"], old["control"]) == ("old", False)
    assert [entry["sent"] for entry in old["partners"]] == [True, True]
    assert (new["request_id"], new["control"]) == ("new", True)
    assert new["partners"] == NEW_PARTNERS


def test_writer_upgrades_an_old_schema_table(tmp_path: Path) -> None:
    with AuctionLogWriter(tmp_path) as writer:
        writer.write(old_table(DAY_1, "old"))

    path = next(tmp_path.glob("date=*/*.parquet"))
    assert pq.ParquetFile(path).schema_arrow.equals(LOG_SCHEMA)
    [row] = rows_of(tmp_path)
    assert row["control"] is False
    assert [entry["propensity"] for entry in row["partners"]] == [1.0, 1.0]


def test_partner_outcome_defaults_to_sent() -> None:
    outcome = PartnerOutcome("dsp-a", bid=False)
    assert (outcome.sent, outcome.propensity, outcome.model_version) == (True, 1.0, None)


def test_auction_batch_defaults_match_old_logs() -> None:
    batch = auction_batch(
        np.array([DAY_1]),
        ["r"],
        ['{"id": "r"}'],
        np.array([0, 1], dtype=np.int32),
        ["dsp-a"],
        np.array([False]),
        np.array([0.0]),
    )
    [row] = batch.to_pylist()
    assert row["control"] is False
    assert row["partners"][0] | OLD_DEFAULTS == row["partners"][0]


@pytest.mark.parametrize(
    ("sent", "bid", "price", "propensity", "field"),
    [
        (True, False, 0.0, 0.0, "partners.propensity"),
        (True, False, 0.0, -0.1, "partners.propensity"),
        (True, False, 0.0, 1.5, "partners.propensity"),
        (True, False, 0.0, float("nan"), "partners.propensity"),
        (False, True, 1.0, 0.5, "partners.bid"),
        (False, False, 1.0, 0.5, "partners.price"),
    ],
)
def test_auction_batch_checks_name_the_field(
    sent: bool, bid: bool, price: float, propensity: float, field: str
) -> None:
    with pytest.raises(LogFormatError) as caught:
        auction_batch(
            np.array([DAY_1, DAY_1]),
            ["ok", "bad"],
            ['{"id": "ok"}', '{"id": "bad"}'],
            np.array([0, 1, 2], dtype=np.int32),
            ["dsp-a", "dsp-b"],
            np.array([False, bid]),
            np.array([0.0, price]),
            sent=np.array([True, sent]),
            propensity=np.array([1.0, propensity]),
        )
    assert caught.value.field == field
    assert "record 1, partner 'dsp-b'" in caught.value.message


def test_reading_a_file_that_breaks_the_rules_names_field_and_file(tmp_path: Path) -> None:
    good = new_batch(DAY_1, "r1")
    outcomes = good.column("partners").flatten()
    broken = pa.StructArray.from_arrays(
        [
            outcomes.field(name) if name != "propensity" else pa.array([1.0, 1.5, 0.5])
            for name in LOG_SCHEMA.field("partners").type.value_type.names
        ],
        fields=list(LOG_SCHEMA.field("partners").type.value_type),
    )
    table = pa.Table.from_batches([good]).set_column(
        3, LOG_SCHEMA.field("partners"), pa.ListArray.from_arrays(pa.array([0, 3]), broken)
    )
    path = tmp_path / "part-00000.parquet"
    pq.write_table(table, path)  # around the writer, which would refuse it

    with pytest.raises(LogFormatError) as caught:
        list(iter_log_batches(tmp_path))
    assert caught.value.field == "partners.propensity"
    assert str(path) in caught.value.message
    assert "partner 'dsp-b'" in caught.value.message
    with pytest.raises(LogFormatError) as caught:
        AuctionLogWriter(tmp_path / "out").write(table.cast(LOG_SCHEMA))
    assert caught.value.field == "partners.propensity"


def test_a_file_missing_an_original_field_is_refused(tmp_path: Path) -> None:
    partner_type = pa.struct([pa.field("partner", pa.string()), pa.field("price", pa.float64())])
    table = pa.table(
        {
            "ts": pa.array([DAY_1]).cast(pa.timestamp("ms", tz="UTC")),
            "request_id": ["r"],
            "request": ['{"id": "r"}'],
            "partners": pa.array([[{"partner": "a", "price": 0.0}]], pa.list_(partner_type)),
        }
    )
    pq.write_table(table, tmp_path / "part-00000.parquet")
    with pytest.raises(LogFormatError) as caught:
        list(iter_log_batches(tmp_path))
    assert caught.value.field == "partners.bid"


def test_an_unsent_entry_may_have_had_no_chance_at_all() -> None:
    """Serving without exploration gives a below-threshold partner propensity 0: unsent, so
    valid; a sent entry at 0 is impossible, and refused (above)."""
    batch = auction_batch(
        np.array([DAY_1]),
        ["r"],
        ['{"id": "r"}'],
        np.array([0, 2], dtype=np.int32),
        ["dsp-a", "dsp-b"],
        np.array([True, False]),
        np.array([1.0, 0.0]),
        sent=np.array([True, False]),
        propensity=np.array([1.0, 0.0]),
    )
    assert batch.column("partners").flatten().field("propensity").to_pylist() == [1.0, 0.0]


def test_sample_rate_defaults_to_one_and_is_checked(tmp_path: Path) -> None:
    write_old(tmp_path, DAY_1, "old")
    [row] = rows_of(tmp_path)
    assert row["sample_rate"] == 1.0
    line = json.dumps({"ts": DAY_1, "request": {"id": "r"}, "sample_rate": 0.25, "partners": []})
    [batch] = read_jsonl([line])
    assert batch.column("sample_rate").to_pylist() == [0.25]
    for bad in (0, 1.5, "x", True):
        line = json.dumps({"ts": DAY_1, "request": {"id": "r"}, "sample_rate": bad, "partners": []})
        with pytest.raises(LogFormatError) as refused:
            list(read_jsonl([line]))
        assert refused.value.field == "line 1: sample_rate"
    with pytest.raises(LogFormatError) as refused:
        auction_batch(
            np.array([DAY_1]),
            ["r"],
            ["{}"],
            np.array([0, 0]),
            [],
            np.array([], dtype=bool),
            np.array([]),
            sample_rate=np.array([0.0]),
        )
    assert refused.value.field == "sample_rate"

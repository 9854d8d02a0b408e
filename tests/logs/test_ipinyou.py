"""The iPinYou importer: row parsing, the BidRequest mapping, labels from the impression log,
errors that name file/line/column, and the on-disk result read back through the schema."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.logs.ipinyou import (
    BID_LOG_COLUMNS,
    EVENT_LOG_COLUMNS,
    IPinYouFormatError,
    bid_request_json,
    import_ipinyou,
    parse_bid_row,
    parse_timestamp,
)
from bidfilter.logs.schema import LogFormatError, iter_log_batches

UA = "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36"


def bid_row(
    bid_id: str,
    ts: str,
    advertiser: str = "1458",
    *,
    user: str = "Vhk7ZAnxDIuOjCn",
    ua: str = UA,
    ip: str = "114.100.37.*",
    region: str = "216",
    city: str = "234",
    exchange: str = "1",
    domain: str = "trqRTuT-GNTf4hbh",
    url: str = "8bd1a7d8f9e1c1b5",
    anonymous_url: str = "null",
    slot: str = "mm_10027070_118039_10308280",
    width: str = "300",
    height: str = "250",
    visibility: str = "FirstView",
    slot_format: str = "Na",
    floor: str = "5",
    creative: str = "612599432d200b093719dd1f372f7a30",
    price: str = "300",
    tags: str = "null",
) -> list[str]:
    fields = [bid_id, ts, user, ua, ip, region, city, exchange, domain, url, anonymous_url, slot]
    fields += [width, height, visibility, slot_format, floor, creative, price, advertiser, tags]
    assert len(fields) == len(BID_LOG_COLUMNS)
    return fields


def event_row(bid_id: str, ts: str, advertiser: str, log_type: str = "1") -> list[str]:
    """An impression/click/conversion row: the bid row plus LogType, PayingPrice, KeyPageURL."""
    bid = bid_row(bid_id, ts, advertiser)
    fields = [*bid[:2], log_type, *bid[2:19], "207", "null", *bid[19:]]
    assert len(fields) == len(EVENT_LOG_COLUMNS)
    return fields


def write_log(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    data = "".join("\t".join(row) + "\n" for row in rows).encode()
    if path.suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    elif path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


BIDS_DAY_1 = [
    bid_row("a1", "20130606000104192", "1458"),
    bid_row("a2", "20130606000105008", "3358", region="80", city="85", exchange="2"),
    bid_row(
        "a3", "20130606101010101", "3386", ip="null", ua="null", url="null", anonymous_url="1234"
    ),
    # One request, two advertisers: adjacent rows merge into one record with two partners.
    bid_row("a4", "20130606120000000", "1458", price="294"),
    bid_row("a4", "20130606120000000", "3427", price="238"),
    # A second creative of the same advertiser is still one partner.
    bid_row("a4", "20130606120000000", "3427", price="238", creative="other"),
    bid_row("a5", "20130606130000000", "3476", width="728", height="90", floor="120"),
    bid_row("a6", "20130606140000000", "1458", tags="10006,10063,10110", user="null"),
    bid_row("a7", "20130606235959999", "3358", visibility="0", slot_format="1"),
]
BIDS_DAY_2 = [
    bid_row("b1", "20130607000000001", "1458"),
    bid_row("b2", "20130607083000500", "3427", floor="0", price="227"),
]
IMPRESSIONS = [
    event_row("a1", "20130606000105100", "1458"),
    event_row("a4", "20130606120000800", "3427"),
    event_row("a7", "20130607000000200", "3358"),  # won just before midnight, shown after
    event_row("b2", "20130607083001000", "3427"),
    event_row("a2", "20130606000106000", "9999"),  # another advertiser's impression: no label
    event_row("a3", "20130606101011000", "3386", log_type="2"),  # a click, not an impression
]


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1000


@pytest.fixture
def ipinyou_files(tmp_path: Path) -> list[Path]:
    return [
        write_log(tmp_path / "bid.20130606.txt", BIDS_DAY_1),
        write_log(tmp_path / "bid.20130607.txt.bz2", BIDS_DAY_2),
        write_log(tmp_path / "imp.20130606.txt.gz", IMPRESSIONS),
    ]


def read_records(root: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for batch in iter_log_batches(root):
        for record in batch.to_pylist():
            assert record["request_id"] not in records
            records[record["request_id"]] = record
    return records


def test_import_writes_one_record_per_request(ipinyou_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "logs"
    summary = import_ipinyou(ipinyou_files, out, chunk_rows=2)

    assert summary.to_dict() == {
        "source": "ipinyou",
        "out_dir": str(out),
        "files": [str(path) for path in ipinyou_files],
        "input_lines": len(BIDS_DAY_1) + len(BIDS_DAY_2) + len(IMPRESSIONS),
        "skipped_lines": 0,
        "records": 9,
        "outcomes": 10,
        "bids": 4,
        "days": ["2013-06-06", "2013-06-07"],
        "impressions": 5,
    }
    assert sorted(path.name for path in out.iterdir()) == ["date=2013-06-06", "date=2013-06-07"]
    records = read_records(out)
    assert list(records) == ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "b1", "b2"]


def test_timestamps_keep_the_wall_clock_digits_as_utc(
    ipinyou_files: list[Path], tmp_path: Path
) -> None:
    import_ipinyou(ipinyou_files, tmp_path / "logs")
    records = read_records(tmp_path / "logs")

    expected = dt.datetime(2013, 6, 6, 0, 1, 4, 192_000, tzinfo=dt.UTC)
    assert records["a1"]["ts"] == expected
    assert records["a7"]["ts"] == dt.datetime(2013, 6, 6, 23, 59, 59, 999_000, tzinfo=dt.UTC)
    assert records["b1"]["ts"] == dt.datetime(2013, 6, 7, 0, 0, 0, 1_000, tzinfo=dt.UTC)


def test_request_json_maps_the_row(ipinyou_files: list[Path], tmp_path: Path) -> None:
    import_ipinyou(ipinyou_files, tmp_path / "logs")
    records = read_records(tmp_path / "logs")

    request = json.loads(records["a1"]["request"])
    assert request == {
        "id": "a1",
        "at": 2,
        "cur": ["CNY"],
        "imp": [
            {
                "id": "1",
                "banner": {"w": 300, "h": 250},
                "bidfloor": 0.05,
                "bidfloorcur": "CNY",
                "tagid": "mm_10027070_118039_10308280",
                "ext": {"ipinyou": {"slot_visibility": "FirstView", "slot_format": "Na"}},
            }
        ],
        "site": {"domain": "trqRTuT-GNTf4hbh", "page": "8bd1a7d8f9e1c1b5"},
        "device": {"ua": UA, "ip": "114.100.37.0", "geo": {"region": "216", "city": "234"}},
        "user": {"id": "Vhk7ZAnxDIuOjCn"},
        "ext": {"ipinyou": {"adexchange": "1"}},
    }

    a2 = json.loads(records["a2"]["request"])
    assert a2["device"]["geo"] == {"region": "80", "city": "85"}
    assert a2["ext"] == {"ipinyou": {"adexchange": "2"}}

    # "null" means absent: the field is left out rather than written as the string.
    a3 = json.loads(records["a3"]["request"])
    assert a3["site"] == {
        "domain": "trqRTuT-GNTf4hbh",
        "ext": {"ipinyou": {"anonymous_url_id": "1234"}},
    }
    assert "ua" not in a3["device"] and "ip" not in a3["device"]

    a5 = json.loads(records["a5"]["request"])
    assert a5["imp"][0]["banner"] == {"w": 728, "h": 90}
    assert a5["imp"][0]["bidfloor"] == 1.2

    a6 = json.loads(records["a6"]["request"])
    segments = [{"id": "10006"}, {"id": "10063"}, {"id": "10110"}]
    assert a6["user"] == {"data": [{"name": "ipinyou", "segment": segments}]}

    a7 = json.loads(records["a7"]["request"])
    assert a7["imp"][0]["ext"] == {"ipinyou": {"slot_visibility": "0", "slot_format": "1"}}
    assert json.loads(records["b2"]["request"])["imp"][0]["bidfloor"] == 0


def test_partners_are_advertisers_labelled_by_impressions(
    ipinyou_files: list[Path], tmp_path: Path
) -> None:
    import_ipinyou(ipinyou_files, tmp_path / "logs")
    records = read_records(tmp_path / "logs")

    def outcomes(request_id: str) -> list[tuple[str, bool, float]]:
        partners = records[request_id]["partners"]
        assert all(partner["oracle_p"] is None for partner in partners)
        return [(p["partner"], p["bid"], p["price"]) for p in partners]

    # Won: price is the bid in CNY per mille (fen / 100).
    assert outcomes("a1") == [("1458", True, 3.0)]
    # Lost: no impression for (a2, 3358); another advertiser's impression does not count.
    assert outcomes("a2") == [("3358", False, 0.0)]
    # A click row (LogType 2) is not an impression.
    assert outcomes("a3") == [("3386", False, 0.0)]
    assert outcomes("a4") == [("1458", False, 0.0), ("3427", True, 2.38)]
    assert outcomes("a5") == [("3476", False, 0.0)]
    # The impression log of one day labels bids from the next file too.
    assert outcomes("a7") == [("3358", True, 3.0)]
    assert outcomes("b2") == [("3427", True, 2.27)]


def test_files_are_recognised_by_columns_not_names(tmp_path: Path) -> None:
    bids = write_log(tmp_path / "requests.log", BIDS_DAY_1[:1])
    impressions = write_log(tmp_path / "wins.log", IMPRESSIONS[:1])

    summary = import_ipinyou([impressions, bids], tmp_path / "logs")

    assert (summary.records, summary.bids) == (1, 1)


def test_bad_value_names_file_line_and_column(tmp_path: Path) -> None:
    rows = [*BIDS_DAY_1[:2], bid_row("x", "20130606000104192", width="wide"), *BIDS_DAY_1[2:]]
    bids = write_log(tmp_path / "bid.20130606.txt", rows)
    impressions = write_log(tmp_path / "imp.20130606.txt", IMPRESSIONS)

    with pytest.raises(IPinYouFormatError) as caught:
        import_ipinyou([bids, impressions], tmp_path / "logs")

    error = caught.value
    assert isinstance(error, LogFormatError)
    assert (error.path, error.line, error.column) == (str(bids), 3, 13)
    assert error.field == f"{bids} line 3 column 13 (AdslotWidth)"
    assert "'wide'" in error.message


@pytest.mark.parametrize(
    ("row", "column", "name"),
    [
        (bid_row("x", "2013-06-06 00:01"), 2, "Timestamp"),
        (bid_row("x", "20130631000000000"), 2, "Timestamp"),  # no 31 June
        (bid_row("x", "20130606250000000"), 2, "Timestamp"),
        (bid_row("null", "20130606000104192"), 1, "BidID"),
        (bid_row("x", "20130606000104192", floor="-1"), 17, "AdslotFloorPrice"),
        (bid_row("x", "20130606000104192", price="2.5"), 19, "BiddingPrice"),
        (bid_row("x", "20130606000104192", advertiser=""), 20, "AdvertiserID"),
        (bid_row("x", "20130606000104192")[:19], 20, "AdvertiserID"),  # too few columns
        ([*bid_row("x", "20130606000104192"), "extra"], 22, "extra"),  # too many
    ],
)
def test_parse_errors_name_the_column(row: list[str], column: int, name: str) -> None:
    with pytest.raises(IPinYouFormatError) as caught:
        parse_bid_row(row, path="bid.txt", line=7)
    assert caught.value.column == column
    assert caught.value.field == f"bid.txt line 7 column {column} ({name})"


def test_bad_impression_row_names_its_column(tmp_path: Path) -> None:
    bids = write_log(tmp_path / "bid.txt", BIDS_DAY_1)
    impressions = write_log(
        tmp_path / "imp.txt", [*IMPRESSIONS[:2], event_row("a9", "20130606000105100", "1458", "7")]
    )

    with pytest.raises(IPinYouFormatError) as caught:
        import_ipinyou([bids, impressions], tmp_path / "logs")

    assert caught.value.field == f"{impressions} line 3 column 3 (LogType)"


def test_skip_bad_counts_and_skips(tmp_path: Path) -> None:
    rows = [BIDS_DAY_1[0], bid_row("x", "20130606000104192", height="-"), ["a", "b"], BIDS_DAY_1[1]]
    bids = write_log(tmp_path / "bid.txt", rows)
    impressions = write_log(tmp_path / "imp.txt", [IMPRESSIONS[0], event_row("z", "bad", "1")[:5]])

    summary = import_ipinyou([bids, impressions], tmp_path / "logs", skip_bad=True)

    assert (summary.skipped_lines, summary.input_lines) == (3, 6)
    assert (summary.records, summary.bids, summary.impressions) == (2, 1, 1)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    bids = tmp_path / "bid.txt"
    bids.write_text("\n" + "\t".join(BIDS_DAY_1[0]) + "\r\n\n")
    impressions = write_log(tmp_path / "imp.txt", IMPRESSIONS[:1])

    summary = import_ipinyou([bids, impressions], tmp_path / "logs")

    assert (summary.input_lines, summary.records, summary.bids) == (2, 1, 1)


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    season_1 = write_log(tmp_path / "bid.20130311.txt", [BIDS_DAY_1[0][:19]])
    with pytest.raises(IPinYouFormatError, match="season 1 is not supported") as caught:
        import_ipinyou([season_1], tmp_path / "logs")
    assert (caught.value.line, caught.value.column) == (1, None)


def test_needs_both_bid_and_impression_logs(tmp_path: Path) -> None:
    bids = write_log(tmp_path / "bid.txt", BIDS_DAY_1)
    impressions = write_log(tmp_path / "imp.txt", IMPRESSIONS)
    with pytest.raises(LogFormatError) as caught:
        import_ipinyou([bids], tmp_path / "logs")
    assert caught.value.field == "paths"
    assert "impression log" in caught.value.message
    with pytest.raises(LogFormatError, match="no iPinYou bid log"):
        import_ipinyou([impressions], tmp_path / "logs")
    with pytest.raises(LogFormatError, match="no input files"):
        import_ipinyou([], tmp_path / "logs")


def test_parse_timestamp() -> None:
    assert parse_timestamp("20130606000104192") == utc_ms(2013, 6, 6, 0, 1, 4) + 192
    assert parse_timestamp("20131231235959999") == utc_ms(2014, 1, 1) - 1
    for bad in (
        "2013060600010419",
        "201306060001041920",
        "20130606000104l92",
        "２０１３０６０６０００１０４１９２",
    ):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


# Text columns as the files can hold them: no tab, no line break, not the "null" marker.
_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\t\n\r"),
    min_size=1,
    max_size=40,
).filter(lambda value: value.strip() and value != "null")
_count = st.integers(min_value=0, max_value=10**6)


@given(
    bid_id=_text,
    ua=_text,
    domain=_text,
    slot=_text,
    width=_count,
    height=_count,
    floor=_count,
    price=_count,
    advertiser=_text,
)
def test_row_fields_survive_the_mapping(
    bid_id: str,
    ua: str,
    domain: str,
    slot: str,
    width: int,
    height: int,
    floor: int,
    price: int,
    advertiser: str,
) -> None:
    fields = bid_row(
        bid_id,
        "20130606000104192",
        advertiser,
        ua=ua,
        domain=domain,
        slot=slot,
        width=str(width),
        height=str(height),
        floor=str(floor),
        price=str(price),
    )
    row = parse_bid_row(fields)
    request = json.loads(bid_request_json(row))

    assert (row.advertiser_id, row.bidding_price_fen) == (advertiser, price)
    assert request["id"] == bid_id
    assert request["device"]["ua"] == ua
    assert request["site"]["domain"] == domain
    imp = request["imp"][0]
    assert (imp["tagid"], imp["banner"]) == (slot, {"w": width, "h": height})
    assert imp["bidfloor"] == pytest.approx(floor / 100)

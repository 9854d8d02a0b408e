"""Import the public iPinYou RTB data set (seasons 2 and 3) into the auction-log schema.

iPinYou released the logs of its own DSP: a *bid log* row is a bid iPinYou placed for one of its
advertisers, and an *impression log* row says that bid won. There is no row for requests it
declined. Following the AWS RTB Intelligence Kit, the one partner per request is the advertiser
and its label is "this bid became an impression" (the kit's ``label = PayingPrice is not null``
after joining the impression log on BidID); a literal "did it bid" label would be true for every
row. ``docs/logs.md`` lists the full column mapping and its caveats.

The row parser and the BidRequest builder are pure functions (tested without files); the file
loop streams in chunks, so memory holds one chunk of bid rows plus one 8-byte hash per
impression.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from bidfilter.logs.compression import open_binary
from bidfilter.logs.import_summary import BatchTally, ImportSummary
from bidfilter.logs.schema import AuctionLogWriter, LogFormatError, auction_batch

BID_LOG_COLUMNS: tuple[str, ...] = (
    "BidID",
    "Timestamp",
    "iPinYouID",
    "UserAgent",
    "IP",
    "Region",
    "City",
    "AdExchange",
    "Domain",
    "URL",
    "AnonymousURLID",
    "AdslotID",
    "AdslotWidth",
    "AdslotHeight",
    "AdslotVisibility",
    "AdslotFormat",
    "AdslotFloorPrice",
    "CreativeID",
    "BiddingPrice",
    "AdvertiserID",
    "UserTags",
)
"""Season 2/3 bid-log columns, in file order (21, tab-separated, no header)."""

EVENT_LOG_COLUMNS: tuple[str, ...] = (
    *BID_LOG_COLUMNS[:2],
    "LogType",
    *BID_LOG_COLUMNS[2:19],
    "PayingPrice",
    "KeyPageURL",
    *BID_LOG_COLUMNS[19:],
)
"""Season 2/3 impression/click/conversion-log columns (24): the bid columns plus LogType,
PayingPrice and KeyPageURL."""

IMPRESSION_LOG_TYPE = "1"
_LOG_TYPES = frozenset({"1", "2", "3"})  # impression, click, conversion
_MISSING = frozenset({"", "null"})  # how the data set writes an absent value
FEN_PER_CNY = 100
CURRENCY = "CNY"

_BID = {name: index for index, name in enumerate(BID_LOG_COLUMNS)}
_EVENT = {name: index for index, name in enumerate(EVENT_LOG_COLUMNS)}
_EPOCH = dt.date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
_SNIFF_LINES = 20


class IPinYouFormatError(LogFormatError):
    """A malformed iPinYou line; ``path``, ``line`` and ``column`` (1-based, None for the whole
    line) say where."""

    def __init__(
        self, path: str, line: int, column: int | None, message: str, *, event: bool = False
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        names = EVENT_LOG_COLUMNS if event else BID_LOG_COLUMNS
        where = f"{path} line {line}"
        if column is not None:
            name = names[column - 1] if column <= len(names) else "extra"
            where += f" column {column} ({name})"
        super().__init__(where, message)


class BidLogRow(msgspec.Struct, frozen=True, gc=False):
    """The bid-log fields the importer reads; absent values are None.

    A msgspec struct, not a frozen dataclass: built once per row, and a frozen dataclass's
    ``__init__`` costs several times more.
    """

    bid_id: str
    ts_ms: int
    ipinyou_id: str | None
    user_agent: str | None
    ip: str | None
    region: str | None
    city: str | None
    ad_exchange: str | None
    domain: str | None
    url: str | None
    anonymous_url_id: str | None
    slot_id: str | None
    slot_width: int
    slot_height: int
    slot_visibility: str | None
    slot_format: str | None
    floor_price_fen: int
    bidding_price_fen: int
    advertiser_id: str
    user_tags: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _midnight_ms(yyyymmdd: str) -> int:
    day = dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    return (day - _EPOCH).days * _MS_PER_DAY


def parse_timestamp(text: str) -> int:
    """``yyyyMMddHHmmssSSS`` → epoch milliseconds, reading the wall-clock digits as UTC.

    The data set's clock is Beijing time (UTC+8); keeping the digits makes date partitions match
    the file names and hour-of-day match the local hour (what the AWS kit's features use).
    """
    if len(text) != 17 or not (text.isascii() and text.isdigit()):
        raise ValueError(f"expected yyyyMMddHHmmssSSS, got {text!r}")
    hour, minute, second = int(text[8:10]), int(text[10:12]), int(text[12:14])
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"time of day out of range in {text!r}")
    try:
        midnight = _midnight_ms(text[:8])
    except ValueError as exc:
        raise ValueError(f"not a calendar date in {text!r}") from exc
    return midnight + ((hour * 60 + minute) * 60 + second) * 1000 + int(text[14:])


def parse_bid_row(fields: Sequence[str], *, path: str = "<row>", line: int = 0) -> BidLogRow:
    """Parse one tab-split bid-log line; raises :class:`IPinYouFormatError` naming the column."""
    if len(fields) != len(BID_LOG_COLUMNS):
        column = min(len(fields), len(BID_LOG_COLUMNS)) + 1
        message = f"expected {len(BID_LOG_COLUMNS)} tab-separated columns, found {len(fields)}"
        raise IPinYouFormatError(path, line, column, message)
    # Unpacked into locals: this runs for each of a season's tens of millions of rows.
    (
        bid_id, timestamp, ipinyou_id, user_agent, ip, region, city, ad_exchange, domain, url,
        anonymous_url_id, slot_id, width, height, visibility, slot_format, floor, _creative_id,
        bidding_price, advertiser_id, user_tags,
    ) = fields  # fmt: skip
    missing = _MISSING
    if bid_id in missing:
        raise IPinYouFormatError(path, line, _BID["BidID"] + 1, "value is missing")
    if advertiser_id in missing:
        raise IPinYouFormatError(path, line, _BID["AdvertiserID"] + 1, "value is missing")
    try:
        ts_ms = parse_timestamp(timestamp)
    except ValueError as exc:
        raise IPinYouFormatError(path, line, _BID["Timestamp"] + 1, str(exc)) from exc
    return BidLogRow(
        bid_id,
        ts_ms,
        None if ipinyou_id in missing else ipinyou_id,
        None if user_agent in missing else user_agent,
        # The release masks the last octet as "*"; zeroing it is OpenRTB's own truncation form.
        None if ip in missing else ip.replace("*", "0"),
        None if region in missing else region,
        None if city in missing else city,
        None if ad_exchange in missing else ad_exchange,
        None if domain in missing else domain,
        None if url in missing else url,
        None if anonymous_url_id in missing else anonymous_url_id,
        None if slot_id in missing else slot_id,
        _count(width, "AdslotWidth", path, line),
        _count(height, "AdslotHeight", path, line),
        None if visibility in missing else visibility,
        None if slot_format in missing else slot_format,
        _count(floor, "AdslotFloorPrice", path, line),
        _count(bidding_price, "BiddingPrice", path, line),
        advertiser_id,
        () if user_tags in missing else tuple(tag for tag in user_tags.split(",") if tag),
    )


def _count(value: str, column: str, path: str, line: int) -> int:
    # isdigit alone accepts other scripts' digits; int() alone accepts "-1", " 1" and "1_0".
    if value.isascii() and value.isdigit():
        return int(value)
    message = f"expected a non-negative integer, got {value!r}"
    raise IPinYouFormatError(path, line, _BID[column] + 1, message)


def bid_request(row: BidLogRow) -> dict[str, Any]:
    """The OpenRTB 2.5 BidRequest an SSP would have sent for this row (absent fields omitted)."""
    imp: dict[str, Any] = {
        "id": "1",
        "banner": {"w": row.slot_width, "h": row.slot_height},
        # iPinYou prices are CNY fen per mille; OpenRTB floors are currency units per mille.
        "bidfloor": row.floor_price_fen / FEN_PER_CNY,
        "bidfloorcur": CURRENCY,
    }
    if row.slot_id is not None:
        imp["tagid"] = row.slot_id
    # Raw slot codes: their meaning differs between seasons, so no guess at banner.pos.
    slot_ext: dict[str, str] = {}
    if row.slot_visibility is not None:
        slot_ext["slot_visibility"] = row.slot_visibility
    if row.slot_format is not None:
        slot_ext["slot_format"] = row.slot_format
    if slot_ext:
        imp["ext"] = {"ipinyou": slot_ext}
    site: dict[str, Any] = {}
    if row.domain is not None:
        site["domain"] = row.domain
    if row.url is not None:
        site["page"] = row.url
    if row.anonymous_url_id is not None:
        site["ext"] = {"ipinyou": {"anonymous_url_id": row.anonymous_url_id}}
    device: dict[str, Any] = {}
    if row.user_agent is not None:
        device["ua"] = row.user_agent
    if row.ip is not None:
        device["ip"] = row.ip
    geo: dict[str, str] = {}
    if row.region is not None:
        geo["region"] = row.region
    if row.city is not None:
        geo["city"] = row.city
    if geo:
        device["geo"] = geo
    user: dict[str, Any] = {}
    if row.ipinyou_id is not None:
        user["id"] = row.ipinyou_id
    if row.user_tags:
        user["data"] = [{"name": "ipinyou", "segment": [{"id": tag} for tag in row.user_tags]}]
    request: dict[str, Any] = {
        "id": row.bid_id,
        "at": 2,  # the exchanges in the data set ran second-price auctions
        "cur": [CURRENCY],
        "imp": [imp],
        "site": site,  # iPinYou is web display inventory: always a site, never an app
        "device": device,
    }
    if user:
        request["user"] = user
    if row.ad_exchange is not None:
        request["ext"] = {"ipinyou": {"adexchange": row.ad_exchange}}
    return request


_encoder = msgspec.json.Encoder()


def bid_request_json(row: BidLogRow) -> str:
    return _encoder.encode(bid_request(row)).decode()


def impression_key(bid_id: str, advertiser_id: str) -> int:
    """The in-process hash that joins a bid row to its impression (Python's string hash is
    64-bit SipHash: ~1e-4 expected false matches over a whole season, and 8 bytes per key)."""
    return hash(f"{bid_id}\t{advertiser_id}")


class _Lines:
    """Non-blank, tab-split lines of one file with 1-based line numbers, counting as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        with open_binary(self.path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                # Binary mode splits on b"\n" only; a stray "\r" inside a user agent stays put.
                text = raw.rstrip(b"\r\n")
                if not text.strip():
                    continue
                self.count += 1
                yield line_no, text.decode("utf-8", errors="replace").split("\t")


def sniff_kind(path: Path) -> Literal["bid", "event"] | None:
    """``"bid"`` (21 columns) or ``"event"`` (24: impression/click/conversion) from the first
    well-formed lines; None for an empty file. File names are not trusted."""
    first: tuple[int, int] | None = None
    for seen, (line_no, fields) in enumerate(_Lines(path)):
        if len(fields) == len(BID_LOG_COLUMNS):
            return "bid"
        if len(fields) == len(EVENT_LOG_COLUMNS):
            return "event"
        first = first or (line_no, len(fields))
        if seen + 1 >= _SNIFF_LINES:
            break
    if first is None:
        return None
    raise IPinYouFormatError(
        str(path),
        first[0],
        None,
        f"expected {len(BID_LOG_COLUMNS)} (bid log) or {len(EVENT_LOG_COLUMNS)} "
        f"(impression log) tab-separated columns, found {first[1]}; season 1 is not supported",
    )


def _check_event_row(fields: list[str], path: str, line: int) -> None:
    if len(fields) != len(EVENT_LOG_COLUMNS):
        column = min(len(fields), len(EVENT_LOG_COLUMNS)) + 1
        message = f"expected {len(EVENT_LOG_COLUMNS)} tab-separated columns, found {len(fields)}"
        raise IPinYouFormatError(path, line, column, message, event=True)
    for name in ("BidID", "AdvertiserID"):
        if fields[_EVENT[name]] in _MISSING:
            raise IPinYouFormatError(path, line, _EVENT[name] + 1, "value is missing", event=True)
    if fields[_EVENT["LogType"]] not in _LOG_TYPES:
        message = f"expected 1, 2 or 3, got {fields[_EVENT['LogType']]!r}"
        raise IPinYouFormatError(path, line, _EVENT["LogType"] + 1, message, event=True)


class _BatchBuilder:
    """Collects bid rows into one schema batch; adjacent rows with the same BidID become one
    request with one partner per advertiser."""

    def __init__(self, impression_keys: np.ndarray) -> None:
        self._impressions = impression_keys
        self._reset()

    def _reset(self) -> None:
        self.ts: list[int] = []
        self.ids: list[str] = []
        self.requests: list[str] = []
        self.offsets = [0]
        self.partners: list[str] = []
        self.prices_fen: list[int] = []
        self.keys: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def continues_last(self, row: BidLogRow) -> bool:
        return bool(self.ids) and self.ids[-1] == row.bid_id

    def add(self, row: BidLogRow) -> None:
        if self.continues_last(row):
            if row.advertiser_id in self.partners[self.offsets[-2] :]:
                return  # a second creative of the same advertiser: still one partner
        else:
            self.ts.append(row.ts_ms)
            self.ids.append(row.bid_id)
            self.requests.append(bid_request_json(row))
            self.offsets.append(self.offsets[-1])
        self.partners.append(row.advertiser_id)
        self.prices_fen.append(row.bidding_price_fen)
        self.keys.append(impression_key(row.bid_id, row.advertiser_id))
        self.offsets[-1] += 1

    def build(self) -> pa.RecordBatch:
        keys = np.array(self.keys, dtype=np.int64)
        won = _contains(self._impressions, keys)
        prices = np.where(won, np.array(self.prices_fen, dtype=np.float64) / FEN_PER_CNY, 0.0)
        batch = auction_batch(
            np.array(self.ts, dtype=np.int64),
            self.ids,
            self.requests,
            np.array(self.offsets, dtype=np.int32),
            self.partners,
            won,
            prices,
        )
        self._reset()
        return batch


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=np.bool_)
    index = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    found: np.ndarray = sorted_keys[index] == keys
    return found


@dataclass(slots=True)
class _Counts:
    lines: int = 0
    skipped: int = 0
    impressions: int = 0


def _impression_keys(
    paths: Sequence[Path], counts: _Counts, *, skip_bad: bool, progress: bool
) -> np.ndarray:
    keys = array("q")
    with tqdm(unit=" lines", desc="impression logs", disable=not progress) as bar:
        for path in paths:
            lines = _Lines(path)
            for line_no, fields in lines:
                try:
                    _check_event_row(fields, str(path), line_no)
                except IPinYouFormatError:
                    if not skip_bad:
                        raise
                    counts.skipped += 1
                    continue
                if fields[_EVENT["LogType"]] == IMPRESSION_LOG_TYPE:
                    keys.append(
                        impression_key(fields[_EVENT["BidID"]], fields[_EVENT["AdvertiserID"]])
                    )
            counts.lines += lines.count
            bar.update(lines.count)
    counts.impressions = len(keys)
    return np.unique(np.frombuffer(keys, dtype=np.int64)) if keys else np.empty(0, dtype=np.int64)


def import_ipinyou(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    chunk_rows: int = 50_000,
    progress: bool = False,
) -> ImportSummary:
    """Convert iPinYou bid logs, labelled by the impression logs among ``paths``, into Parquet
    auction logs under ``out_dir`` (one record per bid request).

    ``paths`` mixes bid logs and impression logs in any order (plain, ``.gz``, ``.bz2`` or ``.xz``);
    the kind of each file comes from its column count. Click and conversion logs may be passed
    too and are ignored. A malformed line raises :class:`IPinYouFormatError` (a
    :class:`LogFormatError`) naming file, line and column, unless ``skip_bad`` counts and skips it.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    files = [Path(path) for path in paths]
    if not files:
        raise LogFormatError("paths", "no input files given")
    kinds = {path: sniff_kind(path) for path in files}
    bid_files = [path for path in files if kinds[path] == "bid"]
    event_files = [path for path in files if kinds[path] == "event"]
    if not bid_files:
        raise LogFormatError("paths", "no iPinYou bid log (21 columns) among the inputs")
    if not event_files:
        # Without them every bid would be labelled lost: a useless training set, made silently.
        raise LogFormatError("paths", "no iPinYou impression log (24 columns) among the inputs")

    counts = _Counts()
    impressions = _impression_keys(event_files, counts, skip_bad=skip_bad, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tally = BatchTally()
    builder = _BatchBuilder(impressions)
    with (
        AuctionLogWriter(out) as writer,
        tqdm(unit=" requests", desc="bid logs", disable=not progress) as bar,
    ):

        def flush() -> None:
            batch = builder.build()
            writer.write(batch)
            tally.add(batch)
            bar.update(batch.num_rows)

        for path in bid_files:
            lines = _Lines(path)
            for line_no, fields in lines:
                try:
                    row = parse_bid_row(fields, path=str(path), line=line_no)
                except IPinYouFormatError:
                    if not skip_bad:
                        raise
                    counts.skipped += 1
                    continue
                # Only cut a chunk between requests, so adjacent duplicates still merge.
                if len(builder) >= chunk_rows and not builder.continues_last(row):
                    flush()
                builder.add(row)
            counts.lines += lines.count
        if len(builder):
            flush()
    return ImportSummary(
        source="ipinyou",
        out_dir=str(out),
        files=tuple(str(path) for path in files),
        input_lines=counts.lines,
        skipped_lines=counts.skipped,
        records=tally.records,
        outcomes=tally.outcomes,
        bids=tally.bids,
        days=tally.days(),
        impressions=counts.impressions,
    )

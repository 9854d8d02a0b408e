"""The auction-log schema, its Parquet writer (partitioned by date) and readers.

One record per bid request:

- ``ts``: when the request was received (UTC, milliseconds);
- ``request_id``: the OpenRTB ``BidRequest.id``;
- ``request``: the BidRequest as UTF-8 JSON text, exactly as the SSP built it;
- ``partners``: one entry per candidate partner the request was (or would have been) sent to:
  ``partner`` id, ``bid`` (the partner answered with a seatbid whose price > 0), ``price`` (CPM,
  0 when no bid) and ``oracle_p`` (the true bid probability; synthetic data only, null otherwise;
  training never reads it).

Files live under ``<root>/date=YYYY-MM-DD/part-*.parquet`` (Hive-style partitions) so a reader can
pick days without opening files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PARTNER_OUTCOME_TYPE = pa.struct(
    [
        pa.field("partner", pa.string(), nullable=False),
        pa.field("bid", pa.bool_(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("oracle_p", pa.float64(), nullable=True),
    ]
)

LOG_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("request", pa.string(), nullable=False),
        pa.field("partners", pa.list_(PARTNER_OUTCOME_TYPE), nullable=False),
    ]
)

_MS_PER_DAY = 86_400_000


class LogFormatError(ValueError):
    """An auction-log file or record does not follow the schema; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class PartnerOutcome:
    """What one candidate partner did with one bid request."""

    partner: str
    bid: bool
    price: float = 0.0
    oracle_p: float | None = None


def auction_batch(
    ts_ms: np.ndarray,
    request_ids: Sequence[str],
    requests: Sequence[str],
    partner_offsets: np.ndarray,
    partners: Sequence[str] | pa.Array,
    bids: np.ndarray,
    prices: np.ndarray,
    oracle_p: np.ndarray | None = None,
) -> pa.RecordBatch:
    """Build a log batch from columns (the fast path for generators and importers).

    ``partner_offsets`` has ``len(requests) + 1`` entries: request ``i``'s partners are rows
    ``partner_offsets[i]:partner_offsets[i + 1]`` of ``partners``, ``bids``, ``prices`` and
    ``oracle_p``.
    """
    n_outcomes = len(partners)
    oracle = (
        pa.nulls(n_outcomes, pa.float64())
        if oracle_p is None
        # NaN marks "no oracle" for a row (JSON-lines imports may mix both).
        else pa.array(np.asarray(oracle_p, dtype=np.float64), from_pandas=True)
    )
    outcomes = pa.StructArray.from_arrays(
        [
            pa.array(partners, pa.string()),
            pa.array(np.asarray(bids, dtype=np.bool_)),
            pa.array(np.asarray(prices, dtype=np.float64)),
            oracle,
        ],
        fields=list(PARTNER_OUTCOME_TYPE),
    )
    lists = pa.ListArray.from_arrays(
        pa.array(np.asarray(partner_offsets, dtype=np.int32)), outcomes
    )
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.asarray(ts_ms, dtype=np.int64)).cast(pa.timestamp("ms", tz="UTC")),
            pa.array(request_ids, pa.string()),
            pa.array(requests, pa.string()),
            lists.cast(pa.list_(PARTNER_OUTCOME_TYPE)),
        ],
        schema=LOG_SCHEMA,
    )


class AuctionLogWriter:
    """Writes log batches as Parquet files partitioned by UTC date.

    Use as a context manager; each ``write`` splits the batch by day and appends to that day's
    open file, so a generator can stream millions of records with bounded memory.
    """

    def __init__(self, root: str | os.PathLike[str], *, part_name: str = "part-00000") -> None:
        self.root = Path(root)
        self.part_name = part_name
        self._writers: dict[str, pq.ParquetWriter] = {}
        self.records_written = 0

    def __enter__(self) -> AuctionLogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if not table.schema.equals(LOG_SCHEMA):
            table = table.cast(LOG_SCHEMA)
        days = table.column("ts").cast(pa.int64()).to_numpy() // _MS_PER_DAY
        for day in np.unique(days):
            part = table.filter(pa.array(days == day))
            self._writer_for(int(day)).write_table(part)
        self.records_written += table.num_rows

    def _writer_for(self, day: int) -> pq.ParquetWriter:
        date = (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
        writer = self._writers.get(date)
        if writer is None:
            folder = self.root / f"date={date}"
            folder.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(
                folder / f"{self.part_name}.parquet", LOG_SCHEMA, compression="zstd"
            )
            self._writers[date] = writer
        return writer

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def log_files(root: str | os.PathLike[str]) -> list[Path]:
    """The Parquet files of a log directory, oldest partition first."""
    base = Path(root)
    if not base.is_dir():
        raise LogFormatError("logs", f"{base} is not a directory")
    files = sorted(base.glob("date=*/*.parquet")) or sorted(base.glob("*.parquet"))
    if not files:
        raise LogFormatError("logs", f"no Parquet log files under {base}")
    return files


def logged_partners(root: str | os.PathLike[str]) -> set[str]:
    """Every partner named in the logs, from the one leaf column that holds the names (a
    fraction of a second for days of logs, where reading whole records takes minutes)."""
    names: set[str] = set()
    for path in log_files(root):
        table = pq.ParquetFile(path).read(columns=["partners.list.element.partner"])
        entries = pc.list_flatten(table.column("partners")).combine_chunks()
        names.update(pc.unique(entries.field("partner")).to_pylist())
    return names


def iter_log_batches(
    root: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """Stream record batches from every log file, oldest partition first."""
    wanted = list(columns) if columns is not None else LOG_SCHEMA.names
    for path in log_files(root):
        parquet = pq.ParquetFile(path)
        missing = [name for name in wanted if name not in parquet.schema_arrow.names]
        if missing:
            raise LogFormatError(missing[0], f"column missing from {path}")
        yield from parquet.iter_batches(batch_size=batch_size, columns=wanted)


def _parse_ts(value: object, line_no: int) -> int:
    if isinstance(value, bool):
        raise LogFormatError(f"line {line_no}: ts", "expected epoch milliseconds or ISO-8601")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise LogFormatError(f"line {line_no}: ts", f"not ISO-8601: {value!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return int(parsed.timestamp() * 1000)
    raise LogFormatError(f"line {line_no}: ts", "expected epoch milliseconds or ISO-8601")


def read_jsonl(
    lines: Iterable[str | bytes], *, batch_size: int = 10_000
) -> Iterator[pa.RecordBatch]:
    """Read JSON-lines auction logs into schema batches.

    Each line: ``{"ts": <epoch ms | ISO-8601>, "request": <BidRequest object or JSON string>,
    "partners": [{"partner": str, "bid": bool, "price": float, "oracle_p": float?}, ...]}``.
    """
    ts: list[int] = []
    ids: list[str] = []
    requests: list[str] = []
    offsets = [0]
    names: list[str] = []
    bids: list[bool] = []
    prices: list[float] = []
    oracle: list[float | None] = []

    def flush() -> pa.RecordBatch:
        batch = auction_batch(
            np.array(ts, dtype=np.int64),
            ids,
            requests,
            np.array(offsets, dtype=np.int32),
            names,
            np.array(bids, dtype=np.bool_),
            np.array(prices, dtype=np.float64),
            None
            if all(p is None for p in oracle)
            else np.array([np.nan if p is None else p for p in oracle], dtype=np.float64),
        )
        for column in (ts, ids, requests, names, bids, prices, oracle):
            column.clear()
        del offsets[1:]
        return batch

    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise LogFormatError(f"line {line_no}", f"not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise LogFormatError(f"line {line_no}", "expected a JSON object")
        request = record.get("request")
        if isinstance(request, dict):
            request_text = json.dumps(request, separators=(",", ":"))
        elif isinstance(request, str):
            request_text = request
            try:
                request = json.loads(request)
            except ValueError as exc:
                raise LogFormatError(f"line {line_no}: request", "not a JSON BidRequest") from exc
        else:
            raise LogFormatError(f"line {line_no}: request", "expected a BidRequest object")
        request_id = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request_id, str):
            raise LogFormatError(f"line {line_no}: request.id", "expected a string")
        partner_list = record.get("partners")
        if not isinstance(partner_list, list):
            raise LogFormatError(f"line {line_no}: partners", "expected a list")
        for index, outcome in enumerate(partner_list):
            where = f"line {line_no}: partners[{index}]"
            if not isinstance(outcome, dict) or not isinstance(outcome.get("partner"), str):
                raise LogFormatError(f"{where}.partner", "expected a string")
            price = outcome.get("price", 0.0)
            if not isinstance(price, int | float) or isinstance(price, bool):
                raise LogFormatError(f"{where}.price", "expected a number")
            bid = outcome.get("bid", price > 0)
            if not isinstance(bid, bool):
                raise LogFormatError(f"{where}.bid", "expected true or false")
            oracle_p = outcome.get("oracle_p")
            if oracle_p is not None and (
                isinstance(oracle_p, bool) or not isinstance(oracle_p, int | float)
            ):
                raise LogFormatError(f"{where}.oracle_p", "expected a number or null")
            names.append(outcome["partner"])
            bids.append(bid)
            prices.append(float(price))
            oracle.append(None if oracle_p is None else float(oracle_p))
        ts.append(_parse_ts(record.get("ts"), line_no))
        ids.append(request_id)
        requests.append(request_text)
        offsets.append(len(names))
        if len(ids) >= batch_size:
            yield flush()
    if ids:
        yield flush()

"""The auction-log schema, its Parquet writer (partitioned by date) and readers.

One record per bid request:

- ``ts``: when the request was received (UTC, milliseconds);
- ``request_id``: the OpenRTB ``BidRequest.id``;
- ``request``: the BidRequest as UTF-8 JSON text, exactly as the SSP built it;
- ``partners``: one entry per candidate partner the request was (or would have been) sent to:
  ``partner`` id, ``bid`` (the partner answered with a seatbid whose price > 0), ``price`` (CPM,
  0 when no bid), ``oracle_p`` (the true bid probability; synthetic data only, null otherwise;
  training never reads it), ``sent`` (the partner was called), ``propensity`` (the probability
  the serving policy called it, in (0, 1]) and ``model_version`` (the serving model's version,
  null when none decided);
- ``control``: the request was in the control group (every candidate sent, nothing filtered);
- ``sample_rate``: the probability that this request was logged at all, in (0, 1]: a server's
  decision log keeps a sampled share of requests (1 for logs that keep every request). Training
  weighs a record by the inverse of its rate relative to the highest rate in the window, so
  files logged at different rates mix without bias.

An unsent entry (``sent`` false) has no label: its ``bid`` is false and its ``price`` 0 by rule,
and no reader may take it for a no-bid. Files written before ``sent``, ``propensity``,
``model_version``, ``control`` and ``sample_rate`` existed stay valid: every reader fills them
in as ``sent = true``, ``propensity = 1``, ``model_version = null``, ``control = false`` and
``sample_rate = 1`` (every partner was called, every request logged), so a directory may mix
old and new files.

Files live under ``<root>/date=YYYY-MM-DD/part-*.parquet`` (Hive-style partitions) so a reader can
pick days without opening files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
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
        pa.field("sent", pa.bool_(), nullable=False),
        pa.field("propensity", pa.float64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=True),
    ]
)

LOG_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("request", pa.string(), nullable=False),
        pa.field("partners", pa.list_(PARTNER_OUTCOME_TYPE), nullable=False),
        pa.field("control", pa.bool_(), nullable=False),
        pa.field("sample_rate", pa.float64(), nullable=False),
    ]
)

_PARTNERS_TYPE = LOG_SCHEMA.field("partners").type

# What a log written before a column existed holds in its place: every partner was called (by
# no model), and no request was in a control group.
_PARTNER_DEFAULTS: dict[str, Callable[[int], pa.Array]] = {
    "sent": lambda n: pa.array(np.ones(n, dtype=np.bool_)),
    "propensity": lambda n: pa.array(np.ones(n, dtype=np.float64)),
    "model_version": lambda n: pa.nulls(n, pa.string()),
}
_RECORD_DEFAULTS: dict[str, Callable[[int], pa.Array]] = {
    "control": lambda n: pa.array(np.zeros(n, dtype=np.bool_)),
    "sample_rate": lambda n: pa.array(np.ones(n, dtype=np.float64)),
}

_MS_PER_DAY = 86_400_000


class LogFormatError(ValueError):
    """An auction-log file or record does not follow the schema; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class PartnerOutcome:
    """What one candidate partner did with one bid request.

    ``sent`` false means the partner was not called: the entry has no label, and ``bid`` must be
    false and ``price`` 0. ``propensity`` is the probability the serving policy called it.
    """

    partner: str
    bid: bool
    price: float = 0.0
    oracle_p: float | None = None
    sent: bool = True
    propensity: float = 1.0
    model_version: str | None = None


def auction_batch(
    ts_ms: np.ndarray,
    request_ids: Sequence[str],
    requests: Sequence[str],
    partner_offsets: np.ndarray,
    partners: Sequence[str] | pa.Array,
    bids: np.ndarray,
    prices: np.ndarray,
    oracle_p: np.ndarray | None = None,
    *,
    sent: np.ndarray | None = None,
    propensity: np.ndarray | None = None,
    model_version: Sequence[str | None] | pa.Array | None = None,
    control: np.ndarray | None = None,
    sample_rate: np.ndarray | None = None,
) -> pa.RecordBatch:
    """Build a log batch from columns (the fast path for generators and importers).

    ``partner_offsets`` has ``len(requests) + 1`` entries: request ``i``'s partners are rows
    ``partner_offsets[i]:partner_offsets[i + 1]`` of ``partners``, ``bids``, ``prices``,
    ``oracle_p``, ``sent``, ``propensity`` and ``model_version``; ``control`` and
    ``sample_rate`` have one entry per request. Left out, the new columns take the old logs'
    values: every partner sent with propensity 1 by no model, no request in the control group,
    every request logged. Raises :class:`LogFormatError`
    when the entries break the rules :func:`validate_batch` checks.
    """
    n_outcomes = len(partners)
    n_requests = len(requests)
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
            _PARTNER_DEFAULTS["sent"](n_outcomes)
            if sent is None
            else pa.array(np.asarray(sent, dtype=np.bool_)),
            _PARTNER_DEFAULTS["propensity"](n_outcomes)
            if propensity is None
            else pa.array(np.asarray(propensity, dtype=np.float64)),
            _PARTNER_DEFAULTS["model_version"](n_outcomes)
            if model_version is None
            else pa.array(model_version, pa.string()),
        ],
        fields=list(PARTNER_OUTCOME_TYPE),
    )
    lists = pa.ListArray.from_arrays(
        pa.array(np.asarray(partner_offsets, dtype=np.int32)), outcomes
    )
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(np.asarray(ts_ms, dtype=np.int64)).cast(pa.timestamp("ms", tz="UTC")),
            pa.array(request_ids, pa.string()),
            pa.array(requests, pa.string()),
            lists.cast(_PARTNERS_TYPE),
            _RECORD_DEFAULTS["control"](n_requests)
            if control is None
            else pa.array(np.asarray(control, dtype=np.bool_)),
            _RECORD_DEFAULTS["sample_rate"](n_requests)
            if sample_rate is None
            else pa.array(np.asarray(sample_rate, dtype=np.float64)),
        ],
        schema=LOG_SCHEMA,
    )
    validate_batch(batch)
    return batch


def _conform_partners(lists: pa.Array, where: str) -> pa.Array:
    """A ``partners`` column as :data:`LOG_SCHEMA` types it: fields a file written before they
    existed lacks get the old logs' values; fields it does not know are dropped."""
    if lists.type == _PARTNERS_TYPE:
        return lists
    if not pa.types.is_list(lists.type) or not pa.types.is_struct(lists.type.value_type):
        raise LogFormatError("partners", f"{where}: expected a list of structs, not {lists.type}")
    values = lists.values
    names = [field.name for field in lists.type.value_type]
    children = dict(zip(names, values.flatten(), strict=True))
    arrays = []
    for field in PARTNER_OUTCOME_TYPE:
        child = children.get(field.name)
        if child is None:
            default = _PARTNER_DEFAULTS.get(field.name)
            if default is None:
                raise LogFormatError(f"partners.{field.name}", f"{where}: field missing")
            child = default(len(values))
        elif child.type != field.type:
            child = child.cast(field.type)
        arrays.append(child)
    outcomes = pa.StructArray.from_arrays(arrays, fields=list(PARTNER_OUTCOME_TYPE))
    return pa.ListArray.from_arrays(lists.offsets, outcomes).cast(_PARTNERS_TYPE)


def conform_batch(
    batch: pa.RecordBatch, columns: Sequence[str], *, where: str = "batch", first_row: int = 0
) -> pa.RecordBatch:
    """``batch`` (read from any version of the log schema) with ``columns`` typed as
    :data:`LOG_SCHEMA` types them: columns and partner fields that the file predates get the
    old logs' values (``sent`` true, ``propensity`` 1, ``model_version`` null, ``control``
    false). The result is validated (:func:`validate_batch`); ``where`` and ``first_row`` (the
    batch's first record in its file) place errors."""
    present = set(batch.schema.names)
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for name in columns:
        if name in present:
            column = batch.column(name)
            if name == "partners":
                column = _conform_partners(column, where)
            elif name in LOG_SCHEMA.names and column.type != LOG_SCHEMA.field(name).type:
                column = column.cast(LOG_SCHEMA.field(name).type)
        elif name in _RECORD_DEFAULTS:
            column = _RECORD_DEFAULTS[name](batch.num_rows)
        else:
            raise LogFormatError(name, f"column missing from {where}")
        arrays.append(column)
        fields.append(
            LOG_SCHEMA.field(name) if name in LOG_SCHEMA.names else batch.schema.field(name)
        )
    conformed = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
    validate_batch(conformed, where=where, first_row=first_row)
    return conformed


def validate_batch(batch: pa.RecordBatch, *, where: str = "batch", first_row: int = 0) -> None:
    """Check the rules the Arrow types cannot express, in whichever of ``partners``,
    ``control`` and ``sample_rate`` the batch holds. Raises :class:`LogFormatError` naming the
    field: ``partners.sent`` or ``partners.propensity`` null, ``partners.propensity`` outside
    (0, 1], ``partners.bid`` true or ``partners.price`` not 0 on an unsent entry, ``control``
    null, ``sample_rate`` outside (0, 1]."""
    names = batch.schema.names
    if "control" in names and batch.column("control").null_count:
        row = first_row + _first(pc.is_null(batch.column("control")))
        raise LogFormatError("control", f"{where}: record {row}: null")
    if "sample_rate" in names:
        rate = batch.column("sample_rate").to_numpy(zero_copy_only=False).astype(np.float64)
        bad_rate = ~((rate > 0) & (rate <= 1))  # NaN and null (NaN here) included
        if bad_rate.any():
            row = first_row + int(np.flatnonzero(bad_rate)[0])
            raise LogFormatError(
                "sample_rate", f"{where}: record {row}: must be in (0, 1], got {rate[bad_rate][0]}"
            )
    if "partners" not in names:
        return
    lists = batch.column("partners")
    outcomes = pc.list_flatten(lists)

    def fail(field: str, bad: np.ndarray, message: str) -> None:
        entry = int(np.flatnonzero(bad)[0])
        parent = int(pc.list_parent_indices(lists)[entry].as_py())
        partner = outcomes.field("partner")[entry].as_py()
        raise LogFormatError(
            f"partners.{field}",
            f"{where}: record {first_row + parent}, partner {partner!r}: {message}",
        )

    sent_column = outcomes.field("sent")
    if sent_column.null_count:
        fail("sent", pc.is_null(sent_column).to_numpy(zero_copy_only=False), "null")
    propensity = outcomes.field("propensity").to_numpy(zero_copy_only=False).astype(np.float64)
    unsent = ~sent_column.to_numpy(zero_copy_only=False).astype(np.bool_)
    # 0 is a policy that never calls: possible for an unsent entry (no exploration), never for a
    # sent one. NaN (and null) are out of range.
    out_of_range = ~((propensity >= 0) & (propensity <= 1)) | ((propensity == 0) & ~unsent)
    if out_of_range.any():
        value = propensity[out_of_range][0]
        fail(
            "propensity",
            out_of_range,
            f"must be in (0, 1] (0 only when not sent), got {value}",
        )
    if not unsent.any():
        return
    bids = outcomes.field("bid").to_numpy(zero_copy_only=False).astype(np.bool_)
    if (unsent & bids).any():
        fail("bid", unsent & bids, "an unsent entry (sent=false) has no label: bid must be false")
    prices = outcomes.field("price").to_numpy(zero_copy_only=False).astype(np.float64)
    if (unsent & (prices != 0)).any():
        fail("price", unsent & (prices != 0), "an unsent entry (sent=false) must have price 0")


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


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
        if table.schema.equals(LOG_SCHEMA):
            for part in table.to_batches():
                validate_batch(part, where="write")
        else:
            # An older schema's batch (or looser types) gets the missing columns' defaults.
            table = pa.Table.from_batches(
                [
                    conform_batch(part, LOG_SCHEMA.names, where="write")
                    for part in table.to_batches()
                ],
                schema=LOG_SCHEMA,
            )
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
    """Stream record batches from every log file, oldest partition first.

    Every batch has :data:`LOG_SCHEMA`'s types for ``columns`` (all of them by default), whatever
    version of the schema its file was written with: what an older file lacks is filled in as
    :func:`conform_batch` says, so one directory may mix old and new files. Raises
    :class:`LogFormatError` for a column no version had, or an entry breaking the rules of
    :func:`validate_batch`.
    """
    wanted = list(columns) if columns is not None else LOG_SCHEMA.names
    for path in log_files(root):
        parquet = pq.ParquetFile(path)
        present = parquet.schema_arrow.names
        missing = [name for name in wanted if name not in present and name not in _RECORD_DEFAULTS]
        if missing:
            raise LogFormatError(missing[0], f"column missing from {path}")
        # Only defaulted columns wanted: read the first column, to know how many rows there are.
        read = [name for name in wanted if name in present] or present[:1]
        first_row = 0
        for batch in parquet.iter_batches(batch_size=batch_size, columns=read):
            yield conform_batch(batch, wanted, where=str(path), first_row=first_row)
            first_row += batch.num_rows


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


def _optional_bool(record: dict[str, object], key: str, default: bool, where: str) -> bool:
    value = record.get(key, default)
    if not isinstance(value, bool):
        raise LogFormatError(f"{where}{key}", "expected true or false")
    return value


def read_jsonl(
    lines: Iterable[str | bytes], *, batch_size: int = 10_000
) -> Iterator[pa.RecordBatch]:
    """Read JSON-lines auction logs into schema batches.

    Each line: ``{"ts": <epoch ms | ISO-8601>, "request": <BidRequest object or JSON string>,
    "control": bool?, "sample_rate": float?, "partners": [{"partner": str, "bid": bool,
    "price": float, "oracle_p": float?, "sent": bool?, "propensity": float?,
    "model_version": str?}, ...]}``. Absent, ``sent`` is true, ``propensity`` 1,
    ``model_version`` null, ``control`` false and ``sample_rate`` 1; an
    unsent entry's ``bid`` defaults to false and its ``price`` to 0, and must stay so.
    """
    ts: list[int] = []
    ids: list[str] = []
    requests: list[str] = []
    controls: list[bool] = []
    rates: list[float] = []
    offsets = [0]
    names: list[str] = []
    bids: list[bool] = []
    prices: list[float] = []
    oracle: list[float | None] = []
    sent: list[bool] = []
    propensities: list[float] = []
    versions: list[str | None] = []

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
            sent=np.array(sent, dtype=np.bool_),
            propensity=np.array(propensities, dtype=np.float64),
            model_version=versions,
            control=np.array(controls, dtype=np.bool_),
            sample_rate=np.array(rates, dtype=np.float64),
        )
        for column in (
            ts,
            ids,
            requests,
            controls,
            rates,
            names,
            bids,
            prices,
            oracle,
            sent,
            propensities,
            versions,
        ):
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
        control = _optional_bool(record, "control", False, f"line {line_no}: ")
        rate = record.get("sample_rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise LogFormatError(f"line {line_no}: sample_rate", "expected a number in (0, 1]")
        partner_list = record.get("partners")
        if not isinstance(partner_list, list):
            raise LogFormatError(f"line {line_no}: partners", "expected a list")
        for index, outcome in enumerate(partner_list):
            where = f"line {line_no}: partners[{index}]"
            if not isinstance(outcome, dict) or not isinstance(outcome.get("partner"), str):
                raise LogFormatError(f"{where}.partner", "expected a string")
            was_sent = _optional_bool(outcome, "sent", True, f"{where}.")
            price = outcome.get("price", 0.0)
            if not isinstance(price, int | float) or isinstance(price, bool):
                raise LogFormatError(f"{where}.price", "expected a number")
            bid = outcome.get("bid", was_sent and price > 0)
            if not isinstance(bid, bool):
                raise LogFormatError(f"{where}.bid", "expected true or false")
            if not was_sent and bid:
                raise LogFormatError(
                    f"{where}.bid", "an unsent entry (sent=false) has no label: bid must be false"
                )
            if not was_sent and price != 0:
                raise LogFormatError(
                    f"{where}.price", "an unsent entry (sent=false) must have price 0"
                )
            oracle_p = outcome.get("oracle_p")
            if oracle_p is not None and (
                isinstance(oracle_p, bool) or not isinstance(oracle_p, int | float)
            ):
                raise LogFormatError(f"{where}.oracle_p", "expected a number or null")
            propensity = outcome.get("propensity", 1.0)
            if isinstance(propensity, bool) or not isinstance(propensity, int | float):
                raise LogFormatError(f"{where}.propensity", "expected a number in (0, 1]")
            if not 0 <= propensity <= 1 or (propensity == 0 and was_sent):
                raise LogFormatError(
                    f"{where}.propensity",
                    f"must be in (0, 1] (0 only when not sent), got {propensity}",
                )
            version = outcome.get("model_version")
            if version is not None and not isinstance(version, str):
                raise LogFormatError(f"{where}.model_version", "expected a string or null")
            names.append(outcome["partner"])
            bids.append(bid)
            prices.append(float(price))
            oracle.append(None if oracle_p is None else float(oracle_p))
            sent.append(was_sent)
            propensities.append(float(propensity))
            versions.append(version)
        ts.append(_parse_ts(record.get("ts"), line_no))
        ids.append(request_id)
        requests.append(request_text)
        controls.append(control)
        rates.append(float(rate))
        offsets.append(len(names))
        if len(ids) >= batch_size:
            yield flush()
    if ids:
        yield flush()

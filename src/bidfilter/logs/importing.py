"""Shared pieces of the log importers: opening (compressed) inputs, the summary, JSON-lines import.

An importer reads foreign files and writes the auction-log schema through
:class:`~bidfilter.logs.schema.AuctionLogWriter`; each returns an :class:`ImportSummary` that the
CLI prints as JSON.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from bidfilter.logs.schema import AuctionLogWriter, LogFormatError, read_jsonl

_MS_PER_DAY = 86_400_000
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import read and wrote."""

    source: str
    """Input format: ``"ipinyou"`` or ``"jsonl"``."""
    out_dir: str
    files: tuple[str, ...]
    """Every input file, in the order given."""
    input_lines: int
    """Non-blank lines read from all inputs (for iPinYou: bid and impression logs)."""
    skipped_lines: int
    """Malformed lines skipped (only with ``skip_bad=True``)."""
    records: int
    """Bid requests written."""
    outcomes: int
    """Partner outcomes written (one per request and candidate partner)."""
    bids: int
    """Outcomes with ``bid = true``."""
    days: tuple[str, ...]
    """The ``date=`` partitions written, sorted."""
    impressions: int = 0
    """iPinYou only: impression-log rows used as bid labels."""

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "out_dir": self.out_dir,
            "files": list(self.files),
            "input_lines": self.input_lines,
            "skipped_lines": self.skipped_lines,
            "records": self.records,
            "outcomes": self.outcomes,
            "bids": self.bids,
            "days": list(self.days),
            "impressions": self.impressions,
        }


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open a log file for reading bytes, decompressing ``.gz``, ``.bz2`` and ``.xz`` by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    return path.open("rb")


class BatchTally:
    """Counts what went through an :class:`AuctionLogWriter`, for the summary."""

    def __init__(self) -> None:
        self.records = 0
        self.outcomes = 0
        self.bids = 0
        self._days: set[int] = set()

    def add(self, batch: pa.RecordBatch) -> None:
        self.records += batch.num_rows
        outcomes = batch.column("partners").flatten()
        self.outcomes += len(outcomes)
        self.bids += int(np.count_nonzero(outcomes.field("bid").to_numpy(zero_copy_only=False)))
        ts = batch.column("ts").cast(pa.int64()).to_numpy()
        self._days.update(int(day) for day in np.unique(ts // _MS_PER_DAY))

    def days(self) -> tuple[str, ...]:
        return tuple(str(_EPOCH + np.timedelta64(day, "D")) for day in sorted(self._days))


class _CountingLines:
    """Iterates a binary file's lines and counts the non-blank ones."""

    def __init__(self, handle: io.BufferedIOBase) -> None:
        self._handle = handle
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._handle:
            if line.strip():
                self.count += 1
            yield line


def import_jsonl(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = False,
) -> ImportSummary:
    """Import JSON-lines auction logs (see ``docs/logs.md``) into Parquet under ``out_dir``.

    The import is strict: the first bad line raises :class:`LogFormatError` whose ``field``
    starts with the file name, then ``line N: <field>`` as :func:`read_jsonl` names it.
    """
    files = [Path(path) for path in paths]
    if not files:
        raise LogFormatError("paths", "no input files given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tally = BatchTally()
    input_lines = 0
    with (
        AuctionLogWriter(out) as writer,
        tqdm(unit=" records", disable=not progress, desc="import-jsonl") as bar,
    ):
        for path in files:
            with open_binary(path) as handle:
                lines = _CountingLines(handle)
                try:
                    for batch in read_jsonl(lines):
                        writer.write(batch)
                        tally.add(batch)
                        bar.update(batch.num_rows)
                except LogFormatError as exc:
                    # read_jsonl numbers lines per call; prefix the file so the user can find it.
                    raise LogFormatError(f"{path.name}: {exc.field}", exc.message) from exc
                input_lines += lines.count
    return ImportSummary(
        source="jsonl",
        out_dir=str(out),
        files=tuple(str(path) for path in files),
        input_lines=input_lines,
        skipped_lines=0,
        records=tally.records,
        outcomes=tally.outcomes,
        bids=tally.bids,
        days=tally.days(),
    )

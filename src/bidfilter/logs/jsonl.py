"""The JSON-lines importer: auction logs in the documented JSON-lines form (``docs/logs.md``),
plain or compressed, in; date-partitioned Parquet out."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from bidfilter.logs.compression import open_binary
from bidfilter.logs.import_summary import BatchTally, ImportSummary
from bidfilter.logs.schema import AuctionLogWriter, LogFormatError, read_jsonl


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

"""What an import read and wrote: the summary every importer returns, and the tally behind it.

An importer reads foreign files and writes the auction-log schema through
:class:`~bidfilter.logs.schema.AuctionLogWriter`; each returns an :class:`ImportSummary` that the
CLI prints as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

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

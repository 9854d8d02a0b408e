"""The server's decision log: sampled decisions waiting for their outcome, joined into records.

A server that decides for a request may *hold* it (a sampled share of requests): the request's
bytes, the decisions and their propensities. When the SSP reports the auction's outcome
(``report_outcomes``), the held decision is *joined* with it into one auction-log record (the
schema of ``schema.py``); unreported decisions expire after ``wait_s``. Joined records wait in
memory until the server's writer takes them (:meth:`DecisionLog.take`) and writes them to the
store as Parquet (:func:`encode_records`).

Memory is bounded by ``max_bytes``: held decisions and joined records not yet written count
against it, by the size of the request they carry. When the budget is spent (the store has been
failing, or the SSP reports too late) new decisions are not held, and that is counted: nothing
already accepted is ever evicted.

Pure bookkeeping: no clocks (``now`` is passed in), no I/O, no threads; the caller serialises
access (the worker's event loop).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bidfilter.logs.schema import LOG_SCHEMA, auction_batch
from bidfilter.thrift.types import AuctionOutcome, FilterResponse, PartnerOutcome

# What a held decision costs beyond its request's bytes (the entry, the decisions' objects):
# a rough figure, so that a flood of tiny requests cannot pass the budget either.
_OVERHEAD_BYTES = 256
_PER_DECISION_BYTES = 96
_MS_PER_DAY = 86_400_000


class Report(Enum):
    """What became of one reported outcome (``OutcomeReceipt`` counts them)."""

    ACCEPTED = "accepted"  # joined with its held decision: it will be written
    UNKNOWN = "unknown"  # no decision held under this id (not sampled, expired, elsewhere)
    DUPLICATE = "duplicate"  # its decision was already joined: the first report stands


@dataclass(frozen=True, slots=True)
class _Held:
    ts_ms: int
    expires: float
    request: bytes
    response: FilterResponse
    sample_rate: float
    size: int


@dataclass(frozen=True, slots=True)
class JoinedRecord:
    """One auction-log record: a held decision and the SSP's report of what happened."""

    ts_ms: int
    request_id: str
    request: bytes
    response: FilterResponse
    outcomes: Sequence[PartnerOutcome]
    sample_rate: float
    size: int


@dataclass(slots=True)
class DecisionLogCounts:
    """Cumulative counts, for metrics and logs."""

    held: int = 0
    not_held_full: int = 0  # sampled, but the memory budget was spent
    expired: int = 0
    accepted: int = 0
    unknown: int = 0
    duplicate: int = 0


class DecisionLog:
    """Held decisions by request id, and the joined records not yet written.

    ``share``: the probability a decided request is held (the record's ``sample_rate``);
    ``wait_s``: how long a held decision waits for its report; ``max_bytes``: the memory
    budget of held decisions and unwritten records together.
    """

    def __init__(self, share: float, wait_s: float, max_bytes: int) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.share = share
        self.wait_s = wait_s
        self.max_bytes = max_bytes
        self.bytes = 0
        self.counts = DecisionLogCounts()
        # Insertion order is arrival order, so expiry pops from the front.
        self._held: dict[str, _Held] = {}
        # Ids joined recently, to tell a repeated report from an unknown one (until they
        # would have expired).
        self._joined: dict[str, float] = {}
        self._records: list[JoinedRecord] = []

    def __len__(self) -> int:
        """Decisions held, waiting for their report."""
        return len(self._held)

    @property
    def pending_records(self) -> int:
        """Joined records not yet taken for writing."""
        return len(self._records)

    def hold(self, request: bytes, response: FilterResponse, ts_ms: int, now: float) -> bool:
        """Hold a decision for its report; ``False`` when the budget is spent (counted) or the
        id is already held (a retried request: the first decision stands)."""
        request_id = response.request_id
        if not request_id or request_id in self._held:
            return False
        size = len(request) + _OVERHEAD_BYTES + _PER_DECISION_BYTES * len(response.decisions)
        if self.bytes + size > self.max_bytes:
            self.counts.not_held_full += 1
            return False
        self._held[request_id] = _Held(
            ts_ms, now + self.wait_s, request, response, self.share, size
        )
        self.bytes += size
        self.counts.held += 1
        return True

    def report(self, outcome: AuctionOutcome, now: float) -> Report:
        """Join a reported outcome with its held decision."""
        held = self._held.pop(outcome.request_id, None)
        if held is None or held.expires < now:
            if held is not None:  # expired, not yet swept
                self.bytes -= held.size
                self.counts.expired += 1
            result = Report.DUPLICATE if outcome.request_id in self._joined else Report.UNKNOWN
        else:
            self._records.append(
                JoinedRecord(
                    held.ts_ms,
                    outcome.request_id,
                    held.request,
                    held.response,
                    outcome.partners,
                    held.sample_rate,
                    held.size,
                )
            )
            self._joined[outcome.request_id] = held.expires
            result = Report.ACCEPTED
        setattr(self.counts, result.value, getattr(self.counts, result.value) + 1)
        return result

    def expire(self, now: float) -> int:
        """Drop the decisions whose wait is over; how many."""
        dropped = 0
        while self._held:
            request_id, held = next(iter(self._held.items()))
            if held.expires >= now:
                break
            del self._held[request_id]
            self.bytes -= held.size
            dropped += 1
        while self._joined:
            request_id, expires = next(iter(self._joined.items()))
            if expires >= now:
                break
            del self._joined[request_id]
        self.counts.expired += dropped
        return dropped

    def take(self) -> list[JoinedRecord]:
        """The joined records to write now. Their memory stays counted until :meth:`written`
        (or :meth:`put_back` if writing failed)."""
        records, self._records = self._records, []
        return records

    def written(self, records: Sequence[JoinedRecord]) -> None:
        self.bytes -= sum(record.size for record in records)

    def put_back(self, records: Sequence[JoinedRecord]) -> None:
        """Records whose write failed: first in line for the next attempt."""
        self._records[:0] = records


def encode_records(records: Sequence[JoinedRecord]) -> dict[str, tuple[bytes, list[JoinedRecord]]]:
    """The records as zstd-compressed Parquet files of :data:`LOG_SCHEMA`, one per UTC date:
    ``YYYY-MM-DD`` → (the file's bytes, the records in it), for a log directory's partitions.

    Each decision becomes a partner entry. A partner the SSP called has its label (``bid``,
    ``price``) and, if the decision said to send it, the decision's propensity; called against
    the decision (the SSP overrode the filter), propensity 1: the SSP's own rule called it. A
    partner not called, or whose call timed out or failed (no answer, so no label), is an
    unsent entry with the decision's propensity. A partner the SSP called that was not a
    candidate gets an entry of its own, propensity 1 and no model version.
    """
    by_day: dict[int, list[JoinedRecord]] = {}
    for record in records:
        by_day.setdefault(record.ts_ms // _MS_PER_DAY, []).append(record)
    files = {}
    for day, day_records in sorted(by_day.items()):
        buffer = io.BytesIO()
        pq.write_table(
            pa.Table.from_batches([_batch(day_records)], schema=LOG_SCHEMA),
            buffer,
            compression="zstd",
        )
        date = str(np.datetime64(day, "D"))
        files[date] = (buffer.getvalue(), day_records)
    return files


def _batch(records: Sequence[JoinedRecord]) -> pa.RecordBatch:
    offsets = [0]
    names: list[str] = []
    bids: list[bool] = []
    prices: list[float] = []
    sent: list[bool] = []
    propensities: list[float] = []
    versions: list[str | None] = []
    for record in records:
        response = record.response
        version = response.model_version or None
        reported = {outcome.partner: outcome for outcome in record.outcomes}
        for decision in response.decisions:
            outcome = reported.pop(decision.partner, None)
            propensity = 1.0 if decision.propensity is None else decision.propensity
            labelled = _labelled(outcome)
            if labelled and not decision.send:
                propensity = 1.0
            names.append(decision.partner)
            _entry(outcome if labelled else None, bids, prices, sent)
            # Validation allows 0 only unsent; a decision never says 0 for a send.
            propensities.append(propensity)
            versions.append(version)
        for outcome in reported.values():  # called, though not a candidate
            names.append(outcome.partner)
            _entry(outcome if _labelled(outcome) else None, bids, prices, sent)
            propensities.append(1.0)
            versions.append(None)
        offsets.append(len(names))
    return auction_batch(
        np.array([record.ts_ms for record in records], dtype=np.int64),
        [record.request_id for record in records],
        [record.request.decode("utf-8", "replace") for record in records],
        np.array(offsets, dtype=np.int32),
        names,
        np.array(bids, dtype=np.bool_),
        np.array(prices, dtype=np.float64),
        sent=np.array(sent, dtype=np.bool_),
        propensity=np.array(propensities, dtype=np.float64),
        model_version=versions,
        control=np.array([bool(record.response.control) for record in records], dtype=np.bool_),
        sample_rate=np.array([record.sample_rate for record in records], dtype=np.float64),
    )


def _labelled(outcome: PartnerOutcome | None) -> bool:
    """Called and answered: its entry has a label."""
    return outcome is not None and outcome.called and not outcome.timed_out and not outcome.error


def _entry(
    outcome: PartnerOutcome | None, bids: list[bool], prices: list[float], sent: list[bool]
) -> None:
    if outcome is None:
        bids.append(False)
        prices.append(0.0)
        sent.append(False)
        return
    price = outcome.price or 0.0
    bids.append(bool(outcome.bid) if outcome.bid is not None else price > 0)
    prices.append(price if bids[-1] else 0.0)
    sent.append(True)


def check_outcome(outcome: AuctionOutcome, where: str, max_partners: int) -> tuple[str, str] | None:
    """The first problem of a reported outcome, as (field, message), or ``None``."""
    if not outcome.request_id:
        return f"{where}.request_id", "must not be empty"
    if len(outcome.partners) > max_partners:
        count = len(outcome.partners)
        return f"{where}.partners", f"{count} partners, over the {max_partners} limit"
    seen: set[str] = set()
    for index, partner in enumerate(outcome.partners):
        at = f"{where}.partners[{index}]"
        if not partner.partner:
            return f"{at}.partner", "must not be empty"
        if partner.partner in seen:
            return f"{at}.partner", f"{partner.partner!r} is listed twice"
        seen.add(partner.partner)
        price = partner.price
        if price is not None and (not math.isfinite(price) or price < 0):
            return f"{at}.price", f"must be a finite number >= 0, not {price}"
        if partner.bid and not partner.called:
            return f"{at}.bid", "a partner not called cannot bid"
        if partner.bid is False and price:
            return f"{at}.price", "must be 0 (or absent) without a bid"
    return None

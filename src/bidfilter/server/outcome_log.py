"""A worker's outcome feedback: its decision log, and the task that writes joined records.

The service holds a sampled share of its decisions here (:meth:`OutcomeLog.offer`, on the
request path: a random draw, and for the sampled few a dict insert) and joins the outcomes
``report_outcomes`` brings (:meth:`OutcomeLog.report`). Everything else happens off the request
path: every ``outcome_flush_s`` a loop callback sweeps expired decisions and takes the joined
records, and a thread encodes them as Parquet and writes them to the log store, one file per
date partition. A failed write keeps its records (first in line for the next flush) and is
counted; the memory budget bounds how many can wait.

On SIGTERM the worker, once its connections are closed (no report can arrive any more), awaits
:meth:`OutcomeLog.close`: every joined record is written, retried until ``_FINAL_WRITE_S`` has
passed. A SIGKILL loses the records joined since the last flush: at most ``outcome_flush_s``
of them.

Decisions and their reports meet only inside one worker process: a report must come on the
connection its request came on (or at least to the same process), which the client library
does. A report elsewhere is ``unknown``, counted and harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Final

from bidfilter.logs.decision_log import DecisionLog, JoinedRecord, Report, encode_records
from bidfilter.logs.sink import LogSink, LogSinkError, open_log_sink
from bidfilter.server.metrics import WorkerMetrics
from bidfilter.settings import Settings
from bidfilter.thrift.types import AuctionOutcome, FilterResponse

log = logging.getLogger(__name__)

FINAL_WRITE_S: Final = 20.0
"""At shutdown, how long the last writes are retried before the records are given up (and
counted lost). The supervisor waits this much longer for a worker with an outcome log."""

_RETRY_S = 0.5


class OutcomeLog:
    def __init__(
        self,
        sink: LogSink,
        metrics: WorkerMetrics,
        *,
        share: float,
        wait_s: float,
        flush_s: float,
        max_bytes: int,
        slot: int,
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.flush_s = flush_s
        self.decisions = DecisionLog(share, wait_s, max_bytes)
        self._share = share
        self._draw = random.random
        # File names sort by time and never collide across hosts, processes or restarts.
        self._name_stem = f"{socket.gethostname()}-{os.getpid()}-{slot}-{secrets.token_hex(3)}"
        self._sequence = 0
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._published: dict[str, int] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: WorkerMetrics, slot: int, sink: LogSink | None = None
    ) -> OutcomeLog:
        """The outcome log ``serve``'s settings describe (``sink``: instead of the one
        ``outcome_log`` names)."""
        if sink is None:
            assert settings.outcome_log is not None
            sink = open_log_sink(settings.outcome_log, endpoint_url=settings.s3_endpoint_url)
        return cls(
            sink,
            metrics,
            share=settings.decision_log_share,
            wait_s=settings.outcome_wait_s,
            flush_s=settings.outcome_flush_s,
            max_bytes=int(settings.outcome_buffer_mb * (1 << 20)),
            slot=slot,
        )

    # --- the request path ------------------------------------------------------------------------

    def offer(self, request: bytes, response: FilterResponse) -> None:
        """Hold a sampled share of the decisions; a held one's response says ``logged``."""
        if self._draw() >= self._share:
            return
        if self.decisions.hold(request, response, time.time_ns() // 1_000_000, time.monotonic()):
            response.logged = True

    def report(self, outcomes: Sequence[AuctionOutcome]) -> dict[Report, int]:
        """Join each reported outcome with its held decision; how many came to what."""
        now = time.monotonic()
        counts = dict.fromkeys(Report, 0)
        for outcome in outcomes:
            counts[self.decisions.report(outcome, now)] += 1
        return counts

    # --- off the request path --------------------------------------------------------------------

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.flush_s, self._tick)

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.flush_s, self._tick)
        self.decisions.expire(time.monotonic())
        self._publish_counts()
        if self._writing is None or self._writing.done():
            records = self.decisions.take()
            if records:
                self._writing = asyncio.get_running_loop().create_task(self._write(records))

    async def _write(self, records: list[JoinedRecord]) -> None:
        try:
            unwritten = await asyncio.to_thread(self._write_files, records)
        except Exception:  # a bug, not the store: retrying would fail again, so say it loudly
            log.exception("could not encode %d outcome records; they are lost", len(records))
            self.metrics.add("outcome_records_lost", len(records))
            self.decisions.written(records)
            return
        failed = {id(record) for record in unwritten}
        self.decisions.written([record for record in records if id(record) not in failed])
        if unwritten:
            self.decisions.put_back(unwritten)
        self._publish_counts()

    def _write_files(self, records: list[JoinedRecord]) -> list[JoinedRecord]:
        """Write ``records`` (one file per date); the ones whose file could not be written."""
        unwritten: list[JoinedRecord] = []
        for date, (data, day_records) in encode_records(records).items():
            self._sequence += 1
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            name = f"part-{stamp}-{self._name_stem}-{self._sequence:06d}.parquet"
            try:
                where = self.sink.put(date, name, data)
            except LogSinkError as error:
                self.metrics.add("outcome_write_failures")
                log.warning("could not write %d outcome records: %s", len(day_records), error)
                unwritten.extend(day_records)
                continue
            self.metrics.add("outcome_records_written", len(day_records))
            self.metrics.add("outcome_files_written")
            log.debug("wrote %d outcome records to %s", len(day_records), where)
        return unwritten

    async def close(self) -> None:
        """Write every joined record (retrying for up to ``FINAL_WRITE_S``); count any left."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            await self._writing
        deadline = time.monotonic() + FINAL_WRITE_S
        while True:
            records = self.decisions.take()
            if not records:
                break
            await self._write(records)
            if not self.decisions.pending_records:
                break
            if time.monotonic() >= deadline:
                lost = self.decisions.take()
                self.decisions.written(lost)
                self.metrics.add("outcome_records_lost", len(lost))
                log.error(
                    "gave up %d outcome records: the log store %s still fails",
                    len(lost),
                    self.sink.uri,
                )
                break
            await asyncio.sleep(_RETRY_S)
        self._publish_counts()
        counts = self.decisions.counts
        log.info(
            "outcome log closed: %d decisions held, %d outcomes accepted, %d unknown",
            counts.held,
            counts.accepted,
            counts.unknown,
        )

    def _publish_counts(self) -> None:
        """The decision log's counts into the metrics row, as increments: a replaced worker
        takes over its predecessor's row, and counters must not go backwards."""
        counts = self.decisions.counts
        for name, value in (
            ("decisions_held", counts.held),
            ("decisions_not_held", counts.not_held_full),
            ("decisions_expired", counts.expired),
            ("outcomes_accepted", counts.accepted),
            ("outcomes_unknown", counts.unknown),
            ("outcomes_duplicate", counts.duplicate),
        ):
            self.metrics.add(name, value - self._published.get(name, 0))
            self._published[name] = value
        self.metrics.set("decision_log_bytes", self.decisions.bytes)

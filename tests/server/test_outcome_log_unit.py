"""The worker's outcome log in-process: writes what it joined, keeps what a failing store
refused, and never lets a failure end its writer silently."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bidfilter.logs import iter_log_batches
from bidfilter.logs.sink import DirectorySink, LogSinkError
from bidfilter.server import outcome_log as module
from bidfilter.server.metrics import MetricsBoard, gauge_value
from bidfilter.server.outcome_log import OutcomeLog
from bidfilter.thrift import AuctionOutcome, FilterResponse, Outcome, PartnerDecision


class FlakySink(DirectorySink):
    """Refuses the first ``failures`` writes, as a store that is down for a while."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put(self, date: str, name: str, data: bytes) -> str:
        if self.failures:
            self.failures -= 1
            raise LogSinkError("down")
        return super().put(date, name, data)


def _offer_and_report(log: OutcomeLog, n: int) -> None:
    for i in range(n):
        response = FilterResponse(
            f"r{i}", [PartnerDecision("a", 0.5, True, False, 0.1, 1.0)], "v", Outcome.SCORED
        )
        log.offer(f'{{"id":"r{i}"}}'.encode(), response)
        assert response.logged
    assert log.report([AuctionOutcome(f"r{i}", []) for i in range(n)])


def _log(sink: DirectorySink, board: MetricsBoard) -> OutcomeLog:
    return OutcomeLog(
        sink, board.worker(0), share=1.0, wait_s=60, flush_s=0.05, max_bytes=1 << 20, slot=0
    )


def test_a_failing_store_keeps_the_records_until_it_recovers(tmp_path: Path) -> None:
    board = MetricsBoard(1)
    try:
        log = _log(FlakySink(tmp_path, failures=3), board)

        async def run() -> None:
            log.start()
            _offer_and_report(log, 20)
            await asyncio.sleep(0.6)
            await log.close()

        asyncio.run(run())
        totals = board.totals()
        assert sum(b.num_rows for b in iter_log_batches(tmp_path)) == 20
        assert gauge_value(totals, "outcome_write_failures") == 3
        assert gauge_value(totals, "outcome_records_written") == 20
        assert gauge_value(totals, "decision_log_bytes") == 0
    finally:
        board.close()


def test_an_encoding_bug_is_counted_and_logged_not_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(records: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(module, "encode_records", broken)
    board = MetricsBoard(1)
    try:
        log = _log(DirectorySink(tmp_path), board)

        async def run() -> None:
            _offer_and_report(log, 5)
            await log.close()

        asyncio.run(run())
        assert gauge_value(board.totals(), "outcome_records_lost") == 5
        assert "they are lost" in caplog.text
        assert log.decisions.bytes == 0
    finally:
        board.close()

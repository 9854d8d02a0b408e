"""The dispatcher against a recording reply sink: what it tells a connection, and when."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bidfilter.server.dispatch import Dispatcher
from bidfilter.server.metrics import MetricsBoard
from bidfilter.server.service import FilterService
from bidfilter.settings import Settings
from bidfilter.thrift import Call, Protocol, ReplyEncoder, Transport

ENCODER = ReplyEncoder(Protocol.BINARY, Transport.FRAMED)


class RecordingSink:
    def __init__(self, closed: bool = False) -> None:
        self.closed = closed
        self.sent: list[tuple[bytes, int]] = []
        self.reading: list[str] = []

    def send(self, replies: bytes, answered: int) -> None:
        self.sent.append((replies, answered))

    def pause_reading(self) -> None:
        self.reading.append("pause")

    def resume_reading(self) -> None:
        self.reading.append("resume")


def _with_dispatcher(
    max_pending: int, scenario: Callable[[Dispatcher], Coroutine[Any, Any, None]]
) -> None:
    board = MetricsBoard(1)
    try:
        service = FilterService(Settings(), board.worker(0))
        asyncio.run(scenario(Dispatcher(service, service.metrics, max_pending)))
    finally:
        board.close()


def test_calls_without_a_reply_are_still_reported_answered() -> None:
    """A connection counts the calls it is owed; a oneway call, or one dropped because its
    connection closed, must come off that count like the others."""

    async def scenario(dispatcher: Dispatcher) -> None:
        sink, now = RecordingSink(), time.perf_counter_ns()
        oneway = Call("ping", 1, None, oneway=True)
        dispatcher.submit(sink, ENCODER, [oneway], now)
        assert sink.sent == [(b"", 1)]  # answered at once, from the read
        dispatcher.submit(sink, ENCODER, [Call("ping", 2, None), oneway], now)
        await asyncio.sleep(0)
        assert sink.sent[-1] == (ENCODER.ping(2, "pong"), 2)
        closed = RecordingSink(closed=True)
        dispatcher.submit(closed, ENCODER, [Call("ping", 3, None), Call("ping", 4, None)], now)
        await asyncio.sleep(0)
        assert closed.sent == [(b"", 2)]

    _with_dispatcher(10, scenario)


def test_a_full_queue_pauses_reading_until_it_drains() -> None:
    async def scenario(dispatcher: Dispatcher) -> None:
        sink = RecordingSink()
        calls = [Call("ping", seqid, None) for seqid in range(4)]
        dispatcher.submit(sink, ENCODER, calls, time.perf_counter_ns())  # type: ignore[arg-type]
        assert sink.reading == ["pause"]  # four times max_pending queued
        await asyncio.sleep(0)
        assert sink.reading == ["pause", "resume"]
        assert sink.sent == [(b"".join(ENCODER.ping(seqid, "pong") for seqid in range(4)), 4)]

    _with_dispatcher(1, scenario)

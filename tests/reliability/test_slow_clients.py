"""Clients that connect and say nothing, or trickle a byte a second, are closed by the server's
timeouts, hold no one else up, and connections past ``--max-connections`` are refused.

A real ``bidfilter serve`` (one worker, so every connection shares one event loop) with short
``--idle-timeout-s`` and ``--read-timeout-s``. Meanwhile a well-behaved client keeps calling on
one connection and must keep getting quick answers. Everything is bounded: each client gives
up after a few seconds.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# tests/ holds no packages: the server test helpers are imported from their folder.
sys.path[:0] = [str(Path(__file__).parents[1] / "server")]
from serving import RunningServer, ServerPool  # noqa: E402

from bidfilter.thrift import (  # noqa: E402
    CallEncoder,
    FilterRequest,
    Outcome,
    Protocol,
    Reply,
    ReplyDecoder,
    Transport,
)

IDLE_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 2.0  # shorter than idle: a trickler is closed by this one, not the other
SLACK_S = 3.0  # how late a close may come on a loaded machine
WIRE = (Protocol.COMPACT, Transport.FRAMED)
OPENRTB = (
    b'{"id":"slow-1","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":0.5}],'
    b'"site":{"domain":"news.example.com"},"device":{"os":"iOS","geo":{"country":"FRA"}},'
    b'"tmax":120}'
)


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory, port_allocator: Callable[[], int]
) -> Iterator[ServerPool]:
    servers = ServerPool(tmp_path_factory.mktemp("slow-clients"), port_allocator)
    yield servers
    servers.stop_all()


def start_server(pool: ServerPool, store: Path, max_connections: int) -> RunningServer:
    return pool(
        store,
        max_connections=max_connections,
        idle_timeout_s=IDLE_TIMEOUT_S,
        read_timeout_s=READ_TIMEOUT_S,
        drain_s=1,
    )


def metric(server: RunningServer, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", server.http("/metrics")[1], re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


@pytest.fixture(scope="module")
def server(trained_store: tuple[Path, str], pool: ServerPool) -> RunningServer:
    return start_server(pool, trained_store[0], 256)


@pytest.fixture(scope="module")
def small_server_process(trained_store: tuple[Path, str], pool: ServerPool) -> RunningServer:
    return start_server(pool, trained_store[0], 4)


@pytest.fixture
def small_server(small_server_process: RunningServer) -> RunningServer:
    """A server with ``--max-connections 4``, once the previous test's connections are gone."""
    small_server_process.wait_until(
        lambda: metric(small_server_process, "bidfilter_connections_open") == 0, timeout=10
    )
    return small_server_process


# -- clients ---------------------------------------------------------------------------------


class Caller:
    """A well-behaved client: one connection, one call at a time, each answer awaited."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.calls = CallEncoder(*WIRE)
        self.replies = ReplyDecoder(*WIRE)
        self.seqid = 0

    @classmethod
    async def connect(cls, port: int) -> Caller:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, method: str, timeout: float = 5.0) -> Reply:
        self.seqid += 1
        if method == "filter":
            request = FilterRequest(OPENRTB, ["dsp-00", "dsp-01", "dsp-02"], 5000)
            self.writer.write(self.calls.filter(self.seqid, request))
        else:
            self.writer.write(self.calls.ping(self.seqid))
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the server")
                received = self.replies.feed(data)
                if received:
                    (reply,) = received
                    assert reply.seqid == self.seqid
                    return reply

    def close(self) -> None:
        self.writer.close()


async def closed_after(reader: asyncio.StreamReader, started: float, limit: float) -> float:
    """Seconds from ``started`` until the server closes the connection (nothing may come)."""
    async with asyncio.timeout(limit):
        try:
            data = await reader.read(1)
        except ConnectionResetError:
            data = b""
    assert data == b"", f"the server answered {data!r}"
    return time.monotonic() - started


async def silent_client(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await closed_after(reader, time.monotonic(), IDLE_TIMEOUT_S + SLACK_S)
    finally:
        writer.close()


@dataclass
class Trickle:
    closed_after_s: float = 0.0
    bytes_sent: int = 0


async def trickling_client(port: int) -> Trickle:
    """Sends a ping one byte a second: the message is never complete before the read timeout."""
    message = CallEncoder(*WIRE).ping(1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    result = Trickle()
    started = time.monotonic()

    async def trickle() -> None:
        for byte in message:
            writer.write(bytes([byte]))
            result.bytes_sent += 1
            await asyncio.sleep(1.0)

    sender = asyncio.create_task(trickle())
    try:
        result.closed_after_s = await closed_after(reader, started, READ_TIMEOUT_S + SLACK_S)
    finally:
        sender.cancel()
        writer.close()
    return result


@dataclass
class Steady:
    latencies: list[float] = field(default_factory=list)
    outcomes: set[Outcome] = field(default_factory=set)
    seconds: float = 0.0


async def steady_client(port: int, done: asyncio.Event, max_seconds: float) -> Steady:
    """Calls on one connection, paced, until ``done``; any failure fails the test."""
    caller = await Caller.connect(port)
    result = Steady()
    started = time.monotonic()
    try:
        while not done.is_set() and time.monotonic() - started < max_seconds:
            before = time.monotonic()
            reply = await caller.call("filter")
            result.latencies.append(time.monotonic() - before)
            result.outcomes.add(reply.filter_response().outcome)
            await asyncio.sleep(0.02)
    finally:
        caller.close()
    result.seconds = time.monotonic() - started
    return result


async def refused(port: int) -> bool:
    """Connect and ping: True if the server closes the connection without an answer."""
    try:
        caller = await Caller.connect(port)
    except ConnectionError:
        return True
    try:
        await caller.call("ping", timeout=5.0)
    except ConnectionError:
        return True
    finally:
        caller.close()
    return False


# -- tests -----------------------------------------------------------------------------------


def test_idle_and_trickling_clients_are_closed_without_delaying_others(
    server: RunningServer,
) -> None:
    timed_out_before = metric(server, "bidfilter_connections_timed_out_total")

    async def scenario() -> tuple[list[float], list[Trickle], Steady]:
        done = asyncio.Event()
        steady = asyncio.create_task(steady_client(server.port, done, max_seconds=20.0))
        await asyncio.sleep(0.2)  # the steady client is calling before the others come
        silent = [asyncio.create_task(silent_client(server.port)) for _ in range(20)]
        trickling = [asyncio.create_task(trickling_client(server.port)) for _ in range(10)]
        try:
            silent_closed = await asyncio.gather(*silent)
            trickles = await asyncio.gather(*trickling)
        finally:
            done.set()
        return silent_closed, trickles, await steady

    silent_closed, trickles, steady = asyncio.run(scenario())

    # Silent connections last the idle timeout, not less (that would be something else).
    assert all(IDLE_TIMEOUT_S * 0.9 <= s <= IDLE_TIMEOUT_S + SLACK_S for s in silent_closed)
    # Tricklers are never idle that long: the read timeout closes them, message unfinished.
    message_bytes = len(CallEncoder(*WIRE).ping(1))
    for trickle in trickles:
        assert READ_TIMEOUT_S * 0.9 <= trickle.closed_after_s <= READ_TIMEOUT_S + SLACK_S
        assert trickle.closed_after_s < IDLE_TIMEOUT_S
        assert trickle.bytes_sent < message_bytes

    # The steady client kept its one connection past the idle timeout (it was never idle) and
    # got quick answers throughout: a blocked event loop would show waits of seconds.
    assert steady.seconds > IDLE_TIMEOUT_S
    assert steady.outcomes == {Outcome.SCORED}
    assert len(steady.latencies) > 20
    assert statistics.median(steady.latencies) < 0.1
    assert max(steady.latencies) < 1.0, sorted(steady.latencies)[-5:]

    timed_out = metric(server, "bidfilter_connections_timed_out_total") - timed_out_before
    assert timed_out == len(silent_closed) + len(trickles)


def test_connections_past_the_limit_are_refused_and_the_others_keep_working(
    small_server: RunningServer,
) -> None:
    port = small_server.port

    async def scenario() -> None:
        held = [await Caller.connect(port) for _ in range(4)]
        for caller in held:  # each is accepted, and counted, once it has been answered
            assert (await caller.call("ping")).pong() == "pong"
        assert [await refused(port) for _ in range(3)] == [True, True, True]
        for caller in held:
            assert (await caller.call("filter")).filter_response().outcome is Outcome.SCORED

        held.pop().close()  # a slot frees as soon as the server sees the close
        deadline = time.monotonic() + 2.0
        while await refused(port):
            assert time.monotonic() < deadline, "a freed slot was not given to a new client"
            await asyncio.sleep(0.05)
        for caller in held:
            caller.close()

    asyncio.run(scenario())
    assert metric(small_server, "bidfilter_connections_refused_total") >= 3


def test_silent_connections_hold_slots_only_until_the_idle_timeout(
    small_server: RunningServer,
) -> None:
    port = small_server.port

    async def scenario() -> float:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        started = time.monotonic()
        # Connections are counted when accepted; a ping over the limit proves all four were.
        while not await refused(port):  # the four silent ones hold every slot
            assert time.monotonic() - started < IDLE_TIMEOUT_S * 0.9, "never refused"
            await asyncio.sleep(0.05)
        # Once the idle timeout has closed them, a client is served again.
        for reader, _ in silent:
            await closed_after(reader, started, IDLE_TIMEOUT_S + SLACK_S)
        caller = await Caller.connect(port)
        assert (await caller.call("ping")).pong() == "pong"
        caller.close()
        for _, writer in silent:
            writer.close()
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= IDLE_TIMEOUT_S * 0.9

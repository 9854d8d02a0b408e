"""The pipelining asyncio client against the fake server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from client_fake_server import MODEL_VERSION, POLICY_PROPENSITY, FakeBidFilterServer, sends

from bidfilter.client import (
    AsyncBidFilterClient,
    BidFilterTimeoutError,
    BidFilterUnavailableError,
    ClientClosedError,
    ConnectionSettings,
)
from bidfilter.thrift import FilterRequest, Protocol, RemoteInvalidRequestError, Transport

CANDIDATES = ["dsp-01", "dsp-02", "dsp-03", "dsp-12"]
TEST_TIMEOUT_S = 10.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run an async test body on a fresh loop, bounded in time."""

    async def bounded() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            await test()

    asyncio.run(bounded())


def client_for(
    server: FakeBidFilterServer, *, connections: int = 4, **options: object
) -> AsyncBidFilterClient:
    settings = ConnectionSettings("127.0.0.1", server.port, **options)  # type: ignore[arg-type]
    return AsyncBidFilterClient(settings, connections=connections)


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("transport", list(Transport))
def test_every_method_over_every_transport_and_protocol(
    fake_server: FakeBidFilterServer, protocol: Protocol, transport: Transport
) -> None:
    async def body() -> None:
        async with client_for(fake_server, protocol=protocol, transport=transport) as client:
            assert await client.ping() == "pong"
            response = await client.filter(b'{"id":"r1"}', CANDIDATES, deadline_ms=20)
            assert response.request_id == "r1"
            assert [d.send for d in response.decisions] == [sends(p) for p in CANDIDATES]
            assert (await client.model_info()).version == MODEL_VERSION
            batch = await client.filter_batch(
                [FilterRequest(b'{"id":"a"}', ["dsp-01"]), FilterRequest(b"bad")]
            )
            assert batch[0].request_id == "a"
            assert batch[1].error is not None

    run(body)


@pytest.mark.parametrize("transport", list(Transport))
def test_many_calls_pipelined_on_one_connection(
    fake_server: FakeBidFilterServer, transport: Transport
) -> None:
    calls = 500

    async def body() -> None:
        async with client_for(fake_server, connections=1, transport=transport) as client:
            responses = await asyncio.gather(
                *(
                    client.filter(f'{{"id":"{i}"}}'.encode(), [f"dsp-{i % 10}"])
                    for i in range(calls)
                )
            )
            # each reply went to its own call: ids and decisions line up
            assert [r.request_id for r in responses] == [str(i) for i in range(calls)]
            assert [r.decisions[0].send for r in responses] == [
                sends(f"dsp-{i % 10}") for i in range(calls)
            ]
            assert client.in_flight == 0

    run(body)
    assert fake_server.stats.connections == 1
    assert fake_server.stats.calls == calls
    assert fake_server.stats.most_calls_in_one_read > 1  # they really were in flight together


def test_calls_spread_round_robin(fake_server: FakeBidFilterServer) -> None:
    async def body() -> None:
        async with client_for(fake_server, connections=3) as client:
            await client.connect()
            await asyncio.gather(*(client.ping() for _ in range(30)))

    run(body)
    per_connection = [
        sum(1 for number, _ in fake_server.stats.served if number == n) for n in (1, 2, 3)
    ]
    assert per_connection == [10, 10, 10]


def test_retries_land_on_another_connection(fake_server: FakeBidFilterServer) -> None:
    fake_server.drop_after = 1  # each connection answers one call, then hangs up on the next

    async def body() -> None:
        async with client_for(fake_server, connections=2, retries=2) as client:
            assert await client.ping() == "pong"  # slot 0: connection 1
            assert await client.ping() == "pong"  # slot 1: connection 2
            # slot 0 again: connection 1 hangs up; the retry goes to slot 1, whose connection 2
            # hangs up too; the last retry, back on slot 0, gets connection 3.
            response = await client.filter(b'{"id":"z"}', CANDIDATES)
            assert response.request_id == "z"

    run(body)
    assert fake_server.stats.served == [(1, "ping"), (2, "ping"), (3, "filter")]


def test_a_broken_connection_retries_all_its_calls_in_flight(
    fake_server: FakeBidFilterServer,
) -> None:
    fake_server.drop_after = 10

    async def body() -> None:
        async with client_for(fake_server, connections=2, retries=4) as client:
            responses = await asyncio.gather(
                *(client.filter(f'{{"id":"{i}"}}'.encode(), CANDIDATES) for i in range(30))
            )
            assert [r.request_id for r in responses] == [str(i) for i in range(30)]
            assert client.connects > 2  # connections were replaced

    run(body)
    assert fake_server.stats.calls == 30  # each call answered exactly once


def test_invalid_request_is_raised_not_retried(fake_server: FakeBidFilterServer) -> None:
    async def body() -> None:
        async with client_for(fake_server, retries=3) as client:
            with pytest.raises(RemoteInvalidRequestError) as raised:
                await client.filter(b"bad", CANDIDATES)
            assert raised.value.field == "openrtb"

    run(body)
    assert fake_server.stats.served == [(1, "filter")]


def test_a_stalled_server_times_out_within_the_attempts(fake_server: FakeBidFilterServer) -> None:
    fake_server.hang = True

    async def body() -> None:
        async with client_for(fake_server, connections=2, timeout=0.1, retries=1) as client:
            began = time.monotonic()
            results = await asyncio.gather(
                *(client.ping() for _ in range(10)), return_exceptions=True
            )
            assert time.monotonic() - began < 1.0
            assert all(isinstance(r, BidFilterTimeoutError) for r in results)

    run(body)


def test_a_silent_connection_is_replaced_after_a_timeout(
    fake_server: FakeBidFilterServer,
) -> None:
    async def body() -> None:
        async with client_for(fake_server, connections=1, timeout=0.2, retries=0) as client:
            assert await client.ping() == "pong"
            fake_server.delay = 0.3
            with pytest.raises(BidFilterTimeoutError):
                await client.ping()
            fake_server.delay = 0.0
            assert await client.ping() == "pong"

    run(body)
    # Nothing came back on connection 1 for a whole timeout: it was dropped for a new one.
    assert fake_server.stats.served == [(1, "ping"), (1, "ping"), (2, "ping")]


def test_a_connection_still_answering_is_kept_after_a_timeout(
    fake_server: FakeBidFilterServer,
) -> None:
    async def body() -> None:
        async with client_for(fake_server, connections=1, timeout=0.6, retries=0) as client:
            await client.connect()
            fake_server.delay = 0.3
            first = asyncio.ensure_future(client.ping())  # answered at 0.3 s
            await asyncio.sleep(0.05)
            fake_server.delay = 1.0
            with pytest.raises(BidFilterTimeoutError):
                await client.ping()  # sent at 0.05 s, times out at 0.65 s
            assert await first == "pong"
            fake_server.delay = 0.0
            # The late reply (at 1.05 s) is matched to the timed-out call and dropped; this
            # call's reply follows it on the wire.
            assert await client.ping() == "pong"

    run(body)
    # A reply came after the timed-out call was sent: the connection was alive, and kept.
    assert fake_server.stats.connections == 1
    assert fake_server.stats.calls == 3


def test_nothing_listening_is_unavailable(free_tcp_port: int) -> None:
    async def body() -> None:
        async with AsyncBidFilterClient(
            ConnectionSettings("127.0.0.1", free_tcp_port, retries=1)
        ) as client:
            with pytest.raises(BidFilterUnavailableError, match="cannot connect"):
                await client.ping()
            with pytest.raises(BidFilterUnavailableError):
                await client.connect()

    run(body)


def test_close_fails_calls_in_flight(fake_server: FakeBidFilterServer) -> None:
    fake_server.hang = True

    async def body() -> None:
        client = client_for(fake_server, timeout=5.0)
        pending = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(ClientClosedError):
            await pending
        with pytest.raises(ClientClosedError):
            await client.ping()

    run(body)


@pytest.mark.parametrize("protocol", list(Protocol))
def test_decisions_expose_propensity_and_responses_control(
    fake_server: FakeBidFilterServer, protocol: Protocol
) -> None:
    async def body() -> None:
        async with client_for(fake_server, protocol=protocol) as client:
            older = await client.filter(b'{"id":"ctl-1"}', CANDIDATES)
            assert [d.propensity for d in older.decisions] == [None] * len(CANDIDATES)
            assert older.control is None
            fake_server.records_policy = True
            scored = await client.filter(b'{"id":"r1"}', CANDIDATES)
            assert [d.propensity for d in scored.decisions] == [
                1.0 if sends(p) else POLICY_PROPENSITY for p in CANDIDATES
            ]
            assert scored.control is None
            control = await client.filter(b'{"id":"ctl-2"}', CANDIDATES)
            assert control.control is True
            assert all(d.send and d.propensity == 1.0 for d in control.decisions)

    run(body)

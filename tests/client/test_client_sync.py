"""The blocking client against the fake server: every transport and protocol, pooling, retries."""

from __future__ import annotations

import threading
import time

import pytest
from client_fake_server import (
    MODEL_VERSION,
    PARTNERS,
    POLICY_PROPENSITY,
    FakeBidFilterServer,
    sends,
)

from bidfilter.client import (
    BidFilterClient,
    BidFilterTimeoutError,
    BidFilterUnavailableError,
    ClientClosedError,
    ConnectionSettings,
)
from bidfilter.thrift import FilterRequest, Outcome, Protocol, RemoteInvalidRequestError, Transport

CANDIDATES = ["dsp-01", "dsp-02", "dsp-03", "dsp-12"]


def client_for(
    server: FakeBidFilterServer, *, pool_size: int = 4, **options: object
) -> BidFilterClient:
    settings = ConnectionSettings("127.0.0.1", server.port, **options)  # type: ignore[arg-type]
    return BidFilterClient(settings, pool_size=pool_size)


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("transport", list(Transport))
def test_every_method_over_every_transport_and_protocol(
    fake_server: FakeBidFilterServer, protocol: Protocol, transport: Transport
) -> None:
    with client_for(fake_server, protocol=protocol, transport=transport) as client:
        assert client.ping() == "pong"
        response = client.filter(b'{"id":"r1"}', CANDIDATES, deadline_ms=20)
        assert response.request_id == "r1"
        assert response.outcome is Outcome.SCORED
        assert [d.partner for d in response.decisions] == CANDIDATES
        assert [d.send for d in response.decisions] == [sends(p) for p in CANDIDATES]
        info = client.model_info()
        assert (info.version, info.partners) == (MODEL_VERSION, list(PARTNERS))
        batch = client.filter_batch(
            [FilterRequest(b'{"id":"a"}', ["dsp-01"]), FilterRequest(b"bad"), FilterRequest(b"{}")]
        )
        assert [r.request_id for r in batch] == ["a", "", ""]
        assert batch[1].error is not None
        assert [d.partner for d in batch[2].decisions] == list(PARTNERS)  # None: every partner
    assert fake_server.stats.connections == 1  # one pooled connection served them all


def test_invalid_request_is_raised_not_retried(fake_server: FakeBidFilterServer) -> None:
    with client_for(fake_server, retries=3) as client:
        with pytest.raises(RemoteInvalidRequestError) as raised:
            client.filter(b"bad", CANDIDATES)
        assert raised.value.field == "openrtb"
        assert client.ping() == "pong"  # the connection is still good
    assert fake_server.stats.served == [(1, "filter"), (1, "ping")]


def test_a_dropped_connection_is_retried_on_a_fresh_one(fake_server: FakeBidFilterServer) -> None:
    fake_server.drop_after = 1  # each connection answers one call, then hangs up on the next
    with client_for(fake_server, pool_size=1, retries=1) as client:
        assert client.ping() == "pong"  # connection 1
        # The pooled connection 1 is dropped by the server: the retry opens connection 2.
        assert client.filter(b'{"id":"x"}', CANDIDATES).request_id == "x"
    assert fake_server.stats.served == [(1, "ping"), (2, "filter")]


def test_a_pooled_connection_closed_by_the_server_costs_no_attempt(
    fake_server: FakeBidFilterServer,
) -> None:
    fake_server.drop_after = 1
    with client_for(fake_server, pool_size=1, retries=0) as client:
        assert client.ping() == "pong"
        assert client.ping() == "pong"  # the pooled connection is gone: a fresh one, for free
        with pytest.raises(BidFilterUnavailableError):
            fake_server.drop_after = 0
            client.ping()  # a fresh connection failing does cost the only attempt
    assert fake_server.stats.served == [(1, "ping"), (2, "ping")]


def test_without_retries_a_drop_is_unavailable(fake_server: FakeBidFilterServer) -> None:
    fake_server.drop_after = 0
    with (
        client_for(fake_server, retries=2) as client,
        pytest.raises(BidFilterUnavailableError) as r,
    ):
        client.ping()
    assert r.value.attempts == 3
    assert r.value.field == "connection"
    assert not isinstance(r.value, BidFilterTimeoutError)
    assert fake_server.stats.connections == 3  # every attempt on its own connection


def test_a_late_reply_times_out_on_every_attempt(fake_server: FakeBidFilterServer) -> None:
    fake_server.delay = 1.0
    began = time.monotonic()
    client = client_for(fake_server, timeout=0.15, retries=1)
    with client, pytest.raises(BidFilterTimeoutError) as raised:
        client.ping()
    assert raised.value.field == "timeout"
    assert time.monotonic() - began < 0.9  # two attempts of 0.15 s, not the server's delay
    assert fake_server.stats.connections == 2


def test_nothing_listening_is_unavailable(free_tcp_port: int) -> None:
    client = BidFilterClient(ConnectionSettings("127.0.0.1", free_tcp_port, retries=1))
    with client, pytest.raises(BidFilterUnavailableError, match="cannot connect"):
        client.ping()


def test_threads_share_the_pool(fake_server: FakeBidFilterServer) -> None:
    fake_server.record_calls = False
    results: list[str] = []
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for call in range(25):
                response = client.filter(f'{{"id":"{worker}-{call}"}}'.encode(), CANDIDATES)
                results.append(response.request_id)
        except BaseException as error:  # reported below
            failures.append(error)

    with client_for(fake_server, pool_size=3) as client:
        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert not failures
    assert sorted(results) == sorted(f"{w}-{c}" for w in range(8) for c in range(25))
    assert fake_server.stats.connections <= 3


def test_a_closed_client_refuses_calls(fake_server: FakeBidFilterServer) -> None:
    client = client_for(fake_server)
    client.close()
    with pytest.raises(ClientClosedError):
        client.ping()


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("transport", list(Transport))
def test_decisions_expose_propensity_and_responses_control(
    fake_server: FakeBidFilterServer, protocol: Protocol, transport: Transport
) -> None:
    with client_for(fake_server, protocol=protocol, transport=transport) as client:
        older = client.filter(b'{"id":"ctl-1"}', CANDIDATES)  # a server without the fields
        assert [d.propensity for d in older.decisions] == [None] * len(CANDIDATES)
        assert older.control is None
        fake_server.records_policy = True
        scored = client.filter(b'{"id":"r1"}', CANDIDATES)
        assert [d.propensity for d in scored.decisions] == [
            1.0 if sends(p) else POLICY_PROPENSITY for p in CANDIDATES
        ]
        assert scored.control is None
        control = client.filter(b'{"id":"ctl-2"}', CANDIDATES)
        assert control.control is True
        assert [(d.send, d.propensity) for d in control.decisions] == [(True, 1.0)] * len(
            CANDIDATES
        )
        batch = client.filter_batch([FilterRequest(b'{"id":"ctl-3"}'), FilterRequest(b"{}")])
        assert [r.control for r in batch] == [True, None]
        assert all(d.propensity is not None for r in batch for d in r.decisions)

"""The HTTP side port, and the Thrift port under pipelined overload."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from serving import RunningServer, ServerPool

from bidfilter.client import BidFilterClient, ConnectionSettings
from bidfilter.thrift import CallEncoder, FilterRequest, Outcome, Protocol, ReplyDecoder, Transport


def test_health_ready_and_read_only(
    module_server: RunningServer, trained_store: tuple[Path, str]
) -> None:
    assert module_server.http("/healthz") == (200, "ok\n")
    status, body = module_server.http("/readyz")
    assert status == 200 and trained_store[1] in body
    assert module_server.http("/metrics", method="POST")[0] == 405
    assert module_server.http("/nope")[0] == 404


def test_metrics_after_traffic(
    module_server: RunningServer, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    with BidFilterClient(ConnectionSettings("127.0.0.1", module_server.port)) as client:
        for openrtb, partners in logged_requests[:40]:
            client.filter(openrtb, partners)
        client.model_info()
    # Workers publish their counters at most 100 ms after a call (at once when they go idle).
    deadline = time.monotonic() + 5
    while True:
        status, text = module_server.http("/metrics")
        assert status == 200
        if 'method="model_info"' in text or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for expected in (
        'bidfilter_calls_total{method="filter",result="scored"}',
        'bidfilter_calls_total{method="model_info",result="ok"}',
        'bidfilter_call_latency_seconds_bucket{method="filter",le="+Inf"}',
        'bidfilter_partner_send_rate{partner="dsp-01"}',
        'bidfilter_partner_explore_rate{partner="dsp-01"}',
        "bidfilter_model_info{version=",
        'bidfilter_model_reloads_total{result="success"} 1',
        'bidfilter_workers{state="alive"} 2',
        "bidfilter_connections_total",
    ):
        assert expected in text, expected
    scored = next(
        line
        for line in text.splitlines()
        if line.startswith('bidfilter_calls_total{method="filter",result="scored"}')
    )
    assert float(scored.rsplit(" ", 1)[1]) >= 40


def test_pipelined_overload_is_shed_in_order(
    start_server: ServerPool,
    trained_store: tuple[Path, str],
    logged_requests: list[tuple[bytes, list[str]]],
) -> None:
    server = start_server(trained_store[0], max_pending_calls=4)
    encoder = CallEncoder(Protocol.COMPACT, Transport.FRAMED)
    calls = 200
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(
            b"".join(
                encoder.filter(i, FilterRequest(*logged_requests[i % len(logged_requests)]))
                for i in range(calls)
            )
        )
        decoder = ReplyDecoder(Protocol.COMPACT, Transport.FRAMED)
        replies = []
        while len(replies) < calls:
            replies += decoder.feed(sock.recv(1 << 16))
    assert [r.seqid for r in replies] == list(range(calls))
    outcomes = [r.filter_response().outcome for r in replies]
    assert Outcome.FAIL_OPEN_OVERLOAD in outcomes
    assert Outcome.SCORED in outcomes
    shed = [
        r.filter_response()
        for r in replies
        if r.filter_response().outcome is Outcome.FAIL_OPEN_OVERLOAD
    ]
    assert all(d.send for response in shed for d in response.decisions)
    # Workers flush their counters to the board a moment after a batch, not per call.
    server.wait_until(lambda: "fail_open_overload" in server.http("/metrics")[1], timeout=10)


def test_garbage_and_http_on_the_thrift_port_are_closed(module_server: RunningServer) -> None:
    for garbage in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ):
        with socket.create_connection(("127.0.0.1", module_server.port), timeout=5) as sock:
            sock.sendall(garbage)
            assert sock.recv(100) == b""  # closed, nothing answered
    with BidFilterClient(ConnectionSettings("127.0.0.1", module_server.port)) as client:
        assert client.ping() == "pong"

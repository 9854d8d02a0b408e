"""Clients that send calls but never read the replies, and clients that half-close.

A client that pipelines calls and never reads would otherwise have its replies piled up in the
worker without limit (hundreds of MiB), hold its connection for ever (a close waits for a flush
that never comes) and, with a few like it, lock every other client out. The server stops
reading such a connection once its unsent replies pass a high-water mark and aborts it when they
stay there. A client that sends its calls and then ``shutdown(SHUT_WR)`` gets every one answered.
Real ``bidfilter serve`` processes on 127.0.0.1; every client loop is bounded in time.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).parents[1] / "server")]
from serving import RunningServer, ServerPool  # noqa: E402

from bidfilter.thrift import (  # noqa: E402
    CallEncoder,
    FilterRequest,
    Protocol,
    Reply,
    ReplyDecoder,
    Transport,
)

WIRE = (Protocol.COMPACT, Transport.FRAMED)
READ_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 3.0
MAX_UNSENT = 1 << 20
SLACK_S = 10.0  # how late a drop may come on a loaded 2-core machine
OPENRTB = (
    b'{"id":"hostile-1","imp":[{"id":"1","banner":{"w":300,"h":250}}],'
    b'"site":{"domain":"news.example.com"},"device":{"os":"iOS","geo":{"country":"FRA"}}}'
)


@pytest.fixture
def pool(tmp_path: Path, port_allocator: Callable[[], int]) -> Iterator[ServerPool]:
    servers = ServerPool(tmp_path, port_allocator)
    yield servers
    servers.stop_all()


def start(pool: ServerPool, store: Path, **flags: object) -> RunningServer:
    options: dict[str, object] = {
        "read_timeout_s": READ_TIMEOUT_S,
        "idle_timeout_s": IDLE_TIMEOUT_S,
        "max_unsent_bytes": MAX_UNSENT,
        "drain_s": 3,
    }
    return pool(store, **{**options, **flags})


def worker_rss_mib(server: RunningServer) -> float:
    _, body = server.http("/readyz")
    pid = next(
        line.split()[3].rstrip(":") for line in body.splitlines() if line.startswith("worker")
    )
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def non_reader(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.2)
    return sock


def flood_until_dropped(sock: socket.socket, seconds: float) -> float | None:
    """Pipeline model_info calls (large replies) without reading; the seconds until the server
    dropped the connection, or None if it never did."""
    encoder = CallEncoder(*WIRE)
    burst = b"".join(encoder.model_info(seqid) for seqid in range(200))
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            sock.sendall(burst)
        except TimeoutError:
            continue  # the server stopped reading us: keep pushing, as a hostile client would
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    return None


def exchange(
    port: int,
    calls: bytes,
    *,
    wire: tuple[Protocol, Transport] = WIRE,
    replies: int | None = None,
    half_close: bool = False,
    timeout: float = 20.0,
) -> tuple[list[Reply], int]:
    """Send ``calls`` on one connection (then shut down writing, with ``half_close``) and read
    until ``replies`` replies came (None: until the server closes) or ``timeout``. Returns the
    replies and how many bytes came back."""
    decoder = ReplyDecoder(*wire)
    received: list[Reply] = []
    size = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(calls)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while (replies is None or len(received) < replies) and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            size += len(data)
            received += decoder.feed(data)
    return received, size


def ping_answered(port: int, timeout: float) -> bool:
    return bool(exchange(port, CallEncoder(*WIRE).ping(7), replies=1, timeout=timeout)[0])


def test_a_client_that_never_reads_is_bounded_and_dropped(
    pool: ServerPool, trained_store: tuple[Path, str]
) -> None:
    server = start(pool, trained_store[0])
    before = worker_rss_mib(server)
    sock = non_reader(server.port)
    try:
        dropped_after = flood_until_dropped(sock, 20 + SLACK_S)
    finally:
        sock.close()
    assert dropped_after is not None, "the connection was never dropped"
    grown = worker_rss_mib(server) - before
    assert grown < 100, f"worker grew {grown:.0f} MiB for one client that never reads"
    assert ping_answered(server.port, 5.0)


def test_non_readers_cannot_lock_out_everyone(
    pool: ServerPool, trained_store: tuple[Path, str]
) -> None:
    server = start(pool, trained_store[0], max_connections=2)
    hostile = [non_reader(server.port) for _ in range(2)]
    try:
        for sock in hostile:  # each fills what it may, then goes silent, never reading
            flood_until_dropped(sock, 1.0)
        deadline = time.monotonic() + READ_TIMEOUT_S + IDLE_TIMEOUT_S + SLACK_S
        answered = False
        while not answered and time.monotonic() < deadline:
            try:
                answered = ping_answered(server.port, 2.0)
            except OSError:
                time.sleep(0.2)
        assert answered, "a well-behaved client stayed locked out"
    finally:
        for sock in hostile:
            sock.close()


def test_sigterm_is_not_held_up_by_a_client_that_never_reads(
    pool: ServerPool, trained_store: tuple[Path, str]
) -> None:
    server = start(pool, trained_store[0], read_timeout_s=60, idle_timeout_s=60)
    sock = non_reader(server.port)
    try:
        flood_until_dropped(sock, 2.0)  # fills the buffers; timeouts are too long to drop it
        started = time.monotonic()
        assert server.stop(signal.SIGTERM, timeout=30) == 0
        assert time.monotonic() - started < 3 + SLACK_S  # drain_s 3, not the client's mercy
    finally:
        sock.close()


@pytest.mark.parametrize("method", ["ping", "filter"])
def test_half_close_gets_every_call_answered(
    pool: ServerPool, trained_store: tuple[Path, str], method: str
) -> None:
    server = start(pool, trained_store[0])
    encoder = CallEncoder(*WIRE)
    request = FilterRequest(openrtb=OPENRTB, deadline_ms=10_000)
    calls = b"".join(
        encoder.ping(i) if method == "ping" else encoder.filter(i, request) for i in range(200)
    )
    replies, _ = exchange(server.port, calls, half_close=True)
    assert [reply.seqid for reply in replies] == list(range(200))


@pytest.mark.parametrize("protocol", [Protocol.COMPACT, Protocol.BINARY])
def test_a_batch_item_over_the_candidate_limit_is_refused_not_echoed(
    pool: ServerPool, trained_store: tuple[Path, str], protocol: Protocol
) -> None:
    server = start(pool, trained_store[0], max_candidates=10, max_message_bytes=4 << 20)
    wire = (protocol, Transport.FRAMED)
    encoder = CallEncoder(*wire)
    batch = [
        FilterRequest(openrtb=OPENRTB, candidates=["dsp-01"]),
        FilterRequest(openrtb=OPENRTB, candidates=[""] * 300_000),  # empty ids: ~300 KB compact
    ]
    calls = encoder.filter_batch(1, batch) + encoder.ping(2)
    replies, received = exchange(server.port, calls, wire=wire, replies=2)
    assert [reply.seqid for reply in replies] == [1, 2]
    assert replies[0].error is not None
    assert "requests[1].candidates" in str(replies[0].error)
    assert "300000 candidates, over the 10 limit" in str(replies[0].error)
    assert received < 10_000  # the refusal, not 300,000 echoed decisions


def test_a_length_past_the_end_of_its_frame_is_refused_naming_the_field(
    pool: ServerPool, trained_store: tuple[Path, str]
) -> None:
    """A candidates list announcing 2**30 items in a 40-byte frame: the reply names the field
    (it said `message: truncated`), and the connection goes on."""
    server = start(pool, trained_store[0])
    encoder = CallEncoder(*WIRE)
    call = encoder.filter(1, FilterRequest(openrtb=b"{}", candidates=["a"]))
    one = b"\x18\x01a"  # compact: a 1-string list header, then "a"
    assert call.count(one) == 1
    body = call[4:].replace(one, b"\xf8\x80\x80\x80\x80\x04" + one[1:])  # 2**30 items
    huge = len(body).to_bytes(4, "big") + body
    replies, _ = exchange(server.port, huge + encoder.ping(2), replies=2)
    assert [reply.seqid for reply in replies] == [1, 2]
    assert replies[0].error is not None
    assert "request.candidates" in str(replies[0].error)
    assert "announces more bytes than" in str(replies[0].error)

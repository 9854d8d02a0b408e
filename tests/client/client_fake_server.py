"""A small BidFilter server for the client and replay tests: asyncio in a background thread, on
127.0.0.1.

Built on the package's sans-IO codec (``ThriftConnectionDecoder`` and its ``reply_encoder()``),
so it speaks every transport and protocol the real server does, and answers in order on each
connection. Its policy is known, so tests can check what the clients compute:

- ``filter`` sends the partners whose name ends in an odd digit (``dsp-01``, ``dsp-03``), unless
  the request is one of the ``fail_open_every`` (see ``fails_open``): then it sends everyone,
  with outcome ``FAIL_OPEN_OVERLOAD``; ``openrtb == b"bad"`` is refused with ``InvalidRequest``;
- ``filter_batch`` answers each item the same way (a bad item gets an ``error``);
- ``ping`` answers ``"pong"``, ``model_info`` a fixed ``ModelInfo``.

Switches (attributes, changeable while running): ``drop_after`` closes a connection when its
call number ``drop_after + 1`` arrives, unanswered; ``delay`` answers that many seconds late
(still in order: a reply never overtakes one delayed before it);
``hang`` never answers; ``records_policy`` answers as a server that records its policy does
(propensity 1 on sent decisions, ``POLICY_PROPENSITY`` on the others; ``control`` for request
ids starting ``ctl``, everyone sent), else as an older server (neither field).
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from bidfilter.thrift import (
    Call,
    DecodedCall,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    Outcome,
    PartnerDecision,
    ReplyEncoder,
    ThriftConnectionDecoder,
    ThriftProtocolError,
)

PARTNERS = ("dsp-01", "dsp-02", "dsp-03", "dsp-04")
MODEL_VERSION = "fake-1"
POLICY_PROPENSITY = 0.05  # what records_policy gives a decision not sent


def sends(partner: str) -> bool:
    """The fake's policy: send to partners whose name ends in an odd digit."""
    return partner[-1:].isdigit() and int(partner[-1]) % 2 == 1


def fails_open(openrtb: bytes, fail_open_every: int | None) -> bool:
    """Whether the fake fails open on this request (a deterministic one in ``fail_open_every``)."""
    return fail_open_every is not None and zlib.crc32(openrtb) % fail_open_every == 0


def request_id_of(openrtb: bytes) -> str:
    try:
        document = json.loads(openrtb)
    except ValueError:
        return ""
    return str(document.get("id", "")) if isinstance(document, dict) else ""


@dataclass
class FakeStats:
    connections: int = 0
    calls: int = 0
    # (connection number, method) of every call answered, in the order served
    served: list[tuple[int, str]] = field(default_factory=list)
    most_calls_in_one_read: int = 0


@pytest.fixture
def fake_server() -> Iterator[FakeBidFilterServer]:
    """A running fake server on 127.0.0.1 (switches off; tests flip them as they need), always
    stopped; the client and the replay tests' conftests take it from here."""
    server = FakeBidFilterServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class FakeBidFilterServer:
    """Start with ``start()`` (returns the port), stop with ``stop()``; see the module docstring."""

    def __init__(
        self,
        *,
        drop_after: int | None = None,
        delay: float = 0.0,
        hang: bool = False,
        fail_open_every: int | None = None,
        record_calls: bool = True,
        records_policy: bool = False,
    ) -> None:
        self.records_policy = records_policy
        self.drop_after = drop_after
        self.delay = delay
        self.hang = hang
        self.fail_open_every = fail_open_every
        self.record_calls = record_calls
        self.stats = FakeStats()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: list[_FakeConnection] = []

    def start(self) -> int:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                loop.create_server(lambda: _FakeConnection(self), "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-bidfilter", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake server did not start")
        return self.port

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shut() -> None:
            assert self._server is not None
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)
        thread.join(10)
        self._loop = self._thread = None

    # -- the policy

    def decide(self, request: FilterRequest) -> FilterResponse:
        if request.openrtb == b"bad":
            raise _RefusedError(InvalidRequest(message="not a BidRequest", field="openrtb"))
        candidates: Sequence[str] = (
            request.candidates if request.candidates is not None else PARTNERS
        )
        fail_open = fails_open(request.openrtb, self.fail_open_every)
        request_id = request_id_of(request.openrtb)
        policy = self.records_policy
        control = policy and request_id.startswith("ctl")
        everyone = fail_open or control
        return FilterResponse(
            request_id=request_id,
            decisions=[
                PartnerDecision(
                    partner=partner,
                    bid_probability=0.9 if sends(partner) else 0.1,
                    send=everyone or sends(partner),
                    explore=False,
                    threshold=0.5,
                    propensity=(
                        (1.0 if everyone or sends(partner) else POLICY_PROPENSITY)
                        if policy
                        else None
                    ),
                )
                for partner in candidates
            ],
            model_version=MODEL_VERSION,
            outcome=Outcome.FAIL_OPEN_OVERLOAD if fail_open else Outcome.SCORED,
            server_us=5,
            control=True if control else None,
        )


class _RefusedError(Exception):
    def __init__(self, invalid: InvalidRequest) -> None:
        super().__init__(invalid.message)
        self.invalid = invalid


class _FakeConnection(asyncio.Protocol):
    def __init__(self, server: FakeBidFilterServer) -> None:
        self.server = server
        self.decoder = ThriftConnectionDecoder()
        self.encoder: ReplyEncoder | None = None
        self.transport: asyncio.Transport | None = None
        self.number = 0
        self.calls = 0
        self.last_due = 0.0  # when the last delayed reply is due

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.stats.connections += 1
        self.number = self.server.stats.connections
        self.server._connections.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server._connections:
            self.server._connections.remove(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        server = self.server
        try:
            calls = self.decoder.feed(data)
        except ThriftProtocolError:
            transport.abort()
            return
        if not calls:
            return
        stats = server.stats
        stats.most_calls_in_one_read = max(stats.most_calls_in_one_read, len(calls))
        encoder = self.encoder
        if encoder is None:
            encoder = self.encoder = self.decoder.reply_encoder()
        out: list[bytes] = []
        for call in calls:
            self.calls += 1
            if server.drop_after is not None and self.calls > server.drop_after:
                transport.write(b"".join(out))
                transport.close()
                return
            if server.hang:
                continue
            stats.calls += 1
            if server.record_calls:
                stats.served.append((self.number, call.method))
            out.append(self._answer(encoder, call))
        if not out:
            return
        reply = b"".join(out)
        loop = asyncio.get_running_loop()
        # In order, like the real server: a reply never overtakes one delayed before it.
        due = max(loop.time() + server.delay, self.last_due)
        if due > loop.time():
            self.last_due = due
            loop.call_at(due, self._write, reply)
        else:
            transport.write(reply)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _answer(self, encoder: ReplyEncoder, call: DecodedCall) -> bytes:
        if not isinstance(call, Call):
            return encoder.rejection(call)
        server = self.server
        if call.method == "filter":
            assert isinstance(call.args, FilterRequest)
            try:
                return encoder.filter(call.seqid, server.decide(call.args))
            except _RefusedError as refused:
                return encoder.invalid_request(call.seqid, refused.invalid)
        if call.method == "filter_batch":
            assert isinstance(call.args, list)
            responses = []
            for request in call.args:
                try:
                    responses.append(server.decide(request))
                except _RefusedError as refused:
                    responses.append(
                        FilterResponse(
                            request_id="",
                            decisions=[],
                            model_version=MODEL_VERSION,
                            outcome=Outcome.FAIL_OPEN_ERROR,
                            error=refused.invalid.message,
                        )
                    )
            return encoder.filter_batch(call.seqid, responses)
        if call.method == "model_info":
            return encoder.model_info(
                call.seqid,
                ModelInfo(
                    version=MODEL_VERSION,
                    partners=list(PARTNERS),
                    thresholds=dict.fromkeys(PARTNERS, 0.5),
                    loaded_at="2025-03-03T00:00:00Z",
                ),
            )
        return encoder.ping(call.seqid, "pong")

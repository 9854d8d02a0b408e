"""The per-connection stream decoders: detection, pipelining, partial data, limits, garbage."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from thrift_samples import OPENRTB, REQUESTS, RESPONSES

from bidfilter.thrift import (
    ApplicationExceptionType,
    Call,
    CallEncoder,
    FilterRequest,
    InvalidRequest,
    MessageTooLargeError,
    Protocol,
    RejectedCall,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    ReplyDecoder,
    ReplyEncoder,
    ThriftConnectionDecoder,
    ThriftProtocolError,
    Transport,
    encode_filter_call,
    encode_ping_call,
    frame,
    messages,
)
from bidfilter.thrift.messages import CODECS

WIRES = list(itertools.product(Protocol, Transport))
wires = pytest.mark.parametrize(("protocol", "transport"), WIRES, ids=lambda v: str(v))


def _unknown_method_call(protocol: Protocol, seqid: int) -> bytes:
    parts: list[bytes] = []
    CODECS[protocol].write_message_begin(parts, "filter_v2", 1, seqid)
    return b"".join([*parts, b"\x00"])


def _bad_args_call(protocol: Protocol, seqid: int) -> bytes:
    """A filter call whose request has no openrtb (its structure is fine: skippable)."""
    parts: list[bytes] = []
    CODECS[protocol].write_message_begin(parts, "filter", 1, seqid)
    request = b"\x0c\x00\x01\x00" if protocol is Protocol.BINARY else b"\x1c\x00"
    return b"".join([*parts, request, b"\x00"])


def _stream(protocol: Protocol, transport: Transport) -> tuple[bytes, list[object]]:
    """A pipelined stream of calls of every kind, and what the decoder must make of it."""
    calls = CallEncoder(protocol, transport)
    wrap = frame if transport is Transport.FRAMED else (lambda message: message)
    chunks = [
        calls.ping(1),
        calls.filter(2, REQUESTS["everything"]),
        wrap(_unknown_method_call(protocol, 3)),
        calls.filter_batch(4, list(REQUESTS.values())),
        wrap(_bad_args_call(protocol, 5)),
        calls.model_info(6),
        calls.filter(7, REQUESTS["minimal"]),
    ]
    expected: list[object] = [
        Call("ping", 1, None),
        Call("filter", 2, REQUESTS["everything"]),
        RejectedCall(
            "filter_v2",
            3,
            ApplicationExceptionType.UNKNOWN_METHOD,
            "",
            "Unknown function filter_v2",
        ),
        Call("filter_batch", 4, list(REQUESTS.values())),
        RejectedCall(
            "filter",
            5,
            ApplicationExceptionType.PROTOCOL_ERROR,
            "request.openrtb",
            "required field is missing",
        ),
        Call("model_info", 6, None),
        Call("filter", 7, REQUESTS["minimal"]),
    ]
    return b"".join(chunks), expected


@wires
def test_detects_protocol_and_transport(protocol: Protocol, transport: Transport) -> None:
    stream, expected = _stream(protocol, transport)
    decoder = ThriftConnectionDecoder()
    assert (decoder.protocol, decoder.transport) == (None, None)
    assert decoder.feed(stream) == expected
    assert (decoder.protocol, decoder.transport) == (protocol, transport)
    assert decoder.buffered_bytes == 0
    encoder = decoder.reply_encoder()
    assert (encoder.protocol, encoder.transport) == (protocol, transport)


@wires
def test_split_at_every_byte_boundary(protocol: Protocol, transport: Transport) -> None:
    stream, expected = _stream(protocol, transport)
    for split in range(len(stream) + 1):
        decoder = ThriftConnectionDecoder()
        assert decoder.feed(stream[:split]) + decoder.feed(stream[split:]) == expected, split


@wires
def test_byte_by_byte(protocol: Protocol, transport: Transport) -> None:
    stream, expected = _stream(protocol, transport)
    decoder = ThriftConnectionDecoder()
    calls = []
    for index in range(len(stream)):
        calls += decoder.feed(stream[index : index + 1])
        assert decoder.buffered_bytes <= len(stream)
    assert calls == expected
    assert decoder.buffered_bytes == 0


@settings(max_examples=100, deadline=None)
@given(data=st.data(), wire=st.sampled_from(WIRES))
def test_split_anywhere_any_number_of_times(
    data: st.DataObject, wire: tuple[Protocol, Transport]
) -> None:
    stream, expected = _stream(*wire)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = ThriftConnectionDecoder()
    calls = []
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        calls += decoder.feed(stream[start:end])
    assert calls == expected


@pytest.mark.parametrize("protocol", list(Protocol))
def test_an_unframed_message_is_not_reparsed_per_packet(
    protocol: Protocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = 0
    read_call = messages.read_call

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal attempts
        attempts += 1
        return read_call(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(messages, "read_call", counting)
    request = FilterRequest(OPENRTB * 300, [f"dsp-{i}" for i in range(20)], 50)  # ~100 KB
    stream = encode_filter_call(protocol, 1, request)
    decoder = ThriftConnectionDecoder()
    calls = []
    for start in range(0, len(stream), 1400):  # one TCP segment at a time
        calls += decoder.feed(stream[start : start + 1400])
    assert calls == [Call("filter", 1, request)]
    assert attempts <= 4


# -- limits ----------------------------------------------------------------------------------


def test_a_frame_over_the_limit_is_refused_from_its_length() -> None:
    decoder = ThriftConnectionDecoder(max_message_bytes=1000)
    with pytest.raises(MessageTooLargeError) as raised:
        decoder.feed(b"\x00\x00\x03\xe9")  # 1001
    assert (raised.value.field, raised.value.size, raised.value.limit) == ("frame", 1001, 1000)
    assert decoder.buffered_bytes == 0
    with pytest.raises(MessageTooLargeError):
        decoder.feed(b"\x80\x01")  # the connection is over


def test_a_frame_length_is_refused_before_its_last_bytes() -> None:
    decoder = ThriftConnectionDecoder()  # 1 MiB
    with pytest.raises(MessageTooLargeError):
        decoder.feed(b"\x00\x20")  # at least 2 MiB, whatever follows


def test_a_later_frame_over_the_limit() -> None:
    decoder = ThriftConnectionDecoder(max_message_bytes=1000)
    ping = frame(encode_ping_call(Protocol.COMPACT, 1))
    assert decoder.feed(ping) == [Call("ping", 1, None)]
    with pytest.raises(MessageTooLargeError):
        decoder.feed(b"\x00\x01\x00\x00")


@pytest.mark.parametrize("protocol", list(Protocol))
def test_an_unframed_message_over_the_limit_is_refused_from_a_length(protocol: Protocol) -> None:
    call = encode_filter_call(protocol, 1, FilterRequest(b"x" * 5000))
    decoder = ThriftConnectionDecoder(max_message_bytes=1000)
    with pytest.raises(MessageTooLargeError) as raised:
        decoder.feed(call[:40])  # the header and openrtb's length: not its 5000 bytes
    assert raised.value.size > 5000
    assert raised.value.field == "request.openrtb"  # which length was too long


def _huge_candidates_call(protocol: Protocol) -> bytes:
    """A filter call whose candidates list announces 2**30 items and holds one."""
    call = encode_filter_call(protocol, 7, FilterRequest(b"{}", ["a"]))
    if protocol is Protocol.BINARY:
        one, huge = b"\x0b\x00\x00\x00\x01\x00\x00\x00\x01a", b"\x0b\x40\x00\x00\x00"
    else:  # a short list header (1 << 4 | string), then the long form with a varint count
        one, huge = b"\x18\x01a", b"\xf8\x80\x80\x80\x80\x04"
    assert call.count(one) == 1
    return call.replace(one, huge + one[-2:] if protocol is Protocol.COMPACT else huge + one[5:])


@pytest.mark.parametrize("protocol", list(Protocol))
def test_a_length_past_the_end_of_a_frame_is_refused_naming_the_field(protocol: Protocol) -> None:
    (rejected,) = ThriftConnectionDecoder().feed(frame(_huge_candidates_call(protocol)))
    assert isinstance(rejected, RejectedCall)
    assert (rejected.method, rejected.seqid) == ("filter", 7)
    assert rejected.field == "request.candidates"
    assert "announces more bytes than" in rejected.message


@pytest.mark.parametrize("protocol", list(Protocol))
def test_an_unframed_message_of_small_fields_over_the_limit(protocol: Protocol) -> None:
    call = encode_filter_call(protocol, 1, FilterRequest(b"{}", ["dsp"] * 500))
    decoder = ThriftConnectionDecoder(max_message_bytes=1000)
    with pytest.raises(MessageTooLargeError):
        for start in range(0, len(call), 100):
            decoder.feed(call[start : start + 100])
            assert decoder.buffered_bytes <= 1000


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        ThriftConnectionDecoder(max_message_bytes=0)


# -- garbage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_bytes", "guess"),
    [
        (b"G", "HTTP"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP"),
        (b"PRI * HTTP/2.0\r\n", "HTTP"),
        (b"\x16", "TLS"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "TLS"),
        (b"\xff\xfe", "neither"),
        (b"\x00\x00\x00\x10\xff", "neither"),
        (b"\x00\x00\x00\x10 ", "neither"),
    ],
)
def test_garbage_is_refused_right_away(first_bytes: bytes, guess: str) -> None:
    decoder = ThriftConnectionDecoder()
    with pytest.raises(ThriftProtocolError) as raised:
        decoder.feed(first_bytes)
    assert raised.value.field == "transport"
    assert guess in raised.value.message
    assert decoder.buffered_bytes == 0
    with pytest.raises(ThriftProtocolError):
        decoder.feed(encode_ping_call(Protocol.BINARY, 1))


@pytest.mark.parametrize(
    "stream",
    [
        b"\x80\x02\x00\x01",  # binary version 2
        b"\x82\x02",  # compact version 2
        b"\x82\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # varint too long
        b"\x80\x01\x00\x01\x00\x01\x00\x00",  # a 65536-byte method name
        b"\x00\x00\x00\x05\x17\x00\x00\x00\x00",  # a frame of neither protocol
        b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x01\x01\x00",  # BOOL field, no value
        b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x01\x11\x00",  # type 17
        b"\x80\x01\x00\x09\x00\x00\x00\x04ping\x00\x00\x00\x01\x00",  # message type 9
    ],
)
def test_broken_headers_and_structures(stream: bytes) -> None:
    decoder = ThriftConnectionDecoder()
    with pytest.raises(ThriftProtocolError):
        decoder.feed(stream)


_LIMIT = 300
_prefixes = st.sampled_from(
    [
        b"",
        b"\x80\x01\x00\x01",
        b"\x80\x01\x00\x01\x00\x00\x00\x06filter\x00\x00\x00\x01",
        b"\x82\x21",
        b"\x82\x21\x01\x06filter",
        b"\x00\x00\x00\x20\x80\x01\x00\x01",
        b"\x00\x00\x00\x20\x82\x21",
        b"\x00\x00\x00\x06filter\x01",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(prefix=_prefixes, body=st.binary(max_size=400), cuts=st.lists(st.integers(0, 420)))
def test_arbitrary_bytes_only_raise_protocol_errors(
    prefix: bytes, body: bytes, cuts: list[int]
) -> None:
    stream = prefix + body
    decoder = ThriftConnectionDecoder(max_message_bytes=_LIMIT)
    edges = [0, *sorted(min(cut, len(stream)) for cut in cuts), len(stream)]
    try:
        for start, end in itertools.pairwise(edges):
            for event in decoder.feed(stream[start:end]):
                assert isinstance(event, Call | RejectedCall)
            assert decoder.buffered_bytes <= _LIMIT + 4
    except ThriftProtocolError:
        assert decoder.buffered_bytes == 0


@settings(max_examples=500, deadline=None)
@given(
    wire=st.sampled_from(WIRES),
    body=st.binary(max_size=400),
    cuts=st.lists(st.integers(0, 420)),
)
def test_arbitrary_bytes_to_a_client(
    wire: tuple[Protocol, Transport], body: bytes, cuts: list[int]
) -> None:
    decoder = ReplyDecoder(*wire, max_message_bytes=_LIMIT)
    edges = [0, *sorted(min(cut, len(body)) for cut in cuts), len(body)]
    try:
        for start, end in itertools.pairwise(edges):
            decoder.feed(body[start:end])
            assert decoder.buffered_bytes <= _LIMIT + 4
    except ThriftProtocolError:
        pass


# -- the client's side -----------------------------------------------------------------------


@wires
def test_reply_stream(protocol: Protocol, transport: Transport) -> None:
    replies = ReplyEncoder(protocol, transport)
    stream = b"".join(
        [
            replies.filter(1, RESPONSES["scored"]),
            replies.invalid_request(2, InvalidRequest("no imp", "imp")),
            replies.application_exception(
                "filter", 3, ApplicationExceptionType.PROTOCOL_ERROR, "bad"
            ),
            replies.rejection(
                RejectedCall("x", 4, ApplicationExceptionType.UNKNOWN_METHOD, "", "Unknown")
            ),
            replies.ping(5, "pong"),
        ]
    )
    for split in range(0, len(stream) + 1, 7):
        decoder = ReplyDecoder(protocol, transport)
        received = decoder.feed(stream[:split]) + decoder.feed(stream[split:])
        assert [reply.seqid for reply in received] == [1, 2, 3, 4, 5]
        assert received[0].filter_response() == RESPONSES["scored"]
        with pytest.raises(RemoteInvalidRequestError, match="imp: no imp"):
            received[1].unwrap()
        with pytest.raises(RemoteApplicationError) as raised:
            received[2].unwrap()
        assert raised.value.type is ApplicationExceptionType.PROTOCOL_ERROR
        assert isinstance(received[3].error, RemoteApplicationError)
        assert received[3].error.field == "x"
        assert received[4].pong() == "pong"


def test_reply_encoder_needs_a_detected_connection() -> None:
    with pytest.raises(RuntimeError):
        ThriftConnectionDecoder().reply_encoder()
    decoder = ThriftConnectionDecoder()
    decoder.feed(b"\x00\x00\x00\x00")  # an empty frame: framed, protocol still unknown
    with pytest.raises(RuntimeError):
        decoder.reply_encoder()
    assert decoder.feed(frame(encode_ping_call(Protocol.COMPACT, 1))) == [Call("ping", 1, None)]
    assert decoder.reply_encoder().protocol is Protocol.COMPACT

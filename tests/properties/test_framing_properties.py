"""Properties of the sans-IO Thrift stream decoders over generated streams of calls and replies.

tests/thrift/test_thrift_framing.py splits one fixed stream everywhere and feeds arbitrary
bytes; here the streams are generated (any calls, any replies, every wire), and the
properties are about prefixes, limits at their exact boundary, and edits of valid streams.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bidfilter.thrift import (
    Call,
    CallEncoder,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    MessageTooLargeError,
    ModelInfo,
    Outcome,
    PartnerDecision,
    Protocol,
    Reply,
    ReplyDecoder,
    ReplyEncoder,
    ThriftConnectionDecoder,
    ThriftProtocolError,
    Transport,
    encode_filter_call,
    frame,
)

WIRES = list(itertools.product(Protocol, Transport))
wires = st.sampled_from(WIRES)
i32s = st.integers(-(2**31), 2**31 - 1)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=16)
filter_requests = st.builds(
    FilterRequest,
    openrtb=st.binary(max_size=200),
    candidates=st.none() | st.lists(texts, max_size=6),
    deadline_ms=st.none() | i32s,
)
calls = st.one_of(
    st.builds(Call, st.just("ping"), i32s, st.none()),
    st.builds(Call, st.just("model_info"), i32s, st.none()),
    st.builds(Call, st.just("filter"), i32s, filter_requests),
    st.builds(Call, st.just("filter_batch"), i32s, st.lists(filter_requests, max_size=3)),
)
doubles = st.floats()  # NaN included: replies are compared as bytes
responses = st.builds(
    FilterResponse,
    request_id=texts,
    decisions=st.lists(
        st.builds(PartnerDecision, texts, doubles, st.booleans(), st.booleans(), doubles),
        max_size=5,
    ),
    model_version=texts,
    outcome=st.sampled_from(Outcome),
    server_us=st.none() | st.integers(-(2**63), 2**63 - 1),
    error=st.none() | texts,
)
replies = st.one_of(
    st.tuples(st.just("filter"), i32s, responses),
    st.tuples(st.just("filter_batch"), i32s, st.lists(responses, max_size=3)),
    st.tuples(st.just("invalid_request"), i32s, st.builds(InvalidRequest, texts, texts)),
    st.tuples(
        st.just("model_info"),
        i32s,
        st.builds(
            ModelInfo,
            texts,
            st.lists(texts, max_size=4),
            st.dictionaries(texts, doubles, max_size=4),
            texts,
        ),
    ),
    st.tuples(st.just("ping"), i32s, texts),
)


def encode_call(encoder: CallEncoder, call: Call) -> bytes:
    if call.method == "filter":
        assert isinstance(call.args, FilterRequest)
        return encoder.filter(call.seqid, call.args)
    if call.method == "filter_batch":
        assert isinstance(call.args, list)
        return encoder.filter_batch(call.seqid, call.args)
    return (
        encoder.model_info(call.seqid) if call.method == "model_info" else encoder.ping(call.seqid)
    )


def encode_reply(encoder: ReplyEncoder, reply: tuple[str, int, Any]) -> bytes:
    kind, seqid, value = reply
    encoded: bytes = getattr(encoder, kind)(seqid, value)
    return encoded


def reply_bytes(encoder: ReplyEncoder, reply: Reply) -> bytes:
    """A decoded reply written again: decoded replies are compared by their bytes (NaN)."""
    if reply.error is not None:
        return encode_reply(
            encoder,
            (
                "invalid_request",
                reply.seqid,
                InvalidRequest(reply.error.message, reply.error.field),
            ),
        )
    kind = {FilterResponse: "filter", list: "filter_batch", ModelInfo: "model_info", str: "ping"}
    return encode_reply(encoder, (kind[type(reply.value)], reply.seqid, reply.value))


def pieces(stream: bytes, cuts: Sequence[int]) -> list[bytes]:
    edges = [0, *sorted(min(cut, len(stream)) for cut in cuts), len(stream)]
    return [stream[start:end] for start, end in itertools.pairwise(edges)]


def feed_all(decoder: ThriftConnectionDecoder | ReplyDecoder, chunks: Sequence[bytes]) -> list[Any]:
    items: list[Any] = []
    for chunk in chunks:
        items += decoder.feed(chunk)
    return items


# -- valid streams ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    wire=wires,
    sent=st.lists(calls, min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_any_split_of_a_call_stream_gives_the_same_calls(
    wire: tuple[Protocol, Transport], sent: list[Call], cuts: list[int]
) -> None:
    stream = b"".join(encode_call(CallEncoder(*wire), call) for call in sent)
    decoder = ThriftConnectionDecoder()
    assert feed_all(decoder, pieces(stream, cuts)) == sent
    assert (decoder.protocol, decoder.transport) == wire
    assert decoder.buffered_bytes == 0


@settings(max_examples=200)
@given(wire=wires, sent=st.lists(calls, min_size=1, max_size=5), data=st.data())
def test_a_prefix_gives_exactly_the_messages_it_holds_whole(
    wire: tuple[Protocol, Transport], sent: list[Call], data: st.DataObject
) -> None:
    """Truncated messages (frames or not) never yield a call; the complete ones before do."""
    messages = [encode_call(CallEncoder(*wire), call) for call in sent]
    ends = list(itertools.accumulate(len(message) for message in messages))
    stream = b"".join(messages)
    cut = data.draw(st.integers(0, len(stream)), label="cut")
    cuts = data.draw(st.lists(st.integers(0, cut), max_size=6), label="cuts")
    complete = sum(end <= cut for end in ends)
    decoder = ThriftConnectionDecoder()
    assert feed_all(decoder, pieces(stream[:cut], cuts)) == sent[:complete]
    assert decoder.buffered_bytes == cut - (ends[complete - 1] if complete else 0)


@settings(max_examples=150)
@given(
    wire=wires,
    sent=st.lists(replies, min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_any_split_of_a_reply_stream_gives_the_same_replies(
    wire: tuple[Protocol, Transport], sent: list[tuple[str, int, Any]], cuts: list[int]
) -> None:
    encoder = ReplyEncoder(*wire)
    messages = [encode_reply(encoder, reply) for reply in sent]
    decoder = ReplyDecoder(*wire)
    received = feed_all(decoder, pieces(b"".join(messages), cuts))
    assert [reply.seqid for reply in received] == [seqid for _, seqid, _ in sent]
    assert [reply_bytes(encoder, reply) for reply in received] == messages
    assert decoder.buffered_bytes == 0


# -- limits ----------------------------------------------------------------------------------


def _largest_call_within(protocol: Protocol, size: int) -> bytes:
    """The largest filter call message of at most ``size`` bytes (its openrtb padded to fit):
    exactly ``size`` in binary; compact's varint lengths can make it a byte or two short."""
    overhead = len(encode_filter_call(protocol, 1, FilterRequest(b"")))
    for padding in range(size - overhead, -1, -1):
        message = encode_filter_call(protocol, 1, FilterRequest(b"x" * padding))
        if len(message) <= size:
            return message
    raise AssertionError(f"no filter call fits {size} bytes")


@settings(max_examples=150)
@given(
    protocol=st.sampled_from(Protocol),
    limit=st.integers(64, 70_000),
    excess=st.integers(1, 2**31 - 1),
    before=st.integers(0, 2),
    header_cuts=st.lists(st.integers(0, 4), max_size=3),
    client=st.booleans(),
)
def test_a_frame_over_the_limit_is_refused_from_its_header_alone(
    protocol: Protocol, limit: int, excess: int, before: int, header_cuts: list[int], client: bool
) -> None:
    """A frame of the limit is decoded; one byte more, or any size up to 2**31-1,
    is refused by the time its 4-byte length is in, before any of its body is sent."""
    at_limit = frame(_largest_call_within(protocol, limit))
    assert len(at_limit) - 4 >= (limit if protocol is Protocol.BINARY else limit - 2)
    length = min(limit + excess, 2**31 - 1)
    header = struct.pack(">i", length)
    decoder: ThriftConnectionDecoder | ReplyDecoder
    if client:
        decoder = ReplyDecoder(protocol, Transport.FRAMED, max_message_bytes=limit)
    else:
        decoder = ThriftConnectionDecoder(max_message_bytes=limit)
        assert len(decoder.feed(at_limit * before)) == before
    with pytest.raises(ThriftProtocolError) as refused:
        for chunk in pieces(header, header_cuts):
            decoder.feed(chunk)
    if client or before or length < 1 << 24:
        assert isinstance(refused.value, MessageTooLargeError)
        assert refused.value.limit == limit and limit < refused.value.size <= length
    else:
        # The first bytes of a connection, and no frame length a client would send: not Thrift.
        assert refused.value.field == "transport"
    assert decoder.buffered_bytes == 0
    if not client:
        fresh = ThriftConnectionDecoder(max_message_bytes=limit)
        assert len(fresh.feed(at_limit)) == 1


@settings(max_examples=100)
@given(
    protocol=st.sampled_from(Protocol),
    limit=st.integers(1024, 70_000),
    excess=st.integers(1, 100_000),
    cuts=st.lists(st.integers(0, 100), max_size=4),
)
def test_an_unframed_message_over_the_limit_is_refused_before_its_body(
    protocol: Protocol, limit: int, excess: int, cuts: list[int]
) -> None:
    body = b"x" * (limit + excess)
    message = encode_filter_call(protocol, 1, FilterRequest(body))
    # The openrtb bytes come last, followed by the request's and the args' STOP.
    before_body = message[: len(message) - len(body) - 2]
    decoder = ThriftConnectionDecoder(max_message_bytes=limit)
    with pytest.raises(MessageTooLargeError):
        feed_all(decoder, pieces(before_body, cuts))
    assert decoder.buffered_bytes == 0


# -- edits of valid streams ------------------------------------------------------------------

edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 5000), st.integers(0, 255)
    ),
    min_size=1,
    max_size=4,
)


def apply_edits(stream: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(stream)
    for kind, where, byte in changes:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << (byte % 8)
        elif kind == "insert":
            data[at:at] = bytes([byte])
        elif kind == "delete":
            del data[at : at + 1 + byte % 4]
    return bytes(data)


def outcome(
    chunks: Sequence[bytes], limit: int
) -> tuple[list[Any], ThriftProtocolError | None, int]:
    decoder = ThriftConnectionDecoder(max_message_bytes=limit)
    items: list[Any] = []
    for chunk in chunks:
        try:
            items += decoder.feed(chunk)
        except ThriftProtocolError as error:
            assert decoder.buffered_bytes == 0
            with pytest.raises(ThriftProtocolError):  # the connection is over
                decoder.feed(b"\x80\x01\x00\x01")
            return items, error, 0
        assert decoder.buffered_bytes <= limit + 4
    return items, None, decoder.buffered_bytes


@settings(max_examples=300)
@given(
    wire=wires,
    sent=st.lists(calls, min_size=1, max_size=4),
    changes=edits,
    step=st.integers(1, 64),
)
def test_edited_streams_decode_the_same_whole_or_split_and_fail_only_typed(
    wire: tuple[Protocol, Transport],
    sent: list[Call],
    changes: list[tuple[str, int, int]],
    step: int,
) -> None:
    stream = apply_edits(b"".join(encode_call(CallEncoder(*wire), call) for call in sent), changes)
    limit = 512  # small: the edits that make lengths grow reach it
    whole = outcome([stream], limit)
    split = outcome([stream[i : i + step] for i in range(0, len(stream), step)], limit)
    assert (whole[1] is None) == (split[1] is None), (whole[1], split[1])
    if whole[1] is None:
        assert whole[0] == split[0] and whole[2] == split[2]


# -- regression: what the fuzzer found (fuzz/fuzz_thrift_frames.py) ----------------------------


@pytest.mark.parametrize(
    "first", [b"", b"\x00\x00\x00\x00"], ids=["first frame", "after an empty frame"]
)
def test_a_frame_length_arriving_byte_by_byte_is_refused_as_early_as_in_one_piece(
    first: bytes,
) -> None:
    # "\x00\x20" already means 2 MiB or more: refused in one piece, but byte by byte it used to
    # wait for the fourth byte (the decoder did not look again before it).
    for decoder in (ThriftConnectionDecoder(), ReplyDecoder(Protocol.BINARY, Transport.FRAMED)):
        decoder.feed(first)
        decoder.feed(b"\x00")
        with pytest.raises(MessageTooLargeError):
            decoder.feed(b"\x20")

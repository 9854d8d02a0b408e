"""The C fast path of the binary codec agrees with the pure-Python codec, byte for byte.

It must give the same value or the same bytes wherever it answers, and answer ``None`` (leaving
the case, and its error, to the pure codec) wherever it cannot be sure.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from thrift_samples import REQUESTS, RESPONSES, filter_requests, filter_responses, make_response

from bidfilter.thrift import (
    FilterRequest,
    FilterResponse,
    PartnerDecision,
    Protocol,
    ThriftEncodeError,
    ThriftProtocolError,
    Transport,
    binary,
    encode_filter_reply,
)
from bidfilter.thrift.codec import MAX_DEPTH, encode_with
from bidfilter.thrift.framing import ReplyEncoder, frame

fast = binary._fastbinary
pytestmark = pytest.mark.skipif(fast is None, reason="C codec not built (no C compiler)")


def args_bytes(request: FilterRequest) -> bytes:
    return encode_with(binary.write_filter_args, request)


def pure_reply(seqid: int, response: FilterResponse, framed: bool) -> bytes:
    message = encode_filter_reply(Protocol.BINARY, seqid, response)
    return frame(message) if framed else message


# -- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_reads_sample_args_as_the_pure_reader(name: str) -> None:
    data = b"\x01\x02" + args_bytes(REQUESTS[name])  # at an offset, as inside a message
    assert fast.read_filter_args(data, 2) == binary.read_filter_args_pure(data, 2, MAX_DEPTH)
    assert fast.read_filter_args(data, 2) == (REQUESTS[name], len(data))


@given(filter_requests)
def test_reads_any_args_as_the_pure_reader(request: FilterRequest) -> None:
    data = args_bytes(request)
    assert fast.read_filter_args(data, 0) == binary.read_filter_args_pure(data, 0, MAX_DEPTH)


def test_repeated_field_last_one_wins_as_in_the_pure_reader() -> None:
    body = (
        b"\x0c\x00\x01"
        + b"\x0b\x00\x01" + struct.pack(">i", 1) + b"a"
        + b"\x0b\x00\x01" + struct.pack(">i", 1) + b"b"
        + b"\x00\x00"
    )  # fmt: skip
    assert fast.read_filter_args(body, 0) == binary.read_filter_args_pure(body, 0, MAX_DEPTH)
    assert fast.read_filter_args(body, 0) == (FilterRequest(b"b"), len(body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x0c\x00\x01\x00", id="args end missing"),
        pytest.param(b"\x0c\x00\x01\x00\x08\x00\x09\x00\x00\x00\x01\x00", id="extra args field"),
        pytest.param(b"\x0c\x00\x01\x00\x00", id="openrtb missing"),
        pytest.param(b"\x0c\x00\x02\x00\x00", id="other args field id"),
        pytest.param(b"\x0b\x00\x01\x00\x00\x00\x00\x00", id="args field of the wrong type"),
        pytest.param(b"\x0c\x00\x01\x0b\x00\x01\xff\xff\xff\xff\x00\x00", id="negative length"),
        pytest.param(b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x09abc", id="string cut short"),
        pytest.param(
            b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x00\x0f\x00\x02\x0b\x00\x00\x00\x01"
            b"\x00\x00\x00\x02\xc3\x28\x00\x00",
            id="candidate not UTF-8",
        ),
        pytest.param(
            b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x00\x0f\x00\x02\x08\x00\x00\x00\x01"
            b"\x00\x00\x00\x02\x00\x00",
            id="list of i32",
        ),
        pytest.param(
            b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x00\x0f\x00\x02\x0b\x7f\xff\xff\xff\x00\x00",
            id="list longer than the buffer",
        ),
        pytest.param(
            b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x00\x08\x00\x03\x00\x00", id="i32 cut short"
        ),
        pytest.param(
            b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x00\x02\x00\x07\x01\x00\x00", id="unknown field"
        ),
        pytest.param(b"\x0c\x00\x01\x0b\x00\x02\x00\x00\x00\x00\x00\x00", id="wrong field type"),
    ],
)
def test_leaves_anything_unusual_to_the_pure_reader(body: bytes) -> None:
    assert fast.read_filter_args(body, 0) is None
    # ... and the codec's answer is the pure reader's: a value, an error, or "need more bytes".
    try:
        expected: object = binary.read_filter_args_pure(body, 0, MAX_DEPTH)
    except Exception as error:  # any outcome is compared: a value, an error, "need more"
        expected = (type(error), str(error))
    try:
        actual: object = binary.read_filter_args(body, 0, MAX_DEPTH)
    except Exception as error:
        actual = (type(error), str(error))
    assert actual == expected


def test_unknown_field_is_read_by_the_pure_reader() -> None:
    body = b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x00\x02\x00\x07\x01\x00\x00"
    assert binary.read_filter_args(body, 0, MAX_DEPTH) == (FilterRequest(b""), len(body))


def test_out_of_range_offsets_are_left_alone() -> None:
    data = args_bytes(REQUESTS["minimal"])
    assert fast.read_filter_args(data, len(data) + 1) is None
    assert fast.read_filter_args(data, -1) is None
    with pytest.raises(TypeError):
        fast.read_filter_args(bytearray(data), 0)


# -- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("framed", [False, True])
@pytest.mark.parametrize("name", [n for n in RESPONSES if n != "unknown partner"])
def test_writes_sample_replies_as_the_pure_writer(name: str, framed: bool) -> None:
    assert fast.write_filter_reply(7, RESPONSES[name], framed) == pure_reply(
        7, RESPONSES[name], framed
    )


@given(st.integers(-(2**31), 2**31 - 1), filter_responses, st.booleans())
def test_writes_any_reply_as_the_pure_writer(
    seqid: int, response: FilterResponse, framed: bool
) -> None:
    assert fast.write_filter_reply(seqid, response, framed) == pure_reply(seqid, response, framed)


def test_many_decisions_use_the_heap_path() -> None:
    response = make_response(300)
    assert fast.write_filter_reply(1, response, True) == pure_reply(1, response, True)


@pytest.mark.parametrize(
    ("seqid", "response"),
    [
        pytest.param(2**31, make_response(2), id="seqid past i32"),
        pytest.param(1, make_response(2, server_us=2**63), id="server_us past i64"),
        pytest.param(1, make_response(2, request_id="\ud800"), id="lone surrogate"),
        pytest.param(
            1,
            make_response(2, decisions=[PartnerDecision("a", 1, True, False, 0.5)]),
            id="int probability",
        ),
        pytest.param(
            1,
            make_response(2, decisions=[PartnerDecision("a", 0.5, 1, False, 0.5)]),  # type: ignore[arg-type]
            id="int flag",
        ),
        pytest.param(
            1,
            make_response(2, decisions=[PartnerDecision("a", 0.5, True, False, 0.5, 1)]),
            id="int propensity",
        ),
        pytest.param(1, make_response(2, control=1), id="int control"),  # type: ignore[arg-type]
        pytest.param(1, "not a response", id="not a FilterResponse"),
    ],
)
def test_leaves_anything_unusual_to_the_pure_writer(seqid: int, response: object) -> None:
    assert fast.write_filter_reply(seqid, response, True) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field", ["request_id", "decisions", "model_version", "outcome", "error", "control"]
)
def test_a_deleted_field_is_left_to_the_pure_writer(field: str) -> None:
    response = make_response(2)
    delattr(response, field)
    assert fast.write_filter_reply(1, response, True) is None


@pytest.mark.parametrize("field", ["partner", "bid_probability", "send", "threshold", "propensity"])
def test_a_decision_with_a_deleted_field_is_left_to_the_pure_writer(field: str) -> None:
    response = make_response(2)
    delattr(response.decisions[1], field)
    assert fast.write_filter_reply(1, response, True) is None


def test_reply_encoder_still_raises_the_pure_writers_errors() -> None:
    encoder = ReplyEncoder(Protocol.BINARY, Transport.FRAMED)
    with pytest.raises(ThriftEncodeError, match="server_us"):
        encoder.filter(1, make_response(2, server_us=2**63))
    with pytest.raises(ThriftEncodeError, match="UTF-8"):
        encoder.filter(1, make_response(2, request_id="\ud800"))


def test_reply_encoder_writes_unusual_replies_through_the_pure_writer() -> None:
    response = make_response(1, decisions=[PartnerDecision("a", 1, True, False, 0)])
    assert fast.write_filter_reply(3, response, False) is None
    encoder = ReplyEncoder(Protocol.BINARY, Transport.UNFRAMED)
    assert encoder.filter(3, response) == pure_reply(3, response, False)


def test_thrift_protocol_errors_name_the_field_with_the_fast_path_on() -> None:
    body = b"\x0c\x00\x01\x0b\x00\x01\xff\xff\xff\xff\x00\x00"
    with pytest.raises(ThriftProtocolError) as caught:
        binary.read_filter_args(body, 0, MAX_DEPTH)
    assert caught.value.field == "request.openrtb"


@pytest.mark.parametrize("framed", [False, True])
@pytest.mark.parametrize("control", [None, False, True])
def test_writes_propensity_and_control_as_the_pure_writer(
    framed: bool, control: bool | None
) -> None:
    decisions = [
        PartnerDecision("a", 0.5, True, False, 0.2, 1.0),
        PartnerDecision("b", 0.1, False, False, 0.2, 0.05),
        PartnerDecision("c", 0.1, True, True, 0.2),  # a decision without it, among others
    ]
    response = make_response(3, decisions=decisions, control=control)
    written = fast.write_filter_reply(9, response, framed)
    assert written is not None
    assert written == pure_reply(9, response, framed)

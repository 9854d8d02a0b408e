"""The binary and compact codecs alone: round trips, forward compatibility, typed errors.

Messages with fields bidfilter does not know are written with the official library's protocol
primitives (``writeFieldBegin``...), so they are what a newer client would really send.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from msgspec.structs import replace
from thrift.Thrift import TMessageType, TType
from thrift_official import official_bytes
from thrift_samples import (
    MODEL_INFOS,
    OPENRTB,
    PARTNERS,
    REQUESTS,
    RESPONSES,
    filter_requests,
    filter_responses,
    model_infos,
)

from bidfilter.thrift import (
    ApplicationExceptionType,
    Call,
    FilterRequest,
    FilterResponse,
    ModelInfo,
    Outcome,
    PartnerDecision,
    Protocol,
    RejectedCall,
    RemoteApplicationError,
    Reply,
    ThriftConnectionDecoder,
    ThriftEncodeError,
    ThriftProtocolError,
    decode_call,
    decode_reply,
    encode_filter_call,
    encode_filter_reply,
    encode_model_info_reply,
    encode_ping_reply,
)
from bidfilter.thrift.codec import decode_whole, encode_with
from bidfilter.thrift.messages import CODECS

PROTOCOLS = list(Protocol)
Writer = Callable[[Any], None]

# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@given(request=filter_requests)
def test_filter_request_round_trip(protocol: Protocol, request: FilterRequest) -> None:
    codec = CODECS[protocol]
    data = encode_with(codec.write_filter_request, request)
    assert decode_whole(codec.read_filter_request, data, "request") == request
    assert decode_call(encode_filter_call(protocol, 1, request), protocol) == Call(
        "filter", 1, request
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
@given(response=filter_responses)
def test_filter_response_round_trip(protocol: Protocol, response: FilterResponse) -> None:
    codec = CODECS[protocol]
    data = encode_with(codec.write_filter_response, response)
    decoded = decode_whole(codec.read_filter_response, data, "response")
    assert decoded == response
    assert type(decoded.outcome) is Outcome
    assert decode_reply(encode_filter_reply(protocol, 2, response), protocol) == Reply(
        "filter", 2, response
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
@given(info=model_infos)
def test_model_info_round_trip(protocol: Protocol, info: ModelInfo) -> None:
    data = encode_model_info_reply(protocol, 3, info)
    assert decode_reply(data, protocol).model_info() == info


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nan_and_infinities_survive(protocol: Protocol) -> None:
    decision = PartnerDecision("p", float("nan"), True, False, float("-inf"))
    data = encode_filter_reply(protocol, 1, replace(RESPONSES["scored"], decisions=[decision]))
    (decoded,) = decode_reply(data, protocol).filter_response().decisions
    assert decoded.bid_probability != decoded.bid_probability
    assert decoded.threshold == float("-inf")


# -- forward compatibility: fields a newer client or server sends -----------------------------


def _write_future_struct(oprot: Any, depth: int = 2) -> None:
    """A struct holding one field of every type, containers nested in containers."""
    oprot.writeStructBegin("Future")
    oprot.writeFieldBegin("flag", TType.BOOL, 1)
    oprot.writeBool(False)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("small", TType.BYTE, 2)
    oprot.writeByte(-7)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("short", TType.I16, 3)
    oprot.writeI16(-300)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("int", TType.I32, 20)
    oprot.writeI32(2**31 - 1)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("long", TType.I64, -4)
    oprot.writeI64(-(2**63))
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("real", TType.DOUBLE, 6)
    oprot.writeDouble(2.5)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("text", TType.STRING, 7)
    oprot.writeString("é" * 100)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("id", TType.UUID, 8)
    oprot.writeUuid(uuid.UUID(int=12345))
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("nested", TType.LIST, 9)
    oprot.writeListBegin(TType.MAP, 2)
    for _ in range(2):
        oprot.writeMapBegin(TType.STRING, TType.LIST, 1)
        oprot.writeString("k")
        oprot.writeListBegin(TType.I64, 3)
        for value in (1, -2, 2**40):
            oprot.writeI64(value)
        oprot.writeListEnd()
        oprot.writeMapEnd()
    oprot.writeListEnd()
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("bools", TType.LIST, 10)
    oprot.writeListBegin(TType.BOOL, 17)
    for index in range(17):
        oprot.writeBool(index % 2 == 0)
    oprot.writeListEnd()
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("reals", TType.SET, 11)
    oprot.writeSetBegin(TType.DOUBLE, 3)
    for real in (0.5, 1.5, 2.5):
        oprot.writeDouble(real)
    oprot.writeSetEnd()
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("empty", TType.MAP, 12)
    oprot.writeMapBegin(TType.STRING, TType.STRUCT, 0)
    oprot.writeMapEnd()
    oprot.writeFieldEnd()
    if depth:
        oprot.writeFieldBegin("children", TType.MAP, 13)
        oprot.writeMapBegin(TType.I32, TType.STRUCT, 2)
        for key in (1, 2):
            oprot.writeI32(key)
            _write_future_struct(oprot, depth - 1)
        oprot.writeMapEnd()
        oprot.writeFieldEnd()
    oprot.writeFieldStop()
    oprot.writeStructEnd()


def _write_unknown_fields(oprot: Any, first_id: int) -> None:
    """Unknown fields of every kind, ids from ``first_id`` (small deltas and large ones)."""
    oprot.writeFieldBegin("new_flag", TType.BOOL, first_id)
    oprot.writeBool(True)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("future", TType.STRUCT, 99)
    _write_future_struct(oprot)
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("futures", TType.LIST, 100)
    oprot.writeListBegin(TType.STRUCT, 16)
    for _ in range(16):
        _write_future_struct(oprot, 0)
    oprot.writeListEnd()
    oprot.writeFieldEnd()
    oprot.writeFieldBegin("by_key", TType.MAP, 1000)
    oprot.writeMapBegin(TType.STRING, TType.STRUCT, 1)
    oprot.writeString("key")
    _write_future_struct(oprot, 0)
    oprot.writeMapEnd()
    oprot.writeFieldEnd()


def _write_message(oprot: Any, name: str, message_type: int, seqid: int, body: Writer) -> None:
    oprot.writeMessageBegin(name, message_type, seqid)
    body(oprot)
    oprot.writeMessageEnd()


def _write_request_from_the_future(oprot: Any, request: FilterRequest) -> None:
    oprot.writeStructBegin("FilterRequest")
    _write_unknown_fields(oprot, -3)
    if request.candidates is not None:  # known fields out of order, unknowns in between
        oprot.writeFieldBegin("candidates", TType.LIST, 2)
        oprot.writeListBegin(TType.STRING, len(request.candidates))
        for candidate in request.candidates:
            oprot.writeString(candidate)
        oprot.writeListEnd()
        oprot.writeFieldEnd()
    oprot.writeFieldBegin("openrtb", TType.STRING, 1)
    oprot.writeBinary(request.openrtb)
    oprot.writeFieldEnd()
    _write_unknown_fields(oprot, 4)
    if request.deadline_ms is not None:
        oprot.writeFieldBegin("deadline_ms", TType.I32, 3)
        oprot.writeI32(request.deadline_ms)
        oprot.writeFieldEnd()
    oprot.writeFieldStop()
    oprot.writeStructEnd()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", REQUESTS)
def test_unknown_fields_in_a_filter_request_are_skipped(protocol: Protocol, name: str) -> None:
    request = REQUESTS[name]

    def args(oprot: Any) -> None:
        oprot.writeStructBegin("filter_args")
        _write_unknown_fields(oprot, 2)  # a newer client's second argument, say
        oprot.writeFieldBegin("request", TType.STRUCT, 1)
        _write_request_from_the_future(oprot, request)
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()

    data = official_bytes(
        protocol, lambda oprot: _write_message(oprot, "filter", TMessageType.CALL, 5, args)
    )
    assert decode_call(data, protocol) == Call("filter", 5, request)
    # ... and in a stream, where the skipping also finds the message's end
    assert ThriftConnectionDecoder().feed(data * 3) == [Call("filter", 5, request)] * 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_fields_in_a_reply_are_skipped(protocol: Protocol) -> None:
    response = RESPONSES["scored"]

    def write_decision(oprot: Any, decision: PartnerDecision) -> None:
        oprot.writeStructBegin("PartnerDecision")
        for fid, (ttype, value) in enumerate(
            [
                (TType.STRING, decision.partner),
                (TType.DOUBLE, decision.bid_probability),
                (TType.BOOL, decision.send),
                (TType.BOOL, decision.explore),
                (TType.DOUBLE, decision.threshold),
            ],
            start=1,
        ):
            oprot.writeFieldBegin("", ttype, fid)
            {TType.STRING: oprot.writeString, TType.DOUBLE: oprot.writeDouble}.get(
                ttype, oprot.writeBool
            )(value)
            oprot.writeFieldEnd()
        _write_unknown_fields(oprot, 7)  # past propensity (6)
        oprot.writeFieldStop()
        oprot.writeStructEnd()

    def result(oprot: Any) -> None:
        oprot.writeStructBegin("filter_result")
        oprot.writeFieldBegin("success", TType.STRUCT, 0)
        oprot.writeStructBegin("FilterResponse")
        oprot.writeFieldBegin("request_id", TType.STRING, 1)
        oprot.writeString(response.request_id)
        oprot.writeFieldEnd()
        oprot.writeFieldBegin("decisions", TType.LIST, 2)
        oprot.writeListBegin(TType.STRUCT, len(response.decisions))
        for decision in response.decisions:
            write_decision(oprot, decision)
        oprot.writeListEnd()
        oprot.writeFieldEnd()
        oprot.writeFieldBegin("model_version", TType.STRING, 3)
        oprot.writeString(response.model_version)
        oprot.writeFieldEnd()
        _write_unknown_fields(oprot, 9)  # past logged (8)
        oprot.writeFieldBegin("outcome", TType.I32, 4)
        oprot.writeI32(response.outcome)
        oprot.writeFieldEnd()
        oprot.writeFieldBegin("server_us", TType.I64, 5)
        oprot.writeI64(response.server_us)
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()

    data = official_bytes(
        protocol, lambda oprot: _write_message(oprot, "filter", TMessageType.REPLY, 6, result)
    )
    assert decode_reply(data, protocol).filter_response() == response


def _nested_structs(oprot: Any, levels: int) -> None:
    oprot.writeStructBegin("Nest")
    if levels:
        oprot.writeFieldBegin("inner", TType.STRUCT, 99)
        _nested_structs(oprot, levels - 1)
        oprot.writeFieldEnd()
    oprot.writeFieldStop()
    oprot.writeStructEnd()


def _filter_call_with_unknown(protocol: Protocol, unknown: Writer) -> bytes:
    def args(oprot: Any) -> None:
        oprot.writeStructBegin("filter_args")
        oprot.writeFieldBegin("request", TType.STRUCT, 1)
        oprot.writeStructBegin("FilterRequest")
        oprot.writeFieldBegin("openrtb", TType.STRING, 1)
        oprot.writeBinary(b"{}")
        oprot.writeFieldEnd()
        unknown(oprot)
        oprot.writeFieldStop()
        oprot.writeStructEnd()
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()

    return official_bytes(
        protocol, lambda oprot: _write_message(oprot, "filter", TMessageType.CALL, 1, args)
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nesting_is_limited(protocol: Protocol) -> None:
    def nest(levels: int) -> Writer:
        def write(oprot: Any) -> None:
            oprot.writeFieldBegin("future", TType.STRUCT, 99)
            _nested_structs(oprot, levels)
            oprot.writeFieldEnd()

        return write

    shallow = _filter_call_with_unknown(protocol, nest(50))
    assert decode_call(shallow, protocol) == Call("filter", 1, FilterRequest(b"{}"))
    deep = _filter_call_with_unknown(protocol, nest(200))
    rejected = decode_call(deep, protocol)
    assert isinstance(rejected, RejectedCall)
    assert rejected.type is ApplicationExceptionType.PROTOCOL_ERROR
    assert rejected.field.startswith("request.#99")
    assert "nested deeper than 64 levels" in rejected.message
    # In an unframed stream the message's end cannot be found: the connection is given up.
    with pytest.raises(ThriftProtocolError, match="nested deeper"):
        ThriftConnectionDecoder().feed(deep)


# -- typed errors ----------------------------------------------------------------------------


def _rejected(protocol: Protocol, unknown: Writer) -> RejectedCall:
    rejected = decode_call(_filter_call_with_unknown(protocol, unknown), protocol)
    assert isinstance(rejected, RejectedCall), rejected
    assert rejected.type is ApplicationExceptionType.PROTOCOL_ERROR
    return rejected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_known_field_with_the_wrong_type_is_refused(protocol: Protocol) -> None:
    def candidates_as_a_string(oprot: Any) -> None:
        oprot.writeFieldBegin("candidates", TType.STRING, 2)
        oprot.writeString("dsp-a,dsp-b")
        oprot.writeFieldEnd()

    rejected = _rejected(protocol, candidates_as_a_string)
    assert rejected.field == "request.candidates"
    assert rejected.message == "string, expected list"
    assert rejected.reason == "request.candidates: string, expected list"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_list_of_the_wrong_type_is_refused(protocol: Protocol) -> None:
    def candidates_as_ints(oprot: Any) -> None:
        oprot.writeFieldBegin("candidates", TType.LIST, 2)
        oprot.writeListBegin(TType.I32, 1)
        oprot.writeI32(5)
        oprot.writeListEnd()
        oprot.writeFieldEnd()

    rejected = _rejected(protocol, candidates_as_ints)
    assert (rejected.field, rejected.message) == (
        "request.candidates",
        "list of i32, expected list of string",
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_candidate_that_is_not_utf8_is_refused(protocol: Protocol) -> None:
    def candidates(oprot: Any) -> None:
        oprot.writeFieldBegin("candidates", TType.LIST, 2)
        oprot.writeListBegin(TType.STRING, 2)
        oprot.writeBinary(b"dsp-a")
        oprot.writeBinary(b"dsp-\xff")
        oprot.writeListEnd()
        oprot.writeFieldEnd()

    rejected = _rejected(protocol, candidates)
    assert (rejected.field, rejected.message) == ("request.candidates[1]", "not valid UTF-8")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_missing_required_field_is_refused(protocol: Protocol) -> None:
    def args(oprot: Any) -> None:
        oprot.writeStructBegin("filter_args")
        oprot.writeFieldBegin("request", TType.STRUCT, 1)
        oprot.writeStructBegin("FilterRequest")
        oprot.writeFieldBegin("deadline_ms", TType.I32, 3)
        oprot.writeI32(10)
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()

    data = official_bytes(
        protocol, lambda oprot: _write_message(oprot, "filter", TMessageType.CALL, 4, args)
    )
    assert decode_call(data, protocol) == RejectedCall(
        "filter",
        4,
        ApplicationExceptionType.PROTOCOL_ERROR,
        "request.openrtb",
        "required field is missing",
    )
    no_args = official_bytes(
        protocol,
        lambda oprot: _write_message(oprot, "filter", TMessageType.CALL, 6, _empty_struct),
    )
    assert decode_call(no_args, protocol) == RejectedCall(
        "filter",
        6,
        ApplicationExceptionType.PROTOCOL_ERROR,
        "request",
        "required argument is missing",
    )


def _empty_struct(oprot: Any) -> None:
    oprot.writeStructBegin("")
    oprot.writeFieldStop()
    oprot.writeStructEnd()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncated_and_padded_messages(protocol: Protocol) -> None:
    call = encode_filter_call(protocol, 9, REQUESTS["candidates"])
    for end in range(len(call)):
        try:
            decoded = decode_call(call[:end], protocol)
        except ThriftProtocolError as error:
            assert error.field in ("message", "message.name")  # the header itself is cut
        else:
            assert isinstance(decoded, RejectedCall)
            assert (decoded.method, decoded.seqid) == ("filter", 9)
            assert decoded.message.startswith("truncated")
    padded = decode_call(call + b"\x00", protocol)
    assert isinstance(padded, RejectedCall)
    assert padded.message == "1 unexpected bytes after the end"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_replies_and_unknown_message_types_sent_to_a_server(protocol: Protocol) -> None:
    reply = encode_ping_reply(protocol, 3, "pong")
    rejected = decode_call(reply, protocol)
    assert isinstance(rejected, RejectedCall)
    assert rejected.type is ApplicationExceptionType.INVALID_MESSAGE_TYPE
    assert (rejected.method, rejected.seqid) == ("ping", 3)
    with pytest.raises(ThriftProtocolError, match="a client takes replies"):
        decode_reply(encode_filter_call(protocol, 1, REQUESTS["minimal"]), protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_oneway_calls_are_marked(protocol: Protocol) -> None:
    data = official_bytes(
        protocol,
        lambda oprot: _write_message(oprot, "ping", TMessageType.ONEWAY, 2, _empty_struct),
    )
    assert decode_call(data, protocol) == Call("ping", 2, None, oneway=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reply_without_a_result(protocol: Protocol) -> None:
    data = official_bytes(
        protocol,
        lambda oprot: _write_message(oprot, "model_info", TMessageType.REPLY, 2, _empty_struct),
    )
    reply = decode_reply(data, protocol)
    with pytest.raises(RemoteApplicationError) as raised:
        reply.model_info()
    assert raised.value.type is ApplicationExceptionType.MISSING_RESULT
    assert (raised.value.method, raised.value.seqid) == ("model_info", 2)
    assert raised.value.message == "model_info failed: unknown result"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reply_accessor_for_another_method(protocol: Protocol) -> None:
    reply = decode_reply(encode_ping_reply(protocol, 1, "pong"), protocol)
    with pytest.raises(ThriftProtocolError, match="a reply to 'ping'"):
        reply.filter_response()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unknown_outcome_is_refused(protocol: Protocol) -> None:
    response = replace(RESPONSES["scored"], outcome=9)
    with pytest.raises(ThriftProtocolError) as raised:
        decode_reply(encode_filter_reply(protocol, 1, response), protocol)
    assert raised.value.field == "result.success.outcome"
    assert raised.value.message == "9 is not an Outcome"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_values_that_cannot_be_written(protocol: Protocol) -> None:
    with pytest.raises(ThriftEncodeError) as raised:
        encode_filter_call(protocol, 1, FilterRequest(b"{}", None, 2**31))
    assert raised.value.field == "deadline_ms"
    with pytest.raises(ThriftEncodeError, match="seqid"):
        encode_filter_call(protocol, 2**31, FilterRequest(b"{}"))
    with pytest.raises(ThriftEncodeError, match="server_us"):
        encode_filter_reply(protocol, 1, replace(RESPONSES["scored"], server_us=2**63))
    with pytest.raises(ThriftEncodeError, match="UTF-8"):
        encode_filter_call(protocol, 1, FilterRequest(b"{}", ["\ud800"]))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_long_strings_and_lists(protocol: Protocol) -> None:
    """Lengths past one varint byte and lists past the compact short header."""
    request = FilterRequest(OPENRTB * 200, PARTNERS * 10 + ["x" * 70_000], 1)
    assert decode_call(encode_filter_call(protocol, 1, request), protocol) == Call(
        "filter", 1, request
    )
    info = MODEL_INFOS["twenty"]
    assert decode_reply(encode_model_info_reply(protocol, 1, info), protocol).unwrap() == info

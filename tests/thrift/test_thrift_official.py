"""bidfilter's codec against the official Apache Thrift library, byte for byte, both ways.

For each protocol, each message of the service: the official generated code (``Client``,
``Processor``) and bidfilter write the same bytes, and each decodes the other's. The official
protocols run both in pure Python and accelerated (the C ``fastbinary`` extension).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift_official import (
    Official,
    official_bytes,
    official_call,
    official_reader,
    official_receive,
    official_reply,
)
from thrift_samples import (
    MODEL_INFOS,
    OUTCOMES,
    REQUESTS,
    RESPONSES,
    filter_requests,
    filter_responses,
    model_infos,
)

from bidfilter.thrift import (
    ApplicationExceptionType,
    Call,
    CallEncoder,
    FilterRequest,
    InvalidRequest,
    OutcomeReceipt,
    Protocol,
    RejectedCall,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    Reply,
    ReplyDecoder,
    ThriftConnectionDecoder,
    Transport,
    decode_call,
    decode_reply,
    encode_application_exception,
    encode_filter_batch_call,
    encode_filter_batch_reply,
    encode_filter_call,
    encode_filter_reply,
    encode_invalid_request_reply,
    encode_model_info_call,
    encode_model_info_reply,
    encode_ping_call,
    encode_ping_reply,
    encode_rejection,
    encode_report_outcomes_call,
    encode_report_outcomes_reply,
)
from bidfilter.thrift.codec import encode_with
from bidfilter.thrift.messages import CODECS

PROTOCOLS = list(Protocol)
SEQIDS = [0, 1, 300, 2**31 - 1, -1, -(2**31)]
accelerated = pytest.mark.parametrize("accelerated", [False, True], ids=["pure", "accelerated"])


# -- calls -----------------------------------------------------------------------------------


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", REQUESTS)
def test_filter_call(official: Official, protocol: Protocol, name: str, accelerated: bool) -> None:
    request = REQUESTS[name]
    for seqid in SEQIDS:
        expected = official_call(
            official, protocol, "filter", seqid, official.request(request), accelerated=accelerated
        )
        ours = encode_filter_call(protocol, seqid, request)
        assert ours == expected
        assert decode_call(expected, protocol) == Call("filter", seqid, request)
        iprot = official_reader(protocol, ours, accelerated=accelerated)
        assert iprot.readMessageBegin() == ("filter", TMessageType.CALL, seqid)
        args = official.service.filter_args()
        args.read(iprot)
        assert args.request == official.request(request)


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("count", [0, 1, 5, 14, 15, 40])
def test_filter_batch_call(
    official: Official, protocol: Protocol, count: int, accelerated: bool
) -> None:
    samples = list(REQUESTS.values())
    requests = [samples[index % len(samples)] for index in range(count)]
    expected = official_call(
        official,
        protocol,
        "filter_batch",
        9,
        [official.request(r) for r in requests],
        accelerated=accelerated,
    )
    ours = encode_filter_batch_call(protocol, 9, requests)
    assert ours == expected
    assert decode_call(expected, protocol) == Call("filter_batch", 9, requests)
    iprot = official_reader(protocol, ours, accelerated=accelerated)
    assert iprot.readMessageBegin() == ("filter_batch", TMessageType.CALL, 9)
    args = official.service.filter_batch_args()
    args.read(iprot)
    assert args.requests == [official.request(r) for r in requests]


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("method", ["model_info", "ping"])
def test_calls_without_args(
    official: Official, protocol: Protocol, method: str, accelerated: bool
) -> None:
    encode = {"model_info": encode_model_info_call, "ping": encode_ping_call}[method]
    for seqid in SEQIDS:
        expected = official_call(official, protocol, method, seqid, accelerated=accelerated)
        assert encode(protocol, seqid) == expected
        assert decode_call(expected, protocol) == Call(method, seqid, None)


# -- replies ---------------------------------------------------------------------------------


def _reply_of(
    official: Official,
    protocol: Protocol,
    method: str,
    seqid: int,
    outcome: Any,
    accelerated: bool,
) -> bytes:
    """The official Processor's answer to an official call of ``method``."""
    args: tuple[Any, ...] = ()
    if method == "filter":
        args = (official.request(REQUESTS["minimal"]),)
    elif method == "filter_batch":
        args = ([official.request(REQUESTS["minimal"])],)
    elif method == "report_outcomes":
        args = ([],)
    call = official_call(official, protocol, method, seqid, *args, accelerated=accelerated)
    return official_reply(official, protocol, call, outcome, accelerated=accelerated)


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", RESPONSES)
def test_filter_reply(official: Official, protocol: Protocol, name: str, accelerated: bool) -> None:
    response = RESPONSES[name]
    for seqid in (0, 77, -5):
        expected = _reply_of(
            official, protocol, "filter", seqid, official.response(response), accelerated
        )
        ours = encode_filter_reply(protocol, seqid, response)
        assert ours == expected
        assert decode_reply(expected, protocol) == Reply("filter", seqid, response)
        received = official_receive(official, protocol, "filter", ours, accelerated=accelerated)
        assert received == official.response(response)


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_filter_invalid_request_reply(
    official: Official, protocol: Protocol, accelerated: bool
) -> None:
    invalid = InvalidRequest("must be a string", "imp[0].id")
    expected = _reply_of(official, protocol, "filter", 3, official.invalid(invalid), accelerated)
    ours = encode_invalid_request_reply(protocol, 3, invalid)
    assert ours == expected

    reply = decode_reply(expected, protocol)
    assert (reply.method, reply.seqid, reply.value) == ("filter", 3, None)
    with pytest.raises(RemoteInvalidRequestError) as raised:
        reply.filter_response()
    assert (raised.value.field, raised.value.message) == ("imp[0].id", "must be a string")
    assert (raised.value.method, raised.value.seqid) == ("filter", 3)

    with pytest.raises(official.ttypes.InvalidRequest) as official_raised:
        official_receive(official, protocol, "filter", ours, accelerated=accelerated)
    assert official_raised.value == official.invalid(invalid)


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("count", [0, 1, 15])
def test_filter_batch_reply(
    official: Official, protocol: Protocol, count: int, accelerated: bool
) -> None:
    samples = list(RESPONSES.values())
    responses = [samples[index % len(samples)] for index in range(count)]
    expected = _reply_of(
        official,
        protocol,
        "filter_batch",
        11,
        [official.response(r) for r in responses],
        accelerated,
    )
    ours = encode_filter_batch_reply(protocol, 11, responses)
    assert ours == expected
    assert decode_reply(expected, protocol).filter_responses() == responses
    received = official_receive(official, protocol, "filter_batch", ours, accelerated=accelerated)
    assert received == [official.response(r) for r in responses]


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", MODEL_INFOS)
def test_model_info_reply(
    official: Official, protocol: Protocol, name: str, accelerated: bool
) -> None:
    info = MODEL_INFOS[name]
    expected = _reply_of(
        official, protocol, "model_info", 12, official.model_info(info), accelerated
    )
    ours = encode_model_info_reply(protocol, 12, info)
    assert ours == expected
    assert decode_reply(expected, protocol).model_info() == info
    received = official_receive(official, protocol, "model_info", ours, accelerated=accelerated)
    assert received == official.model_info(info)


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", OUTCOMES)
def test_report_outcomes_call_and_reply(
    official: Official, protocol: Protocol, name: str, accelerated: bool
) -> None:
    outcomes = OUTCOMES[name]
    expected = official_call(
        official,
        protocol,
        "report_outcomes",
        5,
        official.outcomes(outcomes),
        accelerated=accelerated,
    )
    assert encode_report_outcomes_call(protocol, 5, outcomes) == expected
    assert decode_call(expected, protocol) == Call("report_outcomes", 5, outcomes)
    receipt = OutcomeReceipt(accepted=len(outcomes), unknown=2, duplicate=1)
    reply = _reply_of(
        official, protocol, "report_outcomes", 5, official.receipt(receipt), accelerated
    )
    ours = encode_report_outcomes_reply(protocol, 5, receipt)
    assert ours == reply
    assert decode_reply(reply, protocol).outcome_receipt() == receipt
    received = official_receive(
        official, protocol, "report_outcomes", ours, accelerated=accelerated
    )
    assert received == official.receipt(receipt)


@accelerated
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("text", ["pong", "", "é" * 300])
def test_ping_reply(official: Official, protocol: Protocol, text: str, accelerated: bool) -> None:
    expected = _reply_of(official, protocol, "ping", 13, text, accelerated)
    ours = encode_ping_reply(protocol, 13, text)
    assert ours == expected
    assert decode_reply(expected, protocol).pong() == text
    assert official_receive(official, protocol, "ping", ours, accelerated=accelerated) == text


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("method", ["filter", "filter_batch", "model_info", "ping"])
def test_internal_error_exception(
    official: Official, protocol: Protocol, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The official Processor answers a handler's unexpected exception with INTERNAL_ERROR.
    expected = _reply_of(official, protocol, method, 21, RuntimeError("boom"), False)
    ours = encode_application_exception(
        protocol, method, 21, ApplicationExceptionType.INTERNAL_ERROR, "Internal error"
    )
    assert ours == expected

    reply = decode_reply(expected, protocol)
    assert (reply.method, reply.seqid, reply.value) == (method, 21, None)
    with pytest.raises(RemoteApplicationError) as raised:
        reply.unwrap()
    assert raised.value.type is ApplicationExceptionType.INTERNAL_ERROR
    assert raised.value.message == "Internal error"

    with pytest.raises(TApplicationException) as official_raised:
        official_receive(official, protocol, method, ours)
    assert official_raised.value.type == TApplicationException.INTERNAL_ERROR
    assert official_raised.value.message == "Internal error"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_method_is_answered_like_the_official_processor(
    official: Official, protocol: Protocol
) -> None:
    def write(oprot: Any) -> None:
        oprot.writeMessageBegin("filter_v2", TMessageType.CALL, 31)
        oprot.writeStructBegin("filter_v2_args")
        oprot.writeFieldBegin("flag", TType.BOOL, 1)
        oprot.writeBool(True)
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()
        oprot.writeMessageEnd()

    call = official_bytes(protocol, write)
    rejected = decode_call(call, protocol)
    assert rejected == RejectedCall(
        "filter_v2", 31, ApplicationExceptionType.UNKNOWN_METHOD, "", "Unknown function filter_v2"
    )
    assert isinstance(rejected, RejectedCall)
    assert encode_rejection(protocol, rejected) == official_reply(official, protocol, call, None)


# -- transports ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("framed", [False, True], ids=["unframed", "framed"])
def test_connection_with_an_official_client(
    official: Official, protocol: Protocol, framed: bool
) -> None:
    """Pipelined official calls in; our replies read by the official client."""
    request = REQUESTS["candidates"]
    stream = b"".join(
        [
            official_call(official, protocol, "ping", 1, framed=framed),
            official_call(
                official, protocol, "filter", 2, official.request(request), framed=framed
            ),
            official_call(official, protocol, "model_info", 3, framed=framed),
            official_call(
                official, protocol, "filter_batch", 4, [official.request(request)], framed=framed
            ),
        ]
    )
    decoder = ThriftConnectionDecoder()
    calls = decoder.feed(stream)
    assert calls == [
        Call("ping", 1, None),
        Call("filter", 2, request),
        Call("model_info", 3, None),
        Call("filter_batch", 4, [request]),
    ]
    assert decoder.protocol is protocol
    assert decoder.transport is (Transport.FRAMED if framed else Transport.UNFRAMED)
    assert decoder.buffered_bytes == 0

    replies = decoder.reply_encoder()
    response = RESPONSES["scored"]
    info = MODEL_INFOS["two partners"]
    out = b"".join(
        [
            replies.ping(1, "pong"),
            replies.filter(2, response),
            replies.model_info(3, info),
            replies.filter_batch(4, [response]),
        ]
    )
    iprot = official_reader(protocol, out, framed=framed)
    client = official.service.Client(iprot)
    assert client.recv_ping() == "pong"
    assert client.recv_filter() == official.response(response)
    assert client.recv_model_info() == official.model_info(info)
    assert client.recv_filter_batch() == [official.response(response)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("framed", [False, True], ids=["unframed", "framed"])
def test_client_side_with_the_official_processor(
    official: Official, protocol: Protocol, framed: bool
) -> None:
    """Our calls served by the official Processor; its replies through our ReplyDecoder."""
    transport = Transport.FRAMED if framed else Transport.UNFRAMED
    calls = CallEncoder(protocol, transport)
    response = RESPONSES["scored"]
    answers = [
        (calls.filter(5, REQUESTS["everything"]), official.response(response)),
        (calls.ping(6), "pong"),
        (calls.filter(7, REQUESTS["minimal"]), official.ttypes.InvalidRequest("bad", "id")),
    ]
    stream = b"".join(
        official_reply(official, protocol, call, outcome, framed=framed)
        for call, outcome in answers
    )
    replies = ReplyDecoder(protocol, transport).feed(stream)
    assert [reply.seqid for reply in replies] == [5, 6, 7]
    assert replies[0].filter_response() == response
    assert replies[1].pong() == "pong"
    with pytest.raises(RemoteInvalidRequestError, match="id: bad"):
        replies[2].unwrap()


def test_old_non_strict_binary_header(official: Official) -> None:
    """TBinaryProtocol(strictWrite=False) writes the name first; the decoder reads it."""
    request = REQUESTS["candidates"]

    def write(oprot: Any) -> None:
        client = official.service.Client(TBinaryProtocol(oprot.trans, strictWrite=False))
        client._seqid = 8
        client.send_filter(official.request(request))

    call = official_bytes(Protocol.BINARY, write)
    assert call[:4] == b"\x00\x00\x00\x06"  # the length of "filter"
    assert decode_call(call, Protocol.BINARY) == Call("filter", 8, request)
    for framed in (False, True):
        decoder = ThriftConnectionDecoder()
        assert (
            decoder.feed(official_bytes(Protocol.BINARY, write, framed=framed) * 2)
            == [Call("filter", 8, request)] * 2
        )
        assert decoder.protocol is Protocol.BINARY


# -- random values, byte for byte ------------------------------------------------------------

_random = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@_random
@given(request=filter_requests)
def test_random_filter_requests_match_official(official: Official, request: FilterRequest) -> None:
    for protocol in PROTOCOLS:
        codec = CODECS[protocol]
        expected = official_bytes(protocol, official.request(request).write)
        assert encode_with(codec.write_filter_request, request) == expected


@_random
@given(response=filter_responses)
def test_random_filter_responses_match_official(official: Official, response: Any) -> None:
    for protocol in PROTOCOLS:
        codec = CODECS[protocol]
        expected = official_bytes(protocol, official.response(response).write)
        assert encode_with(codec.write_filter_response, response) == expected


@_random
@given(info=model_infos)
def test_random_model_infos_match_official(official: Official, info: Any) -> None:
    for protocol in PROTOCOLS:
        codec = CODECS[protocol]
        expected = official_bytes(protocol, official.model_info(info).write)
        assert encode_with(codec.write_model_info, info) == expected

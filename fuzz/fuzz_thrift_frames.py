"""Coverage-guided fuzzing (atheris, libFuzzer) of the sans-IO Thrift stream decoders.

    python fuzz/fuzz_thrift_frames.py [libFuzzer flags] [CORPUS_DIR]      (scripts/fuzz runs it)

An input is ``mode``, ``step``, then the bytes a peer sends. ``mode`` picks the decoder: a
server connection's ``ThriftConnectionDecoder`` (which detects protocol and transport itself)
or a client's ``ReplyDecoder`` for one of the four wires. Seeds: pipelined streams of every
call (``filter`` carrying requests of the shared OpenRTB corpus) and of every reply, in each
protocol and transport, encoded here with bidfilter's encoders.

A crash is any exception but ``ThriftProtocolError`` (``MessageTooLargeError`` included), or a
broken promise:

- the stream fed whole and fed in ``step``-byte chunks gives the same messages, or both fail;
- a decoder never holds more than a message (or a frame) of bytes, and none after failing;
  a failed decoder keeps failing;
- every decoded call or reply, encoded again, decodes to the same thing; a rejected call's
  answer decodes to the rejection it carries.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import atheris
from seed_corpus import corpus_directory, openrtb_documents, write_seeds

with atheris.instrument_imports(include=["bidfilter"]):
    from bidfilter.thrift import (
        ApplicationExceptionType,
        Call,
        CallEncoder,
        FilterRequest,
        FilterResponse,
        InvalidRequest,
        ModelInfo,
        Outcome,
        PartnerDecision,
        Protocol,
        RejectedCall,
        RemoteApplicationError,
        RemoteInvalidRequestError,
        Reply,
        ReplyDecoder,
        ReplyEncoder,
        ThriftConnectionDecoder,
        ThriftProtocolError,
        Transport,
        encode_rejection,
        frame,
    )
    from bidfilter.thrift.messages import CODECS

LIMIT = 2048  # small, so that inputs of libFuzzer's default sizes reach the limits too
WIRES = [(protocol, transport) for protocol in Protocol for transport in Transport]
SERVER = 0

Decoder = ThriftConnectionDecoder | ReplyDecoder
Item = Call | RejectedCall | Reply


def new_decoder(mode: int) -> Decoder:
    if mode == SERVER:
        return ThriftConnectionDecoder(LIMIT)
    return ReplyDecoder(*WIRES[mode - 1], max_message_bytes=LIMIT)


def run(
    mode: int, pieces: Sequence[bytes]
) -> tuple[list[Item], ThriftProtocolError | None, Decoder]:
    decoder = new_decoder(mode)
    items: list[Item] = []
    for piece in pieces:
        try:
            items += decoder.feed(piece)
        except ThriftProtocolError as error:
            assert isinstance(error.field, str) and isinstance(error.message, str)
            assert decoder.buffered_bytes == 0, decoder.buffered_bytes
            try:
                decoder.feed(b"\x80\x01")
            except ThriftProtocolError:
                return items, error, decoder
            raise AssertionError(f"the decoder went on after {error!r}") from None
        assert decoder.buffered_bytes <= LIMIT + 4, decoder.buffered_bytes
    return items, None, decoder


def call_bytes(item: Call | RejectedCall, protocol: Protocol, transport: Transport) -> bytes:
    """A call as a client would send it, or a rejection as the server answers it."""
    if isinstance(item, RejectedCall):
        return encode_rejection(protocol, item)
    calls = CallEncoder(protocol, transport)
    if item.method == "filter":
        assert isinstance(item.args, FilterRequest)
        return calls.filter(item.seqid, item.args)
    if item.method == "filter_batch":
        assert isinstance(item.args, list)
        return calls.filter_batch(item.seqid, item.args)
    assert item.args is None
    return calls.model_info(item.seqid) if item.method == "model_info" else calls.ping(item.seqid)


def reply_bytes(reply: Reply, replies: ReplyEncoder) -> bytes:
    error, value = reply.error, reply.value
    if isinstance(error, RemoteInvalidRequestError):
        return replies.invalid_request(reply.seqid, InvalidRequest(error.message, error.field))
    if isinstance(error, RemoteApplicationError):
        return replies.application_exception(reply.method, reply.seqid, error.type, error.message)
    if isinstance(value, FilterResponse):
        return replies.filter(reply.seqid, value)
    if isinstance(value, list):
        return replies.filter_batch(reply.seqid, value)
    if isinstance(value, ModelInfo):
        return replies.model_info(reply.seqid, value)
    assert isinstance(value, str), reply
    return replies.ping(reply.seqid, value)


def check_server_items(items: list[Item], decoder: ThriftConnectionDecoder) -> None:
    wire = decoder.reply_encoder()  # a decoded call means the wire is known
    protocol, transport = wire.protocol, wire.transport
    for item in items:
        assert isinstance(item, Call | RejectedCall), item
        if isinstance(item, RejectedCall):
            answer = ReplyDecoder(protocol, Transport.UNFRAMED).feed(
                call_bytes(item, protocol, transport)
            )
            assert len(answer) == 1 and isinstance(answer[0].error, RemoteApplicationError)
            assert (answer[0].method, answer[0].seqid) == (item.method, item.seqid)
            assert answer[0].error.type == item.type and answer[0].error.message == item.reason
        elif not item.oneway:  # no client of this IDL sends oneway calls: nothing encodes one
            again = ThriftConnectionDecoder().feed(call_bytes(item, protocol, transport))
            assert again == [item], (again, item)


def check_client_items(items: list[Item], mode: int) -> None:
    protocol, transport = WIRES[mode - 1]
    replies = ReplyEncoder(protocol, transport)
    for item in items:
        assert isinstance(item, Reply), item
        encoded = reply_bytes(item, replies)
        again = ReplyDecoder(protocol, transport).feed(encoded)
        # Bytes, not values, are compared: a NaN probability is not equal to itself.
        assert len(again) == 1 and reply_bytes(again[0], replies) == encoded, (item, again)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, step, stream = data[0] % (len(WIRES) + 1), data[1] + 1, data[2:]
    whole, whole_error, decoder = run(mode, [stream])
    pieces = [stream[start : start + step] for start in range(0, len(stream), step)]
    split, split_error, split_decoder = run(mode, pieces)
    assert (whole_error is None) == (split_error is None), (whole_error, split_error)
    if whole_error is not None:
        return
    assert len(whole) == len(split)
    assert decoder.buffered_bytes == split_decoder.buffered_bytes
    if mode == SERVER:
        assert whole == split, (whole, split)
        if whole:
            assert isinstance(decoder, ThriftConnectionDecoder)
            check_server_items(whole, decoder)
    else:
        replies = ReplyEncoder(*WIRES[mode - 1])
        whole_bytes = [reply_bytes(reply, replies) for reply in whole if isinstance(reply, Reply)]
        split_bytes = [reply_bytes(reply, replies) for reply in split if isinstance(reply, Reply)]
        assert whole_bytes == split_bytes
        check_client_items(whole, mode)


# -- seeds -----------------------------------------------------------------------------------


def _raw_call(protocol: Protocol, method: str, seqid: int, body: bytes) -> bytes:
    parts: list[bytes] = []
    CODECS[protocol].write_message_begin(parts, method, 1, seqid)
    return b"".join([*parts, body])


def _server_streams(documents: list[bytes]) -> list[bytes]:
    deadlines = (None, 30, -1)
    requests = [
        FilterRequest(document, ["dsp-1", "dsp-é", ""], deadlines[index % 3])
        if index % 2
        else FilterRequest(document)
        for index, document in enumerate(documents)
    ]
    streams = []
    for protocol, transport in WIRES:
        calls = CallEncoder(protocol, transport)
        wrap: Callable[[bytes], bytes] = frame if transport is Transport.FRAMED else bytes
        singles = [
            calls.ping(1),
            calls.model_info(2),
            *(calls.filter(3 + index, request) for index, request in enumerate(requests[:8])),
            calls.filter_batch(20, requests[:3]),
            wrap(_raw_call(protocol, "filter_v2", 21, b"\x00")),  # unknown method
            wrap(_raw_call(protocol, "filter", 22, b"\x00")),  # no request: rejected
        ]
        streams += singles
        streams.append(b"".join(singles[:4] + singles[-3:]))
    # The old non-strict binary header (name first), unframed.
    streams.append(b"\x00\x00\x00\x04ping\x01\x00\x00\x00\x07\x00")
    return streams


def _client_streams() -> list[tuple[int, bytes]]:
    decisions = [
        PartnerDecision("dsp-1", 0.25, True, False, 0.1),
        PartnerDecision("dsp-é", float("nan"), True, True, -1.0),
    ]
    response = FilterResponse("req-1", decisions, "v1", Outcome.SCORED, 412, None)
    failed = FilterResponse("", [], "", Outcome.FAIL_OPEN_ERROR, None, "bad")
    streams = []
    for mode, wire in enumerate(WIRES, start=1):
        replies = ReplyEncoder(*wire)
        singles = [
            replies.filter(1, response),
            replies.invalid_request(2, InvalidRequest("no imp", "imp")),
            replies.filter_batch(3, [response, failed]),
            replies.model_info(4, ModelInfo("v1", ["a", "b"], {"a": 0.5, "b": 0.0}, "now")),
            replies.ping(5, "pong"),
            replies.application_exception(
                "filter", 6, ApplicationExceptionType.PROTOCOL_ERROR, "bad"
            ),
        ]
        streams += [(mode, single) for single in singles]
        streams.append((mode, b"".join(singles)))
    return streams


def seeds() -> list[bytes]:
    small = [
        document for document in openrtb_documents(include_invalid=False) if len(document) < 700
    ]
    steps = (0, 5, 255)  # chunks of 1, 6 and 256 bytes
    inputs = [
        bytes([SERVER, steps[index % 3]]) + stream
        for index, stream in enumerate(_server_streams(small[::25]))
    ]
    inputs += [
        bytes([mode, steps[index % 3]]) + stream
        for index, (mode, stream) in enumerate(_client_streams())
    ]
    return inputs


def main() -> None:
    argv, corpus = corpus_directory(sys.argv, "thrift-frames")
    count = write_seeds(corpus, seeds())
    print(f"fuzz: {count} seed streams in {corpus}", file=sys.stderr)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

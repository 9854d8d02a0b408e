"""The BidFilter service on the wire: calls and replies, for both protocols, without transport.

Server side: ``decode_call`` turns one message into a ``Call`` (method, seqid, typed args) or a
``RejectedCall`` (its header decoded, but it cannot be served: unknown method, undecodable
args; answer it with ``encode_rejection``); the ``encode_*_reply`` functions write the results,
the declared ``InvalidRequest`` and ``TApplicationException``s as the generated ``Processor``
does. Client side: the ``encode_*_call`` functions, and ``decode_reply`` returning a ``Reply``
whose ``unwrap()`` gives the result or raises ``RemoteInvalidRequestError`` /
``RemoteApplicationError``.

Messages here have no frame header; ``framing.py`` adds transports and streams.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeVar

import msgspec

from bidfilter.thrift import binary, compact
from bidfilter.thrift.codec import MAX_DEPTH, STOP, Codec, MessageType, Parts, Protocol
from bidfilter.thrift.errors import (
    ApplicationExceptionType,
    IncompleteMessage,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    ThriftEncodeError,
    ThriftProtocolError,
)
from bidfilter.thrift.structs import METHODS as SERVICE
from bidfilter.thrift.structs import ApplicationException
from bidfilter.thrift.types import (
    AuctionOutcome,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    OutcomeReceipt,
)

CODECS: Final[Mapping[Protocol, Codec]] = {
    Protocol.BINARY: binary.CODEC,
    Protocol.COMPACT: compact.CODEC,
}

METHODS: Final = tuple(SERVICE)
"""The service's methods, as the IDL names them."""

_T = TypeVar("_T")
_CALL: Final = int(MessageType.CALL)
_REPLY: Final = int(MessageType.REPLY)
_EXCEPTION: Final = int(MessageType.EXCEPTION)
_ONEWAY: Final = int(MessageType.ONEWAY)


# msgspec Structs, not frozen dataclasses: one is built per message, ten times faster.
class Call(msgspec.Struct, frozen=True, gc=False):
    """A call to serve. ``args``: a ``FilterRequest`` for ``filter``, a list of them for
    ``filter_batch``, a list of ``AuctionOutcome`` for ``report_outcomes``, ``None`` for
    ``model_info`` and ``ping``. A ``oneway`` call (no client of this IDL sends one, the
    message type allows it) expects no reply."""

    method: str
    seqid: int
    args: FilterRequest | list[FilterRequest] | list[AuctionOutcome] | None
    oneway: bool = False


class RejectedCall(msgspec.Struct, frozen=True, gc=False):
    """A message whose header decoded but which cannot be served: answer it (unless oneway)
    with ``encode_rejection``, a ``TApplicationException`` of ``type`` saying ``reason``.
    ``field`` names the culprit inside the args (``request.candidates[2]``), or is empty."""

    method: str
    seqid: int
    type: ApplicationExceptionType
    field: str
    message: str
    oneway: bool = False

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


DecodedCall = Call | RejectedCall
"""What a server gets from an incoming message whose header decoded."""

ReplyValue = FilterResponse | list[FilterResponse] | ModelInfo | OutcomeReceipt | str


class Reply(msgspec.Struct, frozen=True):
    """A reply to ``method``'s call ``seqid``: its ``value``, or the ``error`` it carried."""

    method: str
    seqid: int
    value: ReplyValue | None
    error: RemoteInvalidRequestError | RemoteApplicationError | None = None

    def unwrap(self) -> ReplyValue:
        """The result, or raise the error the server answered with."""
        if self.error is not None:
            raise self.error
        assert self.value is not None  # a Reply has a value or an error
        return self.value

    def filter_response(self) -> FilterResponse:
        """``filter``'s result (raising the server's error, if any)."""
        return self._expect(FilterResponse)

    def filter_responses(self) -> list[FilterResponse]:
        """``filter_batch``'s result (raising the server's error, if any)."""
        return self._expect(list)

    def model_info(self) -> ModelInfo:
        """``model_info``'s result (raising the server's error, if any)."""
        return self._expect(ModelInfo)

    def pong(self) -> str:
        """``ping``'s result (raising the server's error, if any)."""
        return self._expect(str)

    def outcome_receipt(self) -> OutcomeReceipt:
        """``report_outcomes``' result (raising the server's error, if any)."""
        return self._expect(OutcomeReceipt)

    def _expect(self, kind: type[_T]) -> _T:
        value = self.unwrap()
        if not isinstance(value, kind):
            raise ThriftProtocolError(
                "message.name", f"a reply to {self.method!r}, not the expected method"
            )
        return value


# --------------------------------------------------------------------------------------------
# Encoding


def _encode(
    codec: Codec,
    method: str,
    message_type: int,
    seqid: int,
    write: Callable[[Parts, _T], None],
    value: _T,
) -> bytes:
    parts: Parts = []
    try:
        codec.write_message_begin(parts, method, message_type, seqid)
        write(parts, value)
    except UnicodeEncodeError as error:
        raise ThriftEncodeError(method, f"a string is not encodable as UTF-8: {error}") from None
    except struct.error as error:
        raise ThriftEncodeError(method, str(error)) from None
    return b"".join(parts)


def _write_empty_struct(parts: Parts, value: None) -> None:
    parts.append(STOP)


def _encode_call(protocol: Protocol, method: str, seqid: int, args: object) -> bytes:
    codec = CODECS[protocol]
    write = codec.args_writers.get(method, _write_empty_struct)
    return _encode(codec, method, _CALL, seqid, write, args)


def _encode_reply(protocol: Protocol, method: str, seqid: int, result: object) -> bytes:
    codec = CODECS[protocol]
    return _encode(codec, method, _REPLY, seqid, codec.result_writers[method], result)


def encode_filter_call(protocol: Protocol, seqid: int, request: FilterRequest) -> bytes:
    return _encode_call(protocol, "filter", seqid, request)


def encode_filter_batch_call(
    protocol: Protocol, seqid: int, requests: Sequence[FilterRequest]
) -> bytes:
    return _encode_call(protocol, "filter_batch", seqid, requests)


def encode_model_info_call(protocol: Protocol, seqid: int) -> bytes:
    return _encode_call(protocol, "model_info", seqid, None)


def encode_ping_call(protocol: Protocol, seqid: int) -> bytes:
    return _encode_call(protocol, "ping", seqid, None)


def encode_report_outcomes_call(
    protocol: Protocol, seqid: int, outcomes: Sequence[AuctionOutcome]
) -> bytes:
    return _encode_call(protocol, "report_outcomes", seqid, outcomes)


def encode_filter_reply(protocol: Protocol, seqid: int, response: FilterResponse) -> bytes:
    codec = CODECS[protocol]  # not _encode_reply: a call less on the hot path
    return _encode(codec, "filter", _REPLY, seqid, codec.result_writers["filter"], response)


def encode_invalid_request_reply(
    protocol: Protocol, seqid: int, invalid: InvalidRequest, method: str = "filter"
) -> bytes:
    """A declared exception (of ``filter`` or ``report_outcomes``): a REPLY whose result struct
    sets field 1."""
    return _encode_reply(protocol, method, seqid, invalid)


def encode_filter_batch_reply(
    protocol: Protocol, seqid: int, responses: Sequence[FilterResponse]
) -> bytes:
    return _encode_reply(protocol, "filter_batch", seqid, responses)


def encode_model_info_reply(protocol: Protocol, seqid: int, info: ModelInfo) -> bytes:
    return _encode_reply(protocol, "model_info", seqid, info)


def encode_ping_reply(protocol: Protocol, seqid: int, text: str) -> bytes:
    return _encode_reply(protocol, "ping", seqid, text)


def encode_report_outcomes_reply(protocol: Protocol, seqid: int, receipt: OutcomeReceipt) -> bytes:
    return _encode_reply(protocol, "report_outcomes", seqid, receipt)


def encode_application_exception(
    protocol: Protocol,
    method: str,
    seqid: int,
    exception_type: ApplicationExceptionType | int,
    message: str,
) -> bytes:
    """An EXCEPTION message: a ``TApplicationException(message, type)``."""
    codec = CODECS[protocol]
    exception = ApplicationException(message, int(exception_type))
    write = codec.struct_writers[ApplicationException]
    return _encode(codec, method, _EXCEPTION, seqid, write, exception)


def encode_rejection(protocol: Protocol, rejected: RejectedCall) -> bytes:
    """The ``TApplicationException`` answering a ``RejectedCall``."""
    return encode_application_exception(
        protocol, rejected.method, rejected.seqid, rejected.type, rejected.reason
    )


# --------------------------------------------------------------------------------------------
# Decoding


def decode_call(data: bytes, protocol: Protocol) -> DecodedCall:
    """One whole call message (no frame header), as a server receives it.

    Raises ``ThriftProtocolError`` if even the header cannot be decoded; anything wrong past
    the header (args, trailing bytes) makes a ``RejectedCall``.
    """
    try:
        call, _ = read_call(CODECS[protocol], data, 0, whole=True)
    except IncompleteMessage as incomplete:
        raise incomplete.refusal("message", len(data)) from None
    return call


def read_call(codec: Codec, buf: bytes, pos: int, *, whole: bool) -> tuple[DecodedCall, int]:
    """The call starting at ``pos`` and the offset after it.

    ``whole``: ``buf[pos:]`` is exactly one message (a frame's content), so an error past the
    header makes a ``RejectedCall`` and the connection can go on. Otherwise (an unframed
    stream) the end of a bad message is found by skipping its args, raising
    ``IncompleteMessage`` until they are all there, or ``ThriftProtocolError`` if even their
    structure is broken (the stream cannot be resynchronised).
    """
    try:
        method, message_type, seqid, body = codec.read_message_begin(buf, pos)
    except (struct.error, IndexError):
        raise IncompleteMessage(len(buf) + 1) from None
    if not _CALL <= message_type <= _ONEWAY:
        raise ThriftProtocolError("message.type", f"{message_type} is not a message type")
    oneway = message_type == _ONEWAY
    try:
        try:
            if message_type in (_REPLY, _EXCEPTION):
                return RejectedCall(
                    method,
                    seqid,
                    ApplicationExceptionType.INVALID_MESSAGE_TYPE,
                    "message.type",
                    f"{MessageType(message_type).name}: a server takes calls",
                    oneway,
                ), codec.skip_struct(buf, body, MAX_DEPTH)
            args: FilterRequest | list[FilterRequest] | list[AuctionOutcome] | None
            read_args = codec.args_readers.get(method)
            if read_args is not None:
                args, end = read_args(buf, body, MAX_DEPTH)
            elif method in SERVICE:  # no args: an empty struct (or one of fields unknown)
                args, end = None, codec.skip_struct(buf, body, MAX_DEPTH)
            else:
                return RejectedCall(
                    method,
                    seqid,
                    ApplicationExceptionType.UNKNOWN_METHOD,
                    "",
                    f"Unknown function {method}",
                    oneway,
                ), codec.skip_struct(buf, body, MAX_DEPTH)
            if whole and end != len(buf):
                return RejectedCall(
                    method,
                    seqid,
                    ApplicationExceptionType.PROTOCOL_ERROR,
                    "message",
                    f"{len(buf) - end} unexpected bytes after the end",
                    oneway,
                ), len(buf)
            return Call(method, seqid, args, oneway), end
        except ThriftProtocolError as error:
            end = len(buf) if whole else codec.skip_struct(buf, body, MAX_DEPTH)
            return RejectedCall(
                method,
                seqid,
                ApplicationExceptionType.PROTOCOL_ERROR,
                error.field,
                error.message,
                oneway,
            ), end
    except (IncompleteMessage, struct.error, IndexError) as incomplete:
        if whole:
            if not isinstance(incomplete, IncompleteMessage):
                incomplete = IncompleteMessage(len(buf) + 1)
            refusal = incomplete.refusal("message", len(buf) - pos)
            return RejectedCall(
                method,
                seqid,
                ApplicationExceptionType.PROTOCOL_ERROR,
                refusal.field,
                refusal.message,
                oneway,
            ), len(buf)
        if isinstance(incomplete, IncompleteMessage):
            raise
        raise IncompleteMessage(len(buf) + 1) from None


def decode_reply(data: bytes, protocol: Protocol) -> Reply:
    """One whole reply message (no frame header), as a client receives it.

    Raises ``ThriftProtocolError`` if the bytes are not a reply of this service. An
    ``InvalidRequest`` or ``TApplicationException`` answer is not raised here but carried in
    ``Reply.error``: ``unwrap()`` (or ``filter_response()`` etc.) raises it.
    """
    try:
        reply, end = read_reply(CODECS[protocol], data, 0)
    except IncompleteMessage as incomplete:
        raise incomplete.refusal("message", len(data)) from None
    if end != len(data):
        raise ThriftProtocolError("message", f"{len(data) - end} unexpected bytes after the end")
    return reply


def read_reply(codec: Codec, buf: bytes, pos: int) -> tuple[Reply, int]:
    """The reply starting at ``pos`` and the offset after it (``IncompleteMessage`` if the
    buffer ends first; ``ThriftProtocolError`` if it is not a reply of this service)."""
    try:
        return _read_reply(codec, buf, pos)
    except (struct.error, IndexError):
        raise IncompleteMessage(len(buf) + 1) from None


def _read_reply(codec: Codec, buf: bytes, pos: int) -> tuple[Reply, int]:
    method, message_type, seqid, pos = codec.read_message_begin(buf, pos)
    if message_type == _EXCEPTION:
        read_exception = codec.struct_readers[ApplicationException]
        exception, end = read_exception(buf, pos, MAX_DEPTH)
        kind: ApplicationExceptionType | int = exception.type
        if 0 <= exception.type <= max(ApplicationExceptionType):
            kind = ApplicationExceptionType(exception.type)
        error = RemoteApplicationError(kind, exception.message, method=method, seqid=seqid)
        return Reply(method, seqid, None, error), end
    if message_type != _REPLY:
        raise ThriftProtocolError("message.type", f"{message_type}: a client takes replies")
    read_result = codec.result_readers.get(method)
    if read_result is None:
        raise ThriftProtocolError("message.name", f"a reply to unknown method {method!r}")
    value: ReplyValue | InvalidRequest | None
    try:
        value, end = read_result(buf, pos, MAX_DEPTH)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within("result") from None
    if isinstance(value, InvalidRequest):
        invalid = RemoteInvalidRequestError(value.field, value.message, method=method, seqid=seqid)
        return Reply(method, seqid, None, invalid), end
    if value is None:
        missing = RemoteApplicationError(
            ApplicationExceptionType.MISSING_RESULT,
            f"{method} failed: unknown result",
            method=method,
            seqid=seqid,
        )
        return Reply(method, seqid, None, missing), end
    return Reply(method, seqid, value), end

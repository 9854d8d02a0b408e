"""Thrift over a byte stream, sans-IO: feed received bytes, get messages; encode the answers.

``ThriftConnectionDecoder`` is a server connection's side. It tells from the first bytes how
the client speaks, and holds to it for the connection's life:

==========================  ============================================================
first bytes                 transport, protocol
==========================  ============================================================
``80 01 ..``                unframed, binary (strict header)
``82 ..``                   unframed, compact
``00 00 0n nn 80 01``       framed (a 4-byte big-endian length, then a message), binary
``00 00 0n nn 82``          framed, compact
``00 00 00 nn`` + a letter  unframed, binary with the old non-strict header (name first)
==========================  ============================================================

Anything else (an HTTP request, a TLS ClientHello, noise) raises ``ThriftProtocolError`` as
soon as the bytes rule Thrift out, and a frame length over ``max_message_bytes`` raises
``MessageTooLargeError`` as soon as its 4 bytes are in, so no more than ``max_message_bytes``
(plus a frame header) is ever held. After such an error the connection is unusable: every
later ``feed`` raises it again.

An unframed message has no length: it is decoded from the buffer when complete. A decoder
that runs out of bytes says how many it needs at least (a string's or a list's announced
length), and nothing is re-parsed before that many have arrived, so a message trickling in
costs a few parses, not one per packet. (A message of many small fields trickling in, a big
``filter_batch`` say, can still cost a parse per packet: clients that send those should use
the framed transport, whose frames are decoded once, whole.)

``ReplyDecoder`` is the same for a client, whose transport and protocol are its own choice;
``CallEncoder`` and ``ReplyEncoder`` write messages in a given transport and protocol.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import StrEnum
from typing import Final, Generic, TypeVar

from bidfilter.thrift import binary, compact, messages
from bidfilter.thrift.codec import MAX_METHOD_NAME_BYTES, Codec, Protocol
from bidfilter.thrift.errors import (
    ApplicationExceptionType,
    IncompleteMessage,
    MessageTooLargeError,
    ThriftProtocolError,
)
from bidfilter.thrift.messages import DecodedCall, RejectedCall, Reply
from bidfilter.thrift.types import (
    AuctionOutcome,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    OutcomeReceipt,
)

DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20

_LENGTH = struct.Struct(">i")
_length_from = _LENGTH.unpack_from
_T = TypeVar("_T")


class Transport(StrEnum):
    """How messages are delimited on the connection."""

    FRAMED = "framed"
    UNFRAMED = "unframed"


def frame(message: bytes) -> bytes:
    """``message`` behind its 4-byte big-endian length (TFramedTransport)."""
    return _LENGTH.pack(len(message)) + message


class _MessageStream(Generic[_T]):
    """Buffering, framing and limits shared by the server's and the client's decoders."""

    def __init__(self, max_message_bytes: int) -> None:
        if not 0 < max_message_bytes <= 0x7FFFFFFF:
            raise ValueError(f"max_message_bytes must be in 1..2**31-1, not {max_message_bytes}")
        self.max_message_bytes = max_message_bytes
        self._transport: Transport | None = None
        self._codec: Codec | None = None
        self._buffer = bytearray()
        self._needed = 0  # don't try to decode before the buffer holds this many bytes
        self._error: ThriftProtocolError | None = None

    @property
    def transport(self) -> Transport | None:
        """The connection's transport (``None`` until known)."""
        return self._transport

    @property
    def protocol(self) -> Protocol | None:
        """The connection's protocol (``None`` until known)."""
        return self._codec.protocol if self._codec is not None else None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet decoded (never more than a message, or a frame)."""
        return len(self._buffer)

    def _feed(self, data: bytes) -> list[_T]:
        if self._error is not None:
            raise self._error.with_traceback(None)  # the connection is over
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._needed:
                return []
            buf = bytes(buffer)
        else:
            buf = bytes(data)  # no copy for bytes, which is what asyncio gives
        try:
            items, pos = self._decode(buf)
        except ThriftProtocolError as error:
            self._error = error
            self._buffer = bytearray()
            raise
        if pos == len(buf):
            buffer.clear()
        elif buffer:
            del buffer[:pos]
        else:
            self._buffer = bytearray(buf[pos:])
        return items

    def _decode(self, buf: bytes) -> tuple[list[_T], int]:
        """The messages complete in ``buf`` and the offset past the last; sets ``_needed``."""
        items: list[_T] = []
        pos = 0
        size = len(buf)
        limit = self.max_message_bytes
        self._needed = 0
        while pos < size:
            if self._transport is None and not self._detect(buf, pos):
                break
            if self._transport is Transport.FRAMED:
                if size - pos < 4:
                    self._check_partial_length(buf[pos:])
                    # Look again at the next byte, not the fourth: it may already rule the
                    # length out, and the refusal must not depend on how the bytes were split.
                    self._needed = size - pos + 1
                    break
                (length,) = _length_from(buf, pos)
                if length < 0:
                    raise ThriftProtocolError("frame", f"negative frame length {length}")
                if length > limit:
                    raise MessageTooLargeError(length, limit, "frame")
                end = pos + 4 + length
                if end > size:
                    self._needed = 4 + length
                    break
                if length:  # TFramedTransport writes an empty frame on an empty flush
                    body = buf[pos + 4 : end]
                    frame_codec = self._codec or self._detect_frame_protocol(body)
                    items.append(self._read_whole(frame_codec, body))
                pos = end
            else:
                stream_codec = self._codec
                assert stream_codec is not None  # set with the transport when unframed
                try:
                    item, end = self._read_stream(stream_codec, buf, pos)
                except IncompleteMessage as incomplete:
                    needed = incomplete.needed - pos
                    if needed > limit:  # named: a string or list announced too long
                        raise MessageTooLargeError(
                            needed, limit, incomplete.field or "message"
                        ) from None
                    self._needed = needed
                    break
                if end - pos > limit:
                    raise MessageTooLargeError(end - pos, limit)
                items.append(item)
                pos = end
        return items, pos

    def _check_partial_length(self, prefix: bytes) -> None:
        """Refuse a frame length whose first bytes already make it negative or too large."""
        lowest = int.from_bytes(prefix.ljust(4, b"\x00"))
        if lowest >= 0x80000000:
            raise ThriftProtocolError("frame", "negative frame length")
        if lowest > self.max_message_bytes:
            raise MessageTooLargeError(lowest, self.max_message_bytes, "frame")

    def _detect(self, buf: bytes, pos: int) -> bool:
        """Learn the transport (and protocol) from the stream's first bytes; False: need more."""
        raise NotImplementedError

    def _detect_frame_protocol(self, body: bytes) -> Codec:
        raise NotImplementedError

    def _read_whole(self, codec: Codec, body: bytes) -> _T:
        raise NotImplementedError

    def _read_stream(self, codec: Codec, buf: bytes, pos: int) -> tuple[_T, int]:
        raise NotImplementedError


class ThriftConnectionDecoder(_MessageStream[DecodedCall]):
    """A server connection's incoming side: bytes in, calls out (see the module docstring).

    ``feed`` returns the calls completed by ``data``, in order: ``Call``s to serve and
    ``RejectedCall``s to answer with ``reply_encoder().rejection(...)``. It raises
    ``ThriftProtocolError`` (or its ``MessageTooLargeError``) when the stream cannot be Thrift
    or cannot be resynchronised; the connection should then be closed (calls decoded from the
    same ``data`` before the bad bytes are dropped with it).
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes)

    def feed(self, data: bytes) -> list[DecodedCall]:
        return self._feed(data)

    def reply_encoder(self) -> ReplyEncoder:
        """An encoder writing replies as this connection's client speaks."""
        if self._transport is None or self._codec is None:
            raise RuntimeError("the connection's transport and protocol are not known yet")
        return ReplyEncoder(self._codec.protocol, self._transport)

    def _detect(self, buf: bytes, pos: int) -> bool:
        prefix = buf[pos : pos + 5]
        first = prefix[0]
        if first == binary.VERSION_1 >> 24:
            self._transport, self._codec = Transport.UNFRAMED, binary.CODEC
            return True
        if first == compact.PROTOCOL_ID:
            self._transport, self._codec = Transport.UNFRAMED, compact.CODEC
            return True
        # A frame length, or the name length of an old non-strict binary header.
        lowest = int.from_bytes(prefix[:4].ljust(4, b"\x00"))
        if lowest > self.max_message_bytes:
            if first != 0:  # negative, or 16 MiB and more: nobody's frame length
                raise _not_thrift(prefix)
            raise MessageTooLargeError(lowest, self.max_message_bytes, "frame")
        if len(prefix) < 4:
            self._needed = len(prefix) + 1  # the next byte may rule the length out
            return False
        length = lowest
        if length == 0:  # an empty frame: the protocol will be told by the next one
            self._transport = Transport.FRAMED
            return True
        if len(prefix) < 5:
            self._needed = 5
            return False
        fifth = prefix[4]
        if fifth in (0x80, 0x82, 0x00):
            self._transport = Transport.FRAMED
            return True
        if 0x21 <= fifth <= 0x7E and length <= MAX_METHOD_NAME_BYTES:
            self._transport, self._codec = Transport.UNFRAMED, binary.CODEC
            return True
        raise _not_thrift(prefix)

    def _detect_frame_protocol(self, body: bytes) -> Codec:
        first = body[0]
        if first in (0x80, 0x00):
            self._codec = binary.CODEC
        elif first == compact.PROTOCOL_ID:
            self._codec = compact.CODEC
        else:
            raise ThriftProtocolError(
                "frame", f"a frame starting 0x{first:02x} holds neither binary nor compact"
            )
        return self._codec

    def _read_whole(self, codec: Codec, body: bytes) -> DecodedCall:
        try:
            return messages.read_call(codec, body, 0, whole=True)[0]
        except IncompleteMessage:
            raise ThriftProtocolError(
                "frame", f"the message header runs past its {len(body)}-byte frame"
            ) from None

    def _read_stream(self, codec: Codec, buf: bytes, pos: int) -> tuple[DecodedCall, int]:
        return messages.read_call(codec, buf, pos, whole=False)


def _not_thrift(prefix: bytes) -> ThriftProtocolError:
    """The error for a connection whose first bytes are not Thrift, guessing what they are."""
    if prefix[:1] == b"\x16":
        guess = "a TLS handshake? This port speaks plain Thrift"
    elif prefix[:1].isalpha():
        guess = f"text ({prefix!r}...): an HTTP request? This port speaks Thrift"
    else:
        guess = (
            f"first bytes {prefix.hex(' ')}: neither a binary (0x80) or compact (0x82) header"
            " nor a frame length"
        )
    return ThriftProtocolError("transport", f"not Thrift: {guess}")


class ReplyDecoder(_MessageStream[Reply]):
    """A client connection's incoming side: bytes in, ``Reply``s out, in order.

    A reply's ``InvalidRequest`` or ``TApplicationException`` is carried in ``Reply.error``;
    ``feed`` raises ``ThriftProtocolError`` only for bytes that are not replies at all.
    """

    def __init__(
        self,
        protocol: Protocol,
        transport: Transport,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(max_message_bytes)
        self._transport = transport
        self._codec = messages.CODECS[protocol]

    def feed(self, data: bytes) -> list[Reply]:
        return self._feed(data)

    def _read_whole(self, codec: Codec, body: bytes) -> Reply:
        try:
            reply, end = messages.read_reply(codec, body, 0)
        except IncompleteMessage:
            raise ThriftProtocolError(
                "frame", f"the message runs past its {len(body)}-byte frame"
            ) from None
        if end != len(body):
            raise ThriftProtocolError("frame", f"{len(body) - end} bytes after the message")
        return reply

    def _read_stream(self, codec: Codec, buf: bytes, pos: int) -> tuple[Reply, int]:
        return messages.read_reply(codec, buf, pos)


class ReplyEncoder:
    """Writes a server's replies in one protocol and transport (a connection's)."""

    def __init__(self, protocol: Protocol, transport: Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._framed = transport is Transport.FRAMED
        # A whole filter reply written by a fast path (binary: in C), where one is registered.
        self._fast_filter = messages.CODECS[protocol].fast_replies.get("filter")

    def _out(self, message: bytes) -> bytes:
        return _LENGTH.pack(len(message)) + message if self._framed else message

    def filter(self, seqid: int, response: FilterResponse) -> bytes:
        if self._fast_filter is not None:
            fast = self._fast_filter(seqid, response, self._framed)
            if fast is not None:
                return fast
        return self._out(messages.encode_filter_reply(self.protocol, seqid, response))

    def invalid_request(self, seqid: int, invalid: InvalidRequest, method: str = "filter") -> bytes:
        return self._out(
            messages.encode_invalid_request_reply(self.protocol, seqid, invalid, method)
        )

    def filter_batch(self, seqid: int, responses: Sequence[FilterResponse]) -> bytes:
        return self._out(messages.encode_filter_batch_reply(self.protocol, seqid, responses))

    def model_info(self, seqid: int, info: ModelInfo) -> bytes:
        return self._out(messages.encode_model_info_reply(self.protocol, seqid, info))

    def ping(self, seqid: int, text: str) -> bytes:
        return self._out(messages.encode_ping_reply(self.protocol, seqid, text))

    def report_outcomes(self, seqid: int, receipt: OutcomeReceipt) -> bytes:
        return self._out(messages.encode_report_outcomes_reply(self.protocol, seqid, receipt))

    def application_exception(
        self,
        method: str,
        seqid: int,
        exception_type: ApplicationExceptionType | int,
        message: str,
    ) -> bytes:
        return self._out(
            messages.encode_application_exception(
                self.protocol, method, seqid, exception_type, message
            )
        )

    def rejection(self, rejected: RejectedCall) -> bytes:
        return self._out(messages.encode_rejection(self.protocol, rejected))


class CallEncoder:
    """Writes a client's calls in one protocol and transport."""

    def __init__(self, protocol: Protocol, transport: Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._framed = transport is Transport.FRAMED

    def _out(self, message: bytes) -> bytes:
        return _LENGTH.pack(len(message)) + message if self._framed else message

    def filter(self, seqid: int, request: FilterRequest) -> bytes:
        return self._out(messages.encode_filter_call(self.protocol, seqid, request))

    def filter_batch(self, seqid: int, requests: Sequence[FilterRequest]) -> bytes:
        return self._out(messages.encode_filter_batch_call(self.protocol, seqid, requests))

    def model_info(self, seqid: int) -> bytes:
        return self._out(messages.encode_model_info_call(self.protocol, seqid))

    def ping(self, seqid: int) -> bytes:
        return self._out(messages.encode_ping_call(self.protocol, seqid))

    def report_outcomes(self, seqid: int, outcomes: Sequence[AuctionOutcome]) -> bytes:
        return self._out(messages.encode_report_outcomes_call(self.protocol, seqid, outcomes))

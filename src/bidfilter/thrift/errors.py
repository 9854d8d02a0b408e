"""What goes wrong on the Thrift wire, each error naming where.

``ThriftProtocolError`` is about bytes: they are not a message of this service (garbage, a TLS
handshake, a struct whose field has the wrong type, a string that is not UTF-8). Its ``field`` is
a path into the message (``request.candidates[3]``, ``message.name``, ``transport``).
``MessageTooLargeError`` is the one a server sees from a peer that sends (or announces) more than
it accepts. ``ThriftEncodeError`` is a value that cannot be written (an i32 out of range).

``RemoteInvalidRequestError`` and ``RemoteApplicationError`` are what a client gets back when the
server answered a call with the declared ``InvalidRequest`` or a ``TApplicationException``; they
carry the ``method`` and ``seqid`` of the call they answer, so a pipelining client can route them.

Callers map these once, by type, never by matching their text.
"""

from __future__ import annotations

from enum import IntEnum


class ApplicationExceptionType(IntEnum):
    """``TApplicationException.type``, as every Thrift library numbers it."""

    UNKNOWN = 0
    UNKNOWN_METHOD = 1
    INVALID_MESSAGE_TYPE = 2
    WRONG_METHOD_NAME = 3
    BAD_SEQUENCE_ID = 4
    MISSING_RESULT = 5
    INTERNAL_ERROR = 6
    PROTOCOL_ERROR = 7
    INVALID_TRANSFORM = 8
    INVALID_PROTOCOL = 9
    UNSUPPORTED_CLIENT_TYPE = 10


class ThriftError(Exception):
    """Base of the package's errors: ``field`` says where, ``message`` says what."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class ThriftProtocolError(ThriftError):
    """Bytes that are not a valid message of the BidFilter service."""

    def within(self, outer: str) -> ThriftProtocolError:
        """The same error, its ``field`` prefixed by the enclosing field (``outer.field``)."""
        return ThriftProtocolError(field_path(outer, self.field), self.message)


def field_path(outer: str, inner: str) -> str:
    """``outer.inner``, ``outer[3]`` for a list item, or ``outer`` alone."""
    if not inner:
        return outer
    if inner.startswith("["):
        return outer + inner
    return f"{outer}.{inner}"


class MessageTooLargeError(ThriftProtocolError):
    """A message (or a frame length, or a string length) over the connection's limit.

    ``size`` is the announced or lower-bound size in bytes, ``limit`` the maximum accepted.
    """

    def __init__(self, size: int, limit: int, field: str = "message") -> None:
        super().__init__(field, f"{size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class ThriftEncodeError(ThriftError):
    """A value that cannot be written in its Thrift type (an i32 out of range, say)."""


class RemoteInvalidRequestError(ThriftError):
    """The server refused the call with the IDL's ``InvalidRequest(message, field)``."""

    def __init__(self, field: str, message: str, *, method: str, seqid: int) -> None:
        super().__init__(field, message)
        self.method = method
        self.seqid = seqid


class RemoteApplicationError(ThriftError):
    """The server answered with a ``TApplicationException``; ``field`` is the method name."""

    def __init__(
        self, type: ApplicationExceptionType | int, message: str, *, method: str, seqid: int
    ) -> None:
        super().__init__(method, message)
        self.type = type
        self.method = method
        self.seqid = seqid


class IncompleteMessage(Exception):  # noqa: N818 (a signal to wait for bytes, not an error)
    """The buffer ends before the message does (internal: stream decoders wait for more).

    ``needed`` is a lower bound of the buffer length, counted from the buffer's start, at which
    decoding can make progress; decoding a whole message turns this into a ThriftProtocolError.
    ``field`` is the path of the field being read when the bytes ran out, so that a whole
    message whose string or list announces more bytes than it holds is refused naming it.
    """

    def __init__(self, needed: int, field: str = "") -> None:
        super().__init__(needed)
        self.needed = needed
        self.field = field

    def within(self, outer: str) -> IncompleteMessage:
        return IncompleteMessage(self.needed, field_path(outer, self.field))

    def refusal(self, what: str, size: int) -> ThriftProtocolError:
        """The error of a whole message of ``size`` bytes that ended early."""
        if not self.field:
            return ThriftProtocolError(what, f"truncated: {size} bytes end early")
        return ThriftProtocolError(
            field_path(what, self.field) if what != "message" else self.field,
            f"truncated: announces more bytes than the {size} of the whole message",
        )

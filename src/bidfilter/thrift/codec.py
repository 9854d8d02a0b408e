"""What each protocol codec (binary, compact) provides, and the constants both share.

A ``Codec`` is a table of plain functions, one per struct or message part of this service, so
the message layer is written once for both protocols. Writers append byte strings to a list
that the caller joins once (one copy, however many parts); readers take ``(buffer, offset,
depth)`` and return ``(value, next offset)``.

Readers do not bounds-check fixed-width reads: running past the end of the buffer raises
``struct.error`` or ``IndexError``, which the message layer turns into ``IncompleteMessage``
(stream: wait for more bytes) or a ``ThriftProtocolError`` (a whole message: truncated).
Variable-length reads (strings, lists) check, and raise ``IncompleteMessage`` with the length
they need, so a stream decoder knows how long to wait before trying again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final, TypeVar

from bidfilter.thrift.errors import IncompleteMessage, ThriftEncodeError, ThriftProtocolError
from bidfilter.thrift.types import (
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    Outcome,
)

MAX_DEPTH: Final = 64
"""How deep structs and containers may nest (the official libraries' skip limit)."""

MAX_METHOD_NAME_BYTES: Final = 256
"""Longer method names are refused: no service has them, and garbage often looks like one."""


class Protocol(StrEnum):
    """The Thrift protocols the service speaks."""

    BINARY = "binary"
    COMPACT = "compact"


class MessageType(IntEnum):
    """The message type in a Thrift message header."""

    CALL = 1
    REPLY = 2
    EXCEPTION = 3
    ONEWAY = 4


Parts = list[bytes]
_T = TypeVar("_T")
Reader = Callable[[bytes, int, int], tuple[_T, int]]


@dataclass(frozen=True, slots=True)
class Codec:
    """One protocol's encoding of this service's messages; see the module docstring."""

    protocol: Protocol
    # message header: (name, message type, seqid)
    write_message_begin: Callable[[Parts, str, int, int], None]
    read_message_begin: Callable[[bytes, int], tuple[str, int, int, int]]
    # call arguments (the generated ``<method>_args`` structs)
    write_filter_args: Callable[[Parts, FilterRequest], None]
    read_filter_args: Reader[FilterRequest]
    write_filter_batch_args: Callable[[Parts, Sequence[FilterRequest]], None]
    read_filter_batch_args: Reader[list[FilterRequest]]
    # results (the generated ``<method>_result`` structs: success in field 0)
    write_filter_result: Callable[[Parts, FilterResponse], None]
    write_invalid_request_result: Callable[[Parts, InvalidRequest], None]
    read_filter_result: Reader[FilterResponse | InvalidRequest | None]
    write_filter_batch_result: Callable[[Parts, Sequence[FilterResponse]], None]
    read_filter_batch_result: Reader[list[FilterResponse] | None]
    write_model_info_result: Callable[[Parts, ModelInfo], None]
    read_model_info_result: Reader[ModelInfo | None]
    write_ping_result: Callable[[Parts, str], None]
    read_ping_result: Reader[str | None]
    # TApplicationException: (type, message)
    write_application_exception: Callable[[Parts, int, str], None]
    read_application_exception: Reader[tuple[int, str]]
    # a struct of any content (empty args, unknown methods), checked for structure only
    skip_struct: Callable[[bytes, int, int], int]
    # single structs, for round trips and tools
    write_filter_request: Callable[[Parts, FilterRequest], None]
    read_filter_request: Reader[FilterRequest]
    write_filter_response: Callable[[Parts, FilterResponse], None]
    read_filter_response: Reader[FilterResponse]
    write_model_info: Callable[[Parts, ModelInfo], None]
    read_model_info: Reader[ModelInfo]


STOP: Final = b"\x00"
"""The end of a struct, in both protocols; also a whole empty struct (``ping_args``)."""


def encode_with(write: Callable[[Parts, _T], None], value: _T) -> bytes:
    """``value`` written by ``write`` as one byte string."""
    parts: Parts = []
    write(parts, value)
    return b"".join(parts)


def decode_whole(read: Reader[_T], data: bytes, what: str) -> _T:
    """Read one value that must fill ``data`` exactly (truncation or trailing bytes refused)."""
    try:
        value, end = read(data, 0, MAX_DEPTH)
    except IncompleteMessage as incomplete:
        raise incomplete.refusal(what, len(data)) from None
    except (struct.error, IndexError):
        raise IncompleteMessage(len(data) + 1).refusal(what, len(data)) from None
    except ThriftProtocolError as error:
        raise error.within(what) from None
    if end != len(data):
        raise ThriftProtocolError(what, f"{len(data) - end} unexpected bytes after the end")
    return value


_OUTCOMES: Final = tuple(Outcome)


def outcome_from(value: int) -> Outcome:
    """The ``Outcome`` numbered ``value`` (a tuple index: ``Outcome(value)`` is 10x slower)."""
    if 0 <= value < len(_OUTCOMES):
        return _OUTCOMES[value]
    raise ThriftProtocolError("", f"{value} is not an Outcome")


def missing(names: Sequence[str], values: Sequence[object]) -> ThriftProtocolError:
    """The error for the first required field whose value is ``None``."""
    for name, value in zip(names, values, strict=True):
        if value is None:
            return ThriftProtocolError(name, "required field is missing")
    raise AssertionError("no field is missing")


def check_i32(value: int, field: str) -> None:
    """Refuse an int that does not fit a Thrift i32."""
    if not -0x80000000 <= value <= 0x7FFFFFFF:
        raise ThriftEncodeError(field, f"{value} does not fit an i32")


def check_i64(value: int, field: str) -> None:
    """Refuse an int that does not fit a Thrift i64."""
    if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        raise ThriftEncodeError(field, f"{value} does not fit an i64")

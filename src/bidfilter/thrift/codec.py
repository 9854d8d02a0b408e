"""The shapes shared by the protocols (``binary``, ``compact``), the struct walker and messages.

Each protocol module provides its ``Primitives`` (field headers, scalars, container headers,
skipping); ``structs`` builds from them and the IDL's tables a ``Codec``: plain functions per
struct and per method, so the message layer is written once for both protocols. Writers
append byte strings to a list that the caller joins once (one copy, however many parts);
readers take ``(buffer, offset, depth)`` and return ``(value, next offset)``.

Readers do not bounds-check fixed-width reads: running past the end of the buffer raises
``struct.error`` or ``IndexError``, which the message layer turns into ``IncompleteMessage``
(stream: wait for more bytes) or a ``ThriftProtocolError`` (a whole message: truncated).
Variable-length reads (strings, lists) check, and raise ``IncompleteMessage`` with the length
they need, so a stream decoder knows how long to wait before trying again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Final, TypeVar

from bidfilter.thrift.errors import IncompleteMessage, ThriftEncodeError, ThriftProtocolError
from bidfilter.thrift.types import FilterRequest, FilterResponse, ModelInfo

MAX_DEPTH: Final = 64
"""How deep structs and containers may nest (the official libraries' skip limit)."""

MAX_METHOD_NAME_BYTES: Final = 256
"""Longer method names are refused: no service has them, and garbage often looks like one."""


TYPE_IDS: Final = {  # the IDL's types and their ids in the binary and in the compact protocol
    "bool": (2, 1),  # compact: a bool field of type 1 is true, of type 2 false
    "byte": (3, 3),
    "double": (4, 7),
    "i16": (6, 4),
    "i32": (8, 5),
    "i64": (10, 6),
    "string": (11, 8),
    "struct": (12, 12),
    "map": (13, 11),
    "set": (14, 10),
    "list": (15, 9),
    "uuid": (16, 13),
}


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
"""``(buffer, offset, depth) -> (value, next offset)``."""
Writer = Callable[[Parts, _T], None]
ValueReader = Callable[[bytes, int], tuple[Any, int]]
"""A scalar's reader: ``(buffer, offset) -> (value, next offset)``; no nesting, no depth."""
FastReply = Callable[[int, Any, bool], "bytes | None"]
"""``(seqid, result, framed) -> bytes | None``: a whole reply message written by a fast path,
or ``None`` when it leaves the case to the generic writer."""


@dataclass(frozen=True, slots=True)
class Primitives:
    """One protocol's building blocks, from which ``structs`` builds its ``Codec``.

    Type ids are the protocol's own (``wire_types`` maps the IDL's type names to them).
    Readers take ``(buffer, offset)`` and return ``(value, next offset)``.
    """

    protocol: Protocol
    wire_types: Mapping[str, int]  # "bool", "double", "i32", "i64", "string", "struct", ...
    type_names: Mapping[int, str]  # for errors: "list of i32, expected list of string"
    min_sizes: Mapping[int, int]  # the fewest bytes a value of a type id takes
    # A protocol that carries a bool field's value in its header's type (compact): the type
    # ids of true and false; None: a bool field has a value byte like any other (binary).
    bool_field_types: tuple[int, int] | None
    write_message_begin: Callable[[Parts, str, int, int], None]
    read_message_begin: Callable[[bytes, int], tuple[str, int, int, int]]
    # (type id, field id, previous field id in the struct) -> the field's header
    field_header: Callable[[int, int, int], bytes]
    # (buffer, offset, previous field id) -> (type id, field id, offset); type 0: the STOP
    read_field_begin: Callable[[bytes, int, int], tuple[int, int, int]]
    write_list_begin: Callable[[Parts, int, int], None]  # (out, element type id, size)
    read_list_begin: Callable[[bytes, int], tuple[int, int, int]]  # (type id, size, offset)
    write_map_begin: Callable[[Parts, int, int, int], None]  # (out, key, value type id, size)
    read_map_begin: Callable[[bytes, int], tuple[int, int, int, int]]
    writers: Mapping[str, Writer[Any]]  # the scalars, by IDL type name ("binary": bytes)
    readers: Mapping[str, ValueReader]
    skip_field: Callable[[bytes, int, int, int], int]  # (buffer, offset, type id, depth)
    skip_struct: Callable[[bytes, int, int], int]


@dataclass(frozen=True, slots=True)
class Codec:
    """One protocol's encoding of this service's structs and messages (built by ``structs``).

    Keyed by the IDL's struct types and method names; ``args_*`` hold only methods that take
    arguments, ``result_readers`` give the success, a declared exception or ``None``.
    """

    protocol: Protocol
    write_message_begin: Callable[[Parts, str, int, int], None]
    read_message_begin: Callable[[bytes, int], tuple[str, int, int, int]]
    # a struct of any content (empty args, unknown methods), checked for structure only
    skip_struct: Callable[[bytes, int, int], int]
    struct_writers: Mapping[type, Writer[Any]]
    struct_readers: Mapping[type, Reader[Any]]
    args_writers: Mapping[str, Writer[Any]]
    args_readers: Mapping[str, Reader[Any]]
    result_writers: Mapping[str, Writer[Any]]  # the success, or a declared exception
    result_readers: Mapping[str, Reader[Any]]
    fast_replies: Mapping[str, FastReply]  # whole reply messages, where a fast path exists

    # single structs, for round trips and tools
    @property
    def write_filter_request(self) -> Writer[FilterRequest]:
        return self.struct_writers[FilterRequest]

    @property
    def read_filter_request(self) -> Reader[FilterRequest]:
        return self.struct_readers[FilterRequest]

    @property
    def write_filter_response(self) -> Writer[FilterResponse]:
        return self.struct_writers[FilterResponse]

    @property
    def read_filter_response(self) -> Reader[FilterResponse]:
        return self.struct_readers[FilterResponse]

    @property
    def write_model_info(self) -> Writer[ModelInfo]:
        return self.struct_writers[ModelInfo]

    @property
    def read_model_info(self) -> Reader[ModelInfo]:
        return self.struct_readers[ModelInfo]


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


def check_i32(value: int, field: str) -> None:
    """Refuse an int that does not fit a Thrift i32."""
    if not -0x80000000 <= value <= 0x7FFFFFFF:
        raise ThriftEncodeError(field, f"{value} does not fit an i32")


def check_i64(value: int, field: str) -> None:
    """Refuse an int that does not fit a Thrift i64."""
    if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        raise ThriftEncodeError(field, f"{value} does not fit an i64")


def read_method_name(buf: bytes, pos: int, length: int) -> tuple[str, int]:
    """A message header's method name of ``length`` bytes at ``pos``, and the offset after it."""
    if not 0 <= length <= MAX_METHOD_NAME_BYTES:
        raise ThriftProtocolError("message.name", f"length {length} is not a method name's")
    end = pos + length
    if end > len(buf):
        raise IncompleteMessage(end)
    try:
        return buf[pos:end].decode(), end
    except UnicodeDecodeError:
        raise ThriftProtocolError("message.name", "not valid UTF-8") from None


def skip_fixed(buf: bytes, pos: int, width: int | None, depth: int) -> int | None:
    """Where a skip starts: refuse nesting past ``MAX_DEPTH``; the end of a value ``width``
    bytes wide, or None for a value of variable width (the protocol's to skip)."""
    if depth <= 0:
        raise ThriftProtocolError("", f"nested deeper than {MAX_DEPTH} levels")
    if width is None:
        return None
    if pos + width > len(buf):
        raise IncompleteMessage(pos + width)
    return pos + width


def skip_elements(
    buf: bytes,
    pos: int,
    count: int,
    types: tuple[int, ...],
    widths: Mapping[int, int],
    skip: Callable[[bytes, int, int, int], int],
    depth: int,
) -> int:
    """Skip ``count`` list elements (``types``: one type id) or map entries (key, value)."""
    if count < 0:
        raise ThriftProtocolError("", f"negative container size {count}")
    if count == 0:
        return pos
    fixed = [widths.get(ttype) for ttype in types]
    if None not in fixed:  # fixed-width elements: one bounds check for them all
        end = pos + count * sum(width for width in fixed if width is not None)
        if end > len(buf):
            raise IncompleteMessage(end)
        return end
    # Every element takes at least a byte: wait for (or refuse) them all at once.
    if pos + count > len(buf):
        raise IncompleteMessage(pos + count)
    for _ in range(count):
        for ttype in types:
            pos = skip(buf, pos, ttype, depth - 1)
    return pos


class FieldCache:
    """Encoded fields by their string value, made by ``encode`` on first use: a server writes
    the same few dozen partner names in every response. Bounded: cleared when full.

    A hot loop binds ``fields.get`` and calls ``add`` on a miss (an exact dict's lookup is
    specialised by the interpreter, a subclass's ``__missing__`` path is not).
    """

    def __init__(self, encode: Callable[[str], bytes], limit: int = 4096) -> None:
        self.fields: dict[str, bytes] = {}
        self._encode = encode
        self._limit = limit

    def add(self, key: str) -> bytes:
        if len(self.fields) >= self._limit:
            self.fields.clear()
        field = self.fields[key] = self._encode(key)
        return field

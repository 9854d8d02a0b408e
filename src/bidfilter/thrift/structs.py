"""The IDL's structs and methods as tables, and the one walker that reads and writes them.

``STRUCTS`` holds every struct of ``idl/bidfilter.thrift`` (field id, name, type, required),
``METHODS`` every method (its argument, result and declared exceptions). ``build_codec`` walks
these tables once per protocol, from the protocol's ``Primitives``, into the plain functions of
a ``Codec`` (as thriftpy2 walks any struct from its ``thrift_spec``, but ahead of time, so a
message is not re-interpreted field by field from the tables). A new field or method is one
line here, in every protocol at once.

Hand-tuned fast paths (the C ``filter`` codec, a ``PartnerDecision`` in one pack) are
registered as ``Overrides`` of the generic functions; the tests compare them with the
generic codec, built without overrides.

Reading accepts fields in any order (the last of a repeated field wins), skips unknown ones,
and refuses a known field id with the wrong type; errors name the field (``decisions[3].send``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from operator import attrgetter
from typing import Any, Final

import msgspec

from bidfilter.thrift.codec import (
    STOP,
    Codec,
    FastReply,
    Parts,
    Primitives,
    Reader,
    ValueReader,
    Writer,
    check_i32,
    check_i64,
)
from bidfilter.thrift.errors import IncompleteMessage, ThriftProtocolError
from bidfilter.thrift.types import (
    AuctionOutcome,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    Outcome,
    OutcomeReceipt,
    PartnerDecision,
    PartnerOutcome,
)


class ApplicationException(msgspec.Struct, gc=False):
    """Thrift's ``TApplicationException`` as data: every service has it, the IDL does not."""

    message: str = ""
    type: int = 0


@dataclass(frozen=True, slots=True)
class ListOf:
    item: FieldType


@dataclass(frozen=True, slots=True)
class MapOf:
    key: FieldType
    value: FieldType


FieldType = str | type | ListOf | MapOf
"""A scalar by its IDL name (``"i32"``, ``"string"``; ``"binary"`` reads as bytes), a struct
of ``STRUCTS`` or an ``IntEnum`` (an i32 on the wire) by its Python type, a list or a map."""


class Requiredness(Enum):
    REQUIRED = "required"  # always written; refused when missing
    OPTIONAL = "optional"  # written unless None; None when missing
    DEFAULT = "default"  # the IDL says neither: always written; the type's zero when missing


REQUIRED: Final = Requiredness.REQUIRED
OPTIONAL: Final = Requiredness.OPTIONAL
DEFAULT: Final = Requiredness.DEFAULT
_ZEROS: Final[Mapping[str, object]] = {"string": "", "i32": 0}


@dataclass(frozen=True, slots=True)
class Field:
    id: int
    name: str
    type: FieldType
    required: Requiredness = REQUIRED


STRUCTS: Final[Mapping[type, tuple[Field, ...]]] = {
    FilterRequest: (
        Field(1, "openrtb", "binary"),
        Field(2, "candidates", ListOf("string"), OPTIONAL),
        Field(3, "deadline_ms", "i32", OPTIONAL),
    ),
    PartnerDecision: (
        Field(1, "partner", "string"),
        Field(2, "bid_probability", "double"),
        Field(3, "send", "bool"),
        Field(4, "explore", "bool"),
        Field(5, "threshold", "double"),
        Field(6, "propensity", "double", OPTIONAL),
    ),
    FilterResponse: (
        Field(1, "request_id", "string"),
        Field(2, "decisions", ListOf(PartnerDecision)),
        Field(3, "model_version", "string"),
        Field(4, "outcome", Outcome),
        Field(5, "server_us", "i64", OPTIONAL),
        Field(6, "error", "string", OPTIONAL),
        Field(7, "control", "bool", OPTIONAL),
        Field(8, "logged", "bool", OPTIONAL),
    ),
    ModelInfo: (
        Field(1, "version", "string"),
        Field(2, "partners", ListOf("string")),
        Field(3, "thresholds", MapOf("string", "double")),
        Field(4, "loaded_at", "string"),
    ),
    PartnerOutcome: (
        Field(1, "partner", "string"),
        Field(2, "called", "bool"),
        Field(3, "bid", "bool", OPTIONAL),
        Field(4, "price", "double", OPTIONAL),
        Field(5, "timed_out", "bool", OPTIONAL),
        Field(6, "error", "bool", OPTIONAL),
    ),
    AuctionOutcome: (
        Field(1, "request_id", "string"),
        Field(2, "partners", ListOf(PartnerOutcome)),
    ),
    OutcomeReceipt: (
        Field(1, "accepted", "i32"),
        Field(2, "unknown", "i32"),
        Field(3, "duplicate", "i32"),
    ),
    InvalidRequest: (Field(1, "message", "string", DEFAULT), Field(2, "field", "string", DEFAULT)),
    ApplicationException: (
        Field(1, "message", "string", DEFAULT),
        Field(2, "type", "i32", DEFAULT),
    ),
}
"""Each struct's fields, in id order: also the order of its Python type's fields."""


@dataclass(frozen=True, slots=True)
class Method:
    """A service method: ``args`` is its one argument (``Call.args``), or ``None``;
    ``result`` the type of the result struct's field 0, ``exceptions`` its other fields."""

    args: Field | None
    result: FieldType
    exceptions: tuple[Field, ...] = ()


METHODS: Final[Mapping[str, Method]] = {
    "filter": Method(
        Field(1, "request", FilterRequest),
        FilterResponse,
        (Field(1, "invalid", InvalidRequest, OPTIONAL),),
    ),
    "filter_batch": Method(Field(1, "requests", ListOf(FilterRequest)), ListOf(FilterResponse)),
    "model_info": Method(None, ModelInfo),
    "ping": Method(None, "string"),
    "report_outcomes": Method(
        Field(1, "outcomes", ListOf(AuctionOutcome)),
        OutcomeReceipt,
        (Field(1, "invalid", InvalidRequest, OPTIONAL),),
    ),
}


@dataclass(frozen=True, slots=True)
class Overrides:
    """A protocol's hand-tuned fast paths, registered in place of the generic functions.

    ``writers`` and ``readers`` are keyed by value type (a struct, ``ListOf(...)``...). A
    reader override is given the generic reader, to hand over what it does not take (an
    unusual layout, an error to name): it need not know any error of its own.
    """

    writers: Mapping[FieldType, Writer[Any]] = field(default_factory=dict)
    readers: Mapping[FieldType, Callable[[Reader[Any]], Reader[Any]]] = field(default_factory=dict)
    args_readers: Mapping[str, Callable[[Reader[Any]], Reader[Any]]] = field(default_factory=dict)
    replies: Mapping[str, FastReply] = field(default_factory=dict)


def build_codec(primitives: Primitives, overrides: Overrides | None = None) -> Codec:
    """The codec of every struct and method in one protocol; generic unless ``overrides``."""
    walker = _Walker(primitives, overrides or Overrides())
    for struct_type in STRUCTS:
        walker.struct_writer(struct_type)
        walker.struct_reader(struct_type)
    with_args = {name: method.args for name, method in METHODS.items() if method.args}
    return Codec(
        protocol=primitives.protocol,
        write_message_begin=primitives.write_message_begin,
        read_message_begin=primitives.read_message_begin,
        skip_struct=primitives.skip_struct,
        struct_writers=walker.writers,
        struct_readers=walker.readers,
        args_writers={name: walker.fields_writer((arg,)) for name, arg in with_args.items()},
        args_readers={name: walker.args_reader(name, arg) for name, arg in with_args.items()},
        result_writers={name: walker.result_writer(m) for name, m in METHODS.items()},
        result_readers={name: walker.result_reader(m) for name, m in METHODS.items()},
        fast_replies=walker.overrides.replies,
    )


def _wire_name(value_type: FieldType) -> str:
    """The IDL name of the type a value of ``value_type`` has on the wire."""
    if isinstance(value_type, ListOf):
        return "list"
    if isinstance(value_type, MapOf):
        return "map"
    if isinstance(value_type, type):
        return "i32" if issubclass(value_type, IntEnum) else "struct"
    return "string" if value_type == "binary" else value_type


def _type_name(type_names: Mapping[int, str], wire: int) -> str:
    return type_names.get(wire, f"unknown type {wire}")


def _true(buf: bytes, pos: int) -> tuple[bool, int]:
    return True, pos


def _false(buf: bytes, pos: int) -> tuple[bool, int]:
    return False, pos


# A value reader and whether it nests (takes a depth): scalars do not.
_ValueRead = tuple[Callable[..., tuple[Any, int]], bool]


class _Walker:
    """Builds one protocol's functions from the tables (once, at import)."""

    def __init__(self, primitives: Primitives, overrides: Overrides) -> None:
        self.p = primitives
        self.overrides = overrides
        self.writers: dict[type, Writer[Any]] = {}
        self.readers: dict[type, Reader[Any]] = {}
        read_bytes = primitives.readers["binary"]

        def read_string(buf: bytes, pos: int) -> tuple[str, int]:
            data, end = read_bytes(buf, pos)
            try:
                return data.decode(), end
            except UnicodeDecodeError:
                raise ThriftProtocolError("", "not valid UTF-8") from None

        self.read_string = read_string

    def wire(self, value_type: FieldType) -> int:
        return self.p.wire_types[_wire_name(value_type)]

    # -- writing ------------------------------------------------------------------------------

    def struct_writer(self, struct_type: type) -> Writer[Any]:
        if struct_type not in self.writers:
            fields = STRUCTS[struct_type]
            names = [f.name for f in fields]
            values = attrgetter(*names) if len(names) > 1 else lambda v: (getattr(v, names[0]),)
            generic = self.fields_writer(fields, values)
            self.writers[struct_type] = self.overrides.writers.get(struct_type, generic)
        return self.writers[struct_type]

    def result_writer(self, method: Method) -> Writer[Any]:
        """The result struct: a declared exception's field for its type, else the success."""
        success = self.fields_writer((Field(0, "success", method.result),))
        if not method.exceptions:
            return success
        raised = {e.type: self.fields_writer((e,)) for e in method.exceptions}

        def write(out: Parts, value: Any) -> None:
            raised.get(type(value), success)(out, value)

        return write

    def fields_writer(
        self, fields: Sequence[Field], values: Callable[[Any], Sequence[Any]] | None = None
    ) -> Writer[Any]:
        """Writes the ``values`` of a struct's fields (``None``: an optional field left out),
        then STOP; without ``values``, an args or result struct of one field: the value."""
        header = self.p.field_header
        bool_types = self.p.bool_field_types
        plan: list[tuple[int, bool, dict[int, Any], Writer[Any] | None]] = []
        for index, f in enumerate(fields):
            # A compact field's header depends on the id before it, so each is made for every
            # id that may come before: this field's header is one lookup when writing.
            before = [0, *(previous.id for previous in fields[:index])]
            if f.type == "bool" and bool_types:  # the header's type is the value (compact)
                false, true = bool_types[1], bool_types[0]
                pairs = {
                    last: (header(false, f.id, last), header(true, f.id, last)) for last in before
                }
                plan.append((f.id, f.required is OPTIONAL, pairs, None))
            else:
                wire = self.wire(f.type)
                headers = {last: header(wire, f.id, last) for last in before}
                plan.append(
                    (f.id, f.required is OPTIONAL, headers, self.value_writer(f.type, f.name))
                )

        if values is None and plan[0][3] is not None:  # args or a result: no loop
            header, write_only = plan[0][2][0], plan[0][3]

            def write_one(out: Parts, value: Any) -> None:
                out.append(header)
                write_only(out, value)
                out.append(STOP)

            return write_one

        def write(out: Parts, value: Any) -> None:
            append = out.append
            last = 0
            for (fid, optional, headers, write_value), item in zip(
                plan, (value,) if values is None else values(value), strict=True
            ):
                if item is None and optional:
                    continue
                if write_value is None:
                    append(headers[last][1 if item else 0])
                else:
                    append(headers[last])
                    write_value(out, item)
                last = fid
            append(STOP)

        return write

    def value_writer(self, value_type: FieldType, name: str) -> Writer[Any]:
        """Writes a value of ``value_type``; ``name`` is the field an out-of-range int names."""
        if isinstance(value_type, type):
            if issubclass(value_type, IntEnum):
                return self.p.writers["i32"]
            return self.struct_writer(value_type)
        if isinstance(value_type, ListOf | MapOf):
            override = self.overrides.writers.get(value_type)
            if override is not None:
                return override
            if isinstance(value_type, ListOf):
                return self.list_writer(value_type, name)
            return self.map_writer(value_type, name)
        write_scalar = self.p.writers[value_type]
        check = {"i32": check_i32, "i64": check_i64}.get(value_type)
        if check is None:
            return write_scalar
        in_range = check

        def write_int(out: Parts, value: int) -> None:
            in_range(value, name)
            write_scalar(out, value)

        return write_int

    def list_writer(self, list_type: ListOf, name: str) -> Writer[Sequence[Any]]:
        write_item = self.value_writer(list_type.item, name)
        wire = self.wire(list_type.item)
        write_list_begin = self.p.write_list_begin

        def write(out: Parts, items: Sequence[Any]) -> None:
            write_list_begin(out, wire, len(items))
            for item in items:
                write_item(out, item)

        return write

    def map_writer(self, map_type: MapOf, name: str) -> Writer[Mapping[Any, Any]]:
        write_key = self.value_writer(map_type.key, name)
        write_value = self.value_writer(map_type.value, name)
        key_wire, value_wire = self.wire(map_type.key), self.wire(map_type.value)
        write_map_begin = self.p.write_map_begin

        def write(out: Parts, items: Mapping[Any, Any]) -> None:
            write_map_begin(out, key_wire, value_wire, len(items))
            for key, value in items.items():
                write_key(out, key)
                write_value(out, value)

        return write

    # -- reading ------------------------------------------------------------------------------

    def struct_reader(self, struct_type: type) -> Reader[Any]:
        if struct_type not in self.readers:
            fields = STRUCTS[struct_type]
            initial = [
                _ZEROS[_wire_name(f.type)] if f.required is DEFAULT else None for f in fields
            ]
            read = self.fields_reader(fields, range(len(fields)), initial, struct_type)
            self.readers[struct_type] = self.overridden(struct_type, read)
        return self.readers[struct_type]

    def overridden(self, value_type: FieldType, generic: Reader[Any]) -> Reader[Any]:
        override = self.overrides.readers.get(value_type)
        return generic if override is None else override(generic)

    def one_field_reader(self, fields: Sequence[Field]) -> Reader[Any]:
        """An args or result struct: the value of the last of ``fields`` read, or ``None``.

        Fast path: the struct as every library writes it, its first field alone then STOP,
        is read without the field loop (which would raise the same errors); any other is the
        loop's, from the start.
        """
        read_fields = self.fields_reader(fields, [0] * len(fields), [None])
        first = fields[0]
        if first.type == "bool" and self.p.bool_field_types:  # its header is its value
            return read_fields
        header = self.p.field_header(self.wire(first.type), first.id, 0)
        read_value, nests = self.value_reader(first.type)
        after = len(header)

        def read(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
            if buf.startswith(header, pos):
                try:
                    if nests:
                        value, end = read_value(buf, pos + after, depth - 1)
                    else:
                        value, end = read_value(buf, pos + after)
                except (ThriftProtocolError, IncompleteMessage) as error:
                    raise error.within(first.name) from None  # as the loop would
                if buf[end] == 0:  # STOP
                    return value, end + 1
            return read_fields(buf, pos, depth)

        return read

    def args_reader(self, method: str, arg: Field) -> Reader[Any]:
        read_one = self.one_field_reader((arg,))

        def read(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
            value, pos = read_one(buf, pos, depth)
            if value is None:
                raise ThriftProtocolError(arg.name, "required argument is missing")
            return value, pos

        override = self.overrides.args_readers.get(method)
        return read if override is None else override(read)

    def result_reader(self, method: Method) -> Reader[Any]:
        """The success, a declared exception, or ``None`` (neither is set)."""
        return self.one_field_reader((Field(0, "success", method.result), *method.exceptions))

    def fields_reader(
        self,
        fields: Sequence[Field],
        slots: Sequence[int],
        initial: list[Any],
        struct_type: type | None = None,
    ) -> Reader[Any]:
        """Reads the struct ``struct_type``, field ``fields[i]`` into its argument ``slots[i]``;
        without a type, args or a result: the value of the last of ``fields`` read, or None."""
        p = self.p
        names = {f.id: f.name for f in fields}
        expected = {f.id: p.type_names[self.wire(f.type)] for f in fields}
        required = [(i, f.name) for i, f in enumerate(fields) if f.required is REQUIRED]
        # (field id << 8 | type id) -> (slot, reader, nests): one lookup finds the field and
        # checks its type (ids are i16 and type ids bytes, so keys cannot collide).
        known: dict[int, tuple[int, Callable[..., tuple[Any, int]], bool]] = {}
        for f, slot in zip(fields, slots, strict=True):
            if f.type == "bool" and p.bool_field_types:
                true, false = p.bool_field_types
                known[f.id << 8 | true] = (slot, _true, False)
                known[f.id << 8 | false] = (slot, _false, False)
            else:
                known[f.id << 8 | self.wire(f.type)] = (slot, *self.value_reader(f.type))
        read_field_begin, skip_field, type_names = p.read_field_begin, p.skip_field, p.type_names

        def read(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
            values = initial.copy()
            fid = 0
            try:
                while True:
                    ftype, fid, pos = read_field_begin(buf, pos, fid)
                    if not ftype:
                        break
                    entry = known.get(fid << 8 | ftype)
                    if entry is not None:
                        slot, read_value, nests = entry
                        values[slot], pos = (
                            read_value(buf, pos, depth - 1) if nests else read_value(buf, pos)
                        )
                    elif fid in expected:
                        message = f"{_type_name(type_names, ftype)}, expected {expected[fid]}"
                        raise ThriftProtocolError("", message)
                    else:
                        pos = skip_field(buf, pos, ftype, depth - 1)
            except (ThriftProtocolError, IncompleteMessage) as error:
                raise error.within(names.get(fid) or f"#{fid}") from None
            if struct_type is None:
                return values[0], pos
            for index, name in required:
                if values[index] is None:
                    raise ThriftProtocolError(name, "required field is missing")
            return struct_type(*values), pos

        return read

    def value_reader(self, value_type: FieldType) -> _ValueRead:
        if isinstance(value_type, ListOf):
            return self.overridden(value_type, self.list_reader(value_type)), True
        if isinstance(value_type, MapOf):
            return self.overridden(value_type, self.map_reader(value_type)), True
        if isinstance(value_type, type):
            if issubclass(value_type, IntEnum):
                return self.enum_reader(value_type), False
            return self.struct_reader(value_type), True
        if value_type == "string":  # the protocol's bytes, then UTF-8 (the same in both)
            return self.read_string, False
        return self.p.readers[value_type], False

    def enum_reader(self, enum_type: type[IntEnum]) -> ValueReader:
        # A dict lookup: calling the enum type is ten times slower.
        members: dict[int, IntEnum] = {member.value: member for member in enum_type}
        read_i32 = self.p.readers["i32"]
        article = "an" if enum_type.__name__[0] in "AEIOU" else "a"

        def read(buf: bytes, pos: int) -> tuple[IntEnum, int]:
            value, pos = read_i32(buf, pos)
            member = members.get(value)
            if member is None:
                raise ThriftProtocolError("", f"{value} is not {article} {enum_type.__name__}")
            return member, pos

        return read

    def list_reader(self, list_type: ListOf) -> Reader[list[Any]]:
        read_item, nests = self.value_reader(list_type.item)
        wire = self.wire(list_type.item)
        expected = f"list of {self.p.type_names[wire]}"
        min_size = self.p.min_sizes[wire]
        read_list_begin, type_names = self.p.read_list_begin, self.p.type_names
        # Running out of bytes inside a struct item names the item; inside a scalar (a string)
        # the list, whose length announced them (what a stream's size limit reports).
        named = (ThriftProtocolError, IncompleteMessage) if nests else ThriftProtocolError

        def read(buf: bytes, pos: int, depth: int) -> tuple[list[Any], int]:
            etype, count, pos = read_list_begin(buf, pos)
            if etype != wire and count:
                message = f"list of {_type_name(type_names, etype)}, expected {expected}"
                raise ThriftProtocolError("", message)
            # Every item takes at least min_size bytes: wait for (or refuse) them all at once.
            if pos + count * min_size > len(buf):
                raise IncompleteMessage(pos + count * min_size)
            items: list[Any] = []
            append = items.append
            index = 0
            try:
                for index in range(count):  # noqa: B007 (index names the culprit on error)
                    item, pos = read_item(buf, pos, depth - 1) if nests else read_item(buf, pos)
                    append(item)
            except named as error:
                raise error.within(f"[{index}]") from None
            return items, pos

        return read

    def map_reader(self, map_type: MapOf) -> Reader[dict[Any, Any]]:
        (read_key, key_nests), (read_value, value_nests) = (
            self.value_reader(map_type.key),
            self.value_reader(map_type.value),
        )
        key_wire, value_wire = self.wire(map_type.key), self.wire(map_type.value)
        names = self.p.type_names
        expected = f"map<{names[key_wire]}, {names[value_wire]}>"
        min_size = self.p.min_sizes[key_wire] + self.p.min_sizes[value_wire]
        read_map_begin = self.p.read_map_begin

        def read(buf: bytes, pos: int, depth: int) -> tuple[dict[Any, Any], int]:
            ktype, vtype, count, pos = read_map_begin(buf, pos)
            if count and (ktype != key_wire or vtype != value_wire):
                found = f"map<{_type_name(names, ktype)}, {_type_name(names, vtype)}>"
                raise ThriftProtocolError("", f"{found}, expected {expected}")
            if pos + count * min_size > len(buf):
                raise IncompleteMessage(pos + count * min_size)
            items: dict[Any, Any] = {}
            for index in range(count):
                try:
                    key, pos = read_key(buf, pos, depth - 1) if key_nests else read_key(buf, pos)
                    items[key], pos = (
                        read_value(buf, pos, depth - 1) if value_nests else read_value(buf, pos)
                    )
                except (ThriftProtocolError, IncompleteMessage) as error:
                    raise error.within(f"[{index}]") from None
            return items, pos

        return read

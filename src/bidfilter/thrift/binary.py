"""TBinaryProtocol's primitives: big-endian fixed-width ints, i32-length strings, 3-byte fields.

``structs`` builds every struct and method from these. Output matches the official library
byte for byte (strict message headers ``0x8001_0000 | type``). Reading also takes the old
non-strict message header (name length first).

Fast paths, registered as overrides of the generic codec (``GENERIC``, which the tests compare
them with): the C ``_fastbinary`` reads ``filter`` args and writes whole ``filter`` replies;
a ``PartnerDecision`` is written, and read in the layout every library writes, as its partner
name and one 31-byte pack of the rest; a list of strings is read in one loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from struct import Struct
from typing import Any, Final

from bidfilter.thrift import codec
from bidfilter.thrift.codec import FieldCache, Parts, Primitives, Reader, check_i32
from bidfilter.thrift.errors import IncompleteMessage, ThriftProtocolError
from bidfilter.thrift.structs import ListOf, Overrides, build_codec
from bidfilter.thrift.types import FilterRequest, FilterResponse, PartnerDecision

# TType ids, as the binary protocol writes them (codec.TYPE_IDS has them all).
T_STOP, T_BOOL, T_DOUBLE, T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 0, 2, 4, 11, 12, 13, 14, 15
TYPE_NAMES: Final = {ids[0]: name for name, ids in codec.TYPE_IDS.items()}
_FIXED_WIDTH: Final = {2: 1, 3: 1, 4: 8, 6: 2, 8: 4, 10: 8, 16: 16}  # bool ... i64, uuid
_MIN_SIZES: Final = {**_FIXED_WIDTH, T_STRING: 4, T_STRUCT: 1, T_MAP: 6, T_SET: 5, T_LIST: 5}

VERSION_1: Final = 0x80010000
_VERSION_MASK: Final = 0xFFFF0000

_U32 = Struct(">I")
_I16 = Struct(">h")
_I32 = Struct(">i")
_I64 = Struct(">q")
_DOUBLE = Struct(">d")
_FIELD = Struct(">bh")
_FIELD_I32 = Struct(">bhi")  # field header + string length
_LIST = Struct(">bi")
_MAP = Struct(">bbi")
_STRICT_BEGIN = Struct(">Ii")  # version | message type, name length
# PartnerDecision after field 1: 2 double, 3 bool, 4 bool, 5 double, STOP (31 bytes); or
# with 6 (propensity, a double) before the STOP (42 bytes).
_DECISION_TAIL = Struct(">bhdbh?bh?bhdb")
_DECISION_TAIL_6 = Struct(">bhdbh?bh?bhdbhdb")

_TAIL_SIZE: Final = _DECISION_TAIL.size
_PROPENSITY = Struct(">bhdb")  # field 6 and the STOP, where the short tail has its STOP
_PROPENSITY_SIZE: Final = _PROPENSITY.size - 1  # what field 6 adds
_propensity_from = _PROPENSITY.unpack_from
_u32_from = _U32.unpack_from
_i16_from = _I16.unpack_from
_i32_from = _I32.unpack_from
_field_i32_from = _FIELD_I32.unpack_from
_decision_tail_from = _DECISION_TAIL.unpack_from

# --------------------------------------------------------------------------------------------
# Messages and fields


def write_message_begin(out: Parts, name: str, message_type: int, seqid: int) -> None:
    """The strict message header: version | type, name, seqid."""
    check_i32(seqid, "seqid")
    encoded = name.encode()
    out.append(_STRICT_BEGIN.pack(VERSION_1 | message_type, len(encoded)))
    out.append(encoded)
    out.append(_I32.pack(seqid))


def read_message_begin(buf: bytes, pos: int) -> tuple[str, int, int, int]:
    """(name, message type, seqid, offset of the body); strict or old non-strict header."""
    (word,) = _u32_from(buf, pos)
    if word & 0x80000000:
        if word & _VERSION_MASK != VERSION_1:
            raise ThriftProtocolError("message", f"bad binary protocol version 0x{word:08x}")
        (length,) = _i32_from(buf, pos + 4)
        name, pos = codec.read_method_name(buf, pos + 8, length)
        (seqid,) = _i32_from(buf, pos)
        return name, word & 0xFF, seqid, pos + 4
    # Non-strict (old) header: name length, name, type byte, seqid.
    name, pos = codec.read_method_name(buf, pos + 4, word)
    message_type = buf[pos]
    (seqid,) = _i32_from(buf, pos + 1)
    return name, message_type, seqid, pos + 5


def _field_header(ttype: int, fid: int, last: int) -> bytes:
    return _FIELD.pack(ttype, fid)


def _read_field_begin(buf: bytes, pos: int, last: int) -> tuple[int, int, int]:
    ftype = buf[pos]
    if ftype == T_STOP:
        return T_STOP, last, pos + 1
    (fid,) = _i16_from(buf, pos + 1)
    return ftype, fid, pos + 3


def _write_list_begin(out: Parts, etype: int, count: int) -> None:
    out.append(_LIST.pack(etype, count))


def _read_list_begin(buf: bytes, pos: int) -> tuple[int, int, int]:
    etype, count = _LIST.unpack_from(buf, pos)
    if count < 0:
        raise ThriftProtocolError("", f"negative list size {count}")
    return etype, count, pos + 5


def _write_map_begin(out: Parts, ktype: int, vtype: int, count: int) -> None:
    out.append(_MAP.pack(ktype, vtype, count))


def _read_map_begin(buf: bytes, pos: int) -> tuple[int, int, int, int]:
    ktype, vtype, count = _MAP.unpack_from(buf, pos)
    if count < 0:
        raise ThriftProtocolError("", f"negative map size {count}")
    return ktype, vtype, count, pos + 6


# --------------------------------------------------------------------------------------------
# Scalars


def _write_bytes(out: Parts, data: bytes) -> None:
    out.append(_I32.pack(len(data)))
    out.append(data)


def _write_string(out: Parts, text: str) -> None:
    encoded = text.encode()
    out.append(_I32.pack(len(encoded)))
    out.append(encoded)


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = _i32_from(buf, pos)
    pos += 4
    end = pos + length
    if length < 0:
        raise ThriftProtocolError("", f"negative length {length}")
    if end > len(buf):
        raise IncompleteMessage(end)
    return buf[pos:end], end


def _unpacker(packing: Struct) -> Any:
    unpack_from, size = packing.unpack_from, packing.size

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        return unpack_from(buf, pos)[0], pos + size

    return read


def _packer(packing: Struct) -> Any:
    pack = packing.pack

    def write(out: Parts, value: Any) -> None:
        out.append(pack(value))

    return write


# --------------------------------------------------------------------------------------------
# Skipping


def skip(buf: bytes, pos: int, ttype: int, depth: int) -> int:
    """The offset just past a value of type ``ttype`` at ``pos``, checking its structure."""
    end = codec.skip_fixed(buf, pos, _FIXED_WIDTH.get(ttype), depth)
    if end is not None:
        return end
    if ttype == T_STRING:
        return _read_bytes(buf, pos)[1]
    if ttype == T_STRUCT:
        while True:
            ftype = buf[pos]
            if ftype == T_STOP:
                return pos + 1
            pos = skip(buf, pos + 3, ftype, depth - 1)
    if ttype in (T_LIST, T_SET):
        etype, count = _LIST.unpack_from(buf, pos)
        return codec.skip_elements(buf, pos + 5, count, (etype,), _FIXED_WIDTH, skip, depth)
    if ttype == T_MAP:
        ktype, vtype, count = _MAP.unpack_from(buf, pos)
        return codec.skip_elements(buf, pos + 6, count, (ktype, vtype), _FIXED_WIDTH, skip, depth)
    raise ThriftProtocolError("", f"unknown type id {ttype}")


def skip_struct(buf: bytes, pos: int, depth: int) -> int:
    return skip(buf, pos, T_STRUCT, depth)


PRIMITIVES: Final = Primitives(
    protocol=codec.Protocol.BINARY,
    wire_types={name: ttype for ttype, name in TYPE_NAMES.items()},
    bool_field_types=None,
    type_names=TYPE_NAMES,
    min_sizes=_MIN_SIZES,
    write_message_begin=write_message_begin,
    read_message_begin=read_message_begin,
    writers={
        "string": _write_string,
        "binary": _write_bytes,
        "bool": _packer(Struct(">?")),
        "double": _packer(_DOUBLE),
        "i32": _packer(_I32),
        "i64": _packer(_I64),
    },
    field_header=_field_header,
    read_field_begin=_read_field_begin,
    write_list_begin=_write_list_begin,
    read_list_begin=_read_list_begin,
    write_map_begin=_write_map_begin,
    readers={
        "binary": _read_bytes,
        "bool": lambda buf, pos: (buf[pos] != 0, pos + 1),
        "double": _unpacker(_DOUBLE),
        "i32": _unpacker(_I32),
        "i64": _unpacker(_I64),
    },
    read_map_begin=_read_map_begin,
    skip_field=skip,
    skip_struct=skip_struct,
)

# --------------------------------------------------------------------------------------------
# Fast paths


def _partner_field(partner: str) -> bytes:
    """A decision's field 1: header, length, UTF-8 name."""
    encoded = partner.encode()
    return _FIELD_I32.pack(T_STRING, 1, len(encoded)) + encoded


_partner_fields = FieldCache(_partner_field)


def _write_decisions(out: Parts, decisions: Sequence[PartnerDecision]) -> None:
    out.append(_LIST.pack(T_STRUCT, len(decisions)))
    append = out.append
    known = _partner_fields.fields.get
    tail, tail_6 = _DECISION_TAIL.pack, _DECISION_TAIL_6.pack
    for decision in decisions:
        append(known(decision.partner) or _partner_fields.add(decision.partner))
        propensity = decision.propensity
        if propensity is None:
            append(
                tail(
                    T_DOUBLE, 2, decision.bid_probability,
                    T_BOOL, 3, decision.send,
                    T_BOOL, 4, decision.explore,
                    T_DOUBLE, 5, decision.threshold,
                    T_STOP,
                )
            )  # fmt: skip
        else:
            append(
                tail_6(
                    T_DOUBLE, 2, decision.bid_probability,
                    T_BOOL, 3, decision.send,
                    T_BOOL, 4, decision.explore,
                    T_DOUBLE, 5, decision.threshold,
                    T_DOUBLE, 6, propensity,
                    T_STOP,
                )
            )  # fmt: skip


_TAIL_HEADERS: Final = (T_DOUBLE, 2, T_BOOL, 3, T_BOOL, 4, T_DOUBLE, 5)


def _decisions_reader(generic: Reader[list[PartnerDecision]]) -> Reader[list[PartnerDecision]]:
    def read_decisions(buf: bytes, pos: int, depth: int) -> tuple[list[PartnerDecision], int]:
        # Decisions in the layout every library writes (fields 1 to 5 in order, perhaps 6,
        # then STOP), two or three unpacks each; any other list is the generic reader's, from
        # its start.
        etype, count = _LIST.unpack_from(buf, pos)
        at, size = pos + 5, len(buf)
        if etype != T_STRUCT or not 0 <= count <= (size - at) // (7 + _TAIL_SIZE):
            return generic(buf, pos, depth)
        decisions: list[PartnerDecision] = []
        append = decisions.append
        for _ in range(count):
            if at + 7 + _TAIL_SIZE > size:  # the generic reader says what is missing
                return generic(buf, pos, depth)
            ftype, fid, length = _field_i32_from(buf, at)
            start = at + 7
            end = start + length
            if ftype != T_STRING or fid != 1 or length < 0 or end + _TAIL_SIZE > size:
                return generic(buf, pos, depth)
            (t2, f2, probability, t3, f3, send, t4, f4, explore, t5, f5, threshold, stop) = (
                _decision_tail_from(buf, end)
            )
            if (t2, f2, t3, f3, t4, f4, t5, f5) != _TAIL_HEADERS:
                return generic(buf, pos, depth)
            at = end + _TAIL_SIZE
            propensity = None
            if stop != T_STOP:  # the STOP's place: field 6, or the generic reader's case
                if stop != T_DOUBLE or at + _PROPENSITY_SIZE > size:
                    return generic(buf, pos, depth)
                (f6, propensity, stop) = _propensity_from(buf, at - 1)[1:]
                if f6 != 6 or stop != T_STOP:
                    return generic(buf, pos, depth)
                at += _PROPENSITY_SIZE
            try:
                partner = buf[start:end].decode()
            except UnicodeDecodeError:
                return generic(buf, pos, depth)
            append(PartnerDecision(partner, probability, send, explore, threshold, propensity))
        return decisions, at

    return read_decisions


def _write_strings(out: Parts, items: Sequence[str]) -> None:
    out.append(_LIST.pack(T_STRING, len(items)))
    append, pack_length = out.append, _I32.pack
    for item in items:
        encoded = item.encode()
        append(pack_length(len(encoded)))
        append(encoded)


def _strings_reader(generic: Reader[list[str]]) -> Reader[list[str]]:
    def read_strings(buf: bytes, pos: int, depth: int) -> tuple[list[str], int]:
        # One loop, no call a string; anything unusual is the generic reader's, from the start.
        etype, count = _LIST.unpack_from(buf, pos)
        at, size = pos + 5, len(buf)
        if etype != T_STRING or not 0 <= count <= (size - at) // 4:
            return generic(buf, pos, depth)
        items: list[str] = []
        append = items.append
        try:
            for _ in range(count):
                (length,) = _i32_from(buf, at)
                at += 4
                end = at + length
                if length < 0 or end > size:
                    return generic(buf, pos, depth)
                append(buf[at:end].decode())
                at = end
        except UnicodeDecodeError:
            return generic(buf, pos, depth)
        return items, at

    return read_strings


try:
    from bidfilter.thrift import _fastbinary
except ImportError:  # built without a C compiler: the Python fast paths do all the work
    _fastbinary = None  # type: ignore[assignment]
else:
    _fastbinary.bind(FilterRequest, FilterResponse, PartnerDecision)


def _c_args_reader(generic: Reader[FilterRequest]) -> Reader[FilterRequest]:
    if _fastbinary is None:
        return generic
    read_fast = _fastbinary.read_filter_args

    def read_filter_args(buf: bytes, pos: int, depth: int) -> tuple[FilterRequest, int]:
        # The C reader takes the usual shape of these args and leaves any other to generic.
        fast = read_fast(buf, pos)
        return fast if fast is not None else generic(buf, pos, depth)

    return read_filter_args


GENERIC: Final = build_codec(PRIMITIVES)
"""The binary codec as the tables define it, without fast paths: what they are tested against."""

CODEC: Final = build_codec(
    PRIMITIVES,
    Overrides(
        writers={ListOf(PartnerDecision): _write_decisions, ListOf("string"): _write_strings},
        readers={ListOf(PartnerDecision): _decisions_reader, ListOf("string"): _strings_reader},
        args_readers={"filter": _c_args_reader},
        replies={} if _fastbinary is None else {"filter": _fastbinary.write_filter_reply},
    ),
)
"""The binary protocol's codec (strict headers, as the official libraries write them)."""

# The filter args' functions by the names the C parity tests use.
write_filter_args: Final = CODEC.args_writers["filter"]
read_filter_args: Final = CODEC.args_readers["filter"]
read_filter_args_pure: Final = GENERIC.args_readers["filter"]

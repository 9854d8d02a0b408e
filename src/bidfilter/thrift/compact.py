"""TCompactProtocol's primitives: varints, zigzag ints, field ids as deltas, bools in headers.

``structs`` builds every struct and method from these. A field header is usually one byte
(``delta << 4 | type``, the delta from the previous field id in the same struct); a bool
field has no value, its header's type says true or false. Output matches the official library
byte for byte; reading also takes the long field-header form.

Fast paths, registered as overrides of the generic codec (``GENERIC``, which the tests compare
them with), each taking the layout every library writes and handing anything else back: the
``filter`` args are read, and a ``FilterResponse`` written, field by field as the old
hand-written codec did; a ``PartnerDecision`` is its partner name and one 21-byte pack of the
rest (the two bools live in their headers); a list of strings is read in one loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from struct import Struct
from typing import Final

from bidfilter.thrift import codec
from bidfilter.thrift.codec import FieldCache, Parts, Primitives, Reader, check_i32
from bidfilter.thrift.errors import IncompleteMessage, ThriftProtocolError
from bidfilter.thrift.structs import ListOf, Overrides, build_codec
from bidfilter.thrift.types import FilterRequest, FilterResponse, PartnerDecision

PROTOCOL_ID: Final = 0x82
VERSION: Final = 1

# Compact type ids (not the binary protocol's TType ids; codec.TYPE_IDS has them all). A bool
# field's value is its type: C_TRUE or C_FALSE; a bool in a container is one byte (1 or 2), its
# element type C_TRUE.
C_STOP, C_TRUE, C_FALSE, C_BINARY, C_LIST, C_SET, C_MAP, C_STRUCT = 0, 1, 2, 8, 9, 10, 11, 12
TYPE_NAMES: Final = {C_FALSE: "bool"} | {ids[1]: name for name, ids in codec.TYPE_IDS.items()}
_FIXED_WIDTH: Final = {C_TRUE: 1, C_FALSE: 1, 3: 1, 7: 8, 13: 16}  # bools, byte, double, uuid
_VARINT_TYPES: Final = frozenset((4, 5, 6))  # i16, i32, i64
_MIN_SIZES: Final = {ctype: _FIXED_WIDTH.get(ctype, 1) for ctype in TYPE_NAMES}

_DOUBLE = Struct("<d")
# PartnerDecision after field 1: header + double, send header, explore header, header +
# double, STOP (21 bytes); or with field 6 (header + double, propensity) before the STOP.
_DECISION_TAIL = Struct("<BdBBBdB")
_DECISION_TAIL_6 = Struct("<BdBBBdBdB")
_TAIL_SIZE: Final = _DECISION_TAIL.size
_PROPENSITY_SIZE: Final = _DECISION_TAIL_6.size - _TAIL_SIZE  # what field 6 adds
_double_from = _DOUBLE.unpack_from
_decision_tail_from = _DECISION_TAIL.unpack_from

_BYTES: Final = tuple(bytes((value,)) for value in range(256))
_MESSAGE_BEGIN: Final = tuple(bytes((PROTOCOL_ID, kind << 5 | VERSION)) for kind in range(8))

# --------------------------------------------------------------------------------------------
# Varints


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTES[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ThriftProtocolError("", "varint longer than 10 bytes")


def _read_zigzag(buf: bytes, pos: int, limit: int) -> tuple[int, int]:
    """A zigzag varint that must be in ``-limit..limit-1`` (an i32's limit is 1 << 31)."""
    value, pos = _read_varint(buf, pos)
    value = (value >> 1) ^ -(value & 1)
    if not -limit <= value < limit:
        raise ThriftProtocolError("", f"{value} does not fit an i{limit.bit_length()}")
    return value, pos


def _skip_varint(buf: bytes, pos: int) -> int:
    end = pos + 10
    while buf[pos] & 0x80:
        pos += 1
        if pos == end:
            raise ThriftProtocolError("", "varint longer than 10 bytes")
    return pos + 1


# --------------------------------------------------------------------------------------------
# Messages, fields and containers


def write_message_begin(out: Parts, name: str, message_type: int, seqid: int) -> None:
    """Protocol id, version and type, seqid (a varint of its unsigned 32 bits), name."""
    check_i32(seqid, "seqid")
    encoded = name.encode()
    out.append(_MESSAGE_BEGIN[message_type & 0x07])
    out.append(_varint(seqid & 0xFFFFFFFF))
    out.append(_varint(len(encoded)))
    out.append(encoded)


def read_message_begin(buf: bytes, pos: int) -> tuple[str, int, int, int]:
    """(name, message type, seqid, offset of the body)."""
    if buf[pos] != PROTOCOL_ID:
        raise ThriftProtocolError("message", f"bad compact protocol id 0x{buf[pos]:02x}")
    byte = buf[pos + 1]
    if byte & 0x1F != VERSION:
        raise ThriftProtocolError("message", f"bad compact protocol version {byte & 0x1F}")
    seqid, pos = _read_varint(buf, pos + 2)
    if seqid > 0xFFFFFFFF:
        raise ThriftProtocolError("message.seqid", f"{seqid} does not fit 32 bits")
    if seqid > 0x7FFFFFFF:
        seqid -= 1 << 32
    length, pos = _read_varint(buf, pos)
    name, end = codec.read_method_name(buf, pos, length)
    return name, byte >> 5, seqid, end


def _field_header(ctype: int, fid: int, last: int) -> bytes:
    if 0 < fid - last <= 15:
        return _BYTES[(fid - last) << 4 | ctype]
    # the long form: the type, then the id as a zigzag varint (a result's success, field 0)
    return _BYTES[ctype] + _varint((fid << 1) ^ (fid >> 15))


def _read_field_begin(buf: bytes, pos: int, last: int) -> tuple[int, int, int]:
    byte = buf[pos]
    ctype = byte & 0x0F
    if ctype == C_STOP:
        return C_STOP, last, pos + 1
    if byte >> 4:
        return ctype, last + (byte >> 4), pos + 1
    value, pos = _read_varint(buf, pos + 1)
    return ctype, (value >> 1) ^ -(value & 1), pos


def _write_list_begin(out: Parts, etype: int, count: int) -> None:
    if count < 15:
        out.append(_BYTES[count << 4 | etype])
    else:
        out.append(_BYTES[0xF0 | etype])
        out.append(_varint(count))


def _read_list_begin(buf: bytes, pos: int) -> tuple[int, int, int]:
    byte = buf[pos]
    count = byte >> 4
    if count == 15:
        count, pos = _read_varint(buf, pos + 1)
        return byte & 0x0F, count, pos
    return byte & 0x0F, count, pos + 1


def _write_map_begin(out: Parts, ktype: int, vtype: int, count: int) -> None:
    if count:  # an empty map is its size alone
        out.append(_varint(count))
        out.append(_BYTES[ktype << 4 | vtype])
    else:
        out.append(b"\x00")


def _read_map_begin(buf: bytes, pos: int) -> tuple[int, int, int, int]:
    count, pos = _read_varint(buf, pos)
    if count == 0:
        return C_STOP, C_STOP, 0, pos
    types = buf[pos]
    return types >> 4, types & 0x0F, count, pos + 1


# --------------------------------------------------------------------------------------------
# Scalars


def _write_bytes(out: Parts, data: bytes) -> None:
    out.append(_varint(len(data)))
    out.append(data)


def _write_string(out: Parts, text: str) -> None:
    encoded = text.encode()
    out.append(_varint(len(encoded)))
    out.append(encoded)


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    length = buf[pos]
    if length < 0x80:
        pos += 1
    else:
        length, pos = _read_varint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise IncompleteMessage(end)
    return buf[pos:end], end


# --------------------------------------------------------------------------------------------
# Skipping


def _skip_field(buf: bytes, pos: int, ctype: int, depth: int) -> int:
    """Skip a field's value: a bool field has none (its value is its type)."""
    if ctype in (C_TRUE, C_FALSE):
        return pos
    return skip(buf, pos, ctype, depth)


def skip(buf: bytes, pos: int, ctype: int, depth: int) -> int:
    """The offset just past a container element of type ``ctype`` (a bool takes one byte)."""
    end = codec.skip_fixed(buf, pos, _FIXED_WIDTH.get(ctype), depth)
    if end is not None:
        return end
    if ctype in _VARINT_TYPES:
        return _skip_varint(buf, pos)
    if ctype == C_BINARY:
        return _read_bytes(buf, pos)[1]
    if ctype == C_STRUCT:
        while True:
            byte = buf[pos]
            pos += 1
            ftype = byte & 0x0F
            if ftype == C_STOP:
                return pos
            if not byte >> 4:
                pos = _skip_varint(buf, pos)  # the long form's field id
            pos = _skip_field(buf, pos, ftype, depth - 1)
    if ctype in (C_LIST, C_SET):
        etype, count, pos = _read_list_begin(buf, pos)
        return codec.skip_elements(buf, pos, count, (etype,), _FIXED_WIDTH, skip, depth)
    if ctype == C_MAP:
        ktype, vtype, count, pos = _read_map_begin(buf, pos)
        return codec.skip_elements(buf, pos, count, (ktype, vtype), _FIXED_WIDTH, skip, depth)
    raise ThriftProtocolError("", f"unknown type id {ctype}")


def skip_struct(buf: bytes, pos: int, depth: int) -> int:
    return skip(buf, pos, C_STRUCT, depth)


# (The arguments' order keeps runs of like lines short: see `duplicates` in the README.)
PRIMITIVES: Final = Primitives(
    protocol=codec.Protocol.COMPACT,
    wire_types={name: ctype for ctype, name in TYPE_NAMES.items() if ctype != C_FALSE},
    type_names=TYPE_NAMES,
    min_sizes=_MIN_SIZES,
    bool_field_types=(C_TRUE, C_FALSE),
    write_message_begin=write_message_begin,
    read_message_begin=read_message_begin,
    writers={
        "string": _write_string,
        "binary": _write_bytes,
        "bool": lambda out, value: out.append(_BYTES[C_TRUE if value else C_FALSE]),
        "double": lambda out, value: out.append(_DOUBLE.pack(value)),
        "i32": lambda out, value: out.append(_varint((value << 1) ^ (value >> 31))),
        "i64": lambda out, value: out.append(_varint((value << 1) ^ (value >> 63))),
    },
    field_header=_field_header,
    read_field_begin=_read_field_begin,
    write_list_begin=_write_list_begin,
    readers={
        "binary": _read_bytes,
        "bool": lambda buf, pos: (buf[pos] == C_TRUE, pos + 1),
        "double": lambda buf, pos: (_double_from(buf, pos)[0], pos + 8),
        "i32": lambda buf, pos: _read_zigzag(buf, pos, 1 << 31),
        "i64": lambda buf, pos: _read_zigzag(buf, pos, 1 << 63),
    },
    read_list_begin=_read_list_begin,
    write_map_begin=_write_map_begin,
    read_map_begin=_read_map_begin,
    skip_field=_skip_field,
    skip_struct=skip_struct,
)

# --------------------------------------------------------------------------------------------
# Fast paths

_BOOLS: Final = (0x11, 0x12)  # a bool field right after the previous one: true, false


def _partner_field(partner: str) -> bytes:
    """A decision's field 1: header, length, UTF-8 name."""
    encoded = partner.encode()
    return b"\x18" + _varint(len(encoded)) + encoded


_partner_fields = FieldCache(_partner_field)


def _write_decisions(out: Parts, decisions: Sequence[PartnerDecision]) -> None:
    _write_list_begin(out, C_STRUCT, len(decisions))
    append, tail, tail_6 = out.append, _DECISION_TAIL.pack, _DECISION_TAIL_6.pack
    known = _partner_fields.fields.get
    for decision in decisions:
        append(known(decision.partner) or _partner_fields.add(decision.partner))
        propensity = decision.propensity
        if propensity is None:
            append(tail(
                0x17, decision.bid_probability,
                0x11 if decision.send else 0x12, 0x11 if decision.explore else 0x12,
                0x17, decision.threshold, C_STOP,
            ))  # fmt: skip
        else:
            append(tail_6(
                0x17, decision.bid_probability,
                0x11 if decision.send else 0x12, 0x11 if decision.explore else 0x12,
                0x17, decision.threshold, 0x17, propensity, C_STOP,
            ))  # fmt: skip


def _decisions_reader(generic: Reader[list[PartnerDecision]]) -> Reader[list[PartnerDecision]]:
    def read_decisions(buf: bytes, pos: int, depth: int) -> tuple[list[PartnerDecision], int]:
        # Decisions in the layout every library writes (fields 1 to 5 in order, perhaps 6,
        # then STOP; a partner name under 128 bytes), one or two unpacks past the partner; any
        # other list is the generic reader's, from its start.
        etype, count, at = _read_list_begin(buf, pos)
        size = len(buf)
        if etype != C_STRUCT or count > (size - at) // (2 + _TAIL_SIZE):
            return generic(buf, pos, depth)
        decisions: list[PartnerDecision] = []
        append = decisions.append
        for _ in range(count):
            start = at + 2
            # (past the end: the generic reader says what is missing)
            if start + _TAIL_SIZE > size or buf[at] != 0x18 or buf[at + 1] >= 0x80:
                return generic(buf, pos, depth)
            end = start + buf[at + 1]
            if end + _TAIL_SIZE > size:
                return generic(buf, pos, depth)
            (h2, probability, h3, h4, h5, threshold, stop) = _decision_tail_from(buf, end)
            if not (h2 == h5 == 0x17 and h3 in _BOOLS and h4 in _BOOLS):
                return generic(buf, pos, depth)
            at = end + _TAIL_SIZE
            propensity = None
            if stop != C_STOP:  # the STOP's place: field 6, or the generic reader's case
                if stop != 0x17 or at + _PROPENSITY_SIZE > size or buf[at + 8] != C_STOP:
                    return generic(buf, pos, depth)
                (propensity,) = _double_from(buf, at)
                at += _PROPENSITY_SIZE
            try:
                partner = buf[start:end].decode()
            except UnicodeDecodeError:
                return generic(buf, pos, depth)
            send, explore = h3 == 0x11, h4 == 0x11
            append(PartnerDecision(partner, probability, send, explore, threshold, propensity))
        return decisions, at

    return read_decisions


def _short_strings(buf: bytes, pos: int) -> tuple[list[str], int] | None:
    """A list of strings each under 128 bytes, in one loop; None: anything else."""
    etype, count, at = _read_list_begin(buf, pos)
    size = len(buf)
    if etype != C_BINARY or count > size - at:
        return None
    items: list[str] = []
    append = items.append
    try:
        for _ in range(count):
            length = buf[at]
            end = at + 1 + length
            if length >= 0x80 or end > size:
                return None
            append(buf[at + 1 : end].decode())
            at = end
    except UnicodeDecodeError:
        return None
    return items, at


def _write_strings(out: Parts, items: Sequence[str]) -> None:
    _write_list_begin(out, C_BINARY, len(items))
    append = out.append
    for encoded in map(str.encode, items):
        append(_BYTES[len(encoded)] if len(encoded) < 0x80 else _varint(len(encoded)))
        append(encoded)


def _strings_reader(generic: Reader[list[str]]) -> Reader[list[str]]:
    def read_strings(buf: bytes, pos: int, depth: int) -> tuple[list[str], int]:
        return _short_strings(buf, pos) or generic(buf, pos, depth)

    return read_strings


def _args_reader(generic: Reader[FilterRequest]) -> Reader[FilterRequest]:
    def read_filter_args(buf: bytes, pos: int, depth: int) -> tuple[FilterRequest, int]:
        # The args as every library writes them (the request's fields in order, then both
        # STOPs); any other layout, or an error to name, is the generic reader's.
        try:
            if buf[pos] != 0x1C or buf[pos + 1] != 0x18:
                return generic(buf, pos, depth)
            openrtb, at = _read_bytes(buf, pos + 2)
            candidates = deadline_ms = None
            if buf[at] == 0x19:
                strings = _short_strings(buf, at + 1)
                if strings is None:
                    return generic(buf, pos, depth)
                candidates, at = strings
            if buf[at] == (0x25 if candidates is None else 0x15):
                deadline_ms, at = _read_zigzag(buf, at + 1, 1 << 31)
            if buf[at] or buf[at + 1]:
                return generic(buf, pos, depth)
        except (ThriftProtocolError, IncompleteMessage, IndexError):
            return generic(buf, pos, depth)
        return FilterRequest(openrtb, candidates, deadline_ms), at + 2

    return read_filter_args


def _write_response(out: Parts, response: FilterResponse) -> None:
    append = out.append
    append(b"\x18")
    _write_string(out, response.request_id)
    append(b"\x19")
    _write_decisions(out, response.decisions)
    append(b"\x18")
    _write_string(out, response.model_version)
    append(b"\x15")
    append(_varint((response.outcome << 1) ^ (response.outcome >> 31)))
    last = 4
    if response.server_us is not None:
        codec.check_i64(response.server_us, "server_us")
        append(b"\x16")
        append(_varint((response.server_us << 1) ^ (response.server_us >> 63)))
        last = 5
    if response.error is not None:
        append(_BYTES[(6 - last) << 4 | C_BINARY])
        _write_string(out, response.error)
        last = 6
    if response.control is not None:
        append(_BYTES[(7 - last) << 4 | (C_TRUE if response.control else C_FALSE)])
        last = 7
    if response.logged is not None:
        append(_BYTES[(8 - last) << 4 | (C_TRUE if response.logged else C_FALSE)])
    append(b"\x00")


GENERIC: Final = build_codec(PRIMITIVES)
"""The compact codec as the tables define it, without fast paths: what they are tested against."""

CODEC: Final = build_codec(
    PRIMITIVES,
    Overrides(
        writers={
            ListOf(PartnerDecision): _write_decisions,
            ListOf("string"): _write_strings,
            FilterResponse: _write_response,
        },
        readers={ListOf(PartnerDecision): _decisions_reader, ListOf("string"): _strings_reader},
        args_readers={"filter": _args_reader},
    ),
)
"""The compact protocol's codec."""

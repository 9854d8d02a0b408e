"""TCompactProtocol for this service: varints, zigzag ints, field ids as deltas, bools in headers.

Written by hand for the IDL's structs, like ``binary.py``: a field header is usually one byte
(``delta << 4 | type``, the delta from the previous field id in the same struct), so for these
structs the headers are constants; a ``PartnerDecision`` past its partner name is one 21-byte
pack (the two bools live in their field headers). Output matches the official library byte for
byte. Reading accepts fields in any order and the long field-header form, skips unknown fields
(any type, nested up to ``MAX_DEPTH``), and refuses a known field id with the wrong type.

See ``codec.py`` for the reader/writer conventions (offsets, ``IncompleteMessage``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from struct import Struct
from typing import Final, TypeVar

from bidfilter.thrift.codec import (
    MAX_DEPTH,
    MAX_METHOD_NAME_BYTES,
    STOP,
    Codec,
    Parts,
    Protocol,
    Reader,
    check_i32,
    check_i64,
    missing,
    outcome_from,
)
from bidfilter.thrift.errors import IncompleteMessage, ThriftProtocolError
from bidfilter.thrift.types import (
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    Outcome,
    PartnerDecision,
)

PROTOCOL_ID: Final = 0x82
VERSION: Final = 1

# Compact type ids (not the binary protocol's TType ids). A bool field's value is its type:
# C_TRUE or C_FALSE; a bool in a container is one byte (1 or 2) and its element type C_TRUE.
C_STOP: Final = 0
C_TRUE: Final = 1
C_FALSE: Final = 2
C_BYTE: Final = 3
C_I16: Final = 4
C_I32: Final = 5
C_I64: Final = 6
C_DOUBLE: Final = 7
C_BINARY: Final = 8
C_LIST: Final = 9
C_SET: Final = 10
C_MAP: Final = 11
C_STRUCT: Final = 12
C_UUID: Final = 13

TYPE_NAMES: Final = {
    C_TRUE: "bool",
    C_FALSE: "bool",
    C_BYTE: "byte",
    C_I16: "i16",
    C_I32: "i32",
    C_I64: "i64",
    C_DOUBLE: "double",
    C_BINARY: "string",
    C_LIST: "list",
    C_SET: "set",
    C_MAP: "map",
    C_STRUCT: "struct",
    C_UUID: "uuid",
}
_FIXED_WIDTH: Final = {C_TRUE: 1, C_FALSE: 1, C_BYTE: 1, C_DOUBLE: 8, C_UUID: 16}
_VARINT_TYPES: Final = frozenset((C_I16, C_I32, C_I64))

_T = TypeVar("_T")

_DOUBLE = Struct("<d")
# PartnerDecision after field 1: header + double, send header, explore header, header +
# double, STOP (21 bytes).
_DECISION_TAIL = Struct("<BdBBBdB")
_TAIL_SIZE: Final = _DECISION_TAIL.size
_double_from = _DOUBLE.unpack_from
_decision_tail_from = _DECISION_TAIL.unpack_from

_BYTES: Final = tuple(bytes((value,)) for value in range(256))
_MESSAGE_BEGIN: Final = tuple(bytes((PROTOCOL_ID, kind << 5 | VERSION)) for kind in range(8))

# --------------------------------------------------------------------------------------------
# Writing


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTES[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _list_header(count: int, element_type: int) -> bytes:
    if count < 15:
        return _BYTES[count << 4 | element_type]
    return _BYTES[0xF0 | element_type] + _varint(count)


def write_message_begin(out: Parts, name: str, message_type: int, seqid: int) -> None:
    """Protocol id, version and type, seqid (a varint of its unsigned 32 bits), name."""
    check_i32(seqid, "seqid")
    encoded = name.encode()
    out.append(_MESSAGE_BEGIN[message_type & 0x07])
    out.append(_varint(seqid & 0xFFFFFFFF))
    out.append(_varint(len(encoded)))
    out.append(encoded)


def _write_string(out: Parts, text: str) -> None:
    encoded = text.encode()
    out.append(_varint(len(encoded)))
    out.append(encoded)


def _write_strings(out: Parts, items: Sequence[str]) -> None:
    out.append(_list_header(len(items), C_BINARY))
    append = out.append
    for item in items:
        encoded = item.encode()
        length = len(encoded)
        append(_BYTES[length] if length < 0x80 else _varint(length))
        append(encoded)


def write_filter_request(out: Parts, request: FilterRequest) -> None:
    openrtb = request.openrtb
    out.append(b"\x18")
    out.append(_varint(len(openrtb)))
    out.append(openrtb)
    last = 1
    candidates = request.candidates
    if candidates is not None:
        out.append(b"\x19")
        _write_strings(out, candidates)
        last = 2
    deadline_ms = request.deadline_ms
    if deadline_ms is not None:
        check_i32(deadline_ms, "deadline_ms")
        out.append(_BYTES[(3 - last) << 4 | C_I32])
        out.append(_varint((deadline_ms << 1) ^ (deadline_ms >> 31)))
    out.append(STOP)


# The partner field (header, length, UTF-8 name) of each partner seen, memoised: a server
# writes the same few dozen partners in every response. Bounded: cleared when full.
_partner_fields: dict[str, bytes] = {}
_MAX_PARTNER_FIELDS: Final = 4096


def _partner_field(partner: str) -> bytes:
    encoded = partner.encode()
    field = b"\x18" + _varint(len(encoded)) + encoded
    if len(_partner_fields) >= _MAX_PARTNER_FIELDS:
        _partner_fields.clear()
    _partner_fields[partner] = field
    return field


def _write_decisions(out: Parts, decisions: Sequence[PartnerDecision]) -> None:
    out.append(_list_header(len(decisions), C_STRUCT))
    append = out.append
    known = _partner_fields.get
    tail = _DECISION_TAIL.pack
    for decision in decisions:
        partner = decision.partner
        append(known(partner) or _partner_field(partner))
        append(
            tail(
                0x17, decision.bid_probability,
                0x11 if decision.send else 0x12,
                0x11 if decision.explore else 0x12,
                0x17, decision.threshold,
                C_STOP,
            )
        )  # fmt: skip


def write_filter_response(out: Parts, response: FilterResponse) -> None:
    out.append(b"\x18")
    _write_string(out, response.request_id)
    out.append(b"\x19")
    _write_decisions(out, response.decisions)
    out.append(b"\x18")
    _write_string(out, response.model_version)
    outcome = response.outcome
    out.append(b"\x15")
    out.append(_varint((outcome << 1) ^ (outcome >> 31)))
    last = 4
    server_us = response.server_us
    if server_us is not None:
        check_i64(server_us, "server_us")
        out.append(b"\x16")
        out.append(_varint((server_us << 1) ^ (server_us >> 63)))
        last = 5
    if response.error is not None:
        out.append(_BYTES[(6 - last) << 4 | C_BINARY])
        _write_string(out, response.error)
    out.append(STOP)


def write_model_info(out: Parts, info: ModelInfo) -> None:
    out.append(b"\x18")
    _write_string(out, info.version)
    out.append(b"\x19")
    _write_strings(out, info.partners)
    thresholds = info.thresholds
    out.append(b"\x1b")
    if thresholds:
        out.append(_varint(len(thresholds)))
        out.append(_BYTES[C_BINARY << 4 | C_DOUBLE])
        pack_double = _DOUBLE.pack
        for partner, threshold in thresholds.items():
            _write_string(out, partner)
            out.append(pack_double(threshold))
    else:
        out.append(b"\x00")
    out.append(b"\x18")
    _write_string(out, info.loaded_at)
    out.append(STOP)


def _write_invalid_request(out: Parts, invalid: InvalidRequest) -> None:
    out.append(b"\x18")
    _write_string(out, invalid.message)
    out.append(b"\x18")
    _write_string(out, invalid.field)
    out.append(STOP)


# A result's success is field 0: a delta of 0 from the struct's start cannot be a short
# header, so it takes the long form (type byte, then the zigzag varint of 0).
_SUCCESS_STRUCT: Final = bytes((C_STRUCT, 0))
_SUCCESS_LIST: Final = bytes((C_LIST, 0))
_SUCCESS_STRING: Final = bytes((C_BINARY, 0))


def write_filter_args(out: Parts, request: FilterRequest) -> None:
    out.append(b"\x1c")
    write_filter_request(out, request)
    out.append(STOP)


def write_filter_batch_args(out: Parts, requests: Sequence[FilterRequest]) -> None:
    out.append(b"\x19")
    out.append(_list_header(len(requests), C_STRUCT))
    for request in requests:
        write_filter_request(out, request)
    out.append(STOP)


def write_filter_result(out: Parts, response: FilterResponse) -> None:
    out.append(_SUCCESS_STRUCT)
    write_filter_response(out, response)
    out.append(STOP)


def write_invalid_request_result(out: Parts, invalid: InvalidRequest) -> None:
    out.append(b"\x1c")
    _write_invalid_request(out, invalid)
    out.append(STOP)


def write_filter_batch_result(out: Parts, responses: Sequence[FilterResponse]) -> None:
    out.append(_SUCCESS_LIST)
    out.append(_list_header(len(responses), C_STRUCT))
    for response in responses:
        write_filter_response(out, response)
    out.append(STOP)


def write_model_info_result(out: Parts, info: ModelInfo) -> None:
    out.append(_SUCCESS_STRUCT)
    write_model_info(out, info)
    out.append(STOP)


def write_ping_result(out: Parts, text: str) -> None:
    out.append(_SUCCESS_STRING)
    _write_string(out, text)
    out.append(STOP)


def write_application_exception(out: Parts, exception_type: int, message: str) -> None:
    check_i32(exception_type, "type")
    out.append(b"\x18")
    _write_string(out, message)
    out.append(b"\x15")
    out.append(_varint((exception_type << 1) ^ (exception_type >> 31)))
    out.append(STOP)


# --------------------------------------------------------------------------------------------
# Reading


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


def _read_i32(buf: bytes, pos: int) -> tuple[int, int]:
    value, pos = _read_varint(buf, pos)
    value = (value >> 1) ^ -(value & 1)
    if not -0x80000000 <= value <= 0x7FFFFFFF:
        raise ThriftProtocolError("", f"{value} does not fit an i32")
    return value, pos


def _read_i64(buf: bytes, pos: int) -> tuple[int, int]:
    value, pos = _read_varint(buf, pos)
    value = (value >> 1) ^ -(value & 1)
    if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        raise ThriftProtocolError("", f"{value} does not fit an i64")
    return value, pos


def _read_field_id(buf: bytes, pos: int) -> tuple[int, int]:
    """The long field-header form: a zigzag varint i16 after the type byte."""
    value, pos = _read_varint(buf, pos)
    return (value >> 1) ^ -(value & 1), pos


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
    if length > MAX_METHOD_NAME_BYTES:
        raise ThriftProtocolError("message.name", f"length {length} is not a method name's")
    end = pos + length
    if end > len(buf):
        raise IncompleteMessage(end)
    try:
        name = buf[pos:end].decode()
    except UnicodeDecodeError:
        raise ThriftProtocolError("message.name", "not valid UTF-8") from None
    return name, byte >> 5, seqid, end


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


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    length = buf[pos]
    if length < 0x80:
        pos += 1
    else:
        length, pos = _read_varint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise IncompleteMessage(end)
    try:
        return buf[pos:end].decode(), end
    except UnicodeDecodeError:
        raise ThriftProtocolError("", "not valid UTF-8") from None


def _read_list_header(
    buf: bytes, pos: int, element_type: int, element_bytes: int
) -> tuple[int, int]:
    """(size, offset of the first element) of a list whose elements must be ``element_type``."""
    byte = buf[pos]
    pos += 1
    count = byte >> 4
    if count == 15:
        count, pos = _read_varint(buf, pos)
    etype = byte & 0x0F
    if etype != element_type and count:
        raise ThriftProtocolError(
            "", f"list of {_type_name(etype)}, expected list of {TYPE_NAMES[element_type]}"
        )
    # Every element takes at least element_bytes: wait for (or refuse) them all at once.
    if pos + count * element_bytes > len(buf):
        raise IncompleteMessage(pos + count * element_bytes)
    return count, pos


def _read_strings(buf: bytes, pos: int) -> tuple[list[str], int]:
    count, pos = _read_list_header(buf, pos, C_BINARY, 1)
    items: list[str] = []
    append = items.append
    size = len(buf)
    for index in range(count):
        length = buf[pos]
        if length < 0x80:
            pos += 1
        else:
            length, pos = _read_varint(buf, pos)
        end = pos + length
        if end > size:
            raise IncompleteMessage(end)
        try:
            append(buf[pos:end].decode())
        except UnicodeDecodeError:
            raise ThriftProtocolError(f"[{index}]", "not valid UTF-8") from None
        pos = end
    return items, pos


def _type_name(ctype: int) -> str:
    return TYPE_NAMES.get(ctype, f"unknown type {ctype}")


def _unexpected(
    buf: bytes, pos: int, ctype: int, fid: int, fields: Mapping[int, tuple[str, int]], depth: int
) -> int:
    """Skip an unknown field; refuse a known one whose type is not the IDL's."""
    known = fields.get(fid)
    if known is None:
        return _skip_field(buf, pos, ctype, depth)
    raise ThriftProtocolError("", f"{_type_name(ctype)}, expected {TYPE_NAMES[known[1]]}")


def _field_name(fid: int, fields: Mapping[int, tuple[str, int]]) -> str:
    known = fields.get(fid)
    return known[0] if known is not None else f"#{fid}"


_FILTER_REQUEST_FIELDS: Final = {
    1: ("openrtb", C_BINARY),
    2: ("candidates", C_LIST),
    3: ("deadline_ms", C_I32),
}


def read_filter_request(buf: bytes, pos: int, depth: int) -> tuple[FilterRequest, int]:
    openrtb: bytes | None = None
    candidates: list[str] | None = None
    deadline_ms: int | None = None
    fid = 0
    try:
        while True:
            byte = buf[pos]
            ctype = byte & 0x0F
            if ctype == C_STOP:
                break
            if byte >> 4:
                fid += byte >> 4
                pos += 1
            else:
                fid, pos = _read_field_id(buf, pos + 1)
            if fid == 1 and ctype == C_BINARY:
                openrtb, pos = _read_bytes(buf, pos)
            elif fid == 2 and ctype == C_LIST:
                candidates, pos = _read_strings(buf, pos)
            elif fid == 3 and ctype == C_I32:
                deadline_ms, pos = _read_i32(buf, pos)
            else:
                pos = _unexpected(buf, pos, ctype, fid, _FILTER_REQUEST_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _FILTER_REQUEST_FIELDS)) from None
    if openrtb is None:
        raise ThriftProtocolError("openrtb", "required field is missing")
    return FilterRequest(openrtb, candidates, deadline_ms), pos + 1


_DECISION_FIELDS: Final = {
    1: ("partner", C_BINARY),
    2: ("bid_probability", C_DOUBLE),
    3: ("send", C_TRUE),
    4: ("explore", C_TRUE),
    5: ("threshold", C_DOUBLE),
}
_DECISION_NAMES: Final = tuple(name for name, _ in _DECISION_FIELDS.values())


def _read_decision_fields(buf: bytes, pos: int, depth: int) -> tuple[PartnerDecision, int]:
    partner: str | None = None
    probability: float | None = None
    send: bool | None = None
    explore: bool | None = None
    threshold: float | None = None
    fid = 0
    try:
        while True:
            byte = buf[pos]
            ctype = byte & 0x0F
            if ctype == C_STOP:
                break
            if byte >> 4:
                fid += byte >> 4
                pos += 1
            else:
                fid, pos = _read_field_id(buf, pos + 1)
            if fid == 1 and ctype == C_BINARY:
                partner, pos = _read_string(buf, pos)
            elif fid == 2 and ctype == C_DOUBLE:
                (probability,) = _double_from(buf, pos)
                pos += 8
            elif fid == 3 and ctype in (C_TRUE, C_FALSE):
                send = ctype == C_TRUE
            elif fid == 4 and ctype in (C_TRUE, C_FALSE):
                explore = ctype == C_TRUE
            elif fid == 5 and ctype == C_DOUBLE:
                (threshold,) = _double_from(buf, pos)
                pos += 8
            else:
                pos = _unexpected(buf, pos, ctype, fid, _DECISION_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _DECISION_FIELDS)) from None
    if (
        partner is None
        or probability is None
        or send is None
        or explore is None
        or threshold is None
    ):
        raise missing(_DECISION_NAMES, (partner, probability, send, explore, threshold))
    return PartnerDecision(partner, probability, send, explore, threshold), pos + 1


def _read_decisions(buf: bytes, pos: int, depth: int) -> tuple[list[PartnerDecision], int]:
    count, pos = _read_list_header(buf, pos, C_STRUCT, 1)
    decisions: list[PartnerDecision] = []
    append = decisions.append
    size = len(buf)
    index = 0
    try:
        for index in range(count):  # noqa: B007 (index names the culprit on error)
            # Fast path, inlined: the layout every Thrift library writes (fields 1 to 5 in
            # order, then STOP) is one unpack past the partner; anything else takes the
            # general loop.
            if buf[pos] == 0x18 and buf[pos + 1] < 0x80:
                start = pos + 2
                end = start + buf[pos + 1]
                if end + _TAIL_SIZE <= size:
                    (h2, probability, h3, h4, h5, threshold, stop) = _decision_tail_from(buf, end)
                    if (
                        h2 == 0x17
                        and h5 == 0x17
                        and stop == C_STOP
                        and (h3 == 0x11 or h3 == 0x12)
                        and (h4 == 0x11 or h4 == 0x12)
                    ):
                        try:
                            partner = buf[start:end].decode()
                        except UnicodeDecodeError:
                            raise ThriftProtocolError("partner", "not valid UTF-8") from None
                        append(
                            PartnerDecision(partner, probability, h3 == 0x11, h4 == 0x11, threshold)
                        )
                        pos = end + _TAIL_SIZE
                        continue
            decision, pos = _read_decision_fields(buf, pos, depth)
            append(decision)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(f"[{index}]") from None
    return decisions, pos


_FILTER_RESPONSE_FIELDS: Final = {
    1: ("request_id", C_BINARY),
    2: ("decisions", C_LIST),
    3: ("model_version", C_BINARY),
    4: ("outcome", C_I32),
    5: ("server_us", C_I64),
    6: ("error", C_BINARY),
}
_FILTER_RESPONSE_NAMES: Final = ("request_id", "decisions", "model_version", "outcome")


def read_filter_response(buf: bytes, pos: int, depth: int) -> tuple[FilterResponse, int]:
    request_id: str | None = None
    decisions: list[PartnerDecision] | None = None
    model_version: str | None = None
    outcome: Outcome | None = None
    server_us: int | None = None
    error_text: str | None = None
    fid = 0
    try:
        while True:
            byte = buf[pos]
            ctype = byte & 0x0F
            if ctype == C_STOP:
                break
            if byte >> 4:
                fid += byte >> 4
                pos += 1
            else:
                fid, pos = _read_field_id(buf, pos + 1)
            if fid == 1 and ctype == C_BINARY:
                request_id, pos = _read_string(buf, pos)
            elif fid == 2 and ctype == C_LIST:
                decisions, pos = _read_decisions(buf, pos, depth - 1)
            elif fid == 3 and ctype == C_BINARY:
                model_version, pos = _read_string(buf, pos)
            elif fid == 4 and ctype == C_I32:
                value, pos = _read_i32(buf, pos)
                outcome = outcome_from(value)
            elif fid == 5 and ctype == C_I64:
                server_us, pos = _read_i64(buf, pos)
            elif fid == 6 and ctype == C_BINARY:
                error_text, pos = _read_string(buf, pos)
            else:
                pos = _unexpected(buf, pos, ctype, fid, _FILTER_RESPONSE_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _FILTER_RESPONSE_FIELDS)) from None
    if request_id is None or decisions is None or model_version is None or outcome is None:
        raise missing(_FILTER_RESPONSE_NAMES, (request_id, decisions, model_version, outcome))
    return (
        FilterResponse(request_id, decisions, model_version, outcome, server_us, error_text),
        pos + 1,
    )


_MODEL_INFO_FIELDS: Final = {
    1: ("version", C_BINARY),
    2: ("partners", C_LIST),
    3: ("thresholds", C_MAP),
    4: ("loaded_at", C_BINARY),
}
_MODEL_INFO_NAMES: Final = tuple(name for name, _ in _MODEL_INFO_FIELDS.values())


def _read_thresholds(buf: bytes, pos: int) -> tuple[dict[str, float], int]:
    count, pos = _read_varint(buf, pos)
    thresholds: dict[str, float] = {}
    if count == 0:
        return thresholds, pos
    types = buf[pos]
    pos += 1
    if types != C_BINARY << 4 | C_DOUBLE:
        raise ThriftProtocolError(
            "",
            f"map<{_type_name(types >> 4)}, {_type_name(types & 0x0F)}>,"
            " expected map<string, double>",
        )
    if pos + 9 * count > len(buf):
        raise IncompleteMessage(pos + 9 * count)
    for index in range(count):
        try:
            key, pos = _read_string(buf, pos)
        except (ThriftProtocolError, IncompleteMessage) as error:
            raise error.within(f"[{index}]") from None
        (thresholds[key],) = _double_from(buf, pos)
        pos += 8
    return thresholds, pos


def read_model_info(buf: bytes, pos: int, depth: int) -> tuple[ModelInfo, int]:
    version: str | None = None
    partners: list[str] | None = None
    thresholds: dict[str, float] | None = None
    loaded_at: str | None = None
    fid = 0
    try:
        while True:
            byte = buf[pos]
            ctype = byte & 0x0F
            if ctype == C_STOP:
                break
            if byte >> 4:
                fid += byte >> 4
                pos += 1
            else:
                fid, pos = _read_field_id(buf, pos + 1)
            if fid == 1 and ctype == C_BINARY:
                version, pos = _read_string(buf, pos)
            elif fid == 2 and ctype == C_LIST:
                partners, pos = _read_strings(buf, pos)
            elif fid == 3 and ctype == C_MAP:
                thresholds, pos = _read_thresholds(buf, pos)
            elif fid == 4 and ctype == C_BINARY:
                loaded_at, pos = _read_string(buf, pos)
            else:
                pos = _unexpected(buf, pos, ctype, fid, _MODEL_INFO_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _MODEL_INFO_FIELDS)) from None
    if version is None or partners is None or thresholds is None or loaded_at is None:
        raise missing(_MODEL_INFO_NAMES, (version, partners, thresholds, loaded_at))
    return ModelInfo(version, partners, thresholds, loaded_at), pos + 1


_INVALID_REQUEST_FIELDS: Final = {1: ("message", C_BINARY), 2: ("field", C_BINARY)}


def _read_invalid_request(buf: bytes, pos: int, depth: int) -> tuple[InvalidRequest, int]:
    # Both fields are "default" requiredness in the IDL: a missing one reads as "".
    message = field = ""
    fid = 0
    try:
        while True:
            byte = buf[pos]
            ctype = byte & 0x0F
            if ctype == C_STOP:
                break
            if byte >> 4:
                fid += byte >> 4
                pos += 1
            else:
                fid, pos = _read_field_id(buf, pos + 1)
            if fid == 1 and ctype == C_BINARY:
                message, pos = _read_string(buf, pos)
            elif fid == 2 and ctype == C_BINARY:
                field, pos = _read_string(buf, pos)
            else:
                pos = _unexpected(buf, pos, ctype, fid, _INVALID_REQUEST_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _INVALID_REQUEST_FIELDS)) from None
    return InvalidRequest(message, field), pos + 1


_APPLICATION_EXCEPTION_FIELDS: Final = {1: ("message", C_BINARY), 2: ("type", C_I32)}


def read_application_exception(buf: bytes, pos: int, depth: int) -> tuple[tuple[int, str], int]:
    """(type, message) of a TApplicationException; missing fields read as UNKNOWN (0), ""."""
    message = ""
    exception_type = 0
    fid = 0
    try:
        while True:
            byte = buf[pos]
            ctype = byte & 0x0F
            if ctype == C_STOP:
                break
            if byte >> 4:
                fid += byte >> 4
                pos += 1
            else:
                fid, pos = _read_field_id(buf, pos + 1)
            if fid == 1 and ctype == C_BINARY:
                message, pos = _read_string(buf, pos)
            elif fid == 2 and ctype == C_I32:
                exception_type, pos = _read_i32(buf, pos)
            else:
                pos = _unexpected(buf, pos, ctype, fid, _APPLICATION_EXCEPTION_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _APPLICATION_EXCEPTION_FIELDS)) from None
    return (exception_type, message), pos + 1


def _read_one_of(
    buf: bytes, pos: int, depth: int, fields: Mapping[int, tuple[str, int, Reader[_T]]]
) -> tuple[_T | None, int]:
    """An args or result struct: at most one of ``fields`` set (the last one read wins)."""
    value: _T | None = None
    fid = 0
    try:
        while True:
            byte = buf[pos]
            ctype = byte & 0x0F
            if ctype == C_STOP:
                return value, pos + 1
            if byte >> 4:
                fid += byte >> 4
                pos += 1
            else:
                fid, pos = _read_field_id(buf, pos + 1)
            field = fields.get(fid)
            if field is None:
                pos = _skip_field(buf, pos, ctype, depth - 1)
            elif ctype != field[1]:
                raise ThriftProtocolError(
                    "", f"{_type_name(ctype)}, expected {TYPE_NAMES[field[1]]}"
                )
            else:
                value, pos = field[2](buf, pos, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, {k: v[:2] for k, v in fields.items()})) from None


def _struct_list(read_item: Reader[_T]) -> Reader[list[_T]]:
    def read_list(buf: bytes, pos: int, depth: int) -> tuple[list[_T], int]:
        count, pos = _read_list_header(buf, pos, C_STRUCT, 1)
        items: list[_T] = []
        index = 0
        try:
            for index in range(count):  # noqa: B007 (index names the culprit on error)
                item, pos = read_item(buf, pos, depth - 1)
                items.append(item)
        except (ThriftProtocolError, IncompleteMessage) as error:
            raise error.within(f"[{index}]") from None
        return items, pos

    return read_list


def _read_string_value(buf: bytes, pos: int, depth: int) -> tuple[str, int]:
    return _read_string(buf, pos)


_FILTER_ARGS: Final[dict[int, tuple[str, int, Reader[FilterRequest]]]] = {
    1: ("request", C_STRUCT, read_filter_request),
}
_FILTER_BATCH_ARGS: Final[dict[int, tuple[str, int, Reader[list[FilterRequest]]]]] = {
    1: ("requests", C_LIST, _struct_list(read_filter_request)),
}
_FILTER_RESULT: Final[dict[int, tuple[str, int, Reader[FilterResponse | InvalidRequest]]]] = {
    0: ("success", C_STRUCT, read_filter_response),
    1: ("invalid", C_STRUCT, _read_invalid_request),
}
_FILTER_BATCH_RESULT: Final[dict[int, tuple[str, int, Reader[list[FilterResponse]]]]] = {
    0: ("success", C_LIST, _struct_list(read_filter_response)),
}
_MODEL_INFO_RESULT: Final[dict[int, tuple[str, int, Reader[ModelInfo]]]] = {
    0: ("success", C_STRUCT, read_model_info),
}
_PING_RESULT: Final[dict[int, tuple[str, int, Reader[str]]]] = {
    0: ("success", C_BINARY, _read_string_value),
}


def read_filter_args(buf: bytes, pos: int, depth: int) -> tuple[FilterRequest, int]:
    request, pos = _read_one_of(buf, pos, depth, _FILTER_ARGS)
    if request is None:
        raise ThriftProtocolError("request", "required argument is missing")
    return request, pos


def read_filter_batch_args(buf: bytes, pos: int, depth: int) -> tuple[list[FilterRequest], int]:
    requests, pos = _read_one_of(buf, pos, depth, _FILTER_BATCH_ARGS)
    if requests is None:
        raise ThriftProtocolError("requests", "required argument is missing")
    return requests, pos


def read_filter_result(
    buf: bytes, pos: int, depth: int
) -> tuple[FilterResponse | InvalidRequest | None, int]:
    return _read_one_of(buf, pos, depth, _FILTER_RESULT)


def read_filter_batch_result(
    buf: bytes, pos: int, depth: int
) -> tuple[list[FilterResponse] | None, int]:
    return _read_one_of(buf, pos, depth, _FILTER_BATCH_RESULT)


def read_model_info_result(buf: bytes, pos: int, depth: int) -> tuple[ModelInfo | None, int]:
    return _read_one_of(buf, pos, depth, _MODEL_INFO_RESULT)


def read_ping_result(buf: bytes, pos: int, depth: int) -> tuple[str | None, int]:
    return _read_one_of(buf, pos, depth, _PING_RESULT)


# --------------------------------------------------------------------------------------------
# Skipping


def _skip_field(buf: bytes, pos: int, ctype: int, depth: int) -> int:
    """Skip a field's value: a bool field has none (its value is its type)."""
    if ctype in (C_TRUE, C_FALSE):
        return pos
    return skip(buf, pos, ctype, depth)


def _skip_varint(buf: bytes, pos: int) -> int:
    end = pos + 10
    while buf[pos] & 0x80:
        pos += 1
        if pos == end:
            raise ThriftProtocolError("", "varint longer than 10 bytes")
    return pos + 1


def skip(buf: bytes, pos: int, ctype: int, depth: int) -> int:
    """The offset just past a container element of type ``ctype`` (a bool takes one byte)."""
    if depth <= 0:
        raise ThriftProtocolError("", f"nested deeper than {MAX_DEPTH} levels")
    width = _FIXED_WIDTH.get(ctype)
    if width is not None:
        end = pos + width
        if end > len(buf):
            raise IncompleteMessage(end)
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
        byte = buf[pos]
        pos += 1
        count = byte >> 4
        if count == 15:
            count, pos = _read_varint(buf, pos)
        return _skip_elements(buf, pos, count, byte & 0x0F, None, depth)
    if ctype == C_MAP:
        count, pos = _read_varint(buf, pos)
        if count == 0:
            return pos
        types = buf[pos]
        return _skip_elements(buf, pos + 1, count, types >> 4, types & 0x0F, depth)
    raise ThriftProtocolError("", f"unknown type id {ctype}")


def _skip_elements(
    buf: bytes, pos: int, count: int, first: int, second: int | None, depth: int
) -> int:
    """Skip ``count`` list elements of type ``first``, or map entries (``first``, ``second``)."""
    if count == 0:
        return pos
    first_width = _FIXED_WIDTH.get(first)
    if second is None:
        if first_width is not None:
            end = pos + count * first_width
            if end > len(buf):
                raise IncompleteMessage(end)
            return end
    else:
        second_width = _FIXED_WIDTH.get(second)
        if first_width is not None and second_width is not None:
            end = pos + count * (first_width + second_width)
            if end > len(buf):
                raise IncompleteMessage(end)
            return end
    # Every element takes at least a byte: wait for (or refuse) them all at once.
    if pos + count > len(buf):
        raise IncompleteMessage(pos + count)
    for _ in range(count):
        pos = skip(buf, pos, first, depth - 1)
        if second is not None:
            pos = skip(buf, pos, second, depth - 1)
    return pos


def skip_struct(buf: bytes, pos: int, depth: int) -> int:
    return skip(buf, pos, C_STRUCT, depth)


CODEC: Final = Codec(
    protocol=Protocol.COMPACT,
    write_message_begin=write_message_begin,
    read_message_begin=read_message_begin,
    write_filter_args=write_filter_args,
    read_filter_args=read_filter_args,
    write_filter_batch_args=write_filter_batch_args,
    read_filter_batch_args=read_filter_batch_args,
    write_filter_result=write_filter_result,
    write_invalid_request_result=write_invalid_request_result,
    read_filter_result=read_filter_result,
    write_filter_batch_result=write_filter_batch_result,
    read_filter_batch_result=read_filter_batch_result,
    write_model_info_result=write_model_info_result,
    read_model_info_result=read_model_info_result,
    write_ping_result=write_ping_result,
    read_ping_result=read_ping_result,
    write_application_exception=write_application_exception,
    read_application_exception=read_application_exception,
    skip_struct=skip_struct,
    write_filter_request=write_filter_request,
    read_filter_request=read_filter_request,
    write_filter_response=write_filter_response,
    read_filter_response=read_filter_response,
    write_model_info=write_model_info,
    read_model_info=read_model_info,
)
"""The compact protocol's codec."""

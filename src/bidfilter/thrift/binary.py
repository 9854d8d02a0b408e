"""TBinaryProtocol for this service: big-endian fixed-width ints, i32-length strings.

Written by hand for the IDL's structs, field by field, with precompiled ``struct.Struct``s: a
field header and its fixed-width value are packed in one call, and a ``PartnerDecision`` past
its partner name is one 31-byte pack. Output matches the official library byte for byte
(strict message headers ``0x8001_0000 | type``; optional fields omitted when ``None``; fields
in id order). Reading accepts fields in any order, skips unknown ones (any type, nested up to
``MAX_DEPTH``), refuses a known field id with the wrong type, and also reads the old non-strict
message header (name length first).

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

# TType ids, as the binary protocol writes them.
T_STOP: Final = 0
T_BOOL: Final = 2
T_BYTE: Final = 3
T_DOUBLE: Final = 4
T_I16: Final = 6
T_I32: Final = 8
T_I64: Final = 10
T_STRING: Final = 11
T_STRUCT: Final = 12
T_MAP: Final = 13
T_SET: Final = 14
T_LIST: Final = 15
T_UUID: Final = 16

TYPE_NAMES: Final = {
    T_BOOL: "bool",
    T_BYTE: "byte",
    T_DOUBLE: "double",
    T_I16: "i16",
    T_I32: "i32",
    T_I64: "i64",
    T_STRING: "string",
    T_STRUCT: "struct",
    T_MAP: "map",
    T_SET: "set",
    T_LIST: "list",
    T_UUID: "uuid",
}
_FIXED_WIDTH: Final = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8, T_UUID: 16}

VERSION_1: Final = 0x80010000
_VERSION_MASK: Final = 0xFFFF0000

_T = TypeVar("_T")

_U32 = Struct(">I")
_I16 = Struct(">h")
_I32 = Struct(">i")
_I64 = Struct(">q")
_DOUBLE = Struct(">d")
_FIELD_I32 = Struct(">bhi")  # field header + i32 value, or + string length
_FIELD_I64 = Struct(">bhq")
_FIELD_LIST = Struct(">bhbi")  # field header + list header (element type, size)
_FIELD_MAP = Struct(">bhbbi")
_LIST = Struct(">bi")
_MAP = Struct(">bbi")
_STRICT_BEGIN = Struct(">Ii")  # version | message type, name length
# PartnerDecision after field 1: 2 double, 3 bool, 4 bool, 5 double, STOP (31 bytes).
_DECISION_TAIL = Struct(">bhdbh?bh?bhdb")

_TAIL_SIZE: Final = _DECISION_TAIL.size
_u32_from = _U32.unpack_from
_i16_from = _I16.unpack_from
_i32_from = _I32.unpack_from
_i64_from = _I64.unpack_from
_double_from = _DOUBLE.unpack_from
_field_i32_from = _FIELD_I32.unpack_from
_list_from = _LIST.unpack_from
_map_from = _MAP.unpack_from
_decision_tail_from = _DECISION_TAIL.unpack_from

try:
    from bidfilter.thrift import _fastbinary
except ImportError:  # built without a C compiler: this module does all the work
    _fastbinary = None  # type: ignore[assignment]
else:
    _fastbinary.bind(FilterRequest, FilterResponse, PartnerDecision)

FAST_FILTER_REPLY: Final = _fastbinary.write_filter_reply if _fastbinary is not None else None
"""``(seqid, response, framed) -> bytes | None``: a whole ``filter`` reply message written in C
(behind its frame length if ``framed``), or ``None`` when the C codec is not built or leaves
this response to :func:`write_filter_result` (anything unusual, including every error case)."""

_STRUCT_FIELD_0: Final = bytes((T_STRUCT, 0, 0))
_STRUCT_FIELD_1: Final = bytes((T_STRUCT, 0, 1))

# --------------------------------------------------------------------------------------------
# Writing


def write_message_begin(out: Parts, name: str, message_type: int, seqid: int) -> None:
    """The strict message header: version | type, name, seqid."""
    check_i32(seqid, "seqid")
    encoded = name.encode()
    out.append(_STRICT_BEGIN.pack(VERSION_1 | message_type, len(encoded)))
    out.append(encoded)
    out.append(_I32.pack(seqid))


def _write_string_field(out: Parts, fid: int, text: str) -> None:
    encoded = text.encode()
    out.append(_FIELD_I32.pack(T_STRING, fid, len(encoded)))
    out.append(encoded)


def _write_strings(out: Parts, items: Sequence[str]) -> None:
    append = out.append
    pack = _I32.pack
    for item in items:
        encoded = item.encode()
        append(pack(len(encoded)))
        append(encoded)


def write_filter_request(out: Parts, request: FilterRequest) -> None:
    openrtb = request.openrtb
    out.append(_FIELD_I32.pack(T_STRING, 1, len(openrtb)))
    out.append(openrtb)
    candidates = request.candidates
    if candidates is not None:
        out.append(_FIELD_LIST.pack(T_LIST, 2, T_STRING, len(candidates)))
        _write_strings(out, candidates)
    deadline_ms = request.deadline_ms
    if deadline_ms is not None:
        check_i32(deadline_ms, "deadline_ms")
        out.append(_FIELD_I32.pack(T_I32, 3, deadline_ms))
    out.append(STOP)


# The partner field (header, length, UTF-8 name) of each partner seen, memoised: a server
# writes the same few dozen partners in every response. Bounded: cleared when full.
_partner_fields: dict[str, bytes] = {}
_MAX_PARTNER_FIELDS: Final = 4096


def _partner_field(partner: str) -> bytes:
    encoded = partner.encode()
    field = _FIELD_I32.pack(T_STRING, 1, len(encoded)) + encoded
    if len(_partner_fields) >= _MAX_PARTNER_FIELDS:
        _partner_fields.clear()
    _partner_fields[partner] = field
    return field


def _write_decisions(out: Parts, decisions: Sequence[PartnerDecision]) -> None:
    append = out.append
    known = _partner_fields.get
    tail = _DECISION_TAIL.pack
    for decision in decisions:
        partner = decision.partner
        append(known(partner) or _partner_field(partner))
        append(
            tail(
                T_DOUBLE, 2, decision.bid_probability,
                T_BOOL, 3, decision.send,
                T_BOOL, 4, decision.explore,
                T_DOUBLE, 5, decision.threshold,
                T_STOP,
            )
        )  # fmt: skip


def write_filter_response(out: Parts, response: FilterResponse) -> None:
    _write_string_field(out, 1, response.request_id)
    decisions = response.decisions
    out.append(_FIELD_LIST.pack(T_LIST, 2, T_STRUCT, len(decisions)))
    _write_decisions(out, decisions)
    _write_string_field(out, 3, response.model_version)
    out.append(_FIELD_I32.pack(T_I32, 4, response.outcome))
    server_us = response.server_us
    if server_us is not None:
        check_i64(server_us, "server_us")
        out.append(_FIELD_I64.pack(T_I64, 5, server_us))
    if response.error is not None:
        _write_string_field(out, 6, response.error)
    out.append(STOP)


def write_model_info(out: Parts, info: ModelInfo) -> None:
    _write_string_field(out, 1, info.version)
    partners = info.partners
    out.append(_FIELD_LIST.pack(T_LIST, 2, T_STRING, len(partners)))
    _write_strings(out, partners)
    thresholds = info.thresholds
    out.append(_FIELD_MAP.pack(T_MAP, 3, T_STRING, T_DOUBLE, len(thresholds)))
    append = out.append
    for partner, threshold in thresholds.items():
        encoded = partner.encode()
        append(_I32.pack(len(encoded)))
        append(encoded)
        append(_DOUBLE.pack(threshold))
    _write_string_field(out, 4, info.loaded_at)
    out.append(STOP)


def _write_invalid_request(out: Parts, invalid: InvalidRequest) -> None:
    _write_string_field(out, 1, invalid.message)
    _write_string_field(out, 2, invalid.field)
    out.append(STOP)


def write_filter_args(out: Parts, request: FilterRequest) -> None:
    out.append(_STRUCT_FIELD_1)
    write_filter_request(out, request)
    out.append(STOP)


def write_filter_batch_args(out: Parts, requests: Sequence[FilterRequest]) -> None:
    out.append(_FIELD_LIST.pack(T_LIST, 1, T_STRUCT, len(requests)))
    for request in requests:
        write_filter_request(out, request)
    out.append(STOP)


def write_filter_result(out: Parts, response: FilterResponse) -> None:
    out.append(_STRUCT_FIELD_0)
    write_filter_response(out, response)
    out.append(STOP)


def write_invalid_request_result(out: Parts, invalid: InvalidRequest) -> None:
    out.append(_STRUCT_FIELD_1)
    _write_invalid_request(out, invalid)
    out.append(STOP)


def write_filter_batch_result(out: Parts, responses: Sequence[FilterResponse]) -> None:
    out.append(_FIELD_LIST.pack(T_LIST, 0, T_STRUCT, len(responses)))
    for response in responses:
        write_filter_response(out, response)
    out.append(STOP)


def write_model_info_result(out: Parts, info: ModelInfo) -> None:
    out.append(_STRUCT_FIELD_0)
    write_model_info(out, info)
    out.append(STOP)


def write_ping_result(out: Parts, text: str) -> None:
    _write_string_field(out, 0, text)
    out.append(STOP)


def write_application_exception(out: Parts, exception_type: int, message: str) -> None:
    check_i32(exception_type, "type")
    _write_string_field(out, 1, message)
    out.append(_FIELD_I32.pack(T_I32, 2, exception_type))
    out.append(STOP)


# --------------------------------------------------------------------------------------------
# Reading


def read_message_begin(buf: bytes, pos: int) -> tuple[str, int, int, int]:
    """(name, message type, seqid, offset of the body); strict or old non-strict header."""
    (word,) = _u32_from(buf, pos)
    if word & 0x80000000:
        if word & _VERSION_MASK != VERSION_1:
            raise ThriftProtocolError("message", f"bad binary protocol version 0x{word:08x}")
        (length,) = _i32_from(buf, pos + 4)
        name, pos = _read_name(buf, pos + 8, length)
        (seqid,) = _i32_from(buf, pos)
        return name, word & 0xFF, seqid, pos + 4
    # Non-strict (old) header: name length, name, type byte, seqid.
    name, pos = _read_name(buf, pos + 4, word)
    message_type = buf[pos]
    (seqid,) = _i32_from(buf, pos + 1)
    return name, message_type, seqid, pos + 5


def _read_name(buf: bytes, pos: int, length: int) -> tuple[str, int]:
    if not 0 <= length <= MAX_METHOD_NAME_BYTES:
        raise ThriftProtocolError("message.name", f"length {length} is not a method name's")
    end = pos + length
    if end > len(buf):
        raise IncompleteMessage(end)
    try:
        return buf[pos:end].decode(), end
    except UnicodeDecodeError:
        raise ThriftProtocolError("message.name", "not valid UTF-8") from None


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = _i32_from(buf, pos)
    pos += 4
    end = pos + length
    if length < 0:
        raise ThriftProtocolError("", f"negative length {length}")
    if end > len(buf):
        raise IncompleteMessage(end)
    return buf[pos:end], end


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    (length,) = _i32_from(buf, pos)
    pos += 4
    end = pos + length
    if length < 0:
        raise ThriftProtocolError("", f"negative length {length}")
    if end > len(buf):
        raise IncompleteMessage(end)
    try:
        return buf[pos:end].decode(), end
    except UnicodeDecodeError:
        raise ThriftProtocolError("", "not valid UTF-8") from None


def _list_header(buf: bytes, pos: int, element_type: int, element_bytes: int) -> tuple[int, int]:
    """(size, offset of the first element) of a list whose elements must be ``element_type``."""
    etype, count = _list_from(buf, pos)
    pos += 5
    if count < 0:
        raise ThriftProtocolError("", f"negative list size {count}")
    if etype != element_type and count:
        raise ThriftProtocolError(
            "", f"list of {_type_name(etype)}, expected list of {TYPE_NAMES[element_type]}"
        )
    # Every element takes at least element_bytes: wait for (or refuse) them all at once.
    if pos + count * element_bytes > len(buf):
        raise IncompleteMessage(pos + count * element_bytes)
    return count, pos


def _read_strings(buf: bytes, pos: int) -> tuple[list[str], int]:
    count, pos = _list_header(buf, pos, T_STRING, 4)
    items: list[str] = []
    append = items.append
    size = len(buf)
    for index in range(count):
        (length,) = _i32_from(buf, pos)
        pos += 4
        end = pos + length
        if length < 0:
            raise ThriftProtocolError(f"[{index}]", f"negative length {length}")
        if end > size:
            raise IncompleteMessage(end)
        try:
            append(buf[pos:end].decode())
        except UnicodeDecodeError:
            raise ThriftProtocolError(f"[{index}]", "not valid UTF-8") from None
        pos = end
    return items, pos


def _type_name(ttype: int) -> str:
    return TYPE_NAMES.get(ttype, f"unknown type {ttype}")


def _unexpected(
    buf: bytes, pos: int, ftype: int, fid: int, fields: dict[int, tuple[str, int]], depth: int
) -> int:
    """Skip an unknown field; refuse a known one whose type is not the IDL's."""
    known = fields.get(fid)
    if known is None:
        return skip(buf, pos, ftype, depth)
    raise ThriftProtocolError("", f"{_type_name(ftype)}, expected {TYPE_NAMES[known[1]]}")


def _field_name(fid: int, fields: dict[int, tuple[str, int]]) -> str:
    known = fields.get(fid)
    return known[0] if known is not None else f"#{fid}"


_FILTER_REQUEST_FIELDS: Final = {
    1: ("openrtb", T_STRING),
    2: ("candidates", T_LIST),
    3: ("deadline_ms", T_I32),
}


def read_filter_request(buf: bytes, pos: int, depth: int) -> tuple[FilterRequest, int]:
    openrtb: bytes | None = None
    candidates: list[str] | None = None
    deadline_ms: int | None = None
    fid = 0
    try:
        while True:
            ftype = buf[pos]
            if ftype == T_STOP:
                break
            (fid,) = _i16_from(buf, pos + 1)
            pos += 3
            if fid == 1 and ftype == T_STRING:
                openrtb, pos = _read_bytes(buf, pos)
            elif fid == 2 and ftype == T_LIST:
                candidates, pos = _read_strings(buf, pos)
            elif fid == 3 and ftype == T_I32:
                (deadline_ms,) = _i32_from(buf, pos)
                pos += 4
            else:
                pos = _unexpected(buf, pos, ftype, fid, _FILTER_REQUEST_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _FILTER_REQUEST_FIELDS)) from None
    if openrtb is None:
        raise ThriftProtocolError("openrtb", "required field is missing")
    return FilterRequest(openrtb, candidates, deadline_ms), pos + 1


_DECISION_FIELDS: Final = {
    1: ("partner", T_STRING),
    2: ("bid_probability", T_DOUBLE),
    3: ("send", T_BOOL),
    4: ("explore", T_BOOL),
    5: ("threshold", T_DOUBLE),
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
            ftype = buf[pos]
            if ftype == T_STOP:
                break
            (fid,) = _i16_from(buf, pos + 1)
            pos += 3
            if fid == 1 and ftype == T_STRING:
                partner, pos = _read_string(buf, pos)
            elif fid == 2 and ftype == T_DOUBLE:
                (probability,) = _double_from(buf, pos)
                pos += 8
            elif fid == 3 and ftype == T_BOOL:
                send = buf[pos] != 0
                pos += 1
            elif fid == 4 and ftype == T_BOOL:
                explore = buf[pos] != 0
                pos += 1
            elif fid == 5 and ftype == T_DOUBLE:
                (threshold,) = _double_from(buf, pos)
                pos += 8
            else:
                pos = _unexpected(buf, pos, ftype, fid, _DECISION_FIELDS, depth - 1)
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
    count, pos = _list_header(buf, pos, T_STRUCT, 1)
    decisions: list[PartnerDecision] = []
    append = decisions.append
    size = len(buf)
    index = 0
    try:
        for index in range(count):  # noqa: B007 (index names the culprit on error)
            # Fast path, inlined: the layout every Thrift library writes (fields 1 to 5 in
            # order, then STOP) is two unpacks; anything else takes the general loop.
            start = pos + 7
            if start <= size:
                ftype, fid, length = _field_i32_from(buf, pos)
                end = start + length
            else:  # too short for the fast path: the general loop knows what to make of it
                ftype = fid = length = end = 0
            if ftype == T_STRING and fid == 1 and length >= 0 and end + _TAIL_SIZE <= size:
                (t2, f2, probability, t3, f3, send, t4, f4, explore, t5, f5, threshold, stop) = (
                    _decision_tail_from(buf, end)
                )
                if (
                    f2 == 2
                    and f3 == 3
                    and f4 == 4
                    and f5 == 5
                    and t2 == T_DOUBLE
                    and t3 == T_BOOL
                    and t4 == T_BOOL
                    and t5 == T_DOUBLE
                    and stop == T_STOP
                ):
                    try:
                        partner = buf[start:end].decode()
                    except UnicodeDecodeError:
                        raise ThriftProtocolError("partner", "not valid UTF-8") from None
                    append(PartnerDecision(partner, probability, send, explore, threshold))
                    pos = end + _TAIL_SIZE
                    continue
            decision, pos = _read_decision_fields(buf, pos, depth)
            append(decision)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(f"[{index}]") from None
    return decisions, pos


_FILTER_RESPONSE_FIELDS: Final = {
    1: ("request_id", T_STRING),
    2: ("decisions", T_LIST),
    3: ("model_version", T_STRING),
    4: ("outcome", T_I32),
    5: ("server_us", T_I64),
    6: ("error", T_STRING),
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
            ftype = buf[pos]
            if ftype == T_STOP:
                break
            (fid,) = _i16_from(buf, pos + 1)
            pos += 3
            if fid == 1 and ftype == T_STRING:
                request_id, pos = _read_string(buf, pos)
            elif fid == 2 and ftype == T_LIST:
                decisions, pos = _read_decisions(buf, pos, depth - 1)
            elif fid == 3 and ftype == T_STRING:
                model_version, pos = _read_string(buf, pos)
            elif fid == 4 and ftype == T_I32:
                (value,) = _i32_from(buf, pos)
                outcome = outcome_from(value)
                pos += 4
            elif fid == 5 and ftype == T_I64:
                (server_us,) = _i64_from(buf, pos)
                pos += 8
            elif fid == 6 and ftype == T_STRING:
                error_text, pos = _read_string(buf, pos)
            else:
                pos = _unexpected(buf, pos, ftype, fid, _FILTER_RESPONSE_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _FILTER_RESPONSE_FIELDS)) from None
    if request_id is None or decisions is None or model_version is None or outcome is None:
        raise missing(_FILTER_RESPONSE_NAMES, (request_id, decisions, model_version, outcome))
    return (
        FilterResponse(request_id, decisions, model_version, outcome, server_us, error_text),
        pos + 1,
    )


_MODEL_INFO_FIELDS: Final = {
    1: ("version", T_STRING),
    2: ("partners", T_LIST),
    3: ("thresholds", T_MAP),
    4: ("loaded_at", T_STRING),
}
_MODEL_INFO_NAMES: Final = tuple(name for name, _ in _MODEL_INFO_FIELDS.values())


def _read_thresholds(buf: bytes, pos: int) -> tuple[dict[str, float], int]:
    ktype, vtype, count = _map_from(buf, pos)
    pos += 6
    if count < 0:
        raise ThriftProtocolError("", f"negative map size {count}")
    if count and (ktype != T_STRING or vtype != T_DOUBLE):
        raise ThriftProtocolError(
            "", f"map<{_type_name(ktype)}, {_type_name(vtype)}>, expected map<string, double>"
        )
    if pos + 12 * count > len(buf):
        raise IncompleteMessage(pos + 12 * count)
    thresholds: dict[str, float] = {}
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
            ftype = buf[pos]
            if ftype == T_STOP:
                break
            (fid,) = _i16_from(buf, pos + 1)
            pos += 3
            if fid == 1 and ftype == T_STRING:
                version, pos = _read_string(buf, pos)
            elif fid == 2 and ftype == T_LIST:
                partners, pos = _read_strings(buf, pos)
            elif fid == 3 and ftype == T_MAP:
                thresholds, pos = _read_thresholds(buf, pos)
            elif fid == 4 and ftype == T_STRING:
                loaded_at, pos = _read_string(buf, pos)
            else:
                pos = _unexpected(buf, pos, ftype, fid, _MODEL_INFO_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _MODEL_INFO_FIELDS)) from None
    if version is None or partners is None or thresholds is None or loaded_at is None:
        raise missing(_MODEL_INFO_NAMES, (version, partners, thresholds, loaded_at))
    return ModelInfo(version, partners, thresholds, loaded_at), pos + 1


_INVALID_REQUEST_FIELDS: Final = {1: ("message", T_STRING), 2: ("field", T_STRING)}


def _read_invalid_request(buf: bytes, pos: int, depth: int) -> tuple[InvalidRequest, int]:
    # Both fields are "default" requiredness in the IDL: a missing one reads as "".
    message = field = ""
    fid = 0
    try:
        while True:
            ftype = buf[pos]
            if ftype == T_STOP:
                break
            (fid,) = _i16_from(buf, pos + 1)
            pos += 3
            if fid == 1 and ftype == T_STRING:
                message, pos = _read_string(buf, pos)
            elif fid == 2 and ftype == T_STRING:
                field, pos = _read_string(buf, pos)
            else:
                pos = _unexpected(buf, pos, ftype, fid, _INVALID_REQUEST_FIELDS, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        raise error.within(_field_name(fid, _INVALID_REQUEST_FIELDS)) from None
    return InvalidRequest(message, field), pos + 1


_APPLICATION_EXCEPTION_FIELDS: Final = {1: ("message", T_STRING), 2: ("type", T_I32)}


def read_application_exception(buf: bytes, pos: int, depth: int) -> tuple[tuple[int, str], int]:
    """(type, message) of a TApplicationException; missing fields read as UNKNOWN (0), ""."""
    message = ""
    exception_type = 0
    fid = 0
    try:
        while True:
            ftype = buf[pos]
            if ftype == T_STOP:
                break
            (fid,) = _i16_from(buf, pos + 1)
            pos += 3
            if fid == 1 and ftype == T_STRING:
                message, pos = _read_string(buf, pos)
            elif fid == 2 and ftype == T_I32:
                (exception_type,) = _i32_from(buf, pos)
                pos += 4
            else:
                pos = _unexpected(buf, pos, ftype, fid, _APPLICATION_EXCEPTION_FIELDS, depth - 1)
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
            ftype = buf[pos]
            if ftype == T_STOP:
                return value, pos + 1
            (fid,) = _i16_from(buf, pos + 1)
            pos += 3
            field = fields.get(fid)
            if field is None:
                pos = skip(buf, pos, ftype, depth - 1)
            elif ftype != field[1]:
                raise ThriftProtocolError(
                    "", f"{_type_name(ftype)}, expected {TYPE_NAMES[field[1]]}"
                )
            else:
                value, pos = field[2](buf, pos, depth - 1)
    except (ThriftProtocolError, IncompleteMessage) as error:
        known = fields.get(fid)
        raise error.within(known[0] if known is not None else f"#{fid}") from None


def _struct_list(read_item: Reader[_T]) -> Reader[list[_T]]:
    def read_list(buf: bytes, pos: int, depth: int) -> tuple[list[_T], int]:
        count, pos = _list_header(buf, pos, T_STRUCT, 1)
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
    1: ("request", T_STRUCT, read_filter_request),
}
_FILTER_BATCH_ARGS: Final[dict[int, tuple[str, int, Reader[list[FilterRequest]]]]] = {
    1: ("requests", T_LIST, _struct_list(read_filter_request)),
}
_FILTER_RESULT: Final[dict[int, tuple[str, int, Reader[FilterResponse | InvalidRequest]]]] = {
    0: ("success", T_STRUCT, read_filter_response),
    1: ("invalid", T_STRUCT, _read_invalid_request),
}
_FILTER_BATCH_RESULT: Final[dict[int, tuple[str, int, Reader[list[FilterResponse]]]]] = {
    0: ("success", T_LIST, _struct_list(read_filter_response)),
}
_MODEL_INFO_RESULT: Final[dict[int, tuple[str, int, Reader[ModelInfo]]]] = {
    0: ("success", T_STRUCT, read_model_info),
}
_PING_RESULT: Final[dict[int, tuple[str, int, Reader[str]]]] = {
    0: ("success", T_STRING, _read_string_value),
}


def read_filter_args(buf: bytes, pos: int, depth: int) -> tuple[FilterRequest, int]:
    if _fastbinary is not None:
        # The C reader takes the usual shape of these args and leaves any other to the pure one.
        fast = _fastbinary.read_filter_args(buf, pos)
        if fast is not None:
            return fast
    return read_filter_args_pure(buf, pos, depth)


def read_filter_args_pure(buf: bytes, pos: int, depth: int) -> tuple[FilterRequest, int]:
    """:func:`read_filter_args` without the C reader: the definition it is tested against."""
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


def skip(buf: bytes, pos: int, ttype: int, depth: int) -> int:
    """The offset just past a value of type ``ttype`` at ``pos``, checking its structure."""
    if depth <= 0:
        raise ThriftProtocolError("", f"nested deeper than {MAX_DEPTH} levels")
    width = _FIXED_WIDTH.get(ttype)
    if width is not None:
        end = pos + width
        if end > len(buf):
            raise IncompleteMessage(end)
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
        etype, count = _list_from(buf, pos)
        return _skip_elements(buf, pos + 5, count, etype, None, depth)
    if ttype == T_MAP:
        ktype, vtype, count = _map_from(buf, pos)
        return _skip_elements(buf, pos + 6, count, ktype, vtype, depth)
    raise ThriftProtocolError("", f"unknown type id {ttype}")


def _skip_elements(
    buf: bytes, pos: int, count: int, first: int, second: int | None, depth: int
) -> int:
    """Skip ``count`` list elements of type ``first``, or map entries (``first``, ``second``)."""
    if count < 0:
        raise ThriftProtocolError("", f"negative container size {count}")
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
    return skip(buf, pos, T_STRUCT, depth)


CODEC: Final = Codec(
    protocol=Protocol.BINARY,
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
"""The binary protocol's codec (strict headers, as the official libraries write them)."""

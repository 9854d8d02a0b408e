"""Properties of the OpenRTB parser over generated, mutated and hostile input.

What ``parse_bid_request`` promises: anything that is not a valid request raises
``InvalidRequestError`` naming a field (a JSON path, or ``$`` for the document), nothing else
escapes; a valid request keeps every field the model reads; limits on size, depth and
impressions hold. (Arbitrary bytes and arbitrary JSON objects are in tests/openrtb/test_parse.py.)
"""

from __future__ import annotations

import copy
import json
import re
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from request_strategies import (
    CORPUS_FILES,
    INT64_MAX,
    INT64_MIN,
    VALID_CORPUS_FILES,
    bid_requests,
    flags,
    json_values,
    kept,
    schains,
    texts,
)

from bidfilter.openrtb import BidRequest, InvalidRequestError, ParseLimits, parse_bid_request
from bidfilter.openrtb.parse import MAX_BIDFLOOR
from bidfilter.openrtb.signals import consent, eids, gdpr, schain

FIELD = re.compile(r"^(\$|[a-z_]+(\[\d+\])*(\.[a-z_]+(\[\d+\])*)*)$")
_COMPONENT = re.compile(r"([a-z_]+)|\[(\d+)\]")
MODEL = msgspec.inspect.type_info(BidRequest)
CORPUS_BYTES = {path.name: path.read_bytes() for path in CORPUS_FILES}
VALID_DOCUMENTS = {path.name: json.loads(CORPUS_BYTES[path.name]) for path in VALID_CORPUS_FILES}

NodePath = tuple[str | int, ...]


def verdict(
    raw: bytes | str, limits: ParseLimits | None = None
) -> BidRequest | InvalidRequestError:
    """The parse result or the refusal, having checked that a refusal names a field."""
    try:
        return parse_bid_request(raw) if limits is None else parse_bid_request(raw, limits)
    except InvalidRequestError as error:
        assert FIELD.match(error.field), error.field
        assert error.message
        return error


def components(field: str) -> NodePath:
    """``imp[0].banner.w`` -> ``("imp", 0, "banner", "w")``; ``$`` -> ``()``."""
    if field == "$":
        return ()
    return tuple(name if name else int(index) for name, index in _COMPONENT.findall(field))


def assert_holds_the_checked_rules(request: BidRequest) -> None:
    assert request.id and 1 <= len(request.imp) <= 100
    assert request.tmax is None or request.tmax >= 0
    for imp in request.imp:
        assert imp.id
        assert (imp.banner, imp.video, imp.audio, imp.native) != (None, None, None, None)
        assert 0 <= imp.bidfloor <= MAX_BIDFLOOR
    if request.regs is not None:
        assert request.regs.gdpr in (None, 0, 1) and request.regs.coppa in (None, 0, 1)


# -- valid requests --------------------------------------------------------------------------


@settings(max_examples=150)
@given(body=bid_requests())
def test_generated_requests_keep_every_field_the_model_reads(body: dict[str, Any]) -> None:
    parsed = verdict(json.dumps(body, allow_nan=False).encode())
    assert isinstance(parsed, BidRequest), parsed
    assert kept(msgspec.json.decode(msgspec.json.encode(parsed))) == kept(body)
    assert_holds_the_checked_rules(parsed)


@settings(max_examples=100)
@given(
    gdpr_26=st.none() | flags,
    gdpr_25=st.none() | flags,
    consent_26=st.none() | texts,
    consent_25=st.none() | texts,
    eids_26=st.none() | st.lists(texts.map(lambda s: {"source": s}), max_size=3),
    eids_25=st.none() | st.lists(texts.map(lambda s: {"source": s}), max_size=3),
    schain_26=st.none() | schains,
    schain_25=st.none() | schains,
)
def test_the_2_6_location_wins_and_ext_is_the_fallback(
    gdpr_26: int | None,
    gdpr_25: int | None,
    consent_26: str | None,
    consent_25: str | None,
    eids_26: list[dict[str, str]] | None,
    eids_25: list[dict[str, str]] | None,
    schain_26: dict[str, Any] | None,
    schain_25: dict[str, Any] | None,
) -> None:
    def present(**fields: Any) -> dict[str, Any]:
        return {name: value for name, value in fields.items() if value is not None}

    body = {
        "id": "r",
        "imp": [{"id": "1", "banner": {}}],
        "regs": present(gdpr=gdpr_26, ext=present(gdpr=gdpr_25)),
        "user": present(
            consent=consent_26, eids=eids_26, ext=present(consent=consent_25, eids=eids_25)
        ),
        "source": present(schain=schain_26, ext=present(schain=schain_25)),
    }
    parsed = verdict(json.dumps(body).encode())
    assert isinstance(parsed, BidRequest), parsed
    assert gdpr(parsed) == (gdpr_26 if gdpr_26 is not None else gdpr_25)
    assert consent(parsed) == (consent_26 if consent_26 is not None else consent_25)
    expected_eids = eids_26 if eids_26 is not None else eids_25 or []
    assert [eid.source for eid in eids(parsed)] == [eid["source"] for eid in expected_eids]
    expected_chain = schain_26 if schain_26 is not None else schain_25
    chain = schain(parsed)
    if expected_chain is None:
        assert chain is None
    else:
        assert chain is not None
        assert chain.complete == expected_chain.get("complete")
        nodes = [(node.asi, node.sid) for node in chain.nodes or ()]
        assert nodes == [(n.get("asi"), n.get("sid")) for n in expected_chain.get("nodes") or ()]


# -- mutated corpus requests -----------------------------------------------------------------


def node_paths(value: Any, path: NodePath = ()) -> list[NodePath]:
    """Every node below the root of a JSON value, as a path of keys and indices."""
    children: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    paths = []
    for key, child in children:
        paths.append((*path, key))
        paths += node_paths(child, (*path, key))
    return paths


def reading(path: NodePath) -> str:
    """How the model reads the node at ``path``: ``typed`` (decoded into the model), ``raw``
    (an ``ext`` kept whole and decoded leniently later) or ``skipped`` (never looked at)."""
    info: msgspec.inspect.Type = MODEL
    for key in path:
        if isinstance(info, msgspec.inspect.UnionType):
            (info,) = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if isinstance(info, msgspec.inspect.RawType):
            return "raw"
        if isinstance(info, msgspec.inspect.StructType):
            fields = {field.encode_name: field.type for field in info.fields}
            if key not in fields:
                return "skipped"
            info = fields[key]
        elif isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        else:
            raise AssertionError(f"{path}: a valid request has no node below a scalar")
    return "raw" if isinstance(info, msgspec.inspect.RawType) else "typed"


replacements: st.SearchStrategy[Any] = json_values | st.sampled_from(
    [None, [], {}, "", 0, -1, 1.5, True, 2**64, -(2**63) - 1, 10**400, "x" * 50]
)


@settings(max_examples=400)
@given(data=st.data(), name=st.sampled_from(sorted(VALID_DOCUMENTS)))
def test_a_change_is_refused_only_where_it_is_made(data: st.DataObject, name: str) -> None:
    """Change one node of a valid corpus request: a node the model skips never changes the
    verdict; a refusal names the changed node, one inside the new value, or a parent."""
    document = copy.deepcopy(VALID_DOCUMENTS[name])
    original = verdict(json.dumps(document).encode())
    assert isinstance(original, BidRequest)
    path = data.draw(st.sampled_from(node_paths(document)), label="path")
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(replacements, label="value")

    result = verdict(json.dumps(document, allow_nan=False).encode())
    how = reading(path)
    event(f"{how}, {'refused' if isinstance(result, InvalidRequestError) else 'accepted'}")
    if how == "skipped":
        assert result == original
    elif how == "raw":
        assert isinstance(result, BidRequest), result
    elif isinstance(result, InvalidRequestError):
        named = components(result.field)
        shorter = min(len(named), len(path))
        assert named[:shorter] == path[:shorter], (result, path)
        assert named, result  # a whole-document refusal is not this change's
    else:
        assert_holds_the_checked_rules(result)


byte_edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate"]),
        st.integers(0, 4000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def apply_edits(raw: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(raw)
    for kind, where, byte in edits:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << (byte % 8)
        elif kind == "insert":
            data[at:at] = bytes([byte])
        elif kind == "delete":
            del data[at : at + 1 + byte % 8]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@settings(max_examples=400)
@given(name=st.sampled_from(sorted(CORPUS_BYTES)), edits=byte_edits)
def test_byte_edits_of_corpus_files_are_parsed_or_refused(
    name: str, edits: list[tuple[str, int, int]]
) -> None:
    raw = apply_edits(CORPUS_BYTES[name], edits)
    from_bytes = verdict(raw)
    # The str path must agree; invalid UTF-8 becomes lone surrogates, refused just the same.
    from_text = verdict(raw.decode("utf-8", "surrogateescape"))
    if isinstance(from_bytes, InvalidRequestError):
        assert isinstance(from_text, InvalidRequestError)
        assert from_text.field == from_bytes.field
    else:
        assert from_text == from_bytes
        assert_holds_the_checked_rules(from_bytes)


# -- limits ----------------------------------------------------------------------------------

_BASE = b'{"id":"r","imp":[{"id":"1","banner":{}}],%s}'
_SKIPPED_PLACES = [b'"x":%s', b'"ext":%s', b'"site":{"ext":%s}', b'"regs":{"ext":%s}']


@settings(max_examples=120)
@given(
    depth=st.integers(1, 100),
    excess=st.integers(1, 20_000),
    place=st.sampled_from(_SKIPPED_PLACES),
    arrays=st.booleans(),
)
def test_nesting_depth_limit(depth: int, excess: int, place: bytes, arrays: bool) -> None:
    """Shallow nesting where the model does not read is accepted; nesting past the
    interpreter's recursion limit (1000 unless raised: msgspec counts against it; hypothesis
    raises it while a test runs) is refused, wherever it is, without a RecursionError."""

    def nested(levels: int) -> bytes:
        if arrays:
            return b"[" * levels + b"]" * levels
        return b'{"a":' * levels + b"{}" + b"}" * levels

    shallow = verdict(_BASE % (place % nested(depth)))
    assert isinstance(shallow, BidRequest), shallow
    deep = verdict(_BASE % (place % nested(sys.getrecursionlimit() + excess)))
    assert isinstance(deep, InvalidRequestError)
    assert (deep.field, deep.message) == ("$", "JSON is nested too deeply")


@settings(max_examples=30)
@given(excess=st.integers(1, 20_000))
def test_deep_nesting_where_the_model_reads_is_refused(excess: int) -> None:
    depth = sys.getrecursionlimit() + excess
    result = verdict(_BASE % (b'"device":' + b"[" * depth + b"]" * depth))
    assert isinstance(result, InvalidRequestError)
    assert result.field in ("$", "device")


@settings(max_examples=100)
@given(body=bid_requests(), slack=st.integers(-300, 300))
def test_size_limit(body: dict[str, Any], slack: int) -> None:
    raw = json.dumps(body).encode()
    limit = max(1, len(raw) + slack)
    result = verdict(raw, ParseLimits(max_bytes=limit))
    if len(raw) > limit:
        assert isinstance(result, InvalidRequestError)
        assert result.field == "$" and "limit" in result.message
    else:
        assert result == parse_bid_request(raw)


@settings(max_examples=60)
@given(body=bid_requests(max_imps=8), max_imps=st.integers(1, 8))
def test_impression_limit(body: dict[str, Any], max_imps: int) -> None:
    result = verdict(json.dumps(body).encode(), ParseLimits(max_imps=max_imps))
    if len(body["imp"]) > max_imps:
        assert isinstance(result, InvalidRequestError) and result.field == "imp"
    else:
        assert isinstance(result, BidRequest)


# -- regressions: inputs the fuzzer found (fuzz/fuzz_openrtb_parser.py) -------------------------


def _request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
    body.update(fields)
    return body


_BIG_INTEGER_PLACES = [
    pytest.param(field, body, id=field)
    for field, body in [
        ("imp[0].banner.h", _request(imp=[{"id": "1", "banner": {"w": 300, "h": None}}])),
        ("imp[0].video.startdelay", _request(imp=[{"id": "1", "video": {"startdelay": None}}])),
        ("imp[0].video.protocols[1]", _request(imp=[{"id": "1", "video": {"protocols": [2, 0]}}])),
        ("tmax", _request(tmax=None)),
        ("device.geo.utcoffset", _request(device={"geo": {"utcoffset": None}})),
    ]
]


def _with_value(body: dict[str, Any], field: str, value: int) -> bytes:
    """``body`` as JSON with ``value`` (any size, written as digits) at ``field``."""
    marker = "__value__"
    node: Any = body
    path = components(field)
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return json.dumps(body).replace(f'"{marker}"', str(value)).encode()


@pytest.mark.parametrize(("field", "body"), _BIG_INTEGER_PLACES)
@pytest.mark.parametrize(
    "value",
    [INT64_MAX + 1, INT64_MIN - 1, 10**400, -(10**4000)],
    ids=["int64 max + 1", "int64 min - 1", "10**400", "-10**4000"],
)
def test_integers_past_64_bits_are_refused_where_features_read_them(
    field: str, body: dict[str, Any], value: int
) -> None:
    # They used to parse, then overflow float() in the features (OverflowError: the server
    # answered INTERNAL_ERROR instead of failing open) or float32 (an infinite feature).
    result = verdict(_with_value(copy.deepcopy(body), field, value))
    assert isinstance(result, InvalidRequestError)
    assert result.field == field


@pytest.mark.parametrize(("field", "body"), _BIG_INTEGER_PLACES)
@pytest.mark.parametrize("value", [INT64_MAX, INT64_MIN], ids=["int64 max", "int64 min"])
def test_64_bit_integers_are_accepted(field: str, body: dict[str, Any], value: int) -> None:
    negative_refused = field in ("imp[0].banner.h", "tmax") and value < 0
    result = verdict(_with_value(copy.deepcopy(body), field, value))
    assert isinstance(result, InvalidRequestError) == negative_refused, result


def test_big_integers_in_skipped_fields_are_fine() -> None:
    raw = json.dumps(_request(x="__big__", imp=[{"id": "1", "banner": {}, "ext": 1}]))
    assert isinstance(verdict(raw.replace('"__big__"', "9" * 4000).encode()), BidRequest)


@pytest.mark.parametrize(
    ("floor", "refused"), [(MAX_BIDFLOOR, False), (MAX_BIDFLOOR * 1.0001, True), (1e308, True)]
)
def test_bidfloor_limit(floor: float, refused: bool) -> None:
    # A floor near float's top made the floor features infinite (x the currency's rate).
    body = _request(imp=[{"id": "1", "banner": {}, "bidfloor": floor, "bidfloorcur": "GBP"}])
    result = verdict(json.dumps(body).encode())
    if refused:
        assert isinstance(result, InvalidRequestError) and result.field == "imp[0].bidfloor"
    else:
        assert isinstance(result, BidRequest)


@pytest.mark.parametrize("text", ['{"id":"\ud800","imp":[]}', "\udcff", '{"x":"a\udc80"}'])
def test_a_str_holding_a_lone_surrogate_is_refused(text: str) -> None:
    # It raised UnicodeEncodeError (from msgspec encoding the str to UTF-8).
    result = verdict(text)
    assert isinstance(result, InvalidRequestError) and result.field == "$"

"""Hypothesis strategies for OpenRTB requests, and the corpus in tests/data, for the property tests.

``bid_requests`` draws JSON objects (Python dicts) that obey every rule the parser checks, with
every field the model keeps in either OpenRTB location (2.6 or 2.5's ``ext``), values at the
edges of their types, and unknown fields the parser must skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from hypothesis import strategies as st

from bidfilter.features.extract import USD_PER_UNIT
from bidfilter.openrtb import BidRequest
from bidfilter.openrtb.parse import MAX_BIDFLOOR

CORPUS = Path(__file__).resolve().parents[1] / "data" / "openrtb-corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.json")) + sorted((CORPUS / "invalid").glob("*.json"))
VALID_CORPUS_FILES = sorted(CORPUS.glob("*.json"))

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# No lone surrogates: json.dumps writes them as escapes that msgspec refuses anywhere, which
# would make "a change to a skipped field never matters" false for a reason of JSON's own.
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
int64s = st.integers(INT64_MIN, INT64_MAX)
sizes = st.integers(0, 4000) | st.integers(0, INT64_MAX)
flags = st.sampled_from([0, 1])
small_ints = st.integers(-5, 300) | int64s
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
currencies = st.sampled_from([*USD_PER_UNIT, "XXX", "usd"])
floors = (
    st.just(0)
    | st.floats(0, 50, allow_nan=False)
    | st.floats(0, MAX_BIDFLOOR, allow_nan=False)
    | st.integers(0, int(MAX_BIDFLOOR))
)


def _object(
    required: dict[str, Any], optional: dict[str, Any], unknown: st.SearchStrategy[Any] = texts
) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object: the required fields, any of the optional ones, maybe unknown ones."""
    return st.fixed_dictionaries(
        required, optional={**optional, "x_unknown": unknown, "ext": unknown}
    )


geos = _object(
    {},
    {
        "country": texts,
        "region": texts,
        "city": texts,
        "metro": texts,
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
        "utcoffset": st.integers(-720, 840) | int64s,
    },
)
publishers = _object({}, {"id": texts, "name": texts})
formats = _object({}, {"w": sizes, "h": sizes})
banners = _object({}, {"w": sizes, "h": sizes, "format": st.lists(formats, max_size=3)})
videos = _object(
    {},
    {
        "w": sizes,
        "h": sizes,
        "minduration": small_ints,
        "maxduration": small_ints,
        "plcmt": small_ints,
        "placement": small_ints,
        "protocols": st.lists(small_ints, max_size=4),
        "startdelay": small_ints,
        "mimes": st.lists(texts, max_size=2),
    },
)
audios = _object({}, {"minduration": small_ints, "maxduration": small_ints})
natives = _object({}, {"request": texts, "ver": texts})
deals = _object({"id": texts}, {"bidfloor": st.floats(0, 100)})
pmps = _object({}, {"private_auction": flags, "deals": st.lists(deals, max_size=3)})


@st.composite
def imps(draw: st.DrawFn) -> dict[str, Any]:
    imp = draw(
        _object(
            {"id": ids},
            {
                "pmp": pmps,
                "bidfloor": floors,
                "bidfloorcur": currencies,
                "instl": flags,
                "secure": flags,
                "tagid": texts,
            },
            unknown=json_values,
        )
    )
    media = {"banner": banners, "video": videos, "audio": audios, "native": natives}
    chosen = draw(st.lists(st.sampled_from(sorted(media)), min_size=1, max_size=4, unique=True))
    for name in chosen:
        imp[name] = draw(media[name])
    return imp


sites = _object({}, {"id": texts, "domain": texts, "page": texts, "publisher": publishers})
apps = _object({}, {"id": texts, "bundle": texts, "domain": texts, "publisher": publishers})
devices = _object(
    {},
    {
        "ua": texts,
        "devicetype": small_ints,
        "os": texts,
        "make": texts,
        "model": texts,
        "connectiontype": small_ints,
        "geo": geos,
        "ifa": texts,
        "lmt": flags,
        "dnt": flags,
    },
)
eids = st.lists(_object({}, {"source": texts, "uids": json_values}), max_size=3)
users = st.fixed_dictionaries(
    {},
    optional={
        "id": texts,
        "buyeruid": texts,
        "geo": geos,
        "consent": texts,
        "eids": eids,
        # 2.5 location: read only when the 2.6 field is absent; malformed counts as absent
        "ext": st.fixed_dictionaries({}, optional={"consent": texts, "eids": eids}) | json_values,
    },
)
regs = st.fixed_dictionaries(
    {},
    optional={
        "coppa": flags,
        "gdpr": flags,
        "us_privacy": texts | st.sampled_from(["1YNN", "1NYN", "1---"]),
        "gpp": texts,
        "ext": st.fixed_dictionaries(
            {}, optional={"gdpr": small_ints, "us_privacy": texts, "gpp": texts}
        )
        | json_values,
    },
)
schains = _object(
    {}, {"complete": flags, "nodes": st.lists(_object({}, {"asi": texts, "sid": texts}))}
)
sources = st.fixed_dictionaries(
    {},
    optional={
        "schain": schains,
        "ext": st.fixed_dictionaries({}, optional={"schain": schains}) | json_values,
    },
)


def bid_requests(max_imps: int = 4) -> st.SearchStrategy[dict[str, Any]]:
    """Valid BidRequest objects (site, app, both or neither: all are seen in the wild)."""
    return _object(
        {"id": ids, "imp": st.lists(imps(), min_size=1, max_size=max_imps)},
        {
            "site": sites,
            "app": apps,
            "device": devices,
            "user": users,
            "regs": regs,
            "source": sources,
            "tmax": st.integers(0, 1000) | st.integers(0, INT64_MAX),
            "at": small_ints,
            "test": flags,
            "cur": st.lists(currencies, max_size=2),
        },
        unknown=json_values,
    )


_MODEL = msgspec.inspect.type_info(BidRequest)


def kept(value: Any, info: msgspec.inspect.Type = _MODEL) -> Any:
    """The part of a JSON value that the model keeps, as the parser's output encodes it:
    unknown fields dropped, and fields at their default (absent, null, floor 0) left out."""
    if isinstance(info, msgspec.inspect.UnionType):
        if value is None:
            return None
        (info,) = [
            member for member in info.types if not isinstance(member, msgspec.inspect.NoneType)
        ]
    if isinstance(info, msgspec.inspect.StructType):
        result = {}
        for field in info.fields:
            if field.encode_name not in value:
                continue
            item = value[field.encode_name]
            if isinstance(field.type, msgspec.inspect.RawType):
                result[field.encode_name] = item  # ext: kept whole, decoded only when read
            else:
                item = kept(item, field.type)
                if item is not None and item != field.default:
                    result[field.encode_name] = item
        return result
    if isinstance(info, msgspec.inspect.ListType):
        return [kept(item, info.item_type) for item in value]
    if isinstance(info, msgspec.inspect.FloatType):
        return float(value)
    return value

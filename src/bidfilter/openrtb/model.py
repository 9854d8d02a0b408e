"""Typed subset of the OpenRTB 2.5/2.6 BidRequest: only the fields bidfilter's features read.

Everything else (unknown fields) is skipped by the decoder, never materialised. Fields only
targeting features read (``LENIENT_FIELDS``) are dropped, not refused, when malformed: a partner
may not care about them, and the auction must not be lost over them. Where OpenRTB 2.6
moved a field out of ``ext`` (gdpr, us_privacy, consent, eids, schain), the 2.6 field is typed and
the ``ext`` object is kept as raw JSON: the accessors in :mod:`bidfilter.openrtb.signals` decode
it only when the 2.6 field is absent, and leniently, because ``ext`` belongs to whoever built the
request (prebid and SSPs put all sorts there) and a malformed one must not cost the auction.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# JSON integers have no size limit and msgspec keeps them as Python ints of any size; one past
# float's range makes features (float(), float32) overflow. OpenRTB integers are 64-bit.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

MAX_STRING_CHARS = 16_384
"""Longer than any real id, domain or consent string: a bigger one is refused, naming its field."""
Text = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)]


# Field names whose malformed values are dropped rather than refused (see parse_bid_request):
# those read by targeting features alone, never by a check or by what identifies the request.
LENIENT_FIELDS = frozenset(
    {
        "pos", "skip", "rwdd", "cat", "sectioncat", "pagecat", "content", "language", "genre",
        "livestream", "type", "osv", "carrier", "data", "bcat", "badv",
    }
)  # fmt: skip


class _Object(msgspec.Struct, omit_defaults=True):
    """Base: unknown fields are ignored (the msgspec default), defaults omitted on encode."""


class Format(_Object):
    w: Int64 | None = None
    h: Int64 | None = None


class Banner(_Object):
    w: Int64 | None = None
    h: Int64 | None = None
    format: list[Format] | None = None
    pos: Int64 | None = None


class Video(_Object):
    w: Int64 | None = None
    h: Int64 | None = None
    minduration: Int64 | None = None
    maxduration: Int64 | None = None
    plcmt: Int64 | None = None
    placement: Int64 | None = None
    protocols: list[Int64] | None = None
    startdelay: Int64 | None = None
    skip: Int64 | None = None


class Audio(_Object):
    minduration: Int64 | None = None
    maxduration: Int64 | None = None


class Native(_Object):
    request: Text | None = None
    ver: Text | None = None


class Deal(_Object):
    id: Text
    bidfloor: float = 0.0


class Pmp(_Object):
    private_auction: Int64 | None = None
    deals: list[Deal] | None = None


class Imp(_Object):
    id: Text
    banner: Banner | None = None
    video: Video | None = None
    audio: Audio | None = None
    native: Native | None = None
    pmp: Pmp | None = None
    bidfloor: float = 0.0
    bidfloorcur: Text | None = None
    instl: Int64 | None = None
    secure: Int64 | None = None
    tagid: Text | None = None
    rwdd: Int64 | None = None


class Publisher(_Object):
    id: Text | None = None


class Content(_Object):
    cat: list[Text] | None = None
    language: Text | None = None
    genre: Text | None = None
    livestream: Int64 | None = None


class Site(_Object):
    id: Text | None = None
    domain: Text | None = None
    page: Text | None = None
    publisher: Publisher | None = None
    cat: list[Text] | None = None
    sectioncat: list[Text] | None = None
    pagecat: list[Text] | None = None
    content: Content | None = None


class App(_Object):
    id: Text | None = None
    bundle: Text | None = None
    domain: Text | None = None
    publisher: Publisher | None = None
    cat: list[Text] | None = None
    sectioncat: list[Text] | None = None
    pagecat: list[Text] | None = None
    content: Content | None = None


class Geo(_Object):
    country: Text | None = None
    region: Text | None = None
    city: Text | None = None
    metro: Text | None = None
    lat: float | None = None
    lon: float | None = None
    utcoffset: Int64 | None = None
    type: Int64 | None = None


class Device(_Object):
    ua: Text | None = None
    devicetype: Int64 | None = None
    os: Text | None = None
    osv: Text | None = None
    make: Text | None = None
    model: Text | None = None
    language: Text | None = None
    carrier: Text | None = None
    connectiontype: Int64 | None = None
    geo: Geo | None = None
    ifa: Text | None = None
    lmt: Int64 | None = None
    dnt: Int64 | None = None


class Eid(_Object):
    source: Text | None = None


class UserExt(_Object):
    consent: Text | None = None
    eids: list[Eid] | None = None


class Data(_Object):
    id: Text | None = None
    name: Text | None = None


class User(_Object):
    id: Text | None = None
    buyeruid: Text | None = None
    geo: Geo | None = None
    consent: Text | None = None
    eids: list[Eid] | None = None
    data: list[Data] | None = None
    ext: msgspec.Raw = msgspec.Raw()


class RegsExt(_Object):
    gdpr: Int64 | None = None
    us_privacy: Text | None = None
    gpp: Text | None = None


class Regs(_Object):
    coppa: Int64 | None = None
    gdpr: Int64 | None = None
    us_privacy: Text | None = None
    gpp: Text | None = None
    ext: msgspec.Raw = msgspec.Raw()


class SupplyChainNode(_Object):
    asi: Text | None = None
    sid: Text | None = None


class SupplyChain(_Object):
    complete: Int64 | None = None
    nodes: list[SupplyChainNode] | None = None


class SourceExt(_Object):
    schain: SupplyChain | None = None


class Source(_Object):
    schain: SupplyChain | None = None
    ext: msgspec.Raw = msgspec.Raw()


class BidRequest(_Object):
    id: Text
    imp: list[Imp]
    site: Site | None = None
    app: App | None = None
    device: Device | None = None
    user: User | None = None
    regs: Regs | None = None
    source: Source | None = None
    tmax: Int64 | None = None
    at: Int64 | None = None
    test: Int64 | None = None
    bcat: list[Text] | None = None
    badv: list[Text] | None = None

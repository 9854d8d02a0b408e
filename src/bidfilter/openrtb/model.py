"""Typed subset of the OpenRTB 2.5/2.6 BidRequest: only the fields bidfilter's features read.

Everything else (unknown fields) is skipped by the decoder, never materialised. Where OpenRTB 2.6
moved a field out of ``ext`` (gdpr, us_privacy, consent, eids, schain), the 2.6 field is typed and
the ``ext`` object is kept as raw JSON: the accessors in :mod:`bidfilter.openrtb.parse` decode it
only when the 2.6 field is absent, and leniently, because ``ext`` belongs to whoever built the
request (prebid and SSPs put all sorts there) and a malformed one must not cost the auction.
"""

from __future__ import annotations

import msgspec


class _Object(msgspec.Struct, omit_defaults=True):
    """Base: unknown fields are ignored (the msgspec default), defaults omitted on encode."""


class Format(_Object):
    w: int | None = None
    h: int | None = None


class Banner(_Object):
    w: int | None = None
    h: int | None = None
    format: list[Format] | None = None


class Video(_Object):
    w: int | None = None
    h: int | None = None
    minduration: int | None = None
    maxduration: int | None = None
    plcmt: int | None = None
    placement: int | None = None
    protocols: list[int] | None = None
    startdelay: int | None = None


class Audio(_Object):
    minduration: int | None = None
    maxduration: int | None = None


class Native(_Object):
    request: str | None = None
    ver: str | None = None


class Deal(_Object):
    id: str
    bidfloor: float = 0.0


class Pmp(_Object):
    private_auction: int | None = None
    deals: list[Deal] | None = None


class Imp(_Object):
    id: str
    banner: Banner | None = None
    video: Video | None = None
    audio: Audio | None = None
    native: Native | None = None
    pmp: Pmp | None = None
    bidfloor: float = 0.0
    bidfloorcur: str | None = None
    instl: int | None = None
    secure: int | None = None
    tagid: str | None = None


class Publisher(_Object):
    id: str | None = None


class Site(_Object):
    id: str | None = None
    domain: str | None = None
    page: str | None = None
    publisher: Publisher | None = None


class App(_Object):
    id: str | None = None
    bundle: str | None = None
    domain: str | None = None
    publisher: Publisher | None = None


class Geo(_Object):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    metro: str | None = None
    lat: float | None = None
    lon: float | None = None
    utcoffset: int | None = None


class Device(_Object):
    ua: str | None = None
    devicetype: int | None = None
    os: str | None = None
    make: str | None = None
    model: str | None = None
    connectiontype: int | None = None
    geo: Geo | None = None
    ifa: str | None = None
    lmt: int | None = None
    dnt: int | None = None


class Eid(_Object):
    source: str | None = None


class UserExt(_Object):
    consent: str | None = None
    eids: list[Eid] | None = None


class User(_Object):
    id: str | None = None
    buyeruid: str | None = None
    geo: Geo | None = None
    consent: str | None = None
    eids: list[Eid] | None = None
    ext: msgspec.Raw = msgspec.Raw()


class RegsExt(_Object):
    gdpr: int | None = None
    us_privacy: str | None = None
    gpp: str | None = None


class Regs(_Object):
    coppa: int | None = None
    gdpr: int | None = None
    us_privacy: str | None = None
    gpp: str | None = None
    ext: msgspec.Raw = msgspec.Raw()


class SupplyChainNode(_Object):
    asi: str | None = None
    sid: str | None = None


class SupplyChain(_Object):
    complete: int | None = None
    nodes: list[SupplyChainNode] | None = None


class SourceExt(_Object):
    schain: SupplyChain | None = None


class Source(_Object):
    schain: SupplyChain | None = None
    ext: msgspec.Raw = msgspec.Raw()


class BidRequest(_Object):
    id: str
    imp: list[Imp]
    site: Site | None = None
    app: App | None = None
    device: Device | None = None
    user: User | None = None
    regs: Regs | None = None
    source: Source | None = None
    tmax: int | None = None
    at: int | None = None
    test: int | None = None

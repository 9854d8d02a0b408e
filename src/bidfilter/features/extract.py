"""What bidfilter reads from one bid request: the single definition of every feature.

:func:`extract` turns a parsed request (and the time it arrived) into numeric values and raw
categorical strings. Serving calls it once per request; training calls it for every logged request
and stacks the results (:mod:`bidfilter.features.batch`), so both paths share this code exactly.
Numbers missing from a request are NaN, which the trees route down a learned default branch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from bidfilter.features.useragent import NOTHING, major_version, software
from bidfilter.openrtb import signals
from bidfilter.openrtb.model import BidRequest, Content

NAN = math.nan
_MS_PER_HOUR = 3_600_000


def load_usd_rates(path: Path | None = None) -> dict[str, float]:
    """US dollars per unit of each currency, from ``path`` or the table bidfilter ships
    (``features/data/usd_rates.json``: ``{"usd_per_unit": {"EUR": 1.08, ...}}``).

    Floors are compared in USD. The rates are approximate on purpose: a feature only needs
    floors on one scale. A currency without a rate keeps its floor in its own unit
    (``floor_local_max``) and is still a value of ``floor_currency``, never silently lost.
    """
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else files("bidfilter.features").joinpath("data/usd_rates.json").read_text("utf-8")
    )
    where = str(path or "usd_rates.json")
    try:
        rates = json.loads(text)["usd_per_unit"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f'{where}: expected {{"usd_per_unit": {{CODE: rate}}}}: {error}') from None
    if not isinstance(rates, dict):
        raise ValueError(f"{where}: usd_per_unit must be an object of CODE: rate")
    for code, rate in rates.items():
        if not (isinstance(code, str) and len(code) == 3 and code.isalpha() and code.isupper()):
            raise ValueError(f"{where}: usd_per_unit: {code!r} is not an ISO 4217 code")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1e6:
            raise ValueError(f"{where}: usd_per_unit.{code}: {rate!r} is not a positive rate")
    return {code: float(rate) for code, rate in rates.items()}


USD_PER_UNIT: Mapping[str, float] = load_usd_rates()

NUMERIC_FEATURES: tuple[str, ...] = (
    "is_app",
    "imp_count",
    "has_banner",
    "has_video",
    "has_native",
    "has_audio",
    "banner_w",
    "banner_h",
    "banner_format_count",
    "video_minduration",
    "video_maxduration",
    "video_plcmt",
    "video_startdelay",
    "floor_max",
    "floor_min",
    "devicetype",
    "connectiontype",
    "geo_has_city",
    "geo_latlon_only",
    "hour_utc",
    "weekday_utc",
    "hour_local",
    "has_user_id",
    "has_buyeruid",
    "eid_count",
    "gdpr",
    "has_consent",
    "coppa",
    "has_us_privacy",
    "us_privacy_optout",
    "has_gpp",
    "deal_count",
    "private_auction",
    "schain_nodes",
    "tmax",
    "instl",
    "secure",
    "has_ifa",
    "lmt",
    "dnt",
    "browser_major",
    "os_major",
    "banner_pos",
    "rewarded",
    "video_skip",
    "video_protocol_count",
    "livestream",
    "category_count",
    "bcat_count",
    "badv_count",
    "geo_type",
    "user_data_count",
    "floor_local_max",
)

CATEGORICAL_FEATURES: tuple[str, ...] = (
    "publisher",
    "domain",
    "country",
    "region",
    "os",
    "make",
    "banner_size",
    "deal_1",
    "deal_2",
    "browser",
    "ua_os",
    "language",
    "carrier",
    "genre",
    "floor_currency",
    "tagid",
    "user_data_1",
)

# Features whose value is a set (a request carries any number of identity providers' ids and
# content categories): training keeps the most frequent members, each its own 0/1 column.
SET_FEATURES: tuple[str, ...] = ("eid_source", "category")


def _num(value: int | float | None) -> float:
    return NAN if value is None else float(value)


def _flag(present: object) -> float:
    return 1.0 if present else 0.0


Features = tuple[list[float], list[str | None], tuple[list[str], ...]]


def extract(
    request: BidRequest, ts_ms: int, usd_per_unit: Mapping[str, float] = USD_PER_UNIT
) -> Features:
    """Numeric values (in ``NUMERIC_FEATURES`` order), categorical strings (in
    ``CATEGORICAL_FEATURES`` order) and set members (in ``SET_FEATURES`` order) for one request
    received at ``ts_ms`` (epoch milliseconds); floors are converted with ``usd_per_unit``."""
    imps = request.imp
    banner = video = None
    has_native = has_audio = False
    floor_max = -math.inf
    floor_min = math.inf
    floor_local = NAN  # the highest floor in its own currency, when that has no rate
    currency: str | None = None
    banner_pos = NAN
    rewarded = 0
    tagid: str | None = None
    deals = 0
    deal_ids: list[str] = []  # the first two distinct ones: a deal is usually sold to one buyer
    private_auction = 0
    instl = secure = 0
    for imp in imps:
        if banner is None and imp.banner is not None:
            banner = imp.banner
        if video is None and imp.video is not None:
            video = imp.video
        has_native = has_native or imp.native is not None
        has_audio = has_audio or imp.audio is not None
        if tagid is None:
            tagid = imp.tagid
        if banner_pos != banner_pos and imp.banner is not None and imp.banner.pos is not None:
            banner_pos = float(imp.banner.pos)  # (x != x: NaN, without a call on the hot path)
        if imp.rwdd:
            rewarded = 1
        # OpenRTB: bidfloorcur defaults to USD.
        code = imp.bidfloorcur or "USD"
        rate = usd_per_unit.get(code)
        if rate is None:  # written "eur" or " EUR", or a currency without a rate
            code = code.strip().upper()
            rate = usd_per_unit.get(code, NAN)
        if currency is None or (code != "USD" and currency == "USD"):
            currency = code  # the first non-USD one says most
        floor = imp.bidfloor * rate
        if math.isnan(floor):  # one floor in an unknown currency makes the range unknown
            floor_max = floor_min = NAN
            floor_local = (
                imp.bidfloor if math.isnan(floor_local) else max(floor_local, imp.bidfloor)
            )
        elif not math.isnan(floor_max):
            floor_max = max(floor_max, floor)
            floor_min = min(floor_min, floor)
        if imp.pmp is not None:
            for deal in imp.pmp.deals or ():
                deals += 1
                if len(deal_ids) < 2 and deal.id not in deal_ids:
                    deal_ids.append(deal.id)
            private_auction = max(private_auction, imp.pmp.private_auction or 0)
        instl = max(instl, imp.instl or 0)
        secure = max(secure, imp.secure or 0)

    banner_w = banner_h = NAN
    formats = 0
    banner_size: str | None = None
    if banner is not None:
        formats = len(banner.format or ())
        w, h = banner.w, banner.h
        if (w is None or h is None) and banner.format:
            w, h = banner.format[0].w, banner.format[0].h
        banner_w, banner_h = _num(w), _num(h)
        if w is not None and h is not None:
            banner_size = f"{w}x{h}"

    plcmt = None
    video_skip = NAN
    protocols = NAN
    if video is not None:
        video_skip = _num(video.skip)
        protocols = float(len(video.protocols)) if video.protocols is not None else NAN
        # 2.6 replaced video.placement with plcmt; older requests only carry placement.
        plcmt = video.plcmt if video.plcmt is not None else video.placement

    # An app request that also carries site (seen in the wild) is served as app inventory.
    app, site = request.app, request.site
    publisher = domain = None
    categories: list[str] = []
    content: Content | None = None
    inventory = app if app is not None else site
    if app is not None:
        publisher = app.publisher.id if app.publisher is not None else None
        domain = app.bundle or app.domain
    elif site is not None:
        publisher = site.publisher.id if site.publisher is not None else None
        domain = site.domain
    if inventory is not None:
        content = inventory.content
        for listed in (inventory.cat, inventory.sectioncat, inventory.pagecat):
            if listed:
                categories.extend(listed)
    if content is not None and content.cat:
        categories.extend(content.cat)
    if len(categories) > 1:
        categories = sorted(set(categories))

    device = request.device
    ua = software(device.ua) if device is not None and device.ua else NOTHING
    os_major = ua.os_major
    language = carrier = None
    if device is not None:
        if device.osv:
            os_major = major_version(device.osv)
        language = _language(device.language)
        carrier = device.carrier.lower() if device.carrier else None
    if language is None and content is not None:
        language = _language(content.language)
    location = signals.geo(request)
    country = region = None
    has_city = latlon_only = 0.0
    hour_local = NAN
    if location is not None:
        country = location.country
        region = f"{country or ''}:{location.region}" if location.region else None
        has_city = _flag(location.city or location.metro)
        latlon_only = _flag(location.lat is not None and not location.country)
        if location.utcoffset is not None:
            hour_local = float(((ts_ms // 60_000 + location.utcoffset) // 60) % 24)

    user = request.user
    data = user.data if user is not None and user.data else ()
    gdpr, privacy, gpp = signals.regs_signals(request)
    consent, eids = signals.user_signals(request)
    chain = signals.schain(request)
    hour_index = ts_ms // _MS_PER_HOUR
    # 1970-01-01 was a Thursday: shift so Monday is 0, as datetime.weekday() does.
    weekday = (hour_index // 24 + 3) % 7

    numeric = [
        1.0 if app is not None else 0.0,
        float(len(imps)),
        1.0 if banner is not None else 0.0,
        1.0 if video is not None else 0.0,
        1.0 if has_native else 0.0,
        1.0 if has_audio else 0.0,
        banner_w,
        banner_h,
        float(formats),
        _num(video.minduration) if video is not None else NAN,
        _num(video.maxduration) if video is not None else NAN,
        NAN if plcmt is None else float(plcmt),
        _num(video.startdelay) if video is not None else NAN,
        floor_max,
        floor_min,
        _num(device.devicetype) if device is not None else NAN,
        _num(device.connectiontype) if device is not None else NAN,
        has_city,
        latlon_only,
        float(hour_index % 24),
        float(weekday),
        hour_local,
        1.0 if user is not None and (user.id or user.buyeruid) else 0.0,
        1.0 if user is not None and user.buyeruid else 0.0,
        float(len(eids)),
        NAN if gdpr is None else float(gdpr),
        1.0 if consent else 0.0,
        _num(request.regs.coppa) if request.regs is not None else NAN,
        1.0 if privacy else 0.0,
        1.0 if privacy is not None and len(privacy) > 2 and privacy[2] in "Yy" else 0.0,
        1.0 if gpp else 0.0,
        float(deals),
        float(private_auction),
        float(len(chain.nodes or ())) if chain is not None else 0.0,
        NAN if request.tmax is None else float(request.tmax),
        float(instl),
        float(secure),
        1.0 if device is not None and device.ifa else 0.0,
        _num(device.lmt) if device is not None else NAN,
        _num(device.dnt) if device is not None else NAN,
        ua.browser_major,
        os_major,
        banner_pos,
        float(rewarded),
        video_skip,
        protocols,
        _num(content.livestream) if content is not None else NAN,
        float(len(categories)),
        float(len(request.bcat or ())),
        float(len(request.badv or ())),
        _num(location.type) if location is not None else NAN,
        float(len(data)),
        floor_local,
    ]
    categorical = [
        publisher,
        domain,
        country,
        region,
        device.os.lower() if device is not None and device.os else None,
        device.make.lower() if device is not None and device.make else None,
        banner_size,
        deal_ids[0] if deal_ids else None,
        deal_ids[1] if len(deal_ids) > 1 else None,
        ua.browser,
        ua.os,
        language,
        carrier,
        content.genre.lower() if content is not None and content.genre else None,
        currency,
        tagid,
        (data[0].name or data[0].id) if data else None,
    ]
    sources = sorted({eid.source for eid in eids if eid.source}) if eids else []
    return numeric, categorical, (sources, categories)


@lru_cache(maxsize=1024)
def _language(value: str | None) -> str | None:
    """The primary subtag, lower-cased: ``en-US`` and ``EN`` are both ``en``."""
    if not value:
        return None
    return value.split("-", 1)[0].split("_", 1)[0].lower() or None

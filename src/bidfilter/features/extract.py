"""What bidfilter reads from one bid request: the single definition of every feature.

:func:`extract` turns a parsed request (and the time it arrived) into numeric values and raw
categorical strings. Serving calls it once per request; training calls it for every logged request
and stacks the results (:mod:`bidfilter.features.batch`), so both paths share this code exactly.
Numbers missing from a request are NaN, which the trees route down a learned default branch.
"""

from __future__ import annotations

import math

from bidfilter.openrtb import parse
from bidfilter.openrtb.model import BidRequest

NAN = math.nan
_MS_PER_HOUR = 3_600_000

# Floors are compared in USD. Rates are fixed and approximate on purpose: a feature only needs
# floors on one scale, and a model is retrained far more often than these rates drift much.
# A currency missing here makes the floor unknown (NaN) rather than wrong.
USD_PER_UNIT: dict[str, float] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CAD": 0.73,
    "AUD": 0.66,
    "JPY": 0.0067,
    "CNY": 0.14,
    "INR": 0.012,
    "BRL": 0.2,
    "MXN": 0.055,
    "CHF": 1.13,
    "SEK": 0.095,
    "PLN": 0.25,
}

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
)


def _num(value: int | float | None) -> float:
    return NAN if value is None else float(value)


def _flag(present: object) -> float:
    return 1.0 if present else 0.0


def extract(request: BidRequest, ts_ms: int) -> tuple[list[float], list[str | None]]:
    """Numeric values (in ``NUMERIC_FEATURES`` order) and categorical strings (in
    ``CATEGORICAL_FEATURES`` order) for one request received at ``ts_ms`` (epoch milliseconds)."""
    imps = request.imp
    banner = video = None
    has_native = has_audio = False
    floor_max = -math.inf
    floor_min = math.inf
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
        # OpenRTB: bidfloorcur defaults to USD.
        floor = imp.bidfloor * USD_PER_UNIT.get(imp.bidfloorcur or "USD", NAN)
        if math.isnan(floor):  # one floor in an unknown currency makes the range unknown
            floor_max = floor_min = NAN
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
    if video is not None:
        # 2.6 replaced video.placement with plcmt; older requests only carry placement.
        plcmt = video.plcmt if video.plcmt is not None else video.placement

    # An app request that also carries site (seen in the wild) is served as app inventory.
    app, site = request.app, request.site
    publisher = domain = None
    if app is not None:
        publisher = app.publisher.id if app.publisher is not None else None
        domain = app.bundle or app.domain
    elif site is not None:
        publisher = site.publisher.id if site.publisher is not None else None
        domain = site.domain

    device = request.device
    location = parse.geo(request)
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
    gdpr, privacy, gpp = parse.regs_signals(request)
    consent, eids = parse.user_signals(request)
    chain = parse.schain(request)
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
    ]
    return numeric, categorical

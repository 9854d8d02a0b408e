"""A second synthetic world: auction logs (docs/logs.md JSON lines) that bidfilter was not tuned on.

    python bench/world2.py --requests 300000 --partners 20 --days 14 --seed 1 --out w2.jsonl.gz

``bidfilter synth`` makes traffic whose partners follow policies the features were built for, so
a model scores close to the oracle there. This generator is written apart from it (numpy and the
standard library only, nothing from bidfilter) and its partners target what real DSPs target and
the features read poorly or not at all: eid sources, browser versions from the UA, content
categories and languages, floors in USD converted from many currencies, long-tail publisher
whitelists, rewarded and interstitial app video, deal ids, local hour, blocked advertisers.
``oracle_p`` is each partner's true bid probability; ``bid`` is drawn from it.

Requests are built per chunk: the attributes the policies read are drawn as numpy arrays, the
policies are evaluated on those arrays, then each request's OpenRTB JSON is assembled from them.
Memory is bounded by the chunk size whatever ``--requests`` is.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
START_MS = 1_740_960_000_000  # 2025-03-03T00:00:00Z, a Monday
CHUNK = 4096
PUBLISHERS = 20_000
ZIPF_EXPONENT = 1.1
MAX_PARTNERS = 20
DRIFT_DAYS = 3  # p-06 changes what it buys on the last days of the period

# Approximate USD per unit of currency. Deliberately wider than any small table a feature
# extractor would carry: floors in TRY, ZAR, KRW... are only comparable after this conversion.
USD_PER_UNIT: dict[str, float] = {
    "USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "TRY": 0.029, "ZAR": 0.054,
    "KRW": 0.00073, "IDR": 0.000063, "NOK": 0.093, "DKK": 0.145, "CZK": 0.043, "HUF": 0.0027,
    "THB": 0.028, "BRL": 0.2, "MXN": 0.055, "CAD": 0.73, "AUD": 0.66, "INR": 0.012,
    "PLN": 0.25, "SEK": 0.095,
}  # fmt: skip
# Currencies whose amounts are quoted without decimals.
WHOLE_UNITS = frozenset({"JPY", "KRW", "IDR", "HUF"})


@dataclass(frozen=True, slots=True)
class Country:
    code: str  # ISO-3166-1 alpha-3, as OpenRTB geo.country wants
    weight: float
    utcoffset: int  # minutes
    regions: tuple[str, ...]
    language: str  # ISO-639-1
    currency: str
    gdpr: bool
    carriers: tuple[str, ...]


COUNTRIES: tuple[Country, ...] = (
    Country("USA", 0.28, -300, ("CA", "NY", "TX", "FL", "WA"), "en", "USD", False,
            ("Verizon", "T-Mobile", "AT&T")),
    Country("GBR", 0.07, 0, ("ENG", "SCT", "WLS"), "en", "GBP", True, ("EE", "Vodafone", "O2")),
    Country("DEU", 0.07, 60, ("BE", "BY", "NW", "HE"), "de", "EUR", True,
            ("Telekom", "Vodafone", "O2")),
    Country("FRA", 0.05, 60, ("IDF", "ARA", "PAC"), "fr", "EUR", True, ("Orange", "SFR", "Free")),
    Country("ESP", 0.03, 60, ("MD", "CT", "AN"), "es", "EUR", True, ("Movistar", "Vodafone")),
    Country("JPN", 0.06, 540, ("13", "27", "23"), "ja", "JPY", False, ("NTT Docomo", "SoftBank")),
    Country("KOR", 0.04, 540, ("11", "26"), "ko", "KRW", False, ("SK Telecom", "KT")),
    Country("TUR", 0.04, 180, ("34", "06", "35"), "tr", "TRY", False, ("Turkcell", "Vodafone")),
    Country("ZAF", 0.02, 120, ("GP", "WC"), "en", "ZAR", False, ("Vodacom", "MTN")),
    Country("IDN", 0.04, 420, ("JK", "JB", "JI"), "id", "IDR", False, ("Telkomsel", "Indosat")),
    Country("THA", 0.03, 420, ("10", "50"), "th", "THB", False, ("AIS", "TrueMove H")),
    Country("NOR", 0.02, 60, ("03", "46"), "no", "NOK", True, ("Telenor", "Telia")),
    Country("DNK", 0.02, 60, ("84", "85"), "da", "DKK", True, ("TDC", "Telenor")),
    Country("CZE", 0.02, 60, ("10", "64"), "cs", "CZK", True, ("O2", "T-Mobile")),
    Country("HUN", 0.02, 60, ("BU", "PE"), "hu", "HUF", True, ("Telekom", "Yettel")),
    Country("POL", 0.02, 60, ("14", "12"), "pl", "PLN", True, ("Play", "Orange")),
    Country("SWE", 0.02, 60, ("AB", "O"), "sv", "SEK", True, ("Telia", "Tele2")),
    Country("BRA", 0.05, -180, ("SP", "RJ", "MG"), "pt", "BRL", False, ("Vivo", "Claro", "TIM")),
    Country("MEX", 0.03, -360, ("CMX", "JAL"), "es", "MXN", False, ("Telcel", "AT&T")),
    Country("CAN", 0.03, -300, ("ON", "QC", "BC"), "en", "CAD", False, ("Rogers", "Bell")),
    Country("AUS", 0.03, 600, ("NSW", "VIC"), "en", "AUD", False, ("Telstra", "Optus")),
    Country("IND", 0.05, 330, ("MH", "KA", "DL"), "hi", "INR", False, ("Jio", "Airtel")),
)  # fmt: skip

GERMANY = [c.code for c in COUNTRIES].index("DEU")
NORTH_AMERICA = [n for n, c in enumerate(COUNTRIES) if c.code in ("USA", "CAN")]

# Browser families (site traffic) and app WebViews; the policies read family and major version.
CHROME, SAFARI, FIREFOX, EDGE, SAMSUNG, IOS_WEBVIEW, ANDROID_WEBVIEW = range(7)
SITE_BROWSERS = (CHROME, SAFARI, FIREFOX, EDGE, SAMSUNG)
SITE_BROWSER_WEIGHTS = (0.55, 0.24, 0.06, 0.08, 0.07)
IOS_OS, ANDROID_OS, WINDOWS_OS, MACOS_OS = range(4)
OS_NAMES = ("iOS", "Android", "Windows", "macOS")
ANDROID_MODELS = (
    ("Samsung", "SM-S921B"), ("Samsung", "SM-A546B"), ("Google", "Pixel 8"),
    ("Xiaomi", "2201116SG"), ("Motorola", "moto g power (2023)"), ("OnePlus", "CPH2451"),
)  # fmt: skip
IPHONE_MODELS = ("iPhone15,2", "iPhone14,5", "iPhone16,1", "iPhone13,2")

EID_SOURCES = (
    "liveramp.com", "id5-sync.com", "uidapi.com", "criteo.com", "pubcid.org", "adserver.org",
    "intentiq.com", "netid.de",
)  # fmt: skip
# Share of users each id provider resolves; Safari users (no third-party cookies) far fewer.
EID_RATES = np.array([0.22, 0.35, 0.14, 0.30, 0.45, 0.20, 0.10, 0.0])
LIVERAMP, ID5, UID2, CRITEO, PUBCID = 0, 1, 2, 3, 4
NETID = EID_SOURCES.index("netid.de")
DATA_PROVIDERS = ("oracle.com", "peer39.com", "lotame.com", "eyeota.com", "semasio.com")
IAB_TIERS = 26  # IAB1 .. IAB26 content categories
GENRES = ("news", "sports", "entertainment", "music", "gaming", "kids", "documentary", "comedy")
SPORTS = GENRES.index("sports")
BANNER_SIZES = ((300, 250), (728, 90), (320, 50), (300, 600), (160, 600), (970, 250), (320, 100))
BANNER, VIDEO, NATIVE, AUDIO = range(4)
DEALS = tuple(f"dl-{n:04d}" for n in range(7001, 7061))
ADVERTISERS = tuple(
    f"{name}.com"
    for name in (
        "shopmax", "autoprime", "travelo", "finwise", "gamezone", "bettop", "medicure", "foodly",
        "streamflix", "telcoone", "fashionhub", "homely", "edulearn", "cryptex", "sportsgear",
        "petpals", "beautyco", "insurely", "energix", "cloudnet",
    )
)  # fmt: skip
SYLLABLES = (
    "ka", "lo", "mi", "ra", "ze", "tor", "vin", "bel", "sun", "mar", "qui", "dex", "pol", "an",
    "ver", "tal", "nor", "fi", "gra", "lu", "sol", "ter", "mo", "ix", "ul", "pra", "den", "so",
)  # fmt: skip
TLDS = ("com", "net", "de", "co.uk", "fr", "jp", "io", "news", "tv", "org")
SPORTSGEAR = ADVERTISERS.index("sportsgear.com")  # p-17's advertiser
# The native imp's request string (Native 1.2: a title and a main image).
NATIVE_REQUEST = json.dumps(
    {"ver": "1.2", "assets": [{"id": 1, "required": 1, "title": {"len": 90}},
                              {"id": 2, "img": {"type": 3, "wmin": 300, "hmin": 250}}]},
    separators=(",", ":"),
)  # fmt: skip
CONSENTS = tuple(
    f"CP{'ABCDEFGHJKLMNPQRSTUVWXYZ'[n % 24]}x3Vk{n:03d}AAAAgAEBAPAAAAAAAAAA" for n in range(8)
)


def _name(rng: np.random.Generator) -> str:
    return "".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), rng.integers(2, 4)))


class Publishers:
    """A long tail of publishers (Zipf by rank) with their fixed inventory and settings."""

    def __init__(self, rng: np.random.Generator, count: int = PUBLISHERS) -> None:
        self.count = count
        weight = 1.0 / np.arange(1, count + 1) ** ZIPF_EXPONENT
        self.share = weight / weight.sum()
        country_weight = np.array([c.weight for c in COUNTRIES])
        self.country = rng.choice(len(COUNTRIES), count, p=country_weight / country_weight.sum())
        self.is_app = rng.random(count) < 0.38
        self.cat = rng.integers(1, IAB_TIERS + 1, count)
        self.subcat = rng.integers(1, 12, count)
        local = rng.random(count) < 0.85
        self.language = [
            COUNTRIES[c].language if keep else "en"
            for c, keep in zip(self.country.tolist(), local.tolist(), strict=True)
        ]
        # The integration decides where privacy and id fields go: older Prebid/SDK builds
        # still write the OpenRTB 2.5 ext locations.
        self.ortb26 = rng.random(count) < 0.55
        home = rng.random(count) < 0.6
        self.currency = [
            COUNTRIES[c].currency if at_home else ("EUR" if COUNTRIES[c].gdpr else "USD")
            for c, at_home in zip(self.country.tolist(), home.tolist(), strict=True)
        ]
        self.floor_usd = rng.lognormal(np.log(0.45), 0.8, count)
        self.has_video = rng.random(count) < np.where(self.is_app, 0.5, 0.3)
        self.has_native = rng.random(count) < 0.3
        self.has_audio = rng.random(count) < np.where(self.is_app, 0.08, 0.02)
        self.rewarded = self.is_app & self.has_video & (rng.random(count) < 0.45)
        self.interstitial = self.is_app & (rng.random(count) < 0.35)
        self.livestream = self.has_video & (rng.random(count) < 0.15)
        self.genre = rng.integers(0, len(GENRES), count)
        self.has_content = rng.random(count) < 0.6
        # Deal ids: a few publishers sell private marketplace deals, each its own few.
        self.deals = [
            rng.choice(len(DEALS), rng.integers(1, 5), replace=False).tolist()
            if rng.random() < 0.15
            else []
            for _ in range(count)
        ]
        self.schain_nodes = rng.choice((1, 2, 3), count, p=(0.5, 0.35, 0.15))
        self.blocked = [
            rng.choice(len(ADVERTISERS), rng.integers(0, 4), replace=False).tolist()
            for _ in range(count)
        ]
        self.bcat = [
            [
                f"IAB{c}"
                for c in rng.choice(
                    (7, 8, 9, 11, 23, 24, 25, 26), rng.integers(0, 4), replace=False
                )
            ]
            for _ in range(count)
        ]
        self.ids = [f"{n:x}" for n in rng.integers(0x100000, 0xFFFFFF, count).tolist()]
        self.names: list[str] = []
        for n in range(count):
            base = _name(rng)
            if self.is_app[n]:
                self.names.append(
                    f"com.{base}.{_name(rng)}"
                    if rng.random() < 0.6
                    else str(rng.integers(300_000_000, 2_000_000_000))
                )
            else:
                self.names.append(f"{base}.{TLDS[rng.integers(0, len(TLDS))]}")


@dataclass(slots=True)
class Chunk:
    """The attributes of a chunk of requests that policies read, one array entry per request."""

    ts: np.ndarray  # epoch ms
    pub: np.ndarray
    country: np.ndarray
    is_app: np.ndarray
    browser: np.ndarray
    major: np.ndarray  # browser (or WebView Chrome) major version
    os: np.ndarray
    osv: np.ndarray  # OS major version
    mobile: np.ndarray
    eids: np.ndarray  # (n, len(EID_SOURCES)) bool
    data: np.ndarray  # (n, len(DATA_PROVIDERS)) bool
    imps: np.ndarray  # imp count
    formats: np.ndarray  # (n, 4) int: format per imp, -1 past imps
    floors_usd: np.ndarray  # (n, 4) float, 0 past imps
    has: np.ndarray  # (n, 4) bool: any imp of BANNER, VIDEO, NATIVE, AUDIO
    pos_above: np.ndarray  # first banner above the fold
    rewarded: np.ndarray
    instl: np.ndarray
    deals: np.ndarray  # (n, 4) deal index or -1
    local_hour: np.ndarray
    carrier: np.ndarray  # index into the country's carriers, -1 on wifi
    lmt: np.ndarray
    content: np.ndarray  # the request carries site/app.content
    ortb26: np.ndarray


def _chunk(
    rng: np.random.Generator, pubs: Publishers, n: int, first: int, total: int, days: int
) -> Chunk:
    period = days * DAY_MS
    # Uniform positions over this chunk's slice of the period, then a monotone warp that keeps
    # them sorted and adds a daily cycle peaking at 20:00 UTC (Europe's evening, US afternoon).
    u = np.sort(rng.uniform(first / total, (first + n) / total, n)) * period
    omega, phase, depth = 2 * np.pi / DAY_MS, 20 * HOUR_MS, 0.5
    warped = u - depth / omega * (np.sin(omega * (u - phase)) + np.sin(omega * phase))
    ts = START_MS + np.clip(warped, 0, period - 1).astype(np.int64)

    pub = rng.choice(pubs.count, n, p=pubs.share)
    country_weight = np.array([c.weight for c in COUNTRIES])
    roaming = rng.random(n) < 0.2  # a publisher's audience is mostly from its own country
    country = np.where(
        roaming,
        rng.choice(len(COUNTRIES), n, p=country_weight / country_weight.sum()),
        pubs.country[pub],
    )
    is_app = pubs.is_app[pub]

    site_browser = np.array(SITE_BROWSERS)[
        rng.choice(len(SITE_BROWSERS), n, p=SITE_BROWSER_WEIGHTS)
    ]
    app_ios = rng.random(n) < 0.4
    browser = np.where(is_app, np.where(app_ios, IOS_WEBVIEW, ANDROID_WEBVIEW), site_browser)
    mobile = is_app | (rng.random(n) < 0.6)
    mobile &= browser != EDGE  # Edge traffic here is desktop
    mobile |= browser == SAMSUNG
    # Most browsers auto-update: versions cluster at the latest, with a long tail of old ones.
    lag = rng.geometric(0.35, n) - 1
    chrome = 131 - np.minimum(lag, 25)
    major = np.select(
        [browser == SAFARI, browser == FIREFOX, browser == SAMSUNG, browser == IOS_WEBVIEW],
        [18 - np.minimum(lag, 3), np.where(lag > 4, 115, 133 - lag), 26 - np.minimum(lag, 6),
         18 - np.minimum(lag, 3)],
        chrome,
    )  # fmt: skip
    apple = (browser == SAFARI) | (browser == IOS_WEBVIEW)
    os_ = np.select(
        [apple & mobile, apple, mobile],
        [IOS_OS, MACOS_OS, ANDROID_OS],
        np.where(rng.random(n) < 0.85, WINDOWS_OS, MACOS_OS),
    )
    osv = np.select(
        [os_ == IOS_OS, os_ == ANDROID_OS, os_ == MACOS_OS],
        [np.where(browser == SAFARI, major, 18 - np.minimum(lag, 3)),
         14 - np.minimum(rng.geometric(0.4, n) - 1, 4), np.full(n, 10)],
        np.full(n, 10),
    )  # fmt: skip

    eid_rate = np.where(apple[:, None], EID_RATES * 0.3, EID_RATES)
    eids = rng.random((n, len(EID_SOURCES))) < eid_rate
    eids[:, NETID] = (country == GERMANY) & (
        rng.random(n) < 0.35
    )  # netID is a German login alliance
    data = rng.random((n, len(DATA_PROVIDERS))) < 0.12

    imps = np.where(is_app, 1, rng.choice((1, 2, 3, 4), n, p=(0.72, 0.16, 0.08, 0.04)))
    # Per imp slot a format the publisher offers: banner unless the draw picks another it has.
    offered = np.stack(
        [np.ones(n, bool), pubs.has_video[pub], pubs.has_native[pub], pubs.has_audio[pub]], axis=1
    )
    pick = rng.random((n, 4, 4)) * np.array([1.0, 1.6, 1.2, 1.4]) * offered[:, None, :]
    formats = np.where(np.arange(4) < imps[:, None], pick.argmax(axis=2), -1)
    has = np.stack([(formats == f).any(axis=1) for f in range(4)], axis=1)
    base_floor = pubs.floor_usd[pub][:, None] * rng.lognormal(0.0, 0.35, (n, 4))
    base_floor *= np.choose(np.maximum(formats, 0), [1.0, 4.0, 1.5, 2.0])  # video sells dearer
    floors_usd = np.where(formats >= 0, np.where(rng.random((n, 4)) < 0.1, 0.0, base_floor), 0.0)

    deal_count = np.array([len(d) for d in pubs.deals])[pub]
    deal_slots = rng.random((n, 4)) < 0.7
    deals = np.full((n, 4), -1)
    for row in np.flatnonzero(deal_count > 0).tolist():
        chosen = [d for d, on in zip(pubs.deals[pub[row]], deal_slots[row], strict=False) if on]
        rng.shuffle(chosen)  # the deal order varies: a reader of the first two misses some
        deals[row, : len(chosen)] = chosen

    utcoffset = np.array([c.utcoffset for c in COUNTRIES])[country]
    local_hour = ((ts // 60_000 + utcoffset) // 60) % 24
    cellular = mobile & (rng.random(n) < 0.45)
    carrier = np.where(cellular, rng.integers(0, 3, n), -1)  # modulo the country's list later
    lmt = (os_ == IOS_OS) & (rng.random(n) < 0.55) | (os_ == ANDROID_OS) & (rng.random(n) < 0.05)
    return Chunk(
        ts=ts,
        pub=pub,
        country=country,
        is_app=is_app,
        browser=browser,
        major=major,
        os=os_,
        osv=osv,
        mobile=mobile,
        eids=eids,
        data=data,
        imps=imps,
        formats=formats,
        floors_usd=floors_usd,
        has=has,
        pos_above=rng.random(n) < 0.4,
        rewarded=pubs.rewarded[pub] & has[:, VIDEO],
        instl=pubs.interstitial[pub] & (rng.random(n) < 0.6),
        deals=deals,
        local_hour=local_hour,
        carrier=carrier,
        lmt=lmt,
        content=pubs.has_content[pub],
        ortb26=pubs.ortb26[pub] ^ (rng.random(n) < 0.1),
    )


# -- partners


@dataclass(frozen=True, slots=True)
class Partner:
    id: str
    signal: str  # what the policy targets, for the report
    policy: Callable[[Chunk, Publishers], np.ndarray]  # base bid probability per request
    budget_usd: float  # typical CPM; floors well above it cut the bid probability


def _tail_whitelist(pubs: Publishers, seed: int) -> np.ndarray:
    """A whitelist of 3,000 publishers drawn from the tail (rank 500 on): a direct-deal DSP."""
    picked = np.zeros(pubs.count, bool)
    picked[np.random.default_rng(seed).choice(np.arange(500, pubs.count), 3000, replace=False)] = 1
    return picked


def partners(pubs: Publishers, count: int, days: int) -> list[Partner]:
    # A fixed seed: which ranks the partner buys is part of its policy, whatever the traffic seed.
    whitelist = _tail_whitelist(pubs, 97)
    drift_from = START_MS + (days - DRIFT_DAYS) * DAY_MS
    deals_of_p11 = np.arange(0, len(DEALS), 4)
    blocked_p17 = np.array([SPORTSGEAR in blocked for blocked in pubs.blocked])
    sports_or_live = (pubs.genre == SPORTS) | pubs.livestream

    def floor_usd(c: Chunk) -> np.ndarray:
        return np.asarray(c.floors_usd.max(axis=1))

    def dealt(c: Chunk) -> np.ndarray:
        return np.asarray(np.isin(c.deals, deals_of_p11).any(axis=1))

    def either(mask: np.ndarray, high: float, low: float) -> np.ndarray:
        return np.where(mask, high, low)

    table = [
        ("uid2 only: eid source uidapi.com",
         lambda c, p: either(c.eids[:, UID2], 0.55, 0.0001), 3.0),
        ("Chrome (desktop/Android, not WebView) major >= 128",
         lambda c, p: either((c.browser == CHROME) & (c.major >= 128), 0.45, 0.0001), 2.5),
        ("content category IAB19/IAB3 and language de or en",
         lambda c, p: either(np.isin(p.cat[c.pub], (3, 19))
                             & np.isin(np.array(p.language)[c.pub], ("de", "en")), 0.6, 0.0001),
         2.0),
        ("max floor < 0.35 USD after conversion (any currency)",
         lambda c, p: either(floor_usd(c) < 0.35, 0.5, 0.0001), 1.0),
        ("tail publisher whitelist x video or native imps",
         lambda c, p: either(whitelist[c.pub] & (c.has[:, VIDEO] | c.has[:, NATIVE]), 0.7, 0.0001),
         8.0),
        ("drift: site banner IAB1 until the last 3 days, then app native",
         lambda c, p: np.where(c.ts < drift_from,
                               either(~c.is_app & c.has[:, BANNER] & (p.cat[c.pub] <= 6),
                                      0.5, 0.0001),
                               either(c.is_app & c.has[:, NATIVE], 0.5, 0.0001)), 2.0),
        ("sparse: liveramp eid x video",
         lambda c, p: either(c.eids[:, LIVERAMP] & c.has[:, VIDEO], 0.22, 0.0001), 6.0),
        ("sparse: publisher language ja or ko",
         lambda c, p: either(np.isin(np.array(p.language)[c.pub], ("ja", "ko")), 0.2, 0.0001),
         3.0),
        ("rewarded video in apps",
         lambda c, p: either(c.rewarded, 0.6, 0.0001), 12.0),
        ("interstitial app with a real ifa (lmt=0)",
         lambda c, p: either(c.is_app & c.instl & ~c.lmt, 0.5, 0.0001), 5.0),
        ("deal ids dl-7001, dl-7005, ... anywhere in imp.pmp.deals",
         lambda c, p: either(dealt(c), 0.5, 0.0001), 6.0),
        ("local hour 18-23 (from geo.utcoffset)",
         lambda c, p: either(c.local_hour >= 18, 0.4, 0.005), 2.0),
        ("noise floor: 0.12 everywhere, 0.2 in USA/CAN",
         lambda c, p: either(np.isin(c.country, NORTH_AMERICA), 0.2, 0.12), 2.0),
        ("user.data segments from oracle.com or peer39.com",
         lambda c, p: either(c.data[:, 0] | c.data[:, 1], 0.45, 0.0001), 2.5),
        ("content genre sports or livestream",
         lambda c, p: either(c.content & sports_or_live[c.pub], 0.55, 0.0001), 5.0),
        ("cellular carrier (first of the country's list) on mobile",
         lambda c, p: either(c.carrier == 0, 0.45, 0.0001), 1.5),
        ("site inventory unless its advertiser (sportsgear.com) is in badv",
         lambda c, p: either(~c.is_app & ~blocked_p17[c.pub], 0.35, 0.0001), 2.0),
        ("iOS 17+ Safari or WebView, banner above the fold",
         lambda c, p: either((c.os == IOS_OS) & (c.osv >= 17) & c.pos_above & c.has[:, BANNER],
                             0.5, 0.0001), 2.5),
        ("id5 and criteo eids both present, multi-imp pages",
         lambda c, p: either(c.eids[:, ID5] & c.eids[:, CRITEO] & (c.imps >= 2), 0.6, 0.0001), 2.0),
        ("sparse: netid.de eid (German login alliance)",
         lambda c, p: either(c.eids[:, NETID], 0.6, 0.0001), 4.0),
    ]  # fmt: skip
    return [
        Partner(f"p-{k + 1:02d}", signal, policy, budget)
        for k, (signal, policy, budget) in enumerate(table[:count])
    ]


def bid_probabilities(
    chunk: Chunk, pubs: Publishers, table: list[Partner], rng: np.random.Generator
) -> np.ndarray:
    """(n, partners) true bid probabilities: each policy, cut by high floors, with noise."""
    base = np.stack([partner.policy(chunk, pubs) for partner in table], axis=1)
    budgets = np.array([partner.budget_usd for partner in table])
    # A floor far above what a partner pays makes it bid less, whatever it targets.
    base = base * np.exp(-chunk.floors_usd.max(axis=1)[:, None] / budgets)
    logit = np.log(base / (1 - base)) + rng.normal(0.0, 0.4, base.shape)
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


# -- OpenRTB assembly


def _ua(browser: int, major: int, os_: int, osv: int, model: str, build: int) -> str:
    android = f"Linux; Android {osv}; {model}"
    ios = f"{osv}_{build % 6}"
    if browser == SAFARI and os_ == IOS_OS:
        return (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15"
            f" (KHTML, like Gecko) Version/{major}.{build % 6} Mobile/15E148 Safari/604.1"
        )
    if browser == SAFARI:
        return (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
            f" (KHTML, like Gecko) Version/{major}.{build % 6} Safari/605.1.15"
        )
    if browser == IOS_WEBVIEW:
        return (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) Mobile/15E148"
        )
    if browser == ANDROID_WEBVIEW:
        return (
            f"Mozilla/5.0 ({android} Build/UP1A.{build}; wv) AppleWebKit/537.36"
            f" (KHTML, like Gecko) Version/4.0 Chrome/{major}.0.{6000 + build}.{build % 200}"
            " Mobile Safari/537.36"
        )
    desktop = (
        "Windows NT 10.0; Win64; x64" if os_ == WINDOWS_OS else "Macintosh; Intel Mac OS X 10_15_7"
    )
    if browser == FIREFOX:
        return f"Mozilla/5.0 ({desktop}; rv:{major}.0) Gecko/20100101 Firefox/{major}.0"
    if browser == SAMSUNG:
        return (
            f"Mozilla/5.0 ({android}) AppleWebKit/537.36 (KHTML, like Gecko)"
            f" SamsungBrowser/{major}.0 Chrome/{major + 96}.0.0.0 Mobile Safari/537.36"
        )
    platform = android if os_ == ANDROID_OS else desktop
    mobile = " Mobile" if os_ == ANDROID_OS else ""
    chrome = (
        f"Mozilla/5.0 ({platform}) AppleWebKit/537.36 (KHTML, like Gecko)"
        f" Chrome/{major}.0.{6000 + build}.{build % 200}{mobile} Safari/537.36"
    )
    return f"{chrome} Edg/{major}.0.{2000 + build}.{build % 90}" if browser == EDGE else chrome


def _amount(usd: float, currency: str) -> float:
    value = usd / USD_PER_UNIT[currency]
    return float(round(value)) if currency in WHOLE_UNITS else round(value, 2)


def _imp(k: int, fmt: int, floor: float, currency: str, c: Chunk, row: int, pubs: Publishers,
         draw: np.ndarray) -> dict[str, Any]:  # fmt: skip
    pub = int(c.pub[row])
    imp: dict[str, Any] = {
        "id": str(k + 1),
        "tagid": f"{pubs.ids[pub]}-{('ban', 'vid', 'nat', 'aud')[fmt]}-{k + 1}",
        "bidfloor": _amount(floor, currency),
        "bidfloorcur": currency,
        "secure": 1,
    }
    if fmt == BANNER:
        w, h = BANNER_SIZES[int(draw[0] * len(BANNER_SIZES))]
        banner: dict[str, Any] = {"w": w, "h": h, "pos": 1 if c.pos_above[row] and k == 0 else 3}
        if draw[1] < 0.3:
            banner["format"] = [{"w": w, "h": h}, {"w": 300, "h": 250}]
        imp["banner"] = banner
    elif fmt == VIDEO:
        maxduration = (15, 30, 60)[int(draw[0] * 3)]
        placement = 1 if pubs.livestream[pub] or c.is_app[row] else (2 if draw[1] < 0.5 else 3)
        video: dict[str, Any] = {
            "mimes": ["video/mp4", "application/javascript"],
            "minduration": 5,
            "maxduration": maxduration,
            "protocols": [2, 3, 5, 6] if draw[2] < 0.5 else [2, 3, 5, 6, 7, 8],
            "w": 640 if c.is_app[row] else 1280,
            "h": 360 if c.is_app[row] else 720,
            "startdelay": 0 if draw[3] < 0.7 else -1,
            "skip": 0 if c.rewarded[row] else 1,
            "linearity": 1,
        }
        if c.ortb26[row]:
            video["plcmt"] = placement if placement == 1 else 4
        else:
            video["placement"] = placement
        imp["video"] = video
        if c.rewarded[row]:
            imp["rwdd"] = 1
    elif fmt == NATIVE:
        imp["native"] = {"request": NATIVE_REQUEST, "ver": "1.2"}
    else:
        imp["audio"] = {"mimes": ["audio/mp4", "audio/mpeg"], "minduration": 5, "maxduration": 30,
                        "feed": 3 if draw[0] < 0.5 else 1}  # fmt: skip
    if c.instl[row] and k == 0:
        imp["instl"] = 1
    if k == 0 and c.deals[row, 0] >= 0:
        deals = [int(d) for d in c.deals[row] if d >= 0]
        imp["pmp"] = {
            "private_auction": int(draw[4] < 0.3),
            "deals": [
                {"id": DEALS[d], "bidfloor": _amount(floor * 1.3, currency),
                 "bidfloorcur": currency, "at": 3}
                for d in deals
            ],
        }  # fmt: skip
    return imp


def build_request(c: Chunk, row: int, pubs: Publishers, rng: np.random.Generator,
                  request_id: str) -> dict[str, Any]:  # fmt: skip
    """The OpenRTB BidRequest of one request of the chunk, in its 2.5 or 2.6 field locations."""
    pub = int(c.pub[row])
    country = COUNTRIES[int(c.country[row])]
    currency = pubs.currency[pub]
    draws = rng.random((int(c.imps[row]), 5))
    imps = [
        _imp(k, int(c.formats[row, k]), float(c.floors_usd[row, k]), currency, c, row, pubs,
             draws[k])
        for k in range(int(c.imps[row]))
    ]  # fmt: skip
    language = pubs.language[pub]
    name = pubs.names[pub]
    cat = f"IAB{pubs.cat[pub]}"
    publisher = {"id": pubs.ids[pub], "name": name.split(".")[0]}
    inventory: dict[str, Any] = {"id": f"{pubs.ids[pub]}-1", "publisher": publisher, "cat": [cat]}
    if c.content[row]:
        content: dict[str, Any] = {
            "cat": [f"{cat}-{pubs.subcat[pub]}"],
            "language": language,
            "genre": GENRES[pubs.genre[pub]],
        }
        if pubs.livestream[pub]:
            content["livestream"] = 1
        inventory["content"] = content
    rest = rng.integers(0, 1 << 62, 6).tolist()
    if c.is_app[row]:
        inventory |= {"bundle": name, "name": name.rsplit(".", 1)[-1], "ver": "5.2.1"}
        if name.isdigit():
            inventory["storeurl"] = f"https://apps.apple.com/app/id{name}"
    else:
        section = f"{cat}-{pubs.subcat[pub]}"
        inventory |= {
            "domain": name,
            "page": f"https://www.{name}/{GENRES[pubs.genre[pub]]}/{rest[0] % 100000}",
            "sectioncat": [section],
            "pagecat": [section, f"{cat}-{(pubs.subcat[pub] % 11) + 1}"],
            "mobile": int(c.mobile[row]),
        }
        publisher["domain"] = name
    os_ = int(c.os[row])
    osv = int(c.osv[row])
    if os_ == ANDROID_OS:
        make, model = ANDROID_MODELS[rest[1] % len(ANDROID_MODELS)]
        if c.browser[row] == SAMSUNG:
            make, model = ANDROID_MODELS[0]
    elif os_ == IOS_OS:
        make, model = "Apple", IPHONE_MODELS[rest[1] % len(IPHONE_MODELS)]
    else:
        make, model = ("Apple", "Macintosh") if os_ == MACOS_OS else ("", "")
    geo: dict[str, Any] = {
        "country": country.code,
        "region": country.regions[rest[2] % len(country.regions)],
        "type": 1 if c.is_app[row] and rest[2] % 4 == 0 else 2,
        "utcoffset": country.utcoffset,
    }
    device: dict[str, Any] = {
        "ua": _ua(int(c.browser[row]), int(c.major[row]), os_, osv, model, rest[3] % 4000),
        "devicetype": 4 if c.mobile[row] else 2,
        "os": OS_NAMES[os_],
        "osv": f"{osv}.{rest[3] % 5}",
        "language": language if rest[4] % 5 else "en",
        "geo": geo,
        "ip": f"{rest[4] % 223 + 1}.{rest[4] % 251}.{rest[5] % 254}.0",
        "connectiontype": 6 if c.carrier[row] >= 0 else 2,
        "lmt": int(c.lmt[row]),
    }
    if make:
        device |= {"make": make, "model": model}
    if c.carrier[row] >= 0:
        device["carrier"] = country.carriers[int(c.carrier[row]) % len(country.carriers)]
    if c.is_app[row]:
        # iOS apps without tracking consent send an all-zero IDFA: present but worthless.
        device["ifa"] = (
            "00000000-0000-0000-0000-000000000000"
            if c.lmt[row]
            else f"{rest[5] % (1 << 32):08x}-{rest[5] >> 48:04x}-4{rest[4] % 4096:03x}"
            f"-a{rest[3] % 4096:03x}-{rest[1] % (1 << 48):012x}"
        )
    user: dict[str, Any] = {}
    if rest[5] % 10 < 7:
        user["id"] = f"u{rest[5] % (1 << 40):010x}"
    eids = [
        {"source": EID_SOURCES[s], "uids": [{"id": f"{(rest[0] * (s + 3)) % (1 << 60):015x}",
                                              "atype": 3 if s == UID2 else 1}]}
        for s in np.flatnonzero(c.eids[row]).tolist()
    ]  # fmt: skip
    segments = [
        {"id": f"{provider[:3]}-{k}", "name": provider,
         "segment": [{"id": str(1000 + (rest[1] >> (4 * k)) % 500)}]}
        for k, provider in enumerate(DATA_PROVIDERS)
        if c.data[row, k]
    ]  # fmt: skip
    if segments:
        user["data"] = segments
    regs: dict[str, Any] = {"coppa": 0}
    privacy: dict[str, Any] = {}
    consent = CONSENTS[rest[2] % len(CONSENTS)] if country.gdpr and rest[2] % 10 < 8 else None
    if country.gdpr:
        privacy["gdpr"] = 1
    elif country.code == "USA":
        privacy["us_privacy"] = "1YNN" if rest[2] % 9 else "1YYN"
    schain = {
        "complete": 1,
        "ver": "1.0",
        "nodes": [
            {"asi": ("ssp-one.com", "resell-x.net", "adnet-y.io")[k], "sid": f"{pubs.ids[pub]}{k}",
             "hp": 1}
            for k in range(int(pubs.schain_nodes[pub]))
        ],
    }  # fmt: skip
    source: dict[str, Any] = {"tid": f"{rest[0]:016x}"}
    if c.ortb26[row]:
        regs |= privacy
        if consent:
            user["consent"] = consent
        if eids:
            user["eids"] = eids
        source["schain"] = schain
    else:  # OpenRTB 2.5: the same signals under the ext objects (IAB's community extensions)
        if privacy:
            regs["ext"] = privacy
        user_ext: dict[str, Any] = {}
        if consent:
            user_ext["consent"] = consent
        if eids:
            user_ext["eids"] = eids
        if user_ext:
            user["ext"] = user_ext
        source["ext"] = {"schain": schain}
    request: dict[str, Any] = {
        "id": request_id,
        "imp": imps,
        "app" if c.is_app[row] else "site": inventory,
        "device": device,
        "regs": regs,
        "source": source,
        "at": 1,
        "tmax": (300, 500, 800, 1000)[rest[3] % 4],
        "cur": [currency],
    }
    if user:
        request["user"] = user
    if pubs.blocked[pub]:
        request["badv"] = [ADVERTISERS[b] for b in pubs.blocked[pub]]
    if pubs.bcat[pub]:
        request["bcat"] = pubs.bcat[pub]
    return request


# -- output


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        # mtime 0: the same seed gives the same bytes, not only the same lines.
        raw = gzip.GzipFile(path, "wb", compresslevel=1, mtime=0)
        return io.TextIOWrapper(raw, encoding="utf-8")
    if path.suffix == ".bz2":
        return bz2.open(path, "wt", encoding="utf-8")
    if path.suffix == ".xz":
        return lzma.open(path, "wt", encoding="utf-8")
    return path.open("w", encoding="utf-8")


def generate(requests: int, partner_count: int, days: int, seed: int, out: Path) -> dict[str, Any]:
    """Write ``requests`` auction records to ``out``; a summary of what was written."""
    if not 1 <= partner_count <= MAX_PARTNERS:
        raise ValueError(f"--partners must be 1..{MAX_PARTNERS}")
    if days <= DRIFT_DAYS:
        raise ValueError(f"--days must exceed {DRIFT_DAYS} (p-06 drifts on the last days)")
    rng = np.random.default_rng(seed)
    pubs = Publishers(np.random.default_rng([seed, 1]))
    table = partners(pubs, partner_count, days)
    ids = [partner.id for partner in table]
    budgets = np.array([partner.budget_usd for partner in table])
    offers = bids = 0
    oracle_sum = 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    with _open(out) as sink:
        for first in range(0, requests, CHUNK):
            n = min(CHUNK, requests - first)
            chunk = _chunk(rng, pubs, n, first, requests, days)
            oracle = bid_probabilities(chunk, pubs, table, rng)
            bid = rng.random(oracle.shape) < oracle
            # A partner is sometimes left out of an auction (QPS caps, timeouts upstream).
            offered = rng.random(oracle.shape) >= 0.04
            cpm = np.maximum(
                chunk.floors_usd.max(axis=1)[:, None] * rng.lognormal(0.15, 0.2, oracle.shape),
                rng.lognormal(np.log(budgets / 2), 0.5, oracle.shape),
            )
            lines = []
            for row in range(n):
                request = build_request(chunk, row, pubs, rng, f"{seed:x}-{first + row:09x}")
                rate = USD_PER_UNIT[request["cur"][0]]
                entries = [
                    {"partner": ids[k], "bid": bool(bid[row, k]),
                     "price": round(float(cpm[row, k]) / rate, 4) if bid[row, k] else 0,
                     "oracle_p": round(float(oracle[row, k]), 6)}
                    for k in np.flatnonzero(offered[row]).tolist()
                ]  # fmt: skip
                record = {"ts": int(chunk.ts[row]), "request": request, "partners": entries}
                lines.append(json.dumps(record, separators=(",", ":")))
            sink.write("\n".join(lines) + "\n")
            offers += int(offered.sum())
            bids += int((bid & offered).sum())
            oracle_sum += float(oracle[offered].sum())
    return {
        "out": str(out),
        "requests": requests,
        "partners": partner_count,
        "days": days,
        "seed": seed,
        "outcomes": offers,
        "bids": bids,
        "bid_rate": bids / offers if offers else 0.0,
        "mean_oracle_p": oracle_sum / offers if offers else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write JSON-lines auction logs of an independent synthetic world"
        " (docs/logs.md), for `bidfilter import-jsonl`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=100_000, help="bid requests")
    parser.add_argument("--partners", type=int, default=20, help=f"partners, 1..{MAX_PARTNERS}")
    parser.add_argument("--days", type=int, default=14, help="days of traffic")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        default=argparse.SUPPRESS,
        help="output file (.jsonl, or .gz/.bz2/.xz to compress)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        summary = generate(args.requests, args.partners, args.days, args.seed, args.out)
    except ValueError as error:
        parser.error(str(error))
    summary["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"wrote {summary['requests']} requests, {summary['outcomes']} outcomes,"
            f" {summary['bids']} bids (rate {summary['bid_rate']:.4f}, mean oracle_p"
            f" {summary['mean_oracle_p']:.4f}) to {summary['out']} in {summary['seconds']} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

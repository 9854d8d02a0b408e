"""The supply side of the synthetic world: publishers, their sites and apps, and their deals.

Publishers get Zipf-distributed traffic (a few large ones, a long tail); each owns one or more
properties (a site domain, an iOS or Android app bundle, or a CTV app) whose traffic is again
Zipf-distributed within the publisher. Everything is drawn once from the seed, so the same seed
always yields the same world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bidfilter.synth.devices import Channel
from bidfilter.synth.formats import AUDIO, N_FORMATS, NATIVE, VIDEO
from bidfilter.synth.geography import COUNTRIES

N_PUBLISHERS = 2000
PUBLISHER_ZIPF = 0.9
PROPERTY_ZIPF = 1.3
PREMIUM_PUBLISHERS = 60  # the largest publishers sell deals

SITE, MOBILE_APP, CTV = 0, 1, 2

# (topic word, IAB content categories) drive names, categories and page paths.
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("news", ("IAB12",)),
    ("sports", ("IAB17",)),
    ("weather", ("IAB15-10",)),
    ("recipes", ("IAB8", "IAB8-5")),
    ("travel", ("IAB20",)),
    ("games", ("IAB9-30",)),
    ("puzzle", ("IAB9-30", "IAB9")),
    ("tech", ("IAB19",)),
    ("auto", ("IAB2",)),
    ("finance", ("IAB13",)),
    ("health", ("IAB7",)),
    ("style", ("IAB18",)),
    ("music", ("IAB1-6",)),
    ("movies", ("IAB1-5",)),
    ("home", ("IAB10",)),
    ("pets", ("IAB16",)),
    ("learn", ("IAB5",)),
    ("deals", ("IAB22",)),
    ("chat", ("IAB24",)),
    ("photo", ("IAB9-23",)),
)
_SUFFIXES = (
    "hub", "daily", "now", "times", "post", "world", "zone", "central", "insider", "digest",
    "today", "wire", "report", "buzz", "life", "guide", "pro", "club", "nation", "journal",
    "spot", "base", "line", "point", "craft", "land", "go", "ly", "box", "verse",
)  # fmt: skip
_PREFIXES = (
    "the", "my", "top", "smart", "fresh", "big", "true", "urban", "local", "happy", "best",
    "pure", "bright", "inside", "all", "get", "hello", "planet", "open", "real",
)  # fmt: skip
_TLDS = {
    "USA": "com", "CAN": "ca", "MEX": "com.mx", "BRA": "com.br", "ARG": "com.ar",
    "GBR": "co.uk", "DEU": "de", "FRA": "fr", "ESP": "es", "ITA": "it", "NLD": "nl", "POL": "pl",
    "SWE": "se", "IND": "in", "IDN": "co.id", "PHL": "ph", "JPN": "jp", "KOR": "co.kr",
    "AUS": "com.au", "TUR": "com.tr", "ZAF": "co.za",
}  # fmt: skip

# Media-type mix (banner, video, native, audio) before per-property variation.
_FORMAT_MIX = {
    SITE: (0.75, 0.12, 0.12, 0.005),
    MOBILE_APP: (0.55, 0.25, 0.17, 0.03),
    CTV: (0.0, 1.0, 0.0, 0.0),
}
_MULTI_IMP = {SITE: 0.17, MOBILE_APP: 0.05, CTV: 0.25}


@dataclass(frozen=True)
class Inventory:
    """Publishers, properties (one per site domain or app bundle) and deals, as arrays.

    Property arrays are indexed by property; ``publisher_*`` by publisher; ``deal_*`` by deal.
    """

    publisher_id: tuple[str, ...]
    publisher_name: tuple[str, ...]
    publisher_weight: npt.NDArray[np.float64]  # share of traffic
    publisher_deal_offsets: npt.NDArray[np.int64]  # CSR: deals of publisher i
    publisher_pmp_rate: npt.NDArray[np.float64]  # share of its requests carrying its deals

    property_publisher: npt.NDArray[np.int64]
    property_kind: npt.NDArray[np.int64]  # SITE, MOBILE_APP, CTV
    property_channel: npt.NDArray[np.int64]  # the app's channel; -1 for sites
    property_desktop_share: npt.NDArray[np.float64]  # sites: share of desktop visits
    property_weight: npt.NDArray[np.float64]
    property_home: npt.NDArray[np.int64]  # country index where most of its audience lives
    property_format_cdf: npt.NDArray[np.float64]  # (properties, formats)
    property_floor_scale: npt.NDArray[np.float64]
    property_multi_imp: npt.NDArray[np.float64]  # P(more than one imp)
    property_legacy: npt.NDArray[np.bool_]  # writes 2.5 ``ext`` locations
    property_schain: npt.NDArray[np.int64]  # usual number of schain nodes
    property_coppa: npt.NDArray[np.bool_]
    property_consent_rate: npt.NDArray[np.float64]  # P(TCF consent string | gdpr=1)
    property_eur_floors: npt.NDArray[np.bool_]
    property_id: tuple[str, ...]
    property_name: tuple[str, ...]
    property_domain: tuple[str, ...]  # site domain, or app bundle
    property_storeurl: tuple[str, ...]  # "" for sites
    property_topic: npt.NDArray[np.int64]  # index into TOPICS

    deal_id: tuple[str, ...]
    deal_floor: npt.NDArray[np.float64]
    deal_publisher: npt.NDArray[np.int64]

    @property
    def n_publishers(self) -> int:
        return len(self.publisher_id)

    @property
    def n_properties(self) -> int:
        return len(self.property_id)

    @property
    def n_deals(self) -> int:
        return len(self.deal_id)


@dataclass(frozen=True, slots=True)
class _PropertyRow:
    publisher: int
    channel: int  # the app's Channel; -1 for a site
    weight: float  # share of the publisher's traffic
    name: str
    domain: str  # site domain or app bundle
    storeurl: str


def _zipf_shares(n: int) -> list[float]:
    shares = np.arange(1, n + 1) ** -PROPERTY_ZIPF
    return [float(share) for share in shares / shares.sum()]


def _brand(rng: np.random.Generator, topic: str, taken: set[str]) -> str:
    """A publisher brand like ``smartrecipeshub``: retry a few word draws before numbering."""
    for _ in range(20):
        prefix = _PREFIXES[rng.integers(len(_PREFIXES))] if rng.random() < 0.7 else ""
        name = f"{prefix}{topic}{_SUFFIXES[rng.integers(len(_SUFFIXES))]}"
        if name not in taken:
            taken.add(name)
            return name
    return _unique(name, taken)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}{n}", n + 1
    taken.add(candidate)
    return candidate


def build_inventory(rng: np.random.Generator) -> Inventory:
    """Draw the publishers, properties and deals of one synthetic world."""
    n_countries = len(COUNTRIES)
    country_weight = np.array([country.weight for country in COUNTRIES])
    country_weight /= country_weight.sum()

    kind = rng.choice(3, size=N_PUBLISHERS, p=[0.62, 0.33, 0.05])
    # Rank order is random, so publisher ids say nothing about size.
    rank = rng.permutation(N_PUBLISHERS) + 1
    publisher_weight = rank**-PUBLISHER_ZIPF * np.choose(kind, [1.0, 1.2, 2.0])
    publisher_weight /= publisher_weight.sum()
    home = rng.choice(n_countries, size=N_PUBLISHERS, p=country_weight)
    legacy = rng.random(N_PUBLISHERS) < 0.4
    schain = rng.choice([1, 2, 3], size=N_PUBLISHERS, p=[0.5, 0.35, 0.15])
    coppa = rng.random(N_PUBLISHERS) < 0.02
    consent_rate = rng.uniform(0.6, 0.95, N_PUBLISHERS)
    eur_floors = rng.random(N_PUBLISHERS) < 0.5
    topic = rng.integers(0, len(TOPICS), N_PUBLISHERS)
    publisher_ids = rng.choice(np.arange(100_000, 1_000_000), size=N_PUBLISHERS, replace=False)

    names_taken: set[str] = set()
    domains_taken: set[str] = set()
    publisher_name: list[str] = []
    rows: list[_PropertyRow] = []
    for p in range(N_PUBLISHERS):
        word = TOPICS[topic[p]][0]
        base = _brand(rng, word, names_taken)
        publisher_name.append(base.capitalize() + " Media")
        tld = _TLDS[COUNTRIES[home[p]].alpha3] if rng.random() < 0.7 else "com"
        words = [_SUFFIXES[i] for i in rng.permutation(len(_SUFFIXES))]  # distinct per publisher
        if kind[p] == SITE:
            n_sites = min(int(rng.geometric(0.55)), 8)
            for j, within in enumerate(_zipf_shares(n_sites)):
                extra = "" if j == 0 else words[j]
                domain = _unique(f"{base}{extra}.{tld}", domains_taken)
                name = domain.split(".")[0].capitalize()
                rows.append(_PropertyRow(p, -1, within, name, domain, ""))
            continue
        n_apps = min(int(rng.geometric(0.6)), 5) if kind[p] == MOBILE_APP else 1
        for j, within in enumerate(_zipf_shares(n_apps)):
            app_word = words[j]
            title = f"{word.capitalize()} {app_word.capitalize()}"
            if kind[p] == CTV:
                bundle = _unique(f"com.{base}.{app_word}tv", domains_taken)
                store = f"https://channelstore.roku.com/details/{rng.integers(10**5, 10**6)}"
                rows.append(_PropertyRow(p, Channel.CTV_APP, within, title, bundle, store))
                continue
            # Most apps ship on both stores; each store version is its own bundle.
            on_ios, on_android = rng.random() < 0.6, rng.random() < 0.85
            on_android = on_android or not on_ios
            share = within / (int(on_ios) + int(on_android))
            if on_ios:
                app_id = _unique(str(rng.integers(10**9, 2 * 10**9)), domains_taken)
                store = f"https://apps.apple.com/us/app/id{app_id}"
                rows.append(_PropertyRow(p, Channel.IOS_APP, share, title, app_id, store))
            if on_android:
                bundle = _unique(f"com.{base}.{app_word}", domains_taken)
                store = f"https://play.google.com/store/apps/details?id={bundle}"
                rows.append(_PropertyRow(p, Channel.ANDROID_APP, share, title, bundle, store))

    owner = np.array([row.publisher for row in rows], dtype=np.int64)
    property_kind = kind[owner]
    n_properties = len(rows)
    mix = np.array([_FORMAT_MIX[int(k)] for k in property_kind])
    # Each property has its own media-type mix around its kind's; some specialise.
    mix *= np.exp(rng.normal(0.0, 0.6, mix.shape))
    specialty = rng.random(n_properties)
    mix[(property_kind != CTV) & (specialty < 0.10), VIDEO] *= 5.0
    mix[(property_kind != CTV) & (specialty > 0.90), NATIVE] *= 4.0
    audio_app = (property_kind == MOBILE_APP) & (specialty > 0.5) & (specialty < 0.55)
    mix[audio_app, AUDIO] = mix[audio_app].sum(axis=1)
    mix[property_kind == CTV] = [0.0, 1.0, 0.0, 0.0]
    format_cdf = np.cumsum(mix, axis=1) / mix.sum(axis=1, keepdims=True)
    format_cdf[:, N_FORMATS - 1] = 1.0

    property_weight = np.array([row.weight for row in rows]) * publisher_weight[owner]
    property_weight /= property_weight.sum()
    eur = eur_floors & np.array([country.euro for country in COUNTRIES])[home]

    premium = np.argsort(-publisher_weight)[:PREMIUM_PUBLISHERS]
    deals_per_publisher = np.zeros(N_PUBLISHERS, dtype=np.int64)
    deals_per_publisher[premium] = rng.integers(1, 5, PREMIUM_PUBLISHERS)
    offsets = np.concatenate([[0], np.cumsum(deals_per_publisher)])
    n_deals = int(offsets[-1])
    deal_publisher = np.repeat(np.arange(N_PUBLISHERS), deals_per_publisher)
    alphabet = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"))
    deal_codes = ["".join(code) for code in alphabet[rng.integers(0, 32, (n_deals, 10))]]
    pmp_rate = np.zeros(N_PUBLISHERS)
    pmp_rate[premium] = rng.uniform(0.2, 0.5, PREMIUM_PUBLISHERS)

    return Inventory(
        publisher_id=tuple(str(i) for i in publisher_ids),
        publisher_name=tuple(publisher_name),
        publisher_weight=publisher_weight,
        publisher_deal_offsets=offsets,
        publisher_pmp_rate=pmp_rate,
        property_publisher=owner,
        property_kind=property_kind,
        property_channel=np.array([row.channel for row in rows], dtype=np.int64),
        property_desktop_share=rng.uniform(0.25, 0.6, n_properties),
        property_weight=property_weight,
        property_home=home[owner],
        property_format_cdf=format_cdf,
        property_floor_scale=np.exp(rng.normal(0.0, 0.35, n_properties)),
        property_multi_imp=np.array([_MULTI_IMP[int(k)] for k in property_kind]),
        property_legacy=legacy[owner],
        property_schain=schain[owner],
        property_coppa=coppa[owner],
        property_consent_rate=consent_rate[owner],
        property_eur_floors=eur[owner],
        property_id=tuple(f"{i + 1:05d}" for i in range(n_properties)),
        property_name=tuple(row.name for row in rows),
        property_domain=tuple(row.domain for row in rows),
        property_storeurl=tuple(row.storeurl for row in rows),
        property_topic=topic[owner],
        deal_id=tuple(f"BFX-{code}" for code in deal_codes),
        deal_floor=np.exp(rng.normal(np.log(4.0), 0.6, n_deals)).round(2),
        deal_publisher=deal_publisher,
    )

"""Build K hidden partner policies from a seed: kinds of buyers, their targeting, their base rates.

Each partner is one of a dozen *archetypes* (a broad banner buyer, a CTV video buyer, a
retargeter that needs user ids, a regional buyer, a deal-only brand buyer, ...) with randomised
details: which countries, sizes, publishers it wants or blocks, how it paces by hour, its QPS cap,
its floor tolerance. Targeting is "peaky": a mismatch multiplies the probability by ~0.5%, so most
(request, partner) pairs are near zero and targeted pairs are high.

Finally each partner's base rate is calibrated on a sample of traffic so that bid rates spread
from well under 1% to about 20% (broad buyers get the high rates, niche ones the low).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from bidfilter.synth.devices import (
    CONNECTED_DEVICE,
    CONNECTED_TV,
    N_CONNECTION_TYPES,
    N_DEVICETYPES,
    OS_INDEX,
    OS_NAMES,
    PHONE,
    SET_TOP_BOX,
    TABLET,
)
from bidfilter.synth.formats import BANNER_SIZES, N_FORMATS, N_SIZES
from bidfilter.synth.geography import COUNTRIES, COUNTRY_INDEX, RegionTable
from bidfilter.synth.inventory import Inventory
from bidfilter.synth.policy import (
    PartnerPolicies,
    deal_match,
    finalize,
    own_deals,
    targeting,
)
from bidfilter.synth.timeline import Timeline
from bidfilter.synth.traffic import Traffic

FloatArray = npt.NDArray[np.float64]

LOWEST_RATE = 0.006
HIGHEST_RATE = 0.20
CALIBRATION_REQUESTS = 30_000

_TYPICAL_CPM = np.array([0.5, 6.0, 0.6, 2.5])  # banner, video, native, audio; USA
_REGIONAL_CLUSTERS = (
    ("MEX", "BRA", "ARG"),
    ("DEU", "NLD", "POL", "SWE"),
    ("FRA", "ESP", "ITA"),
    ("JPN", "KOR", "AUS"),
    ("IND", "IDN", "PHL", "TUR"),
    ("GBR", "CAN", "AUS"),
)
_MOBILE_SIZES = ("320x50", "300x250", "320x100", "300x50", "320x480")
_INTERSTITIAL_SIZES = ("320x480", "480x320", "768x1024")
_SIZE_INDEX = {f"{w}x{h}": i for i, (w, h, _, _) in enumerate(BANNER_SIZES)}


@dataclass
class _Draft:
    """One partner's tables while its archetype fills them in (mutable, unlike the result)."""

    rng: np.random.Generator
    miss: float  # factor for "not what I target": small but not zero
    country: FloatArray
    region: FloatArray
    media: FloatArray
    size: FloatArray
    devicetype: FloatArray
    os: FloatArray
    connection: FloatArray
    supply: FloatArray
    publisher: FloatArray
    property: FloatArray
    hour: FloatArray
    weekday: FloatArray
    max_cpm: FloatArray
    floor_steepness: float
    unidentified: float
    gdpr_without_consent: float
    gdpr_with_consent: float
    opt_out: float
    min_tmax: float
    schain: FloatArray
    deal_probability: float
    deal_weight: float  # how many of the publishers' deals this partner buys, relatively

    def only_countries(self, names: tuple[str, ...] | list[str]) -> None:
        wanted = np.full(len(COUNTRIES) + 1, self.miss * 0.5)
        wanted[[COUNTRY_INDEX[name] for name in names]] = 1.0
        wanted[-1] = 0.3  # geo unknown (lat/lon only): some buyers take the chance
        self.country *= wanted

    def top_countries(self, low: int, high: int) -> None:
        by_weight = sorted(COUNTRIES, key=lambda country: -country.weight)
        count = int(self.rng.integers(low, high + 1))
        self.only_countries([country.alpha3 for country in by_weight[:count]])

    def only_sizes(self, names: tuple[str, ...], other: float) -> None:
        factor = np.full(N_SIZES + 1, other)
        factor[[_SIZE_INDEX[name] for name in names]] = 1.0
        factor[N_SIZES] = 1.0
        self.size *= factor

    def only_devicetypes(self, codes: tuple[int, ...]) -> None:
        factor = np.full(N_DEVICETYPES, self.miss)
        factor[list(codes)] = 1.0
        if PHONE in codes or TABLET in codes:
            factor[1] = 1.0  # "mobile/tablet" from older integrations
        self.devicetype *= factor


def _new_draft(rng: np.random.Generator, inventory: Inventory, regions: RegionTable) -> _Draft:
    n_publishers = inventory.n_publishers
    blocked_publishers = rng.random(n_publishers) < rng.uniform(0.02, 0.08)
    publisher = np.where(blocked_publishers, 0.0, np.exp(rng.normal(0.0, 0.6, n_publishers)))
    blocked_properties = rng.random(inventory.n_properties) < 0.02
    phase = rng.uniform(0, 2 * np.pi)
    hours = np.arange(24)
    pacing = np.exp(rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * hours / 24 + phase))
    weekday = np.exp(rng.normal(0.0, 0.08, 7))
    if rng.random() < 0.25:
        weekday[5:] *= rng.uniform(0.4, 0.7)  # campaigns that mostly run on working days
    return _Draft(
        rng=rng,
        miss=float(rng.uniform(0.002, 0.01)),
        country=np.ones(len(COUNTRIES) + 1),
        region=np.ones(regions.n_regions + 1),
        media=np.ones(N_FORMATS),
        size=np.concatenate([np.exp(rng.normal(0.0, 0.3, N_SIZES)), [1.0]]),
        devicetype=np.ones(N_DEVICETYPES),
        os=np.exp(rng.normal(0.0, 0.2, len(OS_NAMES))),
        connection=np.ones(N_CONNECTION_TYPES),
        supply=np.ones(2),
        publisher=publisher,
        property=np.where(blocked_properties, 0.0, 1.0),
        hour=pacing,
        weekday=weekday,
        max_cpm=_TYPICAL_CPM * rng.uniform(0.8, 3.0, N_FORMATS),
        floor_steepness=float(rng.uniform(2.0, 5.0)),
        unidentified=float(rng.uniform(0.3, 0.8)),
        gdpr_without_consent=float(rng.uniform(0.02, 0.2)),
        gdpr_with_consent=float(rng.uniform(0.7, 1.0)),
        opt_out=float(rng.uniform(0.2, 0.8)),
        min_tmax=float(rng.choice([0, 0, 150, 200])),
        schain=np.array([1.0, 1.0, rng.uniform(0.7, 1.0), rng.uniform(0.4, 0.9)]),
        deal_probability=float(rng.uniform(0.3, 0.6)),
        deal_weight=0.5,
    )


# --- archetypes: each narrows a fresh draft to one kind of buyer ---


def _broad_banner(d: _Draft) -> None:
    d.media[:] = [1.0, d.miss, 0.3, 0.0]
    d.top_countries(8, 15)
    d.size[:N_SIZES] *= np.where(d.rng.random(N_SIZES) < 0.2, 0.1, 1.0)
    d.unidentified = 0.3


def _video(d: _Draft) -> None:
    d.media[:] = [d.miss, 1.0, d.miss, 0.05]
    d.top_countries(6, 10)
    d.min_tmax = 200
    d.deal_weight = 1.5


def _ctv(d: _Draft) -> None:
    d.media[:] = [0.0, 1.0, 0.0, 0.0]
    d.only_devicetypes((CONNECTED_TV, CONNECTED_DEVICE, SET_TOP_BOX))
    d.supply[:] = [d.miss, 1.0]
    names = ["USA", *d.rng.choice(["CAN", "GBR", "DEU", "AUS"], size=2, replace=False)]
    d.only_countries(names)
    d.min_tmax = 300
    d.deal_weight = 1.5


def _native(d: _Draft) -> None:
    d.media[:] = [0.05, 0.0, 1.0, 0.0]
    d.top_countries(10, 18)


def _app_performance(d: _Draft) -> None:
    d.supply[:] = [d.miss, 1.0]
    d.media[:] = [1.0, 1.0, 0.3, 0.0]
    d.only_sizes(_INTERSTITIAL_SIZES, 0.3)
    d.only_devicetypes((PHONE, TABLET))
    # Some only buy Android (iOS users mostly opted out of tracking).
    d.os[OS_INDEX["iOS"]] *= d.miss if d.rng.random() < 0.3 else d.rng.uniform(0.5, 1.5)
    d.connection[[4, 5]] = 0.3  # 2G and 3G: creatives too heavy
    d.unidentified = 0.03
    d.top_countries(12, 21)


def _retargeting(d: _Draft) -> None:
    d.supply[:] = [1.0, 0.1]
    d.media[:] = [1.0, 0.0, 0.3, 0.0]
    d.unidentified = 0.005
    d.gdpr_without_consent = 0.001
    eu = [country.alpha3 for country in COUNTRIES if country.gdpr]
    count = int(d.rng.integers(2, len(eu) + 1))
    d.only_countries(["USA", *d.rng.choice(eu, size=count, replace=False)])


def _regional(d: _Draft) -> None:
    cluster = _REGIONAL_CLUSTERS[int(d.rng.integers(len(_REGIONAL_CLUSTERS)))]
    d.only_countries(cluster)
    d.media[:] = [1.0, 0.3, 0.6, 0.0]
    d.hour = np.ones(24)  # a small buyer: no pacing curve


def _deal_buyer(d: _Draft) -> None:
    d.media[:] = [0.5, 1.0, 0.2, 0.0]
    d.top_countries(4, 8)
    d.deal_probability = float(d.rng.uniform(0.6, 0.9))
    d.deal_weight = 4.0
    d.publisher *= 0.2  # open auction only now and then


def _audio(d: _Draft) -> None:
    d.media[:] = [0.0, 0.02, 0.0, 1.0]
    d.top_countries(4, 8)


def _us_local(d: _Draft, regions: RegionTable) -> None:
    d.only_countries(("USA",))
    usa = np.flatnonzero(regions.country_of == COUNTRY_INDEX["USA"]).tolist()
    codes = sorted({regions.regions[i].code for i in usa})
    chosen = set(d.rng.choice(codes, size=int(d.rng.integers(3, 6)), replace=False).tolist())
    # Targeting is by state (what geo.region says), not by city.
    factor = np.full(regions.n_regions + 1, 0.05)
    factor[[i for i in usa if regions.regions[i].code in chosen]] = 1.0
    factor[-1] = 0.3
    d.region *= factor
    d.only_devicetypes((PHONE, TABLET))
    d.media[:] = [1.0, 0.2, 0.5, 0.0]


def _premium_brand(d: _Draft, inventory: Inventory) -> None:
    top = np.argsort(-inventory.publisher_weight)[: int(d.rng.integers(60, 150))]
    allowed = np.full(inventory.n_publishers, d.miss)
    allowed[top] = 1.0
    d.publisher *= allowed
    d.media[:] = [1.0, 1.0, 0.2, 0.0]
    d.max_cpm *= 2.0
    d.schain[:] = [1.0, 1.0, 0.3, 0.05]  # direct paths only
    d.top_countries(5, 10)
    d.deal_weight = 2.0


def _mobile_web(d: _Draft) -> None:
    d.supply[:] = [1.0, d.miss]
    d.only_devicetypes((PHONE, TABLET))
    d.only_sizes(_MOBILE_SIZES, 0.05)
    d.media[:] = [1.0, 0.1, 0.5, 0.0]
    d.top_countries(6, 14)


def _archetypes(inventory: Inventory, regions: RegionTable) -> dict[str, Callable[[_Draft], None]]:
    return {
        "broad_banner": _broad_banner,
        "video": _video,
        "ctv": _ctv,
        "native": _native,
        "app_performance": _app_performance,
        "retargeting": _retargeting,
        "regional": _regional,
        "deal_buyer": _deal_buyer,
        "audio": _audio,
        "us_local": lambda d: _us_local(d, regions),
        "premium_brand": lambda d: _premium_brand(d, inventory),
        "mobile_web": _mobile_web,
    }


def partner_ids(count: int) -> tuple[str, ...]:
    """``dsp-01`` .. ``dsp-K`` (wider numbers when K > 99)."""
    width = max(2, len(str(count)))
    return tuple(f"dsp-{i:0{width}d}" for i in range(1, count + 1))


def build_partners(
    rng: np.random.Generator,
    count: int,
    inventory: Inventory,
    regions: RegionTable,
    timeline: Timeline,
    calibration: Callable[[np.random.Generator], Traffic],
) -> PartnerPolicies:
    """Draw ``count`` partner policies and calibrate their base rates on sample traffic.

    ``calibration`` draws a sample of traffic (from the same world and window) with a given RNG.
    """
    archetypes = _archetypes(inventory, regions)
    names = list(archetypes)
    # Every archetype once (in random order) before any repeats, so small K is still varied.
    order = [names[i] for i in rng.permutation(len(names))]
    while len(order) < count:
        order.append(names[int(rng.integers(len(names)))])
    kinds = order[:count]

    drafts = []
    for kind in kinds:
        draft = _new_draft(rng, inventory, regions)
        archetypes[kind](draft)
        if rng.random() < 0.4:
            # A QPS cap: at busy hours the partner only takes part of the traffic.
            cap = rng.uniform(0.7, 1.2)
            draft.hour = draft.hour * np.minimum(1.0, cap / timeline.hourly_volume)
        drafts.append(draft)

    deal_weight = np.array([draft.deal_weight for draft in drafts])
    deal_owner = rng.choice(count, size=inventory.n_deals, p=deal_weight / deal_weight.sum())
    country_value = np.append(regions.country_value, 0.5)

    def stack(name: str) -> FloatArray:
        return np.array([getattr(draft, name) for draft in drafts], dtype=np.float64)

    policies = PartnerPolicies(
        partner_ids=partner_ids(count),
        archetypes=tuple(kinds),
        base=np.ones(count),
        country=stack("country"),
        region=stack("region"),
        media=stack("media"),
        size=stack("size"),
        devicetype=stack("devicetype"),
        os=stack("os"),
        connection=stack("connection"),
        supply=stack("supply"),
        publisher=stack("publisher"),
        property=stack("property"),
        hour=stack("hour"),
        weekday=stack("weekday"),
        max_cpm=stack("max_cpm"),
        floor_steepness=stack("floor_steepness"),
        country_value=country_value,
        unidentified=stack("unidentified"),
        gdpr_without_consent=stack("gdpr_without_consent"),
        gdpr_with_consent=stack("gdpr_with_consent"),
        opt_out=stack("opt_out"),
        coppa=np.full(count, 0.02),
        min_tmax=stack("min_tmax"),
        schain=stack("schain"),
        deal_owner=deal_owner.astype(np.int64),
        deal_floor=inventory.deal_floor,
        deal_probability=stack("deal_probability"),
        private_other=np.full(count, 0.02),
        noise_sigma=np.full(count, 0.3),
        leak=np.full(count, 2e-4),
    )
    return _calibrate(policies, calibration(rng), rng)


def _calibrate(
    policies: PartnerPolicies, sample: Traffic, rng: np.random.Generator
) -> PartnerPolicies:
    """Set each base rate so the partner's mean bid probability on ``sample`` hits its target.

    Targets are spread geometrically from LOWEST_RATE to HIGHEST_RATE; the partners whose
    targeting naturally reaches the most traffic get the highest ones, so a niche buyer is not
    pushed to bid on everything it barely matches.
    """
    k = len(policies)
    affinity = targeting(policies, sample)
    affinity *= np.exp(policies.noise_sigma[:, None] * rng.standard_normal(affinity.shape))
    own_deal, _ = own_deals(policies, sample)
    deals = deal_match(policies, sample)

    def mean_rate(policies: PartnerPolicies, base: FloatArray) -> FloatArray:
        p = finalize(policies, base, affinity, own_deal, deals, sample.private_auction)
        rate: FloatArray = p.mean(axis=1)
        return rate

    targets = np.geomspace(LOWEST_RATE, HIGHEST_RATE, k) if k > 1 else np.array([0.05])
    targets *= np.exp(rng.uniform(-0.08, 0.08, k))
    reach = mean_rate(policies, np.ones(k))
    rank = np.argsort(np.argsort(reach))
    wanted = np.sort(targets)[rank]

    # Deals alone must not make up most of a partner's bids, or its targeting would not matter.
    from_deals = mean_rate(policies, np.zeros(k))
    scale = np.minimum(1.0, 0.4 * wanted / np.maximum(from_deals, 1e-12))
    policies = replace(policies, deal_probability=policies.deal_probability * scale)

    # Bisection on log(base), all partners at once (the mean rate grows with the base).
    low, high = np.full(k, -12.0), np.full(k, 12.0)
    for _ in range(60):
        mid = (low + high) / 2
        above = mean_rate(policies, np.exp(mid)) > wanted
        high = np.where(above, mid, high)
        low = np.where(above, low, mid)
    return replace(policies, base=np.exp((low + high) / 2))

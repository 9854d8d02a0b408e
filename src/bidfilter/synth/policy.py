"""Hidden partner policies and the oracle: the true bid probability of every (request, partner).

A :class:`PartnerPolicies` holds, for K partners at once, lookup tables over request attributes
(country, region, media type, banner size, device type, os, publisher, site/app, hour...) and a few
scalars (floor tolerance, id requirement, GDPR behaviour, deal affinity). The bid probability is
the product of the looked-up factors, scaled by a per-partner base rate, clipped, with a little
noise: every factor is a function of fields a feature extractor reads from the request, so a good
model can learn it, while the noise and leak keep it from being trivially exact.

Arrays are laid out (K, n) while computing, because a table lookup ``table[:, column]`` then yields
contiguous rows; the result is transposed to (n, K) (request-major), the order of the auction log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bidfilter.synth.formats import BANNER, N_FORMATS
from bidfilter.synth.traffic import Traffic

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_PROBABILITY = 0.95  # even a perfect match sometimes gets no bid (budget, frequency caps)


@dataclass(frozen=True)
class PartnerPolicies:
    """The hidden bidding behaviour of K partners. Tables are (K, categories)."""

    partner_ids: tuple[str, ...]
    archetypes: tuple[str, ...]  # which kind of buyer each partner is (for reports, not bids)
    base: FloatArray  # (K,) scales the product of factors; calibrated to a target bid rate
    country: FloatArray  # (K, countries + 1): last column = country absent from the request
    region: FloatArray  # (K, regions + 1)
    media: FloatArray  # (K, formats)
    size: FloatArray  # (K, sizes + 1): first banner's size; last column = no banner
    devicetype: FloatArray  # (K, 8)
    os: FloatArray  # (K, os names)
    connection: FloatArray  # (K, 8)
    supply: FloatArray  # (K, 2): site, app
    publisher: FloatArray  # (K, publishers): affinity, 0 = blocked, ~0 = not on allowlist
    property: FloatArray  # (K, properties): 0 = domain or bundle blocked
    hour: FloatArray  # (K, 24) UTC: pacing times the share left by the QPS cap
    weekday: FloatArray  # (K, 7)
    max_cpm: FloatArray  # (K, formats): what the partner pays in the USA, USD CPM
    floor_steepness: FloatArray  # (K,) how sharply bidding stops once the floor passes max_cpm
    country_value: FloatArray  # (countries + 1,) price level where the request comes from
    unidentified: FloatArray  # (K,) factor when no buyeruid, eids or usable ifa
    gdpr_without_consent: FloatArray  # (K,)
    gdpr_with_consent: FloatArray  # (K,)
    opt_out: FloatArray  # (K,) factor when us_privacy says the user opted out of sale
    coppa: FloatArray  # (K,)
    min_tmax: FloatArray  # (K,) below this tmax the partner cannot answer in time
    schain: FloatArray  # (K, 4): by number of schain nodes (0 unused)
    deal_owner: IntArray  # (deals,) which partner each deal was sold to
    deal_floor: FloatArray  # (deals,)
    deal_probability: FloatArray  # (K,) when the request carries one of the partner's deals
    private_other: FloatArray  # (K,) factor in a private auction without the partner's deal
    noise_sigma: FloatArray  # (K,) log-normal noise on the probability, per request
    leak: FloatArray  # (K,) floor probability: bids nobody could predict

    def __len__(self) -> int:
        return len(self.partner_ids)


def targeting(policies: PartnerPolicies, traffic: Traffic) -> FloatArray:
    """The product of all learnable factors except the base rate and deals, shape (K, n)."""
    imps = traffic.imps
    factor = policies.country[:, traffic.seen_country] * policies.region[:, traffic.seen_region]
    factor *= media_match(policies, traffic)
    factor *= policies.devicetype[:, traffic.devicetype]
    factor *= policies.os[:, traffic.os]
    factor *= policies.connection[:, traffic.connectiontype]
    factor *= policies.supply[:, traffic.is_app.astype(np.int64)]
    factor *= policies.publisher[:, traffic.publisher]
    factor *= policies.property[:, traffic.property]
    factor *= policies.hour[:, traffic.hour] * policies.weekday[:, traffic.weekday]
    factor *= policies.schain[:, np.minimum(traffic.schain_nodes, 3)]

    # Floor tolerance: the chance of bidding falls off once the highest floor passes what the
    # partner would pay for this media type in this country.
    willing = (
        policies.max_cpm[:, imps.primary_format] * policies.country_value[traffic.seen_country]
    )
    ratio = imps.max_floor_usd[None, :] / willing
    factor /= 1.0 + ratio ** policies.floor_steepness[:, None]

    privacy = traffic.privacy
    factor *= np.where(privacy.identified, 1.0, policies.unidentified[:, None])
    gdpr = privacy.gdpr == 1
    consent_factor = np.where(
        privacy.has_consent,
        policies.gdpr_with_consent[:, None],
        policies.gdpr_without_consent[:, None],
    )
    factor *= np.where(gdpr, consent_factor, 1.0)
    factor *= np.where(privacy.us_privacy == 1, policies.opt_out[:, None], 1.0)
    factor *= np.where(privacy.coppa, policies.coppa[:, None], 1.0)
    factor *= np.where(traffic.tmax < policies.min_tmax[:, None], 0.03, 1.0)
    result: FloatArray = factor
    return result


def media_match(policies: PartnerPolicies, traffic: Traffic) -> FloatArray:
    """How much each partner wants the request's media, shape (K, n).

    A partner bids on a multi-imp request if it bids on any imp, so the best-liked media type
    present counts (banner weighted by the first banner's size).
    """
    imps = traffic.imps
    banner = policies.media[:, BANNER, None] * policies.size[:, imps.first_size]
    media = np.where(imps.has_format[:, BANNER], banner, 0.0)
    for fmt in range(1, N_FORMATS):
        present = imps.has_format[:, fmt]
        media = np.maximum(media, np.where(present, policies.media[:, fmt, None], 0.0))
    return media


def deal_match(policies: PartnerPolicies, traffic: Traffic) -> FloatArray:
    """How much of its deal probability a partner uses here (K, n): deals are paced like the
    rest and bought for a media type (a CTV buyer's deal is not bid on a display slot)."""
    result: FloatArray = policies.hour[:, traffic.hour] * np.minimum(
        media_match(policies, traffic), 1.0
    )
    return result


def own_deals(policies: PartnerPolicies, traffic: Traffic) -> tuple[BoolArray, FloatArray]:
    """Whether each request carries a deal sold to each partner, and that deal's highest floor."""
    k = len(policies)
    has = np.zeros((k, len(traffic)), dtype=np.bool_)
    floor = np.zeros((k, len(traffic)))
    partners = np.arange(k)[:, None]
    for column in traffic.deals.T:
        present = column >= 0
        safe = np.where(present, column, 0)
        mine = present[None, :] & (policies.deal_owner[safe][None, :] == partners)
        has |= mine
        floor = np.maximum(floor, np.where(mine, policies.deal_floor[safe][None, :], 0.0))
    return has, floor


def finalize(
    policies: PartnerPolicies,
    base: FloatArray,
    affinity: FloatArray,
    own_deal: BoolArray,
    deal_factor: FloatArray,
    private_auction: BoolArray,
) -> FloatArray:
    """Turn base x targeting (K, n) into probabilities: clip, deals, private auctions, leak."""
    p = np.minimum(base[:, None] * affinity, MAX_PROBABILITY)
    # A deal the partner bought is bid on whatever its open-auction targeting says.
    deal = np.minimum(policies.deal_probability[:, None] * deal_factor, MAX_PROBABILITY)
    p = np.where(own_deal, np.maximum(p, deal), p)
    p = np.where(private_auction[None, :] & ~own_deal, p * policies.private_other[:, None], p)
    result: FloatArray = p + policies.leak[:, None] * (1.0 - p)
    return result


def bid_probability(
    policies: PartnerPolicies, traffic: Traffic, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """(oracle, draw), both (n, K), request-major.

    ``draw`` is what each bid is drawn from: the policy times a log-normal factor for what the
    partner knows and the request does not say (its budget, its own user data). ``oracle`` is
    the same policy without that factor, whose mean is one: the best probability anyone holding
    only the request could state, and what a perfect model is measured against.
    """
    affinity = targeting(policies, traffic)
    sigma = policies.noise_sigma[:, None]
    hidden = np.exp(sigma * rng.standard_normal(affinity.shape) - sigma**2 / 2)
    own_deal, _ = own_deals(policies, traffic)
    deals = deal_match(policies, traffic)
    oracle = finalize(policies, policies.base, affinity, own_deal, deals, traffic.private_auction)
    draw = finalize(
        policies, policies.base, affinity * hidden, own_deal, deals, traffic.private_auction
    )
    return np.ascontiguousarray(oracle.T), np.ascontiguousarray(draw.T)


def bid_prices(
    policies: PartnerPolicies, traffic: Traffic, bids: BoolArray, rng: np.random.Generator
) -> FloatArray:
    """CPM prices (n, K) in USD: 0 without a bid, at least every floor that applies with one."""
    _, deal_floor = own_deals(policies, traffic)
    imps = traffic.imps
    value = (
        policies.max_cpm[:, imps.primary_format]
        * policies.country_value[traffic.seen_country]
        * np.exp(rng.normal(-0.5, 0.5, deal_floor.shape))
    )
    floor = np.maximum(imps.max_floor_usd[None, :], deal_floor)
    # Above the floor by a margin: bid shading keeps clearing prices near, not at, the floor.
    lowest = floor * (1.0 + rng.uniform(0.01, 0.25, deal_floor.shape))
    price = np.ceil(np.maximum(value, np.maximum(lowest, 0.01)) * 100.0) / 100.0
    result: FloatArray = np.ascontiguousarray(np.where(bids, price.T, 0.0))
    return result

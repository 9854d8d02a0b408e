"""Unit checks of the generator's parts: identifiers, timeline, traffic columns, policies."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest

from bidfilter.synth.devices import DEVICE_VARIANTS, OS_NAMES, Channel, device_table
from bidfilter.synth.formats import N_FORMATS, N_SIZES
from bidfilter.synth.geography import COUNTRIES, region_table
from bidfilter.synth.identifiers import base64url_tokens, hex_tokens, uuids
from bidfilter.synth.inventory import build_inventory
from bidfilter.synth.partners import build_partners, partner_ids
from bidfilter.synth.policy import PartnerPolicies, bid_prices, bid_probability
from bidfilter.synth.timeline import build_timeline
from bidfilter.synth.traffic import Traffic, TrafficModel

START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_identifiers_are_deterministic_and_well_formed() -> None:
    first = uuids(np.random.default_rng(1), 500)
    assert first == uuids(np.random.default_rng(1), 500)
    assert all(UUID.match(value) for value in first)
    assert len(set(first)) == 500
    assert all(len(token) == 32 for token in hex_tokens(np.random.default_rng(2), 10, 32))
    assert all(
        re.fullmatch(r"[A-Za-z0-9_-]{22}", token)
        for token in base64url_tokens(np.random.default_rng(3), 10, 22)
    )
    assert uuids(np.random.default_rng(4), 0) == []


def test_partner_ids() -> None:
    assert partner_ids(3) == ("dsp-01", "dsp-02", "dsp-03")
    assert partner_ids(120)[0] == "dsp-001"


def test_world_tables_are_consistent() -> None:
    regions = region_table()
    assert regions.weight.sum() == pytest.approx(1.0)
    assert len({country.alpha3 for country in COUNTRIES}) == len(COUNTRIES)
    devices = device_table()
    assert devices.cdf.shape == (len(COUNTRIES), len(Channel), len(DEVICE_VARIANTS))
    assert np.allclose(devices.cdf[:, :, -1], 1.0)
    assert {variant.os_name for variant in DEVICE_VARIANTS} <= set(OS_NAMES)
    # Every channel can be drawn in every country.
    assert (np.diff(devices.cdf, axis=2, prepend=0.0).sum(axis=2) > 0.99).all()


def test_timeline_draws_all_requests_in_order() -> None:
    regions = region_table()
    rng = np.random.default_rng(0)
    timeline = build_timeline(rng, START, 3, 10_000, regions.weight, regions.utcoffset)
    parts = [timeline.draw(rng, first, 2_500) for first in range(0, 10_000, 2_500)]
    ts = np.concatenate([part[0] for part in parts])
    region = np.concatenate([part[1] for part in parts])
    assert (np.diff(ts) >= 0).all()
    start_ms = int(START.timestamp() * 1000)
    assert ts.min() >= start_ms and ts.max() < start_ms + 3 * 86_400_000
    assert region.min() >= 0 and region.max() < regions.n_regions
    assert timeline.hourly_volume.mean() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def world() -> tuple[Traffic, PartnerPolicies]:
    regions = region_table()
    inventory = build_inventory(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    timeline = build_timeline(rng, START, 7, 20_000, regions.weight, regions.utcoffset)
    model = TrafficModel(inventory, regions, device_table())

    def sample(rng: np.random.Generator) -> Traffic:
        return model.draw(rng, *timeline.sample(rng, 5_000))

    policies = build_partners(np.random.default_rng(2), 12, inventory, regions, timeline, sample)
    traffic = model.draw(rng, *timeline.draw(rng, 0, 20_000))
    return traffic, policies


def test_traffic_columns(world: tuple[Traffic, PartnerPolicies]) -> None:
    traffic, _ = world
    n = len(traffic)
    imps = traffic.imps
    assert imps.offsets[0] == 0 and imps.offsets[-1] == len(imps.format)
    assert (np.diff(imps.offsets) >= 1).all()
    assert imps.has_format.shape == (n, N_FORMATS)
    assert (imps.has_format.sum(axis=1) >= 1).all()
    assert imps.has_format[np.arange(n), imps.primary_format].all()
    no_banner = ~imps.has_format[:, 0]
    assert (imps.first_size[no_banner] == N_SIZES).all()
    assert (imps.first_size[~no_banner] < N_SIZES).all()
    assert (imps.max_floor_usd >= 0).all()
    # Deals come only from the publisher's own deal list.
    deals = traffic.deals
    assert ((deals >= 0).sum(axis=1) <= 3).all()
    assert not traffic.private_auction[deals[:, 0] < 0].any()
    # GDPR without consent means no user ids are passed on.
    stripped = (traffic.privacy.gdpr == 1) & ~traffic.privacy.has_consent
    assert not traffic.privacy.has_buyeruid[stripped].any()
    assert not traffic.privacy.has_eids[stripped].any()


def test_policies_and_prices(world: tuple[Traffic, PartnerPolicies]) -> None:
    traffic, policies = world
    rng = np.random.default_rng(3)
    p, draw = bid_probability(policies, traffic, rng)
    assert p.shape == draw.shape == (len(traffic), len(policies))
    assert ((p > 0) & (p < 1)).all()
    assert ((draw > 0) & (draw < 1)).all()
    # The hidden factor has mean one: the oracle is what the draws average to.
    assert abs(draw.mean() / p.mean() - 1) < 0.05
    bids = rng.random(draw.shape) < draw
    prices = bid_prices(policies, traffic, bids, rng)
    assert (prices[~bids] == 0).all()
    assert (prices >= traffic.imps.max_floor_usd[:, None])[bids].all()
    # A CTV buyer does not bid on requests without video.
    if "ctv" in policies.archetypes:
        ctv = policies.archetypes.index("ctv")
        no_video = ~traffic.imps.has_format[:, 1]
        assert p[no_video, ctv].max() < 0.01

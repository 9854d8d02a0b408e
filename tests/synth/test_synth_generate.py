"""End-to-end checks of one generated data set (50k requests, 20 partners): the requests are valid
OpenRTB, the partner outcomes follow the hidden policies, and the traffic has the advertised shape.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from bidfilter.logs import iter_log_batches
from bidfilter.synth import SynthSummary, generate

REQUESTS = 50_000
PARTNERS = 20


@dataclass(frozen=True)
class Generated:
    summary: SynthSummary
    root: Path
    ts_ms: np.ndarray
    requests: list[dict[str, Any]]
    texts: list[str]
    partner: np.ndarray  # (n, K) partner ids
    bid: np.ndarray  # (n, K)
    price: np.ndarray  # (n, K)
    oracle_p: np.ndarray  # (n, K)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("synth") / "logs"
    summary = generate(root, requests=REQUESTS, partners=PARTNERS, seed=7, days=7)
    ts, texts, partner, bid, price, oracle = [], [], [], [], [], []
    for batch in iter_log_batches(root):
        ts.append(batch.column("ts").cast("int64").to_numpy())
        texts.extend(batch.column("request").to_pylist())
        outcomes = batch.column("partners").flatten()
        partner.append(outcomes.field("partner").to_numpy(zero_copy_only=False))
        bid.append(outcomes.field("bid").to_numpy(zero_copy_only=False))
        price.append(outcomes.field("price").to_numpy())
        oracle.append(outcomes.field("oracle_p").to_numpy())
    decoder = msgspec.json.Decoder()
    return Generated(
        summary=summary,
        root=root,
        ts_ms=np.concatenate(ts),
        requests=[decoder.decode(text) for text in texts],
        texts=texts,
        partner=np.concatenate(partner).reshape(-1, PARTNERS),
        bid=np.concatenate(bid).reshape(-1, PARTNERS),
        price=np.concatenate(price).reshape(-1, PARTNERS),
        oracle_p=np.concatenate(oracle).reshape(-1, PARTNERS),
    )


def _max_floor(request: dict[str, Any]) -> float:
    return max(float(imp.get("bidfloor", 0.0)) for imp in request["imp"])


# --- the log files ---


def test_summary_and_files(generated: Generated) -> None:
    summary = generated.summary
    assert summary.requests == REQUESTS == len(generated.requests)
    assert summary.partners == tuple(f"dsp-{i:02d}" for i in range(1, PARTNERS + 1))
    assert (generated.partner == np.array(summary.partners)).all()
    dates = sorted(path.name for path in generated.root.iterdir())
    assert dates == [f"date=2025-03-{day:02d}" for day in range(3, 10)]
    assert [path.parent.name for path in summary.files] == dates
    assert all(path.is_file() for path in summary.files)
    assert summary.start == dt.datetime(2025, 3, 3, tzinfo=dt.UTC)
    assert summary.end == dt.datetime(2025, 3, 10, tzinfo=dt.UTC)
    assert summary.overall_bid_rate == pytest.approx(generated.bid.mean())
    encoded = json.loads(json.dumps(summary.to_dict()))
    assert encoded["bid_rate"]["dsp-01"] == summary.bid_rate["dsp-01"]


def test_each_partition_holds_its_own_day(generated: Generated) -> None:
    for path in generated.summary.files:
        day = dt.date.fromisoformat(path.parent.name.removeprefix("date="))
        ts = np.concatenate(
            [b.column("ts").cast("int64").to_numpy() for b in iter_log_batches(path.parent)]
        )
        days = {dt.datetime.fromtimestamp(t / 1000, dt.UTC).date() for t in (ts.min(), ts.max())}
        assert days == {day}


# --- partner outcomes ---


def test_bid_rates_span_niche_to_broad_partners(generated: Generated) -> None:
    rates = generated.bid.mean(axis=0)
    assert rates.min() < 0.01
    assert 0.12 < rates.max() < 0.26
    assert (rates > 0.002).all()
    assert 0.03 < generated.bid.mean() < 0.09


def test_prices_clear_the_highest_floor_and_are_zero_without_bid(generated: Generated) -> None:
    floors = np.array([_max_floor(request) for request in generated.requests])
    bid, price = generated.bid, generated.price
    assert (price[~bid] == 0).all()
    assert (price[bid] > 0).all()
    assert (price >= floors[:, None])[bid].all()
    deal_floors = np.array(
        [
            max((deal["bidfloor"] for deal in request["imp"][0].get("pmp", {}).get("deals", [])),
                default=0.0)
            for request in generated.requests
        ]
    )  # fmt: skip
    # A partner bidding on a deal it bought clears that deal's floor too; nobody bids absurdly.
    assert np.median(price[bid]) < 20
    assert deal_floors.max() > 0


def test_oracle_probabilities_are_calibrated(generated: Generated) -> None:
    p, bid = generated.oracle_p, generated.bid
    assert ((p >= 0) & (p <= 1)).all()
    assert bid.mean() == pytest.approx(p.mean(), abs=0.002)
    # Per partner, the realised rate is within a few binomial standard errors of the mean p.
    se = np.sqrt(p.mean(axis=0) / len(p))
    assert (np.abs(bid.mean(axis=0) - p.mean(axis=0)) < 5 * se + 1e-3).all()
    assert p[bid].mean() > 5 * p[~bid].mean()


def test_oracle_is_peaky(generated: Generated) -> None:
    """Keeping 99% of the expected bids needs only a minority of the calls."""
    p = np.sort(generated.oracle_p.ravel())[::-1]
    kept = np.searchsorted(np.cumsum(p) / p.sum(), 0.99) + 1
    assert 0.6 < 1 - kept / len(p) < 0.85
    assert np.median(generated.oracle_p) < 0.01


def test_targeting_shows_in_outcomes(generated: Generated) -> None:
    """Some partner bids (almost) only on video, and some only on apps."""
    has_video = np.array([any("video" in imp for imp in r["imp"]) for r in generated.requests])
    is_app = np.array(["app" in r for r in generated.requests])
    bid = generated.bid
    video_share = (bid & has_video[:, None]).sum(axis=0) / np.maximum(bid.sum(axis=0), 1)
    app_share = (bid & is_app[:, None]).sum(axis=0) / np.maximum(bid.sum(axis=0), 1)
    assert video_share.max() > 0.9
    assert app_share.max() > 0.9
    assert app_share.min() < 0.2


# --- the requests ---


def test_every_request_is_a_valid_bid_request(generated: Generated) -> None:
    ids = set()
    media = ("banner", "video", "native", "audio")
    for request, text in zip(generated.requests, generated.texts, strict=True):
        assert json.loads(text)["id"] == request["id"]
        ids.add(request["id"])
        assert request["imp"]
        for imp in request["imp"]:
            assert isinstance(imp["id"], str)
            assert sum(key in imp for key in media) == 1
        assert ("site" in request) != ("app" in request)
        assert request["device"]["ua"]
        assert request["cur"] == ["USD"]
        assert 120 <= request["tmax"] <= 1000
        assert request["at"] in (1, 2)
    assert len(ids) == len(generated.requests)


def test_requests_parse_with_the_project_parser(generated: Generated) -> None:
    from bidfilter.openrtb import parse_bid_request

    for text in generated.texts[:5000]:
        parse_bid_request(text)


def test_both_2_5_ext_and_2_6_locations_appear(generated: Generated) -> None:
    found: Counter[str] = Counter()
    for request in generated.requests:
        regs, user, source = request["regs"], request.get("user", {}), request["source"]
        found["regs.gdpr"] += "gdpr" in regs
        found["regs.ext.gdpr"] += "gdpr" in regs.get("ext", {})
        found["regs.us_privacy"] += "us_privacy" in regs
        found["regs.ext.us_privacy"] += "us_privacy" in regs.get("ext", {})
        found["user.consent"] += "consent" in user
        found["user.ext.consent"] += "consent" in user.get("ext", {})
        found["user.eids"] += "eids" in user
        found["user.ext.eids"] += "eids" in user.get("ext", {})
        found["source.schain"] += "schain" in source
        found["source.ext.schain"] += "schain" in source.get("ext", {})
        # Never both locations in one request.
        assert not ("schain" in source and "ext" in source)
    n = len(generated.requests)
    for location in ("regs.gdpr", "regs.us_privacy", "user.consent", "user.eids"):
        assert found[location] > 0.01 * n, location
        assert found[location.replace(".", ".ext.", 1)] > 0.01 * n, location
    assert found["source.schain"] + found["source.ext.schain"] == n
    assert 0.2 < found["source.ext.schain"] / n < 0.7


def test_inventory_mix(generated: Generated) -> None:
    requests = generated.requests
    n = len(requests)
    media: Counter[str] = Counter()
    for request in requests:
        for key in {key for imp in request["imp"] for key in ("banner", "video", "native", "audio")
                    if key in imp}:  # fmt: skip
            media[key] += 1
    assert media["banner"] > 0.4 * n
    assert media["video"] > 0.1 * n
    assert media["native"] > 0.05 * n
    assert 0.002 * n < media["audio"] < 0.05 * n
    multi = sum(len(request["imp"]) > 1 for request in requests) / n
    assert 0.08 < multi < 0.18
    apps = sum("app" in request for request in requests) / n
    assert 0.2 < apps < 0.6
    # Zipf: the top publisher is big, and there is a long tail.
    publishers = Counter(
        (request.get("site") or request["app"])["publisher"]["id"] for request in requests
    )
    top = publishers.most_common(1)[0][1] / n
    assert 0.02 < top < 0.2
    assert len(publishers) > 300


def test_banners_list_iab_sizes(generated: Generated) -> None:
    sizes = Counter(
        (imp["banner"]["w"], imp["banner"]["h"])
        for request in generated.requests
        for imp in request["imp"]
        if "banner" in imp
    )
    assert {(300, 250), (728, 90), (320, 50)} <= set(sizes)
    for request in generated.requests[:2000]:
        for imp in request["imp"]:
            if "banner" in imp:
                banner = imp["banner"]
                assert banner["format"][0] == {"w": banner["w"], "h": banner["h"]}


def test_video_native_audio_objects(generated: Generated) -> None:
    seen = {"plcmt": 0, "placement": 0, "native": 0, "audio": 0}
    for request in generated.requests:
        for imp in request["imp"]:
            if "video" in imp:
                video = imp["video"]
                assert video["minduration"] <= video["maxduration"]
                assert video["protocols"] and video["mimes"] and video["w"] and video["h"]
                seen["plcmt"] += "plcmt" in video
                seen["placement"] += "placement" in video
            if "native" in imp:
                assert "ver" in json.loads(imp["native"]["request"]) or "native" in json.loads(
                    imp["native"]["request"]
                )
                assert imp["native"]["ver"] in ("1.1", "1.2")
                seen["native"] += 1
            if "audio" in imp:
                assert imp["audio"]["mimes"]
                seen["audio"] += 1
    assert all(count > 0 for count in seen.values()), seen


def test_devices_are_consistent(generated: Generated) -> None:
    devicetypes: Counter[int] = Counter()
    for request in generated.requests:
        device = request["device"]
        devicetypes[device["devicetype"]] += 1
        ua = device["ua"]
        if device["os"] == "iOS":
            assert "iPhone" in ua or "iPad" in ua
        if device["os"] == "Windows":
            assert "Windows NT" in ua and device["devicetype"] == 2
        if device["os"] == "Roku":
            assert ua.startswith("Roku/")
            assert device["devicetype"] in (3, 7)
        if "app" in request:
            assert "ifa" in device and "lmt" in device
        else:
            assert device.get("js") == 1
    assert {1, 2, 3, 4, 5, 7} <= set(devicetypes)


def test_geo_and_privacy(generated: Generated) -> None:
    latlon_only = 0
    eu_gdpr: Counter[int] = Counter()
    eu = {"DEU", "FRA", "ESP", "ITA", "NLD", "POL", "SWE", "GBR"}
    for request in generated.requests:
        geo = request["device"]["geo"]
        if "country" not in geo:
            assert geo["type"] == 1 and "lat" in geo and "lon" in geo
            latlon_only += 1
            continue
        assert len(geo["country"]) == 3 and geo["country"].isupper()
        regs = request["regs"]
        gdpr = regs.get("gdpr", regs.get("ext", {}).get("gdpr"))
        if geo["country"] in eu:
            eu_gdpr[gdpr] += 1
    assert latlon_only > 0.01 * len(generated.requests)
    assert eu_gdpr[1] > 0.85 * sum(eu_gdpr.values())


def test_deals_and_supply_chains(generated: Generated) -> None:
    with_deals = private = 0
    chain_lengths: Counter[int] = Counter()
    for request in generated.requests:
        pmp = request["imp"][0].get("pmp")
        if pmp is not None:
            with_deals += 1
            private += pmp["private_auction"]
            assert 1 <= len(pmp["deals"]) <= 3
        source = request["source"]
        schain = source.get("schain") or source["ext"]["schain"]
        chain_lengths[len(schain["nodes"])] += 1
        assert schain["nodes"][-1]["asi"] == "bidfilter-ssp.com"
    n = len(generated.requests)
    assert 0.03 * n < with_deals < 0.4 * n
    assert 0 < private < with_deals
    assert set(chain_lengths) == {1, 2, 3}


def test_daily_and_weekly_seasonality(generated: Generated) -> None:
    local_hours: Counter[int] = Counter()
    for ts, request in zip(generated.ts_ms.tolist(), generated.requests, strict=True):
        offset = request["device"]["geo"].get("utcoffset")
        if offset is not None:
            local_hours[(ts // 60_000 + offset) // 60 % 24] += 1
    evening = sum(local_hours[h] for h in (19, 20, 21))
    early_morning = sum(local_hours[h] for h in (2, 3, 4))
    assert evening > 3 * early_morning
    days = Counter((generated.ts_ms // 86_400_000).tolist())
    weekdays = [count for day, count in days.items() if (day + 3) % 7 < 5]
    weekend = [count for day, count in days.items() if (day + 3) % 7 >= 5]
    assert np.mean(weekdays) > np.mean(weekend)

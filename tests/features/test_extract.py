"""What the features read from the fields DSPs target on: one request, field by field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bidfilter.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    SET_FEATURES,
    FeatureEncoder,
    FeatureSpec,
    extract,
    load_usd_rates,
)
from bidfilter.openrtb import InvalidRequestError, parse_bid_request

CHROME_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_ON_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
    body.update(fields)
    return body


def features(body: dict[str, Any]) -> tuple[dict[str, float], dict[str, str | None], tuple]:  # type: ignore[type-arg]
    numeric, categorical, sets = extract(parse_bid_request(json.dumps(body)), 1_700_000_000_000)
    return (
        dict(zip(NUMERIC_FEATURES, numeric, strict=True)),
        dict(zip(CATEGORICAL_FEATURES, categorical, strict=True)),
        sets,
    )


def test_the_user_agent_gives_browser_and_os_with_their_major_versions() -> None:
    numeric, categorical, _ = features(request(device={"ua": CHROME_ON_WINDOWS}))
    assert (categorical["browser"], numeric["browser_major"]) == ("chrome", 124.0)
    assert (categorical["ua_os"], numeric["os_major"]) == ("windows", 10.0)
    numeric, categorical, _ = features(request(device={"ua": SAFARI_ON_IPHONE, "osv": "18.1"}))
    assert (categorical["browser"], numeric["browser_major"]) == ("mobile safari", 17.0)
    assert numeric["os_major"] == 18.0  # device.osv, when given, wins over the UA's
    numeric, categorical, _ = features(request(device={"ua": "curl/8.0"}))
    assert categorical["browser"] == "curl" or categorical["browser"] is None
    numeric, categorical, _ = features(request())
    assert categorical["browser"] is None and math.isnan(numeric["browser_major"])


def test_eid_sources_and_categories_are_sets_from_every_location() -> None:
    eids = [{"source": "uidapi.com"}, {"source": "id5-sync.com"}, {"source": "uidapi.com"}]
    body = request(
        site={"cat": ["IAB19"], "pagecat": ["IAB19-6"], "content": {"cat": ["IAB1", "IAB19"]}},
        user={"ext": {"eids": eids}},  # the 2.5 location
    )
    numeric, _, (sources, categories) = features(body)
    assert sources == ["id5-sync.com", "uidapi.com"]
    assert categories == ["IAB1", "IAB19", "IAB19-6"]
    assert numeric["category_count"] == 3
    _, _, (sources, _) = features(request(user={"eids": [{"source": "liveramp.com"}]}))
    assert sources == ["liveramp.com"]  # the 2.6 location


def test_language_carrier_genre_and_the_rest_of_the_targeting_fields() -> None:
    body = request(
        imp=[{"id": "1", "banner": {"w": 320, "h": 50, "pos": 1}, "rwdd": 1, "tagid": "slot-7"}],
        app={"bundle": "com.x", "content": {"language": "FR", "genre": "Sports", "livestream": 1}},
        device={"carrier": "Vodafone", "geo": {"country": "DEU", "type": 2}},
        user={"data": [{"name": "bluekai", "segment": [{"id": "1"}]}]},
        bcat=["IAB25", "IAB26"],
        badv=["x.com"],
    )
    numeric, categorical, _ = features(body)
    assert categorical["language"] == "fr"  # content.language when the device has none
    assert categorical["carrier"] == "vodafone" and categorical["genre"] == "sports"
    assert categorical["tagid"] == "slot-7" and categorical["user_data_1"] == "bluekai"
    assert numeric["banner_pos"] == 1 and numeric["rewarded"] == 1 and numeric["livestream"] == 1
    assert (numeric["bcat_count"], numeric["badv_count"]) == (2, 1)
    assert (numeric["geo_type"], numeric["user_data_count"]) == (2, 1)
    _, categorical, _ = features(request(device={"language": "en-GB"}))
    assert categorical["language"] == "en"


def test_a_floor_in_a_currency_without_a_rate_is_kept_in_its_own_unit() -> None:
    body = request(imp=[{"id": "1", "banner": {}, "bidfloor": 250, "bidfloorcur": "XAF"}])
    numeric, categorical, _ = features(body)
    assert math.isnan(numeric["floor_max"])  # not comparable in USD...
    assert numeric["floor_local_max"] == 250  # ...but not lost
    assert categorical["floor_currency"] == "XAF"
    body = request(imp=[{"id": "1", "banner": {}, "bidfloor": 2, "bidfloorcur": "eur"}])
    numeric, categorical, _ = features(body)
    assert numeric["floor_max"] == pytest.approx(2 * load_usd_rates()["EUR"])
    assert categorical["floor_currency"] == "EUR" and math.isnan(numeric["floor_local_max"])


def test_the_rates_file_can_be_replaced_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"usd_per_unit": {"USD": 1, "XAF": 0.0016}}))
    rates = load_usd_rates(path)
    parsed = parse_bid_request(
        json.dumps(request(imp=[{"id": "1", "banner": {}, "bidfloor": 250, "bidfloorcur": "XAF"}]))
    )
    numeric, _, _ = extract(parsed, 0, rates)
    assert numeric[NUMERIC_FEATURES.index("floor_max")] == pytest.approx(0.4)
    for bad, named in (
        ({"usd_per_unit": {"euro": 1}}, "'euro'"),
        ({"usd_per_unit": {"EUR": -1}}, "EUR"),
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=named):
            load_usd_rates(path)


def test_malformed_targeting_fields_are_dropped_not_refused() -> None:
    body = request(
        site={"domain": "x.com", "cat": "IAB1", "content": {"language": 5, "cat": ["IAB2"]}},
        device={"language": ["en"], "carrier": 7, "ua": CHROME_ON_WINDOWS},
        bcat="IAB25",
    )
    parsed = parse_bid_request(json.dumps(body))
    assert parsed.site is not None and parsed.site.domain == "x.com"
    assert parsed.site.cat is None and parsed.bcat is None
    assert parsed.site.content is not None and parsed.site.content.cat == ["IAB2"]
    assert parsed.device is not None and parsed.device.language is None
    assert parsed.device.ua == CHROME_ON_WINDOWS
    # A field a check or the request's identity needs is still refused, naming it.
    with pytest.raises(InvalidRequestError) as refused:
        parse_bid_request(json.dumps(request(site={"cat": "IAB1"}, tmax="fast")))
    assert refused.value.field == "tmax"


def test_set_members_become_the_columns_the_spec_keeps() -> None:
    spec = FeatureSpec(
        vocabularies={name: [] for name in CATEGORICAL_FEATURES},
        partners=["p"],
        sets={"eid_source": ["uidapi.com", "liveramp.com"], "category": ["IAB1"]},
    )
    assert SET_FEATURES == ("eid_source", "category")
    start = len(NUMERIC_FEATURES)
    assert spec.names[start : start + 3] == [
        "eid_source=uidapi.com",
        "eid_source=liveramp.com",
        "category=IAB1",
    ]
    body = request(user={"eids": [{"source": "liveramp.com"}, {"source": "other.org"}]})
    row = FeatureEncoder(spec).request_vector(parse_bid_request(json.dumps(body)), 0)
    assert list(row[start : start + 3]) == [0.0, 1.0, 0.0]
    assert FeatureSpec.from_dict(spec.to_dict()) == spec

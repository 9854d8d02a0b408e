"""The 2.5 and 2.6 locations of the privacy, identity, supply-chain and location signals."""

from __future__ import annotations

import json
from typing import Any

from bidfilter.openrtb import parse_bid_request
from bidfilter.openrtb.signals import (
    RegsSignals,
    consent,
    eids,
    gdpr,
    geo,
    regs_signals,
    schain,
    us_privacy,
    user_signals,
)


def request(**fields: Any) -> bytes:
    body: dict[str, Any] = {"id": "r1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
    body.update(fields)
    return json.dumps(body).encode()


def test_2_6_locations() -> None:
    parsed = parse_bid_request(
        request(
            regs={"gdpr": 1, "us_privacy": "1YNN"},
            user={"consent": "CO-abc", "eids": [{"source": "id5"}, {"source": "uid2"}]},
            source={"schain": {"complete": 1, "nodes": [{"asi": "a.com"}, {"asi": "b.com"}]}},
        )
    )
    assert gdpr(parsed) == 1
    assert us_privacy(parsed) == "1YNN"
    assert consent(parsed) == "CO-abc"
    assert [e.source for e in eids(parsed)] == ["id5", "uid2"]
    chain = schain(parsed)
    assert chain is not None and chain.nodes is not None and len(chain.nodes) == 2


def test_2_5_ext_locations() -> None:
    parsed = parse_bid_request(
        request(
            regs={"ext": {"gdpr": 0, "us_privacy": "1---"}},
            user={"ext": {"consent": "CO-x", "eids": [{"source": "id5"}]}},
            source={"ext": {"schain": {"nodes": [{"asi": "a.com"}]}}},
        )
    )
    assert gdpr(parsed) == 0
    assert us_privacy(parsed) == "1---"
    assert consent(parsed) == "CO-x"
    assert len(eids(parsed)) == 1
    chain = schain(parsed)
    assert chain is not None and chain.nodes is not None and len(chain.nodes) == 1


def test_2_6_location_wins_over_ext() -> None:
    parsed = parse_bid_request(request(regs={"gdpr": 1, "ext": {"gdpr": 0}}))
    assert gdpr(parsed) == 1


def test_signals_mix_the_two_locations_field_by_field() -> None:
    parsed = parse_bid_request(
        request(
            regs={"gdpr": 1, "ext": {"gdpr": 0, "us_privacy": "1YNN", "gpp": "DBAB"}},
            user={"consent": "c26", "ext": {"consent": "c25", "eids": [{"source": "s"}]}},
        )
    )
    assert regs_signals(parsed) == RegsSignals(1, "1YNN", "DBAB")
    signals = user_signals(parsed)
    assert signals.consent == "c26"
    assert [eid.source for eid in signals.eids] == ["s"]


def test_malformed_ext_counts_as_absent() -> None:
    parsed = parse_bid_request(
        request(regs={"ext": "oops"}, user={"ext": {"consent": 5}}, source={"ext": {"schain": 1}})
    )
    assert gdpr(parsed) is None
    assert consent(parsed) is None
    assert schain(parsed) is None
    assert eids(parsed) == []


def test_geo_falls_back_to_user_geo() -> None:
    parsed = parse_bid_request(request(user={"geo": {"country": "FRA"}}))
    located = geo(parsed)
    assert located is not None and located.country == "FRA"

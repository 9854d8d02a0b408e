"""Sample values of the IDL's types, and hypothesis strategies for random ones."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from bidfilter.thrift import (
    AuctionOutcome,
    FilterRequest,
    FilterResponse,
    ModelInfo,
    Outcome,
    PartnerDecision,
    PartnerOutcome,
)

# -- sample values ---------------------------------------------------------------------------

OPENRTB = (
    b'{"id":"req-7f3a","imp":[{"id":"1","banner":{"w":300,"h":250}}],'
    b'"site":{"domain":"news.example.com","page":"https://news.example.com/a"},'
    b'"device":{"os":"iOS","ua":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",'
    b'"geo":{"country":"FRA"}},"user":{"id":"u-91"},"tmax":120,"at":1,"cur":["EUR"]}'
)
PARTNERS = [f"dsp-{index:02d}" for index in range(20)]

REQUESTS = {
    "minimal": FilterRequest(b"{}"),
    "candidates": FilterRequest(OPENRTB, PARTNERS),
    "deadline": FilterRequest(OPENRTB, None, 35),
    "everything": FilterRequest(OPENRTB * 8, ["dsp-é", "", "ü" * 200], -1),
    "no candidates": FilterRequest(OPENRTB, [], 0x7FFFFFFF),
}


def make_response(count: int = 20, **overrides: Any) -> FilterResponse:
    decisions = [
        PartnerDecision(f"dsp-{i:02d}", i / 20, i % 3 != 0, i % 5 == 0, 0.1 + i / 100)
        for i in range(count)
    ]
    values: dict[str, Any] = {
        "request_id": "req-7f3a",
        "decisions": decisions,
        "model_version": "2026-11-25T10-00-00Z",
        "outcome": Outcome.SCORED,
        "server_us": 412,
        "error": None,
    }
    values.update(overrides)
    return FilterResponse(**values)


RESPONSES = {
    "scored": make_response(),
    "one decision": make_response(1, server_us=None),
    "fail open": make_response(
        0, outcome=Outcome.FAIL_OPEN_ERROR, server_us=-(2**63), error="model crashed"
    ),
    "error only": make_response(3, server_us=None, error="é"),
    "unknown partner": make_response(2, decisions=[PartnerDecision("new", -1.0, True, True, 0)]),
    "propensities": make_response(
        decisions=[
            PartnerDecision(
                f"dsp-{i:02d}", i / 20, i % 3 != 0, i % 5 == 0, 0.1, 1.0 if i % 3 else 0.05
            )
            for i in range(20)
        ]
    ),
    "control": make_response(
        3,
        control=True,
        decisions=[PartnerDecision(f"dsp-{i}", 0.01, True, False, 0.5, 1.0) for i in range(3)],
    ),
    "control false, error": make_response(2, control=False, error="x", server_us=None),
    "control, no server_us": make_response(1, control=True, server_us=None),
    "logged": make_response(4, logged=True),
    "control, logged false, no server_us": make_response(
        2, control=True, logged=False, server_us=None
    ),
}

OUTCOMES = {
    "none": [],
    "one, every field": [
        AuctionOutcome(
            "req-1",
            [
                PartnerOutcome("dsp-01", True, True, 2.5),
                PartnerOutcome("dsp-02", True, False),
                PartnerOutcome("dsp-03", False),
                PartnerOutcome("dsp-04", True, timed_out=True),
                PartnerOutcome("dsp-05", True, error=True, bid=False, price=0.0),
            ],
        )
    ],
    "many": [
        AuctionOutcome(f"r{i}", [PartnerOutcome(f"dsp-{j}", j % 2 == 0) for j in range(i % 4)])
        for i in range(20)
    ],
}

MODEL_INFOS = {
    "two partners": ModelInfo("v7", ["a", "b"], {"a": 0.05, "b": 0.5}, "2026-11-25T10:00:00Z"),
    "empty": ModelInfo("v0", [], {}, ""),
    "twenty": ModelInfo("v8", PARTNERS, {p: i / 40 for i, p in enumerate(PARTNERS)}, "now"),
}


# -- strategies ------------------------------------------------------------------------------

i32s = st.integers(-(2**31), 2**31 - 1)
i64s = st.integers(-(2**63), 2**63 - 1)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # no lone surrogates
doubles = st.floats(allow_nan=False)

filter_requests = st.builds(
    FilterRequest,
    openrtb=st.binary(max_size=600),
    candidates=st.none() | st.lists(texts, max_size=20),
    deadline_ms=st.none() | i32s,
)
partner_decisions = st.builds(
    PartnerDecision,
    partner=texts,
    bid_probability=doubles,
    send=st.booleans(),
    explore=st.booleans(),
    threshold=doubles,
    propensity=st.none() | doubles,
)
filter_responses = st.builds(
    FilterResponse,
    request_id=texts,
    decisions=st.lists(partner_decisions, max_size=20),
    model_version=texts,
    outcome=st.sampled_from(Outcome),
    server_us=st.none() | i64s,
    error=st.none() | texts,
    control=st.none() | st.booleans(),
    logged=st.none() | st.booleans(),
)
model_infos = st.builds(
    ModelInfo,
    version=texts,
    partners=st.lists(texts, max_size=20),
    thresholds=st.dictionaries(texts, doubles, max_size=20),
    loaded_at=texts,
)

"""The decision log: holding sampled decisions, joining reported outcomes, the records it writes."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from bidfilter.logs import conform_batch
from bidfilter.logs.decision_log import DecisionLog, Report, check_outcome, encode_records
from bidfilter.thrift import (
    AuctionOutcome,
    FilterResponse,
    Outcome,
    PartnerDecision,
    PartnerOutcome,
)

DAY_MS = 86_400_000


def _response(request_id: str, *, control: bool | None = None) -> FilterResponse:
    return FilterResponse(
        request_id=request_id,
        decisions=[
            PartnerDecision("a", 0.9, True, False, 0.5, 1.0),
            PartnerDecision("b", 0.1, True, True, 0.5, 0.05),  # explored
            PartnerDecision("c", 0.1, False, False, 0.5, 0.05),
            PartnerDecision("d", 0.1, False, False, 0.5, 0.05),
        ],
        model_version="v1",
        outcome=Outcome.SCORED,
        control=control,
    )


def _request(request_id: str) -> bytes:
    return json.dumps({"id": request_id, "imp": [{"id": "1"}]}).encode()


def test_a_reported_decision_is_joined_once() -> None:
    log = DecisionLog(share=0.5, wait_s=10, max_bytes=1 << 20)
    assert log.hold(_request("r1"), _response("r1"), ts_ms=1000, now=0.0)
    outcome = AuctionOutcome("r1", [PartnerOutcome("a", True, True, 2.5)])
    assert log.report(outcome, now=1.0) is Report.ACCEPTED
    assert log.report(outcome, now=2.0) is Report.DUPLICATE
    assert log.report(AuctionOutcome("r2", []), now=2.0) is Report.UNKNOWN
    assert len(log) == 0 and log.pending_records == 1
    counts = log.counts
    assert (counts.held, counts.accepted, counts.duplicate, counts.unknown) == (1, 1, 1, 1)


def test_an_unreported_decision_expires() -> None:
    log = DecisionLog(share=1.0, wait_s=10, max_bytes=1 << 20)
    log.hold(_request("r1"), _response("r1"), ts_ms=0, now=0.0)
    log.hold(_request("r2"), _response("r2"), ts_ms=0, now=5.0)
    assert log.expire(now=12.0) == 1
    assert len(log) == 1
    assert log.report(AuctionOutcome("r1", []), now=12.0) is Report.UNKNOWN
    # Past its wait but not yet swept: still not joined.
    assert log.report(AuctionOutcome("r2", []), now=16.0) is Report.UNKNOWN
    assert log.bytes == 0 and log.counts.expired == 2


def test_memory_is_bounded_and_nothing_accepted_is_evicted() -> None:
    request = _request("r0")
    log = DecisionLog(share=1.0, wait_s=60, max_bytes=3 * (len(request) + 700))
    held = [log.hold(_request(f"r{i}"), _response(f"r{i}"), ts_ms=0, now=0.0) for i in range(10)]
    assert held[:3] == [True] * 3 and not any(held[3:])
    assert log.counts.not_held_full == 7
    for i in range(3):
        assert log.report(AuctionOutcome(f"r{i}", []), now=1.0) is Report.ACCEPTED
    # Joined records still count until written: the budget is still spent.
    assert not log.hold(_request("r11"), _response("r11"), ts_ms=0, now=1.0)
    records = log.take()
    log.put_back(records[:1])  # one write failed: kept, first in line
    log.written(records[1:])
    assert log.pending_records == 1
    assert log.hold(_request("r12"), _response("r12"), ts_ms=0, now=1.0)


def test_a_retried_request_keeps_its_first_decision() -> None:
    log = DecisionLog(share=1.0, wait_s=60, max_bytes=1 << 20)
    assert log.hold(_request("r1"), _response("r1"), ts_ms=0, now=0.0)
    assert not log.hold(_request("r1"), _response("r1"), ts_ms=0, now=0.0)
    assert not log.hold(_request(""), _response(""), ts_ms=0, now=0.0)


def test_records_follow_the_log_schema_and_the_labelling_rules() -> None:
    log = DecisionLog(share=0.25, wait_s=60, max_bytes=1 << 20)
    log.hold(_request("r1"), _response("r1", control=True), ts_ms=DAY_MS - 1, now=0.0)
    log.hold(_request("r2"), _response("r2"), ts_ms=DAY_MS + 5, now=0.0)
    log.report(
        AuctionOutcome(
            "r1",
            [
                PartnerOutcome("a", True, True, 2.5),
                PartnerOutcome("b", True, False),
                PartnerOutcome("c", True, None, 1.5),  # overrode the filter; bid from the price
                PartnerOutcome("x", True, True, 0.7),  # not a candidate
            ],
        ),
        now=1.0,
    )
    log.report(
        AuctionOutcome("r2", [PartnerOutcome("a", True, timed_out=True)]),
        now=1.0,
    )
    files = encode_records(log.take())
    assert sorted(files) == ["1970-01-01", "1970-01-02"]  # one file per UTC date
    data, records = files["1970-01-01"]
    assert [record.request_id for record in records] == ["r1"]
    batch = pq.read_table(io.BytesIO(data)).to_batches()[0]
    conform_batch(batch, batch.schema.names)  # validates
    row = batch.to_pylist()[0]
    assert row["request_id"] == "r1" and json.loads(row["request"])["id"] == "r1"
    assert row["control"] is True and row["sample_rate"] == 0.25
    entries = {entry["partner"]: entry for entry in row["partners"]}
    assert (entries["a"]["sent"], entries["a"]["bid"], entries["a"]["price"]) == (True, True, 2.5)
    assert entries["a"]["propensity"] == 1.0 and entries["a"]["model_version"] == "v1"
    assert (entries["b"]["sent"], entries["b"]["bid"], entries["b"]["propensity"]) == (
        True,
        False,
        0.05,
    )
    # Called although the filter said no: the SSP's rule called it, propensity 1.
    assert (entries["c"]["sent"], entries["c"]["bid"], entries["c"]["propensity"]) == (
        True,
        True,
        1.0,
    )
    # Not reported: not called, no label, the decision's propensity.
    assert (entries["d"]["sent"], entries["d"]["bid"], entries["d"]["propensity"]) == (
        False,
        False,
        0.05,
    )
    assert entries["x"]["sent"] and entries["x"]["propensity"] == 1.0
    assert entries["x"]["model_version"] is None
    second = pq.read_table(io.BytesIO(files["1970-01-02"][0])).to_pylist()[0]
    timed_out = {entry["partner"]: entry for entry in second["partners"]}["a"]
    assert not timed_out["sent"] and not timed_out["bid"]  # no answer: no label


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        (AuctionOutcome("", []), "outcomes[0].request_id"),
        (AuctionOutcome("r", [PartnerOutcome("", True)]), "outcomes[0].partners[0].partner"),
        (
            AuctionOutcome("r", [PartnerOutcome("a", True), PartnerOutcome("a", False)]),
            "outcomes[0].partners[1].partner",
        ),
        (
            AuctionOutcome("r", [PartnerOutcome("a", True, True, float("nan"))]),
            "outcomes[0].partners[0].price",
        ),
        (
            AuctionOutcome("r", [PartnerOutcome("a", True, True, -1.0)]),
            "outcomes[0].partners[0].price",
        ),
        (AuctionOutcome("r", [PartnerOutcome("a", False, True)]), "outcomes[0].partners[0].bid"),
        (
            AuctionOutcome("r", [PartnerOutcome("a", True, False, 2.0)]),
            "outcomes[0].partners[0].price",
        ),
        (
            AuctionOutcome("r", [PartnerOutcome(f"p{i}", True) for i in range(4)]),
            "outcomes[0].partners",
        ),
    ],
)
def test_a_malformed_outcome_names_its_field(outcome: AuctionOutcome, field: str) -> None:
    problem = check_outcome(outcome, "outcomes[0]", max_partners=3)
    assert problem is not None and problem[0] == field


def test_a_wellformed_outcome_passes() -> None:
    outcome = AuctionOutcome(
        "r", [PartnerOutcome("a", True, True, 2.0), PartnerOutcome("b", False)]
    )
    assert check_outcome(outcome, "outcomes[0]", max_partners=3) is None

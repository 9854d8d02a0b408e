"""The structs of ``idl/bidfilter.thrift`` as Python values (msgspec Structs: small, fast to build).

Field order and ids follow the IDL; a Thrift ``optional`` field is ``None`` when absent. The
Structs are ``gc=False``: they hold only strings, numbers and lists of those, so they never
form reference cycles, and the collector has a few thousand fewer objects to scan per second.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


class Outcome(IntEnum):
    """How a response was produced. Every FAIL_OPEN_* answer sends the request to everyone."""

    SCORED = 0
    FAIL_OPEN_NO_MODEL = 1
    FAIL_OPEN_DEADLINE = 2
    FAIL_OPEN_OVERLOAD = 3
    FAIL_OPEN_ERROR = 4


class FilterRequest(msgspec.Struct, gc=False):
    """One OpenRTB request (UTF-8 JSON bytes) and the partners to decide on."""

    openrtb: bytes
    candidates: list[str] | None = None
    deadline_ms: int | None = None


class PartnerDecision(msgspec.Struct, gc=False):
    """Whether to send the request to one partner, and why."""

    partner: str
    bid_probability: float
    send: bool
    explore: bool
    threshold: float
    propensity: float | None = None


class FilterResponse(msgspec.Struct, gc=False):
    """The decisions for one request, one per candidate, in candidate order."""

    request_id: str
    decisions: list[PartnerDecision]
    model_version: str
    outcome: Outcome
    server_us: int | None = None
    error: str | None = None
    control: bool | None = None
    logged: bool | None = None


class ModelInfo(msgspec.Struct, gc=False):
    """The model a server process is serving."""

    version: str
    partners: list[str]
    thresholds: dict[str, float]
    loaded_at: str


class InvalidRequest(msgspec.Struct, gc=False):
    """The IDL's ``InvalidRequest`` exception, as data: ``field`` names the offending field."""

    message: str
    field: str


class PartnerOutcome(msgspec.Struct, gc=False):
    """What the SSP did with one partner of a request: called it, and did it bid, at what price.
    A call that timed out or failed has no answer, so no label."""

    partner: str
    called: bool
    bid: bool | None = None
    price: float | None = None
    timed_out: bool | None = None
    error: bool | None = None


class AuctionOutcome(msgspec.Struct, gc=False):
    """One request's outcome, reported after its auction (``report_outcomes``)."""

    request_id: str
    partners: list[PartnerOutcome]


class OutcomeReceipt(msgspec.Struct, gc=False):
    """How many outcomes of one ``report_outcomes`` call were joined with a logged decision
    (``accepted``), had none here (``unknown``) or repeated a report (``duplicate``)."""

    accepted: int
    unknown: int
    duplicate: int

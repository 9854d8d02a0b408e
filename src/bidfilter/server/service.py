"""The application: answers each call with a model, or fails open without one, and records it.

No I/O here: the dispatcher hands in a decoded call with the time it arrived and its
connection's reply encoder (a pure codec), and gets back the reply's bytes. A call reads
``self.model`` once, so a hot swap between two calls never mixes versions inside one.

Every call is recorded here, once, as a (method, result, latency) triple: the methods that
decide (``filter``, ``filter_batch``) where their result is known, the others in :meth:`answer`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import cast

from bidfilter.logs.decision_log import Report, check_outcome
from bidfilter.openrtb import InvalidRequestError, ParseLimits, parse_bid_request
from bidfilter.scoring import Exploration, ServingModel, Verdict, decide, fail_open
from bidfilter.server.metrics import Method, Result, WorkerMetrics
from bidfilter.server.outcome_log import OutcomeLog
from bidfilter.settings import Settings
from bidfilter.thrift import (
    ApplicationExceptionType,
    AuctionOutcome,
    Call,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    Outcome,
    OutcomeReceipt,
    RejectedCall,
    ReplyEncoder,
)

log = logging.getLogger(__name__)

_METHOD_OF_NAME = {method.label: method for method in Method}
_RESULT_OF_OUTCOME = tuple(Result[outcome.name] for outcome in Outcome)  # by Outcome value
# Members looked up once: an enum member read off its class costs more than the counting.
_FILTER, _FILTER_BATCH = Method.FILTER, Method.FILTER_BATCH
_OK, _INVALID = Result.OK, Result.INVALID

_Answer = Callable[[ReplyEncoder, Call, int, bool], bytes]


class FilterService:
    def __init__(
        self, settings: Settings, metrics: WorkerMetrics, outcome_log: OutcomeLog | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.outcome_log = outcome_log
        self.model: ServingModel | None = None
        self.generation = 0
        self._limits = ParseLimits(max_bytes=settings.max_message_bytes)
        self._exploration = Exploration(
            rate=settings.exploration_rate,
            min_partner=settings.min_partner_exploration,
            sparse_partner=settings.sparse_partner_exploration,
        )
        self._control_share = settings.control_share
        self._errors_logged = 0
        # The IDL's methods: what answers a call of each.
        self._answers: dict[str, _Answer] = {
            "filter": self._answer_filter,
            "filter_batch": self._answer_filter_batch,
            "model_info": self._answer_model_info,
            "ping": self._answer_ping,
            "report_outcomes": self._answer_report_outcomes,
        }

    def swap(self, model: ServingModel, generation: int) -> None:
        previous = self.model
        self.model = model
        self.generation = generation
        self.metrics.set("model_generation", generation)
        log.info(
            "serving model %s (was %s)", model.version, previous.version if previous else "none"
        )

    # --- calls --------------------------------------------------------------------------------

    def answer(
        self, encoder: ReplyEncoder, call: Call | RejectedCall, arrived_ns: int, shed: bool
    ) -> bytes | None:
        """The reply to one call (``None`` for a oneway call); ``shed``: the queue was full."""
        if isinstance(call, RejectedCall):
            method = _METHOD_OF_NAME.get(call.method, Method.OTHER)
            self.metrics.call(method, Result.REJECTED, _since(arrived_ns))
            return None if call.oneway else encoder.rejection(call)
        answer = self._answers.get(call.method, self._answer_unknown)
        try:
            reply = answer(encoder, call, arrived_ns, shed)
        except Exception as exc:
            log.exception("call %s failed", call.method)
            method = _METHOD_OF_NAME.get(call.method, Method.OTHER)
            self.metrics.call(method, Result.FAIL_OPEN_ERROR, 0.0)
            reply = encoder.application_exception(
                call.method, call.seqid, ApplicationExceptionType.INTERNAL_ERROR, type(exc).__name__
            )
        return None if call.oneway else reply

    def _answer_filter(
        self, encoder: ReplyEncoder, call: Call, arrived_ns: int, shed: bool
    ) -> bytes:
        assert isinstance(call.args, FilterRequest)
        try:
            return encoder.filter(call.seqid, self.filter(call.args, arrived_ns, shed))
        except InvalidRequestError as error:
            return encoder.invalid_request(
                call.seqid, InvalidRequest(message=error.message, field=error.field)
            )

    def _answer_filter_batch(
        self, encoder: ReplyEncoder, call: Call, arrived_ns: int, shed: bool
    ) -> bytes:
        assert isinstance(call.args, list)  # of FilterRequest: the method's args say so
        try:
            responses = self.filter_batch(cast("list[FilterRequest]", call.args), arrived_ns, shed)
        except InvalidRequestError as error:
            return encoder.application_exception(
                call.method, call.seqid, ApplicationExceptionType.PROTOCOL_ERROR, str(error)
            )
        return encoder.filter_batch(call.seqid, responses)

    def _answer_model_info(
        self, encoder: ReplyEncoder, call: Call, arrived_ns: int, shed: bool
    ) -> bytes:
        self.metrics.call(Method.MODEL_INFO, _OK, _since(arrived_ns))
        return encoder.model_info(call.seqid, self.model_info())

    def _answer_ping(self, encoder: ReplyEncoder, call: Call, arrived_ns: int, shed: bool) -> bytes:
        self.metrics.call(Method.PING, _OK, _since(arrived_ns))
        return encoder.ping(call.seqid, "pong")

    def _answer_report_outcomes(
        self, encoder: ReplyEncoder, call: Call, arrived_ns: int, shed: bool
    ) -> bytes:
        assert isinstance(call.args, list)  # of AuctionOutcome: the method's args say so
        try:
            receipt = self.report_outcomes(cast("list[AuctionOutcome]", call.args))
        except InvalidRequestError as error:
            self.metrics.call(Method.REPORT_OUTCOMES, _INVALID, _since(arrived_ns))
            return encoder.invalid_request(
                call.seqid,
                InvalidRequest(message=error.message, field=error.field),
                "report_outcomes",
            )
        self.metrics.call(Method.REPORT_OUTCOMES, _OK, _since(arrived_ns))
        return encoder.report_outcomes(call.seqid, receipt)

    def _answer_unknown(
        self, encoder: ReplyEncoder, call: Call, arrived_ns: int, shed: bool
    ) -> bytes:
        self.metrics.call(Method.OTHER, Result.REJECTED, _since(arrived_ns))
        return encoder.application_exception(
            call.method,
            call.seqid,
            ApplicationExceptionType.UNKNOWN_METHOD,
            f"no method {call.method!r}",
        )

    # --- methods ------------------------------------------------------------------------------

    def filter(self, request: FilterRequest, arrived_ns: int, shed: bool) -> FilterResponse:
        """Decide for one request. Raises ``InvalidRequestError`` for a request to refuse."""
        try:
            response = self._filter(request, arrived_ns, shed)
        except InvalidRequestError:
            self.metrics.call(_FILTER, _INVALID, _since(arrived_ns))
            raise
        latency_us = (time.perf_counter_ns() - arrived_ns) / 1000
        response.server_us = int(latency_us)
        self.metrics.call(_FILTER, _RESULT_OF_OUTCOME[response.outcome], latency_us)
        return response

    def filter_batch(
        self, requests: Sequence[FilterRequest], arrived_ns: int, shed: bool
    ) -> list[FilterResponse]:
        """Decide for each request; an invalid one gets ``error`` set and everyone sent.
        Raises ``InvalidRequestError`` for a batch over the limits."""
        try:
            self._check_batch(requests)
        except InvalidRequestError:
            self.metrics.call(_FILTER_BATCH, _INVALID, _since(arrived_ns))
            raise
        responses = []
        for request in requests:
            try:
                response = self._filter(request, arrived_ns, shed)
            except InvalidRequestError as error:
                verdict = fail_open(request.candidates, self.model)
                self._count_partners(verdict)
                response = FilterResponse(
                    request_id="",
                    decisions=verdict.decisions,
                    model_version=self.model.version if self.model else "",
                    outcome=Outcome.FAIL_OPEN_ERROR,
                    error=str(error),
                )
            response.server_us = (time.perf_counter_ns() - arrived_ns) // 1000
            responses.append(response)
        latency_us = (time.perf_counter_ns() - arrived_ns) / 1000
        self.metrics.call(_FILTER_BATCH, _OK, latency_us)
        return responses

    def _check_batch(self, requests: Sequence[FilterRequest]) -> None:
        if len(requests) > self.settings.max_batch:
            raise InvalidRequestError(
                "requests", f"{len(requests)} requests, over the {self.settings.max_batch} limit"
            )
        # Every item's limit before any work: an over-limit item must not be answered fail-open
        # with its candidates echoed (a million ids make a 24 MB reply and a plan to cache).
        limit = self.settings.max_candidates
        for index, request in enumerate(requests):
            if request.candidates is not None and len(request.candidates) > limit:
                raise InvalidRequestError(
                    f"requests[{index}].candidates",
                    f"{len(request.candidates)} candidates, over the {limit} limit",
                )

    def report_outcomes(self, outcomes: Sequence[AuctionOutcome]) -> OutcomeReceipt:
        """Join reported outcomes with held decisions. Every outcome is checked before any is
        taken: a malformed one refuses the call (``InvalidRequestError`` naming the field)."""
        if len(outcomes) > self.settings.max_batch:
            raise InvalidRequestError(
                "outcomes", f"{len(outcomes)} outcomes, over the {self.settings.max_batch} limit"
            )
        for index, outcome in enumerate(outcomes):
            problem = check_outcome(outcome, f"outcomes[{index}]", self.settings.max_candidates)
            if problem is not None:
                raise InvalidRequestError(*problem)
        if self.outcome_log is None:
            self.metrics.add("outcomes_unknown", len(outcomes))
            return OutcomeReceipt(accepted=0, unknown=len(outcomes), duplicate=0)
        counts = self.outcome_log.report(outcomes)
        return OutcomeReceipt(
            accepted=counts[Report.ACCEPTED],
            unknown=counts[Report.UNKNOWN],
            duplicate=counts[Report.DUPLICATE],
        )

    def model_info(self) -> ModelInfo:
        model = self.model
        if model is None:
            return ModelInfo(version="", partners=[], thresholds={}, loaded_at="")
        return ModelInfo(
            version=model.version,
            partners=list(model.partners),
            thresholds=dict(zip(model.partners, model.thresholds.tolist(), strict=True)),
            loaded_at=model.loaded_at,
        )

    # --- the decision ---------------------------------------------------------------------------

    def _deadline_ms(self, request: FilterRequest, tmax: int | None) -> float:
        if request.deadline_ms is not None:  # positive: checked on arrival
            return float(request.deadline_ms)
        if tmax:
            return tmax * self.settings.deadline_share_of_tmax
        return self.settings.default_deadline_ms

    def _filter(self, request: FilterRequest, arrived_ns: int, shed: bool) -> FilterResponse:
        candidates = request.candidates
        if candidates is not None and len(candidates) > self.settings.max_candidates:
            raise InvalidRequestError(
                "candidates",
                f"{len(candidates)} candidates, over the {self.settings.max_candidates} limit",
            )
        if request.deadline_ms is not None and request.deadline_ms <= 0:
            # Silently using tmax instead would hide a client's bug (a unit error, an unset 0).
            raise InvalidRequestError(
                "deadline_ms",
                f"must be a positive number of milliseconds, not {request.deadline_ms}",
            )
        model = self.model
        if shed:
            # Answered before the request is even parsed (parsing is most of what a fail-open
            # answer costs): under overload every microsecond saved goes to draining the queue.
            # The request is not validated then, and the response's request_id is empty.
            everyone = fail_open(candidates, model)
            self._count_partners(everyone)
            return FilterResponse(
                request_id="",
                decisions=everyone.decisions,
                model_version=model.version if model is not None else "",
                outcome=Outcome.FAIL_OPEN_OVERLOAD,
            )
        bid_request = parse_bid_request(request.openrtb, self._limits)
        outcome = Outcome.SCORED
        verdict: Verdict | None = None
        error = None
        if model is None:
            outcome = Outcome.FAIL_OPEN_NO_MODEL
        else:
            waited_ms = (time.perf_counter_ns() - arrived_ns) / 1e6
            if waited_ms >= self._deadline_ms(request, bid_request.tmax):
                outcome = Outcome.FAIL_OPEN_DEADLINE
        if outcome is Outcome.SCORED and model is not None:
            try:
                verdict = decide(
                    model,
                    bid_request,
                    candidates,
                    time.time_ns() // 1_000_000,
                    control_share=self._control_share,
                    exploration=self._exploration,
                )
            except Exception as exc:
                outcome = Outcome.FAIL_OPEN_ERROR
                error = f"internal error: {type(exc).__name__}"
                if self._errors_logged < 10:
                    self._errors_logged += 1
                    log.exception("scoring failed; failing open")
        if verdict is None or outcome is not Outcome.SCORED:
            verdict = fail_open(candidates, model)
        self._count_partners(verdict)
        control = None
        if verdict.control:
            control = True
            self.metrics.add("control_requests")
        response = FilterResponse(
            request_id=bid_request.id,
            decisions=verdict.decisions,
            model_version=model.version if model is not None else "",
            outcome=outcome,
            error=error,
            control=control,
        )
        if self.outcome_log is not None:
            self.outcome_log.offer(request.openrtb, response)
        return response

    def _count_partners(self, verdict: Verdict) -> None:
        if verdict.decisions:
            self.metrics.partners(verdict.partner_index, verdict.sent, verdict.explored)


def _since(arrived_ns: int) -> float:
    """Microseconds since ``arrived_ns`` (``time.perf_counter_ns``)."""
    return (time.perf_counter_ns() - arrived_ns) / 1000

"""FilterService and Dispatcher without sockets: fail-open paths, deadlines, shedding, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bidfilter.openrtb import InvalidRequestError
from bidfilter.scoring import ServingModel
from bidfilter.server import metrics as m
from bidfilter.server.dispatch import Dispatcher
from bidfilter.server.metrics import MetricsBoard, render
from bidfilter.server.service import FilterService
from bidfilter.settings import Settings
from bidfilter.thrift import Call, FilterRequest, Outcome, Protocol, ReplyEncoder, Transport


@pytest.fixture
def board() -> Iterator[MetricsBoard]:
    shared = MetricsBoard(1)
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def model(trained_store: tuple[Path, str]) -> ServingModel:
    store_dir, version = trained_store
    return ServingModel.load(store_dir / "versions" / version)


@pytest.fixture
def service(board: MetricsBoard, model: ServingModel) -> FilterService:
    service = FilterService(Settings(exploration_rate=0.0), board.worker(0))
    service.swap(model, 1)
    return service


def request(logged: list[tuple[bytes, list[str]]], i: int = 0, **fields: object) -> FilterRequest:
    openrtb, partners = logged[i]
    return FilterRequest(openrtb=openrtb, candidates=partners, **fields)  # type: ignore[arg-type]


def test_scored(service: FilterService, logged_requests: list[tuple[bytes, list[str]]]) -> None:
    response = service.filter(request(logged_requests), time.perf_counter_ns(), shed=False)
    assert response.outcome is Outcome.SCORED
    assert response.server_us is not None and response.server_us >= 0
    assert [d.partner for d in response.decisions] == logged_requests[0][1]


def test_no_model_fails_open(
    board: MetricsBoard, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    service = FilterService(Settings(), board.worker(0))
    response = service.filter(request(logged_requests), time.perf_counter_ns(), shed=False)
    assert response.outcome is Outcome.FAIL_OPEN_NO_MODEL
    assert all(d.send for d in response.decisions)
    assert response.model_version == ""
    assert service.model_info().version == ""


def test_shed_calls_fail_open_as_overload(
    service: FilterService, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    response = service.filter(request(logged_requests), time.perf_counter_ns(), shed=True)
    assert response.outcome is Outcome.FAIL_OPEN_OVERLOAD
    assert all(d.send and d.bid_probability == -1.0 for d in response.decisions)
    # Shed before parsing: even a request that is not JSON gets the overload answer.
    garbage = service.filter(FilterRequest(b"{not json", ["dsp-01"]), 0, shed=True)
    assert garbage.outcome is Outcome.FAIL_OPEN_OVERLOAD and garbage.request_id == ""


def test_deadline_from_the_call_wins_over_tmax(
    service: FilterService, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    ten_ms_ago = time.perf_counter_ns() - 10_000_000
    late = service.filter(request(logged_requests, deadline_ms=5), ten_ms_ago, shed=False)
    assert late.outcome is Outcome.FAIL_OPEN_DEADLINE
    in_time = service.filter(request(logged_requests, deadline_ms=1000), ten_ms_ago, shed=False)
    assert in_time.outcome is Outcome.SCORED


def test_deadline_defaults_to_a_share_of_tmax(board: MetricsBoard, model: ServingModel) -> None:
    service = FilterService(Settings(deadline_share_of_tmax=0.5), board.worker(0))
    service.swap(model, 1)
    body = b'{"id":"t","imp":[{"id":"1","banner":{"w":300,"h":250}}],"tmax":100}'
    sixty_ms_ago = time.perf_counter_ns() - 60_000_000
    forty_ms_ago = time.perf_counter_ns() - 40_000_000
    assert (
        service.filter(FilterRequest(body), sixty_ms_ago, False).outcome
        is Outcome.FAIL_OPEN_DEADLINE
    )
    assert service.filter(FilterRequest(body), forty_ms_ago, False).outcome is Outcome.SCORED


def test_scoring_fault_fails_open_as_error(
    service: FilterService,
    model: ServingModel,
    logged_requests: list[tuple[bytes, list[str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(row: np.ndarray, codes: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    monkeypatch.setattr(
        ServingModel, "score_request", lambda self, row, codes, keyed=b"": broken(row, codes)
    )
    response = service.filter(request(logged_requests), time.perf_counter_ns(), shed=False)
    assert response.outcome is Outcome.FAIL_OPEN_ERROR
    assert response.error == "internal error: RuntimeError"
    assert all(d.send for d in response.decisions)


def test_invalid_requests_and_limits(
    board: MetricsBoard, model: ServingModel, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    service = FilterService(Settings(max_candidates=3, max_batch=2), board.worker(0))
    service.swap(model, 1)
    with pytest.raises(InvalidRequestError) as caught:
        service.filter(FilterRequest(b'{"id":"x"}'), time.perf_counter_ns(), False)
    assert caught.value.field == "imp"
    with pytest.raises(InvalidRequestError) as caught:
        service.filter(
            FilterRequest(logged_requests[0][0], ["a", "b", "c", "d"]),
            time.perf_counter_ns(),
            False,
        )
    assert caught.value.field == "candidates"
    with pytest.raises(InvalidRequestError) as caught:
        service.filter_batch([request(logged_requests)] * 3, time.perf_counter_ns(), False)
    assert caught.value.field == "requests"


def test_metrics_count_calls_and_partners(
    service: FilterService, board: MetricsBoard, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    for i in range(20):
        service.filter(request(logged_requests, i), time.perf_counter_ns(), shed=False)
    service.filter(request(logged_requests), time.perf_counter_ns(), shed=True)
    service.metrics.flush()
    text = render(
        board.totals(),
        partners=list(service.model.partners) if service.model else [],
        model_version="v1",
        workers_alive=1,
        workers_configured=1,
        worker_restarts=0,
        reloads={"success": 1},
    )
    assert 'bidfilter_calls_total{method="filter",result="scored"} 20' in text
    assert 'bidfilter_calls_total{method="filter",result="fail_open_overload"} 1' in text
    assert 'bidfilter_call_latency_seconds_count{method="filter"} 21' in text
    assert 'bidfilter_call_latency_seconds_bucket{method="filter",le="+Inf"} 21' in text
    assert 'bidfilter_model_info{version="v1"} 1' in text
    decided = sum(len(logged_requests[i][1]) for i in range(20)) + len(logged_requests[0][1])
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bidfilter_partner_decisions_total{")
    )
    assert counted == decided
    assert "bidfilter_partner_send_rate{partner=" in text
    assert board.gauge(0, "model_generation") == 1
    assert tuple(sorted(m.LATENCY_BOUNDS_US)) == m.LATENCY_BOUNDS_US


def test_partner_counters_count_repeats_and_unknown_partners(
    service: FilterService, board: MetricsBoard, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    """A candidate list naming a partner twice, or several partners the model does not know,
    counts every decision."""
    openrtb = logged_requests[0][0]
    candidates = ["dsp-01", "dsp-01", "new-a", "new-b", "dsp-02"]
    for _ in range(3):
        service.filter(FilterRequest(openrtb, candidates), time.perf_counter_ns(), shed=False)
    service.metrics.flush()
    decisions = m.partner_counts(board.totals()).decisions
    codes = service.model.encoder.partner_codes if service.model else {}
    assert decisions[codes["dsp-01"]] == 6
    assert decisions[codes["dsp-02"]] == 3
    assert decisions[m.UNKNOWN_PARTNER_SLOT] == 6
    sent = m.partner_counts(board.totals()).sent[m.UNKNOWN_PARTNER_SLOT]
    assert sent == 6  # an unknown partner is always sent


def test_partner_counters_reach_the_shared_row_on_flush(board: MetricsBoard) -> None:
    metrics = board.worker(0)
    plan_index = np.array([0, 1, -1], dtype=np.intp)
    for _ in range(4):
        metrics.partners(plan_index, [True, False, True], [False, True, False])
    decisions = m.partner_counts(board.totals()).decisions
    assert decisions.sum() == 0  # recorded, not yet published
    metrics.flush_due(m.FLUSH_INTERVAL_NS - 1)  # not due: the last flush was "at 0"
    assert m.partner_counts(board.totals()).decisions.sum() == 0
    metrics.flush_due(m.FLUSH_INTERVAL_NS)
    totals = board.totals()
    counts = m.partner_counts(totals)
    assert counts.decisions[0] == 4 and counts.decisions[m.UNKNOWN_PARTNER_SLOT] == 4
    assert counts.sent[1] == 0
    assert counts.explored[1] == 4
    metrics.flush()  # nothing pending: nothing added twice
    assert (board.totals() == totals).all()


class _Connection:
    """A reply sink (what the dispatcher uses of a connection), recording what is written to it."""

    def __init__(self) -> None:
        self.encoder = ReplyEncoder(Protocol.BINARY, Transport.FRAMED)
        self.writes: list[bytes] = []
        self.closed = False

    def send(self, replies: bytes, answered: int) -> None:
        self.writes.append(replies)

    def pause_reading(self) -> None:
        raise AssertionError("not under this little load")

    def resume_reading(self) -> None:
        raise AssertionError("not under this little load")


def _ping_calls_counted(board: MetricsBoard) -> str:
    text = render(
        board.totals(),
        partners=[],
        model_version=None,
        workers_alive=1,
        workers_configured=1,
        worker_restarts=0,
        reloads={},
    )
    return next(line for line in text.splitlines() if 'method="ping",result="ok"' in line)


def test_a_lone_call_to_an_idle_dispatcher_is_answered_at_once_and_the_rest_in_order(
    service: FilterService, board: MetricsBoard
) -> None:
    async def scenario() -> None:
        dispatcher = Dispatcher(service, service.metrics, max_pending=10)
        first, second = _Connection(), _Connection()
        encoder = first.encoder
        now = time.perf_counter_ns()
        for seqid in (1, 2):
            dispatcher.submit(first, encoder, [Call("ping", seqid, None)], now)  # type: ignore[arg-type]
            assert first.writes[-1] == encoder.ping(seqid, "pong")  # before submit returned
        await asyncio.sleep(m.FLUSH_INTERVAL_NS / 1e9 + 0.1)
        # The second call came within a flush interval of the first: counted by the timer.
        assert _ping_calls_counted(board).endswith(" 2")
        two = [Call("ping", 3, None), Call("ping", 4, None)]
        dispatcher.submit(first, encoder, two, now)  # type: ignore[arg-type]
        dispatcher.submit(second, encoder, [Call("ping", 5, None)], now)  # type: ignore[arg-type]
        # Two calls in one read are queued, and so is a lone call behind them: in order.
        assert len(first.writes) == 2 and second.writes == [] and len(dispatcher) == 3
        await asyncio.sleep(0)  # one loop turn: the drain
        assert len(dispatcher) == 0
        assert first.writes[2:] == [encoder.ping(3, "pong") + encoder.ping(4, "pong")]
        assert second.writes == [encoder.ping(5, "pong")]
        await asyncio.sleep(m.FLUSH_INTERVAL_NS / 1e9 + 0.1)
        assert _ping_calls_counted(board).endswith(" 5")

    asyncio.run(scenario())


def test_the_candidate_limit_holds_for_every_batch_item(
    board: MetricsBoard, model: ServingModel, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    service = FilterService(Settings(max_candidates=3), board.worker(0))
    service.swap(model, 1)
    fine = FilterRequest(logged_requests[0][0], ["a"])
    over = FilterRequest(logged_requests[1][0], [""] * 100_000)
    with pytest.raises(InvalidRequestError) as caught:
        service.filter_batch([fine, over], time.perf_counter_ns(), False)
    assert caught.value.field == "requests[1].candidates"
    assert "100000 candidates, over the 3 limit" in caught.value.message
    assert len(model._plans.plans) <= 256  # refused before any plan was made for it


def test_the_plan_cache_is_bounded_by_bytes(model: ServingModel) -> None:
    from bidfilter.scoring import serving_model

    cache = model._plans
    for i in range(64):
        huge = ("x" * 900_000 + str(i),)  # one 900 KB id per list
        assert model.plan(huge).names == list(huge)
        assert cache.bytes <= serving_model._MAX_PLAN_BYTES
    assert len(cache.plans) <= serving_model._MAX_PLAN_BYTES // 900_000
    too_big = ("z" * 2_000_000,)  # over a sixteenth of the budget: planned, never kept
    assert model.plan(too_big).names == list(too_big)
    assert too_big not in cache.plans
    for i in range(200):
        model.plan((f"id-{i}-" + "y" * 200_000,))  # kept, until the byte budget clears them
        assert cache.bytes <= serving_model._MAX_PLAN_BYTES
    assert sum(len(k[0]) for k in cache.plans if k) <= serving_model._MAX_PLAN_BYTES
    common = tuple(model.partners)
    assert model.plan(common) is model.plan(common)  # small lists are still cached


@pytest.mark.parametrize("deadline_ms", [0, -5])
def test_a_deadline_of_zero_or_less_is_refused_naming_it(
    service: FilterService, logged_requests: list[tuple[bytes, list[str]]], deadline_ms: int
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        service.filter(
            request(logged_requests, deadline_ms=deadline_ms), time.perf_counter_ns(), False
        )
    assert caught.value.field == "deadline_ms"
    assert str(deadline_ms) in caught.value.message

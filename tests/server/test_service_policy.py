"""FilterService records its policy: propensity on every decision, the control group, /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bidfilter.scoring import ServingModel, exploration_draw, in_control_group
from bidfilter.server.metrics import MetricsBoard, render
from bidfilter.server.service import FilterService
from bidfilter.settings import Settings
from bidfilter.thrift import (
    FilterRequest,
    FilterResponse,
    Outcome,
    Protocol,
    ReplyEncoder,
    Transport,
    decode_reply,
)


@pytest.fixture
def board() -> Iterator[MetricsBoard]:
    shared = MetricsBoard(1)
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def model(trained_store: tuple[Path, str]) -> ServingModel:
    store_dir, version = trained_store
    return ServingModel.load(store_dir / "versions" / version)


def serving(board: MetricsBoard, model: ServingModel | None, **settings: float) -> FilterService:
    service = FilterService(Settings(**settings), board.worker(0))  # type: ignore[arg-type]
    if model is not None:
        service.swap(model, 1)
    return service


def filter_all(
    service: FilterService, logged: list[tuple[bytes, list[str]]], shed: bool = False
) -> list[FilterResponse]:
    return [
        service.filter(FilterRequest(openrtb, partners), time.perf_counter_ns(), shed)
        for openrtb, partners in logged
    ]


def request_id(openrtb: bytes) -> str:
    return str(json.loads(openrtb)["id"])


def test_scored_decisions_carry_their_propensity(
    board: MetricsBoard, model: ServingModel, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    service = serving(board, model, exploration_rate=0.1, sparse_partner_exploration=0.0)
    below = explored = 0
    for response in filter_all(service, logged_requests[:200]):
        assert response.outcome is Outcome.SCORED and response.control is None
        for decision in response.decisions:
            assert decision.propensity is not None
            if decision.bid_probability >= decision.threshold:
                assert decision.propensity == 1.0
            else:
                below += 1
                explored += decision.explore
                assert decision.propensity == 0.1
                assert decision.explore == (
                    exploration_draw(response.request_id, decision.partner) < 0.1
                )
    assert below > 0 and explored > 0


@pytest.mark.parametrize("case", ["no model", "shed", "deadline"])
def test_fail_open_responses_carry_propensity_one(
    board: MetricsBoard,
    model: ServingModel,
    logged_requests: list[tuple[bytes, list[str]]],
    case: str,
) -> None:
    service = serving(board, None if case == "no model" else model, control_share=1.0)
    arrived = time.perf_counter_ns() - (10**10 if case == "deadline" else 0)
    openrtb, partners = logged_requests[0]
    response = service.filter(FilterRequest(openrtb, partners), arrived, shed=case == "shed")
    assert response.outcome is not Outcome.SCORED
    assert [d.propensity for d in response.decisions] == [1.0] * len(partners)
    assert all(d.send and not d.explore for d in response.decisions)
    assert response.control is None  # failing open is its own answer, not the control group


def test_the_control_group_is_sent_to_everyone_and_counted(
    board: MetricsBoard, model: ServingModel, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    share = 0.25
    service = serving(board, model, control_share=share, exploration_rate=0.0)
    responses = filter_all(service, logged_requests)
    again = filter_all(service, logged_requests[:50])
    control = [r.control is True for r in responses]
    assert control[:50] == [r.control is True for r in again]  # the same id, the same group
    for (openrtb, _), response in zip(logged_requests, responses, strict=True):
        assert response.control in (True, None)
        assert (response.control is True) == in_control_group(request_id(openrtb), share)
        if response.control:
            assert all(d.send and not d.explore and d.propensity == 1.0 for d in response.decisions)
            assert any(d.bid_probability >= 0 for d in response.decisions)  # still scored
    assert abs(sum(control) / len(control) - share) < 0.08
    plain = [r for r in responses if not r.control]
    assert any(not d.send for r in plain for d in r.decisions)  # the others are filtered
    service.metrics.flush()
    text = render(
        board.totals(),
        partners=list(model.partners),
        model_version="v1",
        workers_alive=1,
        workers_configured=1,
        worker_restarts=0,
        reloads={"success": 1},
    )
    assert f"bidfilter_control_requests_total {sum(control) + sum(control[:50])}" in text


def test_control_share_zero_means_no_control_group(
    board: MetricsBoard, model: ServingModel, logged_requests: list[tuple[bytes, list[str]]]
) -> None:
    service = serving(board, model)
    assert all(r.control is None for r in filter_all(service, logged_requests[:100]))
    assert board.gauge(0, "control_requests") == 0


@pytest.mark.parametrize("protocol", list(Protocol))
def test_the_reply_carries_propensity_and_control(
    board: MetricsBoard,
    model: ServingModel,
    logged_requests: list[tuple[bytes, list[str]]],
    protocol: Protocol,
) -> None:
    service = serving(board, model, control_share=0.5)
    encoder = ReplyEncoder(protocol, Transport.UNFRAMED)
    responses = filter_all(service, logged_requests[:40])
    assert {r.control for r in responses} == {True, None}
    for seqid, response in enumerate(responses):
        decoded = decode_reply(encoder.filter(seqid, response), protocol).filter_response()
        assert decoded == response
        assert [d.propensity for d in decoded.decisions] == [
            d.propensity for d in response.decisions
        ]


def test_settings_bound_the_shares() -> None:
    from pydantic import ValidationError

    for name in ("control_share", "min_partner_exploration", "sparse_partner_exploration"):
        with pytest.raises(ValidationError):
            Settings(**{name: 1.5})  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            Settings(**{name: -0.1})  # type: ignore[arg-type]
    defaults = Settings()
    assert defaults.control_share == 0.0 and defaults.min_partner_exploration == 0.0
    assert np.isclose(defaults.sparse_partner_exploration, 0.05)


def test_serve_flags_set_the_policy() -> None:
    from bidfilter.cli import build_parser, settings_from

    arguments = ["serve", "--control-share", "0.1", "--min-partner-exploration", "0.02"]
    settings = settings_from(
        build_parser().parse_args([*arguments, "--sparse-partner-exploration", "0.2"])
    )
    assert settings.control_share == 0.1
    assert settings.min_partner_exploration == 0.02
    assert settings.sparse_partner_exploration == 0.2

"""The serving policy as data: propensities, per-partner exploration floors, the control group."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from bidfilter.logs import iter_log_batches
from bidfilter.openrtb import parse_bid_request
from bidfilter.openrtb.model import BidRequest
from bidfilter.scoring import (
    Exploration,
    ServingModel,
    control_draw,
    decide,
    exploration_draw,
    fail_open,
    in_control_group,
)
from bidfilter.scoring.decide import exploration_probabilities
from bidfilter.scoring.serving_model import _PlanCache, _sparse_partners


@pytest.fixture(scope="module")
def requests(synth_logs: Path) -> list[tuple[BidRequest, int]]:
    batch = next(iter_log_batches(synth_logs, columns=["ts", "request"], batch_size=300))
    return [
        (parse_bid_request(text), ts)
        for text, ts in zip(
            batch.column("request").to_pylist(),
            batch.column("ts").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    ]


def with_sparse(model: ServingModel, *partners: str) -> ServingModel:
    """The same model with ``partners`` reported sparse (and a plan cache of its own)."""
    return dataclasses.replace(model, sparse_partners=frozenset(partners), _plans=_PlanCache())


def test_every_decision_carries_its_propensity(
    model: ServingModel, requests: list[tuple[BidRequest, int]]
) -> None:
    exploration = Exploration(rate=0.2)
    candidates = [*model.partners, "unknown-dsp"]
    explored = below = 0
    for request, ts in requests:
        verdict = decide(model, request, candidates, ts, exploration=exploration)
        assert not verdict.control
        for decision in verdict.decisions:
            if decision.partner == "unknown-dsp":
                assert decision.propensity == 1.0 and decision.send
            elif decision.bid_probability >= decision.threshold:
                assert decision.propensity == 1.0 and decision.send and not decision.explore
            else:
                # Below the threshold: the exploration probability, explored or not.
                below += 1
                explored += decision.explore
                assert decision.propensity == 0.2
                assert decision.send == decision.explore
                assert decision.explore == (exploration_draw(request.id, decision.partner) < 0.2)
    assert below > 100 and 0 < explored < below


def test_without_exploration_below_threshold_propensity_is_zero(
    model: ServingModel, requests: list[tuple[BidRequest, int]]
) -> None:
    request, ts = requests[0]
    for decision in decide(model, request, None, ts, exploration_rate=0.0).decisions:
        below = decision.bid_probability < decision.threshold
        assert decision.propensity == (0.0 if below else 1.0)
        assert decision.send == (not below)


def test_fail_open_propensity_is_one(model: ServingModel) -> None:
    for verdict in (fail_open(["dsp-02", "x"], model), fail_open(["a"], None)):
        assert [d.propensity for d in verdict.decisions] == [1.0] * len(verdict.decisions)
        assert not verdict.control


def test_exploration_probability_is_the_largest_floor() -> None:
    assert Exploration(0.01, 0.0, 0.05).probability(sparse=False) == 0.01
    assert Exploration(0.01, 0.0, 0.05).probability(sparse=True) == 0.05
    assert Exploration(0.0, 0.02, 0.0).probability(sparse=False) == 0.02
    assert Exploration(0.0, 0.02, 0.0).probability(sparse=True) == 0.02
    assert Exploration(0.3, 0.02, 0.1).probability(sparse=True) == 0.3


def test_sparse_partners_get_their_floor(
    model: ServingModel, requests: list[tuple[BidRequest, int]]
) -> None:
    sparse = model.partners[0]
    served = with_sparse(model, sparse)
    exploration = Exploration(rate=0.0, min_partner=0.01, sparse_partner=0.3)
    seen = {True: 0, False: 0}
    for request, ts in requests:
        for decision in decide(served, request, None, ts, exploration=exploration).decisions:
            if decision.bid_probability < decision.threshold:
                probability = 0.3 if decision.partner == sparse else 0.01
                seen[decision.partner == sparse] += 1
                assert decision.propensity == probability
                assert decision.explore == (
                    exploration_draw(request.id, decision.partner) < probability
                )
    assert seen[True] > 0 and seen[False] > 0


def test_the_plan_caches_probabilities_per_policy(model: ServingModel) -> None:
    served = with_sparse(model, model.partners[1])
    plan = served.plan(None)
    first = exploration_probabilities(plan, Exploration(0.01, 0.0, 0.05))
    assert first == ([0.05 if i == 1 else 0.01 for i in range(len(model.partners))], True)
    assert exploration_probabilities(plan, Exploration(0.01, 0.0, 0.05)) is first
    assert exploration_probabilities(plan, Exploration(0.2)) == ([0.2] * len(model.partners), True)
    assert exploration_probabilities(plan, Exploration(0.0)) == ([0.0] * len(model.partners), False)
    only_sparse = exploration_probabilities(plan, Exploration(0.0, 0.0, 0.3))
    assert only_sparse == ([0.3 if i == 1 else 0.0 for i in range(len(model.partners))], True)


def test_control_group_share_and_determinism() -> None:
    ids = [f"req-{i:05d}" for i in range(10_000)]
    chosen = [in_control_group(request_id, 0.1) for request_id in ids]
    assert abs(sum(chosen) / len(ids) - 0.1) < 0.01
    assert chosen == [in_control_group(request_id, 0.1) for request_id in ids]
    assert control_draw("abc") == control_draw("abc")
    assert not any(in_control_group(request_id, 0.0) for request_id in ids[:100])
    assert all(in_control_group(request_id, 1.0) for request_id in ids[:100])
    # Nested: a request in the 5% group is in the 10% group too.
    assert all(in_control_group(i, 0.1) for i in ids if in_control_group(i, 0.05))


def test_control_draw_is_independent_of_exploration() -> None:
    ids = [f"req-{i:05d}" for i in range(20_000)]
    control = np.array([in_control_group(request_id, 0.2) for request_id in ids])
    explored = np.array([exploration_draw(request_id, "dsp-03") < 0.2 for request_id in ids])
    # Independent: the exploration rate is the same inside and outside the control group.
    assert abs(explored[control].mean() - explored[~control].mean()) < 0.025
    assert abs((control & explored).mean() - 0.04) < 0.006


def test_control_requests_are_scored_and_sent_to_everyone(
    model: ServingModel, requests: list[tuple[BidRequest, int]]
) -> None:
    share = 0.3
    in_control = 0
    for request, ts in requests:
        verdict = decide(model, request, [*model.partners, "new"], ts, 0.0, share)
        plain = decide(model, request, [*model.partners, "new"], ts, 0.0)
        assert verdict.control == in_control_group(request.id, share)
        if verdict.control:
            in_control += 1
            assert verdict.sent == [True] * len(verdict.decisions)
            assert verdict.explored == [False] * len(verdict.decisions)
            for decision, scored in zip(verdict.decisions, plain.decisions, strict=True):
                assert decision.propensity == 1.0 and decision.send and not decision.explore
                # The scores and thresholds are still there: what the filter would have done.
                assert decision.bid_probability == scored.bid_probability
                assert decision.threshold == scored.threshold
        else:
            assert verdict.decisions == plain.decisions
    assert 0.15 * len(requests) < in_control < 0.45 * len(requests)


def _report_dir(tmp_path: Path, partners: dict[str, object]) -> tuple[Path, SimpleNamespace]:
    (tmp_path / "report.json").write_text(json.dumps({"partners": partners}))
    manifest = SimpleNamespace(files={"report.json": None}, partners=["a", "b", "c", "d"])
    return tmp_path, manifest


def test_sparse_partners_are_read_from_the_report(tmp_path: Path) -> None:
    folder, manifest = _report_dir(
        tmp_path,
        {
            "a": {"sparse": True, "threshold_method": "smoothed"},
            "b": {"sparse": False, "threshold_method": "smoothed"},  # smoothed for everyone
            "c": {"threshold_method": "unfiltered"},  # an older report: no `sparse` key
            "d": {"threshold_method": "quantile"},
            "gone": {"sparse": True},  # not a partner of this version
        },
    )
    assert _sparse_partners(folder, manifest) == {"a", "c"}  # type: ignore[arg-type]


def test_an_unreadable_report_means_no_sparse_partner(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{not json")
    manifest = SimpleNamespace(files={"report.json": None}, partners=["a"])
    assert _sparse_partners(tmp_path, manifest) == frozenset()  # type: ignore[arg-type]
    assert _sparse_partners(tmp_path, SimpleNamespace(files={}, partners=[])) == frozenset()  # type: ignore[arg-type]
    folder, manifest = _report_dir(tmp_path, {"a": ["not", "a", "dict"]})
    assert _sparse_partners(folder, manifest) == frozenset()  # type: ignore[arg-type]


def test_a_trained_version_loads_its_sparse_partners(
    model: ServingModel, version_dir: Path
) -> None:
    report = json.loads((version_dir / "report.json").read_text())
    expected = {partner for partner, entry in report["partners"].items() if entry["sparse"]}
    assert model.sparse_partners == expected

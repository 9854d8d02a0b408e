from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.artifact import ArtifactError, write_manifest
from bidfilter.logs import iter_log_batches
from bidfilter.openrtb import parse_bid_request
from bidfilter.scoring import ServingModel, decide, exploration_draw, fail_open
from bidfilter.scoring.decide import _compiled_choose, choose
from bidfilter.thrift import PartnerDecision
from bidfilter.training.model import BidModel


@pytest.fixture(scope="module")
def logged(synth_logs: Path) -> list[tuple[str, int]]:
    batch = next(iter_log_batches(synth_logs, columns=["ts", "request"], batch_size=300))
    return list(
        zip(
            batch.column("request").to_pylist(),
            batch.column("ts").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    )


def test_load_reads_the_manifest(model: ServingModel, version_dir: Path) -> None:
    assert model.version == version_dir.name
    assert model.partners == tuple(f"dsp-{i:02d}" for i in range(1, 7))
    assert model.thresholds.shape == (6,)


def test_serving_predictions_equal_xgboost_predict(
    model: ServingModel, version_dir: Path, logged: list[tuple[str, int]]
) -> None:
    # The reference: XGBoost's own predict through a DMatrix, on a booster loaded separately.
    reference = BidModel.load(version_dir / "model.ubj", model.spec).booster
    for text, ts in logged[:100]:
        rows = model.encoder.rows(parse_bid_request(text), ts, model.partners)
        matrix = xgb.DMatrix(
            rows,
            feature_names=model.spec.names,
            feature_types=model.spec.feature_types,
            enable_categorical=True,
        )
        np.testing.assert_allclose(model.predict(rows), reference.predict(matrix), atol=1e-6)


def test_decisions_follow_thresholds_and_candidate_order(
    model: ServingModel, logged: list[tuple[str, int]]
) -> None:
    candidates = ["dsp-03", "unknown-dsp", "dsp-01"]
    sent = 0
    for text, ts in logged:
        request = parse_bid_request(text)
        decisions = decide(model, request, candidates, ts, exploration_rate=0.0).decisions
        assert [d.partner for d in decisions] == candidates
        unknown = decisions[1]
        assert unknown.bid_probability == -1.0 and unknown.send and not unknown.explore
        for decision in (decisions[0], decisions[2]):
            assert 0.0 <= decision.bid_probability <= 1.0
            assert decision.send == (decision.bid_probability >= decision.threshold)
            sent += decision.send
    assert 0 < sent < 2 * len(logged)  # the filter filters, and it also sends


def test_all_partners_when_candidates_absent(
    model: ServingModel, logged: list[tuple[str, int]]
) -> None:
    text, ts = logged[0]
    assert [d.partner for d in decide(model, parse_bid_request(text), None, ts).decisions] == list(
        model.partners
    )


def test_exploration_is_deterministic_and_near_the_rate(
    model: ServingModel, logged: list[tuple[str, int]]
) -> None:
    assert exploration_draw("r1", "dsp-01") == exploration_draw("r1", "dsp-01")
    draws = np.array([exploration_draw(f"req-{i}", f"dsp-{i % 7}") for i in range(20_000)])
    assert draws.min() >= 0.0 and draws.max() < 1.0
    assert abs((draws < 0.1).mean() - 0.1) < 0.01
    explored = below = 0
    for text, ts in logged:
        request = parse_bid_request(text)
        first = decide(model, request, None, ts, exploration_rate=0.2).decisions
        assert first == decide(model, request, None, ts, exploration_rate=0.2).decisions
        for decision in first:
            if decision.bid_probability < decision.threshold:
                below += 1
                explored += decision.explore
                assert decision.send == decision.explore
                # The draw a log reader can recompute from the request id and the partner.
                assert decision.explore == (exploration_draw(request.id, decision.partner) < 0.2)
            else:
                assert not decision.explore
    assert below > 100
    assert 0.1 < explored / below < 0.3


def test_fail_open_sends_everyone(model: ServingModel) -> None:
    decisions = fail_open(["dsp-02", "x"], model).decisions
    assert [(d.partner, d.send, d.explore) for d in decisions] == [
        ("dsp-02", True, False),
        ("x", True, False),
    ]
    assert [d.partner for d in fail_open(None, model).decisions] == list(model.partners)
    assert fail_open(None, None).decisions == []


def test_tampered_model_is_refused(version_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / version_dir.name
    shutil.copytree(version_dir, copy)
    with (copy / "model.ubj").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x00\x00")
    with pytest.raises(ArtifactError) as caught:
        ServingModel.load(copy)
    assert caught.value.field == "model.ubj"


def test_garbage_model_with_matching_checksum_is_refused(version_dir: Path, tmp_path: Path) -> None:
    """A version whose files match the manifest but whose model is not a model fails the load."""
    copy = tmp_path / version_dir.name
    shutil.copytree(version_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "model.ubj").write_bytes(b"not a model")
    (copy / "manifest.json").unlink()
    write_manifest(
        copy,
        version=manifest["version"],
        data_start=manifest["data_start"],
        data_end=manifest["data_end"],
        feature_spec=manifest["feature_spec"],
        feature_spec_version=manifest["feature_spec_version"],
        model_file="model.ubj",
        partners=manifest["partners"],
        thresholds=manifest["thresholds"],
        metrics=manifest["metrics"],
    )
    with pytest.raises(ArtifactError) as caught:
        ServingModel.load(copy)
    assert caught.value.field == "model.ubj"


@pytest.mark.skipif(_compiled_choose is None, reason="compiled evaluator not built (no C compiler)")
@given(
    st.lists(
        st.tuples(
            st.floats(0, 1) | st.just(-1.0),
            st.floats(0, 1) | st.just(-math.inf),
            st.text(max_size=12),
            st.sampled_from([0.0, 0.01, 0.05, 0.5, 1.0]) | st.floats(0, 1),
        ),
        max_size=70,
    ),
    st.integers(0, 2**32 - 1),
)
def test_compiled_choice_equals_the_pure_one(
    candidates: list[tuple[float, float, str, float]], seed: int
) -> None:
    scores = np.array([c[0] for c in candidates], dtype=np.float64)
    cutoffs = np.array([c[1] for c in candidates], dtype=np.float64)
    names = [c[2] for c in candidates]
    thresholds = [max(c[1], 0.0) for c in candidates]
    keys = [name.encode() for name in names]
    probabilities = [c[3] for c in candidates]
    args = (scores, cutoffs, thresholds, names, keys, seed, probabilities, PartnerDecision)
    compiled = _compiled_choose(*args)
    assert compiled == choose(*args)
    for decision, probability, cutoff in zip(compiled[0], probabilities, cutoffs, strict=True):
        below = decision.bid_probability < cutoff
        assert decision.propensity == (probability if below else 1.0)


def test_compiled_choice_refuses_mismatched_lengths() -> None:
    if _compiled_choose is None:
        pytest.skip("compiled evaluator not built (no C compiler)")
    with pytest.raises(ValueError, match="2 items"):
        _compiled_choose(
            np.zeros(2), np.zeros(2), [0.0], ["a", "b"], [b"a", b"b"], 0, [0.0], PartnerDecision
        )
    with pytest.raises(TypeError, match="probabilities"):
        _compiled_choose(np.zeros(1), np.ones(1), [0.0], ["a"], [b"a"], 0, [1], PartnerDecision)

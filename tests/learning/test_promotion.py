"""Guarded promotion: judge's rules, and `bidfilter retrain` against a real store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bidfilter.artifact import open_store
from bidfilter.cli import main
from bidfilter.learning.evidence import Evidence, Figures
from bidfilter.learning.promotion import PromotionPolicy, judge, latest_window
from bidfilter.logs import AuctionLogWriter, auction_batch
from bidfilter.synth import generate

POLICY = PromotionPolicy(target_recall=0.99, recall_tolerance=0.01, savings_tolerance=0.02)


def figures(recall: float, savings: float, **partners: float) -> Figures:
    return Figures(recall, savings, calls=1000, bids=100, partner_recall=partners)


def test_the_rules() -> None:
    assert judge(figures(0.99, 0.5), None, POLICY).promote
    low = judge(figures(0.97, 0.9), None, POLICY)
    assert not low.promote and "below 0.9800" in low.reason
    # Not worse: promoted; saving less beyond the tolerance: refused.
    assert judge(figures(0.99, 0.49), figures(0.99, 0.5), POLICY).promote
    worse = judge(figures(0.99, 0.40), figures(0.99, 0.5), POLICY)
    assert not worse.promote and "saves 0.4000" in worse.reason
    # The serving version lost a partner's bids: keeping them comes before savings.
    repaired = judge(
        figures(0.99, 0.40, a=0.99, b=0.99), figures(0.985, 0.5, a=0.99, b=0.60), POLICY
    )
    assert repaired.promote and "b's bids" in repaired.reason
    fell = judge(figures(0.985, 0.30), figures(0.95, 0.5), POLICY)
    assert fell.promote and "fell to 0.9500" in fell.reason


def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError, match="recall_tolerance"):
        PromotionPolicy(recall_tolerance=-0.1)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrain") / "logs"
    generate(root, requests=6000, partners=3, seed=2, days=6)
    return root


def test_a_window_links_the_newest_days(logs: Path, tmp_path: Path) -> None:
    window = latest_window(logs, 2, tmp_path / "w")
    days = sorted(p.name for p in logs.iterdir() if p.name.startswith("date="))
    assert sorted(p.name for p in window.iterdir()) == days[-2:]
    assert all((window / day).is_symlink() for day in days[-2:])


def test_without_a_model_every_call_counts_as_sent(logs: Path) -> None:
    evidence = Evidence.from_logs(logs, since_ms=0)
    whole = evidence.figures(None)
    assert whole.bid_recall == 1.0 and whole.call_savings == 0.0
    assert whole.calls == len(evidence.partners) == 3 * len(evidence)


def test_retrain_promotes_then_refuses_a_worse_candidate(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    metrics = tmp_path / "retrain.prom"
    base = ["retrain", "--store", str(store_dir), "--logs", str(logs), "--window-days", "4"]
    (store_dir).mkdir()
    assert main([*base, "--json", "--metrics-file", str(metrics)]) == 0
    first = json.loads(capsys.readouterr().out)
    store = open_store(str(store_dir))
    assert first["promoted"] and store.latest() == first["version"]
    assert first["reason"] == "no version is serving"
    # Keeping every bid costs savings: without a tolerance for that, the candidate is
    # published, but LATEST stays.
    assert main([*base, "--json", "--target-recall", "1.0", "--savings-tolerance", "0"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert not second["promoted"] and "saves" in second["reason"], second["reason"]
    assert store.latest() == first["version"] and second["version"] in store.versions()
    report = json.loads(store.read_text(second["version"]))
    assert report["promotion"]["promoted"] is False
    assert report["promotion"]["current_version"] == first["version"]
    assert 'bidfilter_retrain_decisions_total{decision="promoted"} 1' in metrics.read_text()


def test_evidence_holds_the_labelled_entries_weighted_by_inverse_propensity(
    tmp_path: Path,
) -> None:
    day = 1_714_564_800_000  # 2024-05-01 12:00 UTC
    batch = auction_batch(
        np.array([day, day + 1000, day + 2000]),
        ["r0", "r1", "r2"],
        [json.dumps({"id": f"r{i}", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]})
         for i in range(3)],
        np.array([0, 2, 4, 6], dtype=np.int32),
        ["a", "b"] * 3,
        np.array([True, False, False, False, True, True]),
        np.array([1.0, 0.0, 0.0, 0.0, 2.0, 3.0]),
        sent=np.array([True, False, True, False, True, True]),
        propensity=np.array([1.0, 0.0, 1.0, 0.25, 1.0, 0.25]),
    )  # fmt: skip
    with AuctionLogWriter(tmp_path / "logs") as writer:
        writer.write(batch)
    evidence = Evidence.from_logs(tmp_path / "logs", since_ms=day + 500)
    assert len(evidence) == 2 and evidence.partners == ["a", "a", "b"]
    assert evidence.offsets.tolist() == [0, 1, 3]
    assert evidence.weights.tolist() == [1.0, 1.0, 4.0]
    assert evidence.bids.tolist() == [False, True, True]

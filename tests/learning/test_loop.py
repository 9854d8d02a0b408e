"""The closed-loop simulation, small: what each policy logs, and what the report holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from bidfilter.cli import main
from bidfilter.learning.loop import LoopConfig
from bidfilter.logs import iter_log_batches


def entries(logs: Path) -> dict[str, np.ndarray]:
    sent, propensity, bids = [], [], []
    for batch in iter_log_batches(logs, columns=["partners"]):
        flat = pc.list_flatten(batch.column("partners"))
        sent.append(flat.field("sent").to_numpy(zero_copy_only=False))
        propensity.append(flat.field("propensity").to_numpy())
        bids.append(flat.field("bid").to_numpy(zero_copy_only=False))
    return {
        "sent": np.concatenate(sent),
        "propensity": np.concatenate(propensity),
        "bids": np.concatenate(bids),
    }


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("loop")
    code = main(
        [
            "loop", "--days", "3", "--requests-per-day", "4000", "--partners", "3",
            "--seed", "1", "--window-days", "2", "--exploration", "0.2", "--trees", "15",
            "--out", str(out), "--png", str(out / "loop.png"),
        ]
    )  # fmt: skip
    assert code == 0
    return out, json.loads((out / "loop.json").read_text())


def test_the_report_has_a_day_per_policy(loop: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    out, report = loop
    assert set(report["policies"]) == {"debiased", "naive", "full_information"}
    for days in report["policies"].values():
        assert [d["day"] for d in days] == [0, 1, 2]
        assert days[0]["model_version"] is None  # day 0 is unfiltered
        assert days[0]["bid_recall"] == 1.0 and days[0]["call_savings"] == 0.0
        for day in days:
            assert 0 <= day["call_savings"] <= day["oracle_call_savings"] + 0.05
            assert {"bid_recall", "call_savings", "oracle_call_savings", "promoted"} <= set(day)
    # Half-way, the first partner retargets; a third of the way, the last one joins.
    assert report["changes"] == {
        "retarget": "dsp-01",
        "retarget_day": 1.0,
        "join": "dsp-03",
        "join_day": 1.0,
    }
    joined = [d["watched"].get("joined") for d in report["policies"]["full_information"]]
    assert joined[0] is None and joined[1] is not None  # no candidate before its day
    assert (out / "loop.png").stat().st_size > 10_000


def test_each_policy_logs_what_its_pipeline_would(loop: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    out, report = loop
    served = [d["day"] for d in report["policies"]["debiased"] if d["model_version"]]
    debiased = entries(out / "debiased" / "logs")
    naive = entries(out / "naive" / "logs")
    full = entries(out / "full_information" / "logs")
    # From day 1 on a model filters: what it did not send has no label.
    assert served == [1, 2]
    assert max(d["call_savings"] for d in report["policies"]["debiased"]) > 0.05
    unsent = ~debiased["sent"]
    assert unsent.any() and not debiased["bids"][unsent].any()
    assert (debiased["propensity"][unsent] < 1).all()
    # Naive takes the filtered traffic at face value: every entry "sent", unsent ones no-bids.
    assert naive["sent"].all() and (naive["propensity"] == 1).all()
    assert full["sent"].all() and full["bids"].sum() >= naive["bids"].sum()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="policies"):
        LoopConfig(policies=("clever",))
    with pytest.raises(ValueError, match="days"):
        LoopConfig(days=2)
    with pytest.raises(ValueError, match="recall_confidence_z"):
        LoopConfig(recall_confidence_z=-1)
    with pytest.raises(ValueError, match="sparse_exploration"):
        LoopConfig(sparse_exploration=1.5)


def test_the_loop_trains_with_its_documented_settings() -> None:
    config = LoopConfig(recall_confidence_z=1.0, early_stopping_rounds=4)
    train = config.train_config()
    assert train.recall_confidence_z == 1.0
    assert train.model.early_stopping_rounds == 4
    assert train.model.early_stopping_rows == config.early_stopping_rows
    assert train.dataset.recency_half_life_days == config.recency_half_life_days
    assert not train.plots

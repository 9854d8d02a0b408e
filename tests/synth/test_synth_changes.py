"""Worlds that change part-way: a partner that retargets, a partner that joins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from bidfilter.cli import main
from bidfilter.logs import iter_log_batches
from bidfilter.synth import SynthError, WorldChanges, generate
from bidfilter.synth.generate import DEFAULT_START

_MS_PER_DAY = 86_400_000


def _entries(logs: Path) -> dict[str, np.ndarray]:
    """Per (request, partner) entry: day since the window's start, partner, oracle."""
    days, partners, oracle = [], [], []
    for batch in iter_log_batches(logs, columns=["ts", "partners"]):
        ts = batch.column(0).cast("int64").to_numpy()
        lists = batch.column(1)
        lengths = pc.list_value_length(lists).to_numpy()
        flat = lists.flatten()
        days.append(np.repeat(ts, lengths))
        partners.append(flat.field("partner").to_numpy(zero_copy_only=False))
        oracle.append(flat.field("oracle_p").to_numpy())
    start_ms = int(DEFAULT_START.timestamp() * 1000)
    return {
        "day": (np.concatenate(days) - start_ms) // _MS_PER_DAY,
        "partner": np.concatenate(partners),
        "oracle": np.concatenate(oracle),
    }


def test_a_joining_partner_is_absent_before_its_day_and_a_retargeted_one_changes(
    tmp_path: Path,
) -> None:
    common = {"requests": 6000, "partners": 4, "seed": 7, "days": 6}
    generate(tmp_path / "plain", **common)
    changes = WorldChanges(retarget={1: 3.0}, join={2: 2.0})
    generate(tmp_path / "changed", **common, changes=changes)
    plain, changed = _entries(tmp_path / "plain"), _entries(tmp_path / "changed")

    joined = changed["partner"] == "dsp-03"
    assert joined.any() and changed["day"][joined].min() == 2
    # Every other partner is a candidate on every request, as in the unchanged world.
    for partner in ("dsp-01", "dsp-02", "dsp-04"):
        assert (changed["partner"] == partner).sum() == (plain["partner"] == partner).sum()

    # The same requests in both worlds: the untouched partner's truth is unchanged; the
    # retargeted one's is unchanged before its day and different after it.
    def truth(world: dict[str, np.ndarray], partner: str) -> tuple[np.ndarray, np.ndarray]:
        mine = world["partner"] == partner
        return world["oracle"][mine], world["day"][mine]

    np.testing.assert_allclose(truth(changed, "dsp-04")[0], truth(plain, "dsp-04")[0])
    before_new, day = truth(changed, "dsp-02")
    before_old, _ = truth(plain, "dsp-02")
    np.testing.assert_allclose(before_new[day < 3], before_old[day < 3])
    after = day >= 3
    assert np.corrcoef(before_new[after], before_old[after])[0, 1] < 0.9


def test_changes_outside_the_world_are_refused_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(SynthError) as error:
        generate(
            tmp_path / "a", requests=100, partners=3, days=4, changes=WorldChanges(join={5: 1})
        )
    assert error.value.field == "join"
    with pytest.raises(SynthError) as error:
        generate(
            tmp_path / "b", requests=100, partners=3, days=4, changes=WorldChanges(retarget={0: 4})
        )
    assert error.value.field == "retarget"


def test_the_cli_takes_partner_ids_and_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["synth", "--requests", "2000", "--partners", "3", "--days", "4"]
    assert main([*base, "--out", str(tmp_path / "ok"), "--join", "dsp-03@2"]) == 0
    entries = _entries(tmp_path / "ok")
    assert entries["day"][entries["partner"] == "dsp-03"].min() == 2
    assert main([*base, "--out", str(tmp_path / "bad"), "--retarget", "dsp-09@2"]) != 0
    assert "retarget" in capsys.readouterr().err

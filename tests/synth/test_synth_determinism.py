"""Same seed, same logs: byte for byte, across chunk boundaries."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path
from typing import Any

import pytest

from bidfilter.logs import iter_log_batches
from bidfilter.synth import SynthError, generate

# The module, not the function the package re-exports under the same name.
driver = importlib.import_module("bidfilter.synth.generate")


def _records(root: Path) -> list[dict[str, Any]]:
    return [row for batch in iter_log_batches(root) for row in batch.to_pylist()]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several chunks (and the background writer) with few requests.
    monkeypatch.setattr(driver, "CHUNK_REQUESTS", 1_000)


@pytest.mark.usefixtures("small_chunks")
def test_same_seed_gives_identical_logs(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", requests=2_500, partners=6, seed=11)
    second = generate(tmp_path / "b", requests=2_500, partners=6, seed=11)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert [path.name for path in first.files] == [path.name for path in second.files]
    for one, other in zip(first.files, second.files, strict=True):
        assert one.read_bytes() == other.read_bytes()
    assert first.bid_rate == second.bid_rate


@pytest.mark.usefixtures("small_chunks")
def test_other_seed_other_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = generate(
        tmp_path / "c",
        requests=2_500,
        partners=6,
        seed=12,
        days=2,
        start=dt.datetime(2024, 1, 1, 12, 0),  # naive: taken as UTC
        progress=True,
    )
    assert "req" in capsys.readouterr().err  # the progress bar
    assert summary.start == dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
    assert summary.end == dt.datetime(2024, 1, 3, 12, tzinfo=dt.UTC)
    assert [path.parent.name for path in summary.files] == [
        "date=2024-01-01",
        "date=2024-01-02",
        "date=2024-01-03",
    ]
    records = _records(tmp_path / "c")
    assert len(records) == 2_500
    start, end = summary.start, summary.end
    assert all(start <= record["ts"] < end for record in records)
    assert len({record["request_id"] for record in records}) == 2_500


@pytest.mark.parametrize(
    ("field", "arguments"),
    [
        ("requests", {"requests": 0}),
        ("partners", {"requests": 10, "partners": 0}),
        ("days", {"requests": 10, "days": 0}),
        ("seed", {"requests": 10, "seed": -1}),
    ],
)
def test_invalid_arguments(tmp_path: Path, field: str, arguments: dict[str, Any]) -> None:
    with pytest.raises(SynthError) as caught:
        generate(tmp_path, **arguments)
    assert caught.value.field == field


def test_refuses_a_directory_with_logs(tmp_path: Path) -> None:
    (tmp_path / "date=2025-01-01").mkdir()
    (tmp_path / "date=2025-01-01" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(SynthError) as caught:
        generate(tmp_path, requests=10)
    assert caught.value.field == "out_dir"

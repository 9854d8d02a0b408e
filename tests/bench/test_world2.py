"""bench/world2.py, the independent synthetic world: its output imports and has the promised mix."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bench.world2 import generate, main

from bidfilter.logs import import_jsonl

REQUESTS = 2000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("world2") / "auctions.jsonl.gz"
    return out, generate(REQUESTS, 20, 14, 7, out)


def _records(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_the_output_imports_with_every_record_and_outcome(
    world: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, summary = world
    imported = import_jsonl([path], tmp_path / "logs")
    assert imported.records == REQUESTS
    assert imported.outcomes == summary["outcomes"]
    assert imported.bids == summary["bids"]
    assert len(imported.days) == 14


def test_same_seed_same_bytes_other_seed_other_traffic(
    world: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, _ = world
    # The same file name: gzip's header holds the name (and a modification time, kept at 0).
    again, other = tmp_path / path.name, tmp_path / "other.jsonl.gz"
    generate(REQUESTS, 20, 14, 7, again)
    generate(REQUESTS, 20, 14, 8, other)
    assert path.read_bytes() == again.read_bytes()
    assert other.read_bytes() != again.read_bytes()


def test_requests_mix_ortb_versions_currencies_ids_and_inventory(
    world: tuple[Path, dict[str, Any]],
) -> None:
    records = _records(world[0])
    requests = [record["request"] for record in records]
    ext_located = [r for r in requests if "ext" in r["source"]]  # OpenRTB 2.5 locations
    top_level = [r for r in requests if "schain" in r["source"]]  # 2.6
    assert len(ext_located) > REQUESTS / 5 and len(top_level) > REQUESTS / 5
    assert any("gdpr" in r["regs"].get("ext", {}) for r in ext_located)
    assert any("eids" in r.get("user", {}).get("ext", {}) for r in ext_located)
    assert any("gdpr" in r["regs"] for r in top_level)
    assert any("eids" in r.get("user", {}) for r in top_level)

    currencies = Counter(imp["bidfloorcur"] for r in requests for imp in r["imp"])
    assert {"USD", "EUR", "TRY", "JPY"} <= set(currencies) and len(currencies) >= 10
    sources = {
        eid["source"]
        for r in requests
        for eid in r.get("user", {}).get("eids", [])
        + r.get("user", {}).get("ext", {}).get("eids", [])
    }
    assert {"uidapi.com", "liveramp.com", "id5-sync.com"} <= sources
    assert any("app" in r for r in requests) and any("site" in r for r in requests)
    kinds = {
        kind
        for r in requests
        for imp in r["imp"]
        for kind in ("banner", "video", "native", "audio")
        if kind in imp
    }
    assert kinds == {"banner", "video", "native", "audio"}
    assert any(len(r["imp"]) > 1 for r in requests)
    # The long tail: most publishers are seen only a few times.
    seen = Counter(r.get("site", r.get("app", {}))["publisher"]["id"] for r in requests)
    assert sum(1 for count in seen.values() if count <= 3) > len(seen) / 2


def test_bids_follow_oracle_p(world: tuple[Path, dict[str, Any]]) -> None:
    outcomes = [entry for record in _records(world[0]) for entry in record["partners"]]
    assert len({entry["partner"] for entry in outcomes}) == 20
    rate = sum(entry["bid"] for entry in outcomes) / len(outcomes)
    mean_p = sum(entry["oracle_p"] for entry in outcomes) / len(outcomes)
    # About 38,000 outcomes at p ~ 0.065: the sampling error of the rate is ~0.0013.
    assert abs(rate - mean_p) < 0.005
    assert all(entry["price"] > 0 for entry in outcomes if entry["bid"])
    assert all(entry["price"] == 0 for entry in outcomes if not entry["bid"])


def test_cli_prints_a_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.jsonl"
    assert (
        main(["--requests", "50", "--partners", "5", "--seed", "3", "--out", str(out), "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 50 and summary["partners"] == 5
    assert len(out.read_text().splitlines()) == 50

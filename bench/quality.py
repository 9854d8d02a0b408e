"""Filter quality on a synthetic world: make logs, train at the defaults, read the test report.

    python bench/quality.py --world world2 --requests 100000 --seed 1 [--workdir DIR] [--json]

``--world synth`` uses bidfilter's own generator (the world the features were tuned on);
``--world world2`` uses ``bench/world2.py``, an independent generator whose partners target
signals the features may not read, so the gap to the oracle there measures generalisation.
Each step runs as a subprocess of this interpreter (``python -m bidfilter ...``), as a user
would run it, and is timed. Extra ``bidfilter train`` flags pass through ``--train-arg``.

With ``--workdir`` the logs are kept and reused by a later run with the same world, size and
seed (so settings can be compared on identical logs); every run trains a new version into
``DIR/store`` and reports that one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORLD2 = Path(__file__).resolve().parent / "world2.py"
# Written beside the logs once they are complete: what made them, so a rerun can reuse them.
LOGS_MARKER = "logs.json"
FIGURES = ("bid_recall", "call_savings", "oracle_call_savings", "auc", "bids", "calls")


def _run(command: list[str]) -> float:
    """Run one step (its output goes to ours, stderr included); seconds it took."""
    started = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step failed with exit code {done.returncode}: {' '.join(command)}")
    return time.monotonic() - started


def _bidfilter(*args: str) -> list[str]:
    return [sys.executable, "-m", "bidfilter", *args]


def make_logs(world: str, requests: int, seed: int, workdir: Path) -> dict[str, float]:
    """Write ``workdir/logs`` for the world unless logs with the same origin are there already;
    seconds per step (empty when reused)."""
    logs = workdir / "logs"
    origin = {"world": world, "requests": requests, "seed": seed}
    marker = workdir / LOGS_MARKER
    if marker.exists() and json.loads(marker.read_text()) == origin:
        return {}
    if logs.exists():
        # Importing into a folder replaces only the days it writes: refuse to mix two worlds.
        raise SystemExit(f"{logs} holds other logs; pass a fresh --workdir")
    seconds: dict[str, float] = {}
    if world == "synth":
        seconds["generate"] = _run(
            _bidfilter(
                "synth",
                *("--requests", str(requests), "--partners", "20", "--seed", str(seed)),
                *("--out", str(logs)),
            )
        )
    else:
        jsonl = workdir / "world2.jsonl.gz"
        seconds["generate"] = _run(
            [
                sys.executable,
                str(WORLD2),
                *("--requests", str(requests), "--partners", "20", "--seed", str(seed)),
                *("--out", str(jsonl)),
            ]
        )
        seconds["import"] = _run(_bidfilter("import-jsonl", str(jsonl), "--out", str(logs)))
        jsonl.unlink()  # the Parquet logs hold all of it; the JSON lines are several times larger
    marker.write_text(json.dumps(origin) + "\n")
    return seconds


def latest_report(store: Path) -> tuple[str, dict[str, Any]]:
    version = (store / "LATEST").read_text().strip()
    report = json.loads((store / "versions" / version / "report.json").read_text())
    return version, report


def _figures(test: dict[str, Any]) -> dict[str, Any]:
    figures = {key: test.get(key) for key in FIGURES}
    oracle, savings = test.get("oracle_call_savings"), test.get("call_savings")
    figures["gap_pp"] = None if oracle is None or savings is None else 100 * (oracle - savings)
    return figures


def measure(
    world: str, requests: int, seed: int, workdir: Path, train_args: list[str]
) -> dict[str, Any]:
    seconds = make_logs(world, requests, seed, workdir)
    store = workdir / "store"
    seconds["train"] = _run(
        _bidfilter("train", "--logs", str(workdir / "logs"), "--store", str(store), *train_args)
    )
    version, report = latest_report(store)
    return {
        "world": world,
        "requests": requests,
        "seed": seed,
        "workdir": str(workdir),
        "train_args": train_args,
        "version": version,
        "seconds": {step: round(value, 1) for step, value in seconds.items()},
        "overall": _figures(report["test"]),
        "partners": {
            partner: {**_figures(entry["test"]), "threshold_method": entry["threshold_method"]}
            for partner, entry in report["partners"].items()
        },
        "warnings": report.get("warnings", []),
    }


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:5.1f}%"


def human(result: dict[str, Any]) -> str:
    overall = result["overall"]
    gap = overall["gap_pp"]
    lines = [
        f"world {result['world']}, {result['requests']} requests, seed {result['seed']}"
        f" ({result['workdir']}, version {result['version']})",
        "steps: " + ", ".join(f"{step} {value:.1f} s" for step, value in result["seconds"].items()),
        f"recall {_percent(overall['bid_recall'])}  savings {_percent(overall['call_savings'])}"
        f"  oracle {_percent(overall['oracle_call_savings'])}"
        f"  gap {'n/a' if gap is None else f'{gap:.1f} pp'}",
        "partner   recall  savings   oracle      gap   bids",
    ]
    for partner, figures in result["partners"].items():
        gap = figures["gap_pp"]
        lines.append(
            f"{partner:8} {_percent(figures['bid_recall'])} {_percent(figures['call_savings'])}"
            f"  {_percent(figures['oracle_call_savings'])}"
            f" {'     n/a' if gap is None else f'{gap:5.1f} pp'} {figures['bids']:6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Make logs of a synthetic world, train at the defaults, print test quality."
    )
    parser.add_argument(
        "--world",
        choices=("synth", "world2"),
        default="world2",
        help="bidfilter synth, or the independent bench/world2.py (default world2)",
    )
    parser.add_argument(
        "--requests", type=int, default=100_000, help="bid requests to generate (default 100000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument(
        "--workdir", type=Path, help="where logs and store go (default: a temporary folder)"
    )
    parser.add_argument(
        "--train-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `bidfilter train` argument, repeatable: --train-arg=--trees --train-arg=500",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bidfilter-quality-")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(args.world, args.requests, args.seed, workdir, args.train_arg)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else human(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

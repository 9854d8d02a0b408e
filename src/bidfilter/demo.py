"""``bidfilter demo``: the whole path on a laptop, with nothing but this package.

Synthetic logs -> training -> thresholds -> evaluation -> a version published to a local store.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bidfilter.artifact import open_store
from bidfilter.synth import generate
from bidfilter.training.pipeline import TrainConfig, train


def run_demo(workdir: Path, *, requests: int, seed: int, as_json: bool) -> int:
    logs = workdir / "logs"
    store_dir = workdir / "store"
    if logs.exists():
        shutil.rmtree(logs)  # logs are regenerated each run; the store keeps every version
    interactive = not as_json and sys.stderr.isatty()

    def say(message: str) -> None:
        if not as_json:
            print(message, flush=True)

    say(f"[1/3] writing {requests} synthetic OpenRTB requests x 20 partners to {logs}")
    synth = generate(logs, requests=requests, partners=20, seed=seed, progress=interactive)
    say(f"      overall bid rate {synth.overall_bid_rate:.2%}")
    say(f"[2/3] training and publishing to {store_dir}")
    store = open_store(str(store_dir))
    result = train(
        logs, store, TrainConfig(), progress=interactive, on_stage=lambda m: say(f"      {m}")
    )
    version_dir = store_dir / "versions" / result.version
    summary = {
        "logs": str(logs),
        "synth": synth.to_dict(),
        "train": result.summary(),
        "plots": [str(version_dir / "savings_vs_recall.png"), str(version_dir / "calibration.png")],
        "report": str(version_dir / "report.json"),
    }
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    test = result.report["test"]
    say("[3/3] result on the held-out latest 10% of traffic")
    say(f"      bid recall   {test['bid_recall']:.2%}  (target 99% per partner)")
    say(f"      call savings {test['call_savings']:.2%}")
    if "oracle_call_savings" in test:
        oracle = test["oracle_call_savings"]
        say(f"      oracle       {oracle:.2%}  (a perfect model at the same recall)")
    say(f"      report {summary['report']}")
    for plot in summary["plots"]:
        say(f"      plot   {plot}")
    return 0

"""``python -m bench.fleet_faults``: faults across hosts, on a fleet of network namespaces.

Builds the fleet of tests/fleet (HAProxy, two ``bidfilter serve`` hosts, moto's S3, the client
in the root namespace; see tests/fleet/fleet_topology.py), runs its four scenarios under paced
load with a retrying client (a server host killed, a slow and lossy link, the S3 host
partitioned during a rollout, a rolling model update) and prints their figures: calls sent and
answered, fail-open answers, latency of the calls started during the fault, and the time to
recover. Needs root (``ip netns``), iproute2 and HAProxy; exits 2 where they are missing, 1 if
a call was lost or answered fail-open.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fleet"))  # tests/ holds no packages
from fleet_topology import (  # noqa: E402
    Figures,
    Fleet,
    FleetUnavailableError,
    Requests,
    host_kill,
    logged_requests,
    lossy_link,
    rolling_update,
    running_fleet,
    s3_partition,
)

SCENARIOS = ("kill", "lossy", "partition", "rolling")


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(names) - set(SCENARIOS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SCENARIOS)}")
    return names


def train_store(workdir: Path) -> tuple[Path, str]:
    """A small model (4,000 synthetic requests x 6 partners, 40 trees), as the tests train:
    (local store directory, version)."""
    from bidfilter.artifact import open_store
    from bidfilter.synth import generate
    from bidfilter.training.config import ModelConfig, TrainConfig
    from bidfilter.training.pipeline import train

    logs = workdir / "logs"
    generate(logs, requests=4000, partners=6, seed=7, days=3)
    store_dir = workdir / "store"
    config = TrainConfig(model=ModelConfig(trees=40, learning_rate=0.3, early_stopping_rounds=5))
    return store_dir, train(logs, open_store(str(store_dir)), config).version


def run(names: tuple[str, ...], fleet: Fleet, requests: Requests, store: Path) -> list[Figures]:
    results: list[Figures] = []
    for name in names:
        fleet.heal()
        if name == "kill":
            results.append(host_kill(fleet, requests))
        elif name == "lossy":
            results.append(lossy_link(fleet, requests))
        elif name == "partition":
            results.append(s3_partition(fleet, requests, store))
        else:
            results.append(rolling_update(fleet, requests, store))
        print(f"done: {results[-1].scenario}", file=sys.stderr)
    return results


def render_table(results: list[Figures]) -> str:
    head = (
        "| scenario | sent | answered | lost | fail-open | during the fault | p50 | p99 | max"
        " | time to recover |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = "".join(
        f"| {r.scenario} | {r.calls_sent:,} | {r.calls_answered:,} | {r.calls_lost} |"
        f" {r.fail_open} | {r.calls_in_fault:,} calls | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms |"
        f" {r.max_ms:.1f} ms | {r.recover_s:.2f} s ({r.recover_what}) |\n"
        for r in results
    )
    notes = "".join(f"- {r.scenario}: {r.notes}\n" for r in results)
    return head + rows + "\n" + notes


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the fleet's cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet_faults",
        description="Faults across hosts on a fleet of network namespaces (HAProxy, two"
        " bidfilter servers, moto's S3): a server host killed, a slow and lossy link, the S3 host"
        " partitioned during a rollout, a rolling model update; calls sent, answered, failed"
        " open, latency during the fault, time to recover. Needs root, iproute2 and HAProxy.",
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=",".join(SCENARIOS),
        help=f"comma-separated, run in this order (default {','.join(SCENARIOS)})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document, not a table")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the model, logs and process logs go (default: a temporary directory)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fleet-faults-") as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        store, version = train_store(workdir)
        requests = logged_requests(workdir / "logs")
        try:
            with running_fleet(workdir / "fleet", store / "versions" / version) as fleet:
                results = run(args.scenarios, fleet, requests, store)
        except FleetUnavailableError as error:
            print(f"cannot build the fleet here: {error}", file=sys.stderr)
            return 2
    load_after = os.getloadavg()
    if args.json:
        document = {
            "started": started.isoformat(timespec="seconds"),
            "load_average": {"before": load_before, "after": load_after},
            "cpus": os.cpu_count(),
            "scenarios": [asdict(r) for r in results],
        }
        print(json.dumps(document, indent=2))
    else:
        print(
            f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average"
            f" {load_before[0]:.2f} before, {load_after[0]:.2f} after\n"
        )
        print(render_table(results))
    return 1 if any(r.calls_lost or r.fail_open for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

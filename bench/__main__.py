"""``python -m bench``: bidfilter against MLServer and a Thrift thread-pool server, one core each,
with the machine's floor (a C server that does no work) beside them.

Wires the pieces: the cached workload (``workload``), MLServer's venv (``mlserver_venv``), the
compiled load generator and floor server (``load_client``), the per-system measurements
(``runner``), and the results file and docs table (``report``). ``--smoke`` is the CI version: a
tiny model, one-second runs, output to a temporary directory; it checks that the harness works,
not the speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.load_client import build_floor_server, build_loadgen, compiler_version
from bench.mlserver_venv import ensure_mlserver_venv, package_versions
from bench.report import (
    git_commit,
    machine_info,
    render_markdown,
    targets,
    update_docs,
    write_results,
)
from bench.report import package_versions as our_versions
from bench.runner import BenchConfig, BenchTools, run_systems
from bench.systems import SYSTEM_NAMES
from bench.workload import PER_PARTNER, REFERENCE, SMOKE, ReplaySet, prepare_model

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
MLSERVER_VENV = REPO / "bench" / ".venvs" / "mlserver"
DEFAULT_RATES = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0)


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def _systems(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SYSTEM_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown system {unknown[0] if unknown else '(none)'}; choose from"
            f" {','.join(SYSTEM_NAMES)}"
        )
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark bidfilter against Seldon MLServer (XGBoost runtime) and a Thrift"
        " thread-pool server on one core each: server CPU per bid request, max throughput,"
        " latency at fixed offered rates (open loop), peak memory. The floor, a C server that"
        " answers every call with one canned reply, shows what the machine and the load"
        " generator give by themselves. Writes bench/results/<date>.json and the table in"
        " docs/benchmarks.md.",
    )
    parser.add_argument(
        "--systems",
        type=_systems,
        default=SYSTEM_NAMES,
        help=f"comma-separated, from {','.join(SYSTEM_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds per measured run (default 10; smoke 1)"
    )
    parser.add_argument(
        "--rates",
        type=_rates,
        help="fixed offered rates, req/s, comma-separated, run where a system can carry them;"
        " half of each system's max is always run (default"
        f" {','.join(f'{r:g}' for r in DEFAULT_RATES)}; smoke 50)",
    )
    parser.add_argument(
        "--workload",
        choices=("reference", "per-partner"),
        default="reference",
        help="the model served: reference, one shared booster of 100 trees on the base features"
        " (the published numbers); per-partner, train's defaults on the same logs (100 trees per"
        " partner, partner-affinity columns). Ignored with --smoke (default reference)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model and runs, results in a temporary directory (CI: checks the harness)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results directory (default bench/results; smoke: a new temporary directory)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        help="Markdown file to put the table in (default docs/benchmarks.md; smoke: a copy of"
        " it in the results directory)",
    )
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 3; smoke 0.5)")
    parser.add_argument(
        "--connections", type=int, help="load generator connections (default 8; smoke 2)"
    )
    parser.add_argument(
        "--depth", type=int, help="in flight per connection at max throughput (default 8)"
    )
    parser.add_argument(
        "--replay-requests", type=int, help="distinct bid requests replayed (default 2000)"
    )
    parser.add_argument("--server-core", type=int, default=0, help="default 0")
    parser.add_argument("--client-core", type=int, default=1, help="default 1")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep server logs and load reports"
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite the table (--docs) from an earlier results file",
    )
    args = parser.parse_args(argv)
    for name in ("duration", "warmup"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= 600:
            parser.error(f"--{name} must be in (0, 600] seconds")
    for name in ("connections", "depth", "replay_requests"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def make_config(args: argparse.Namespace) -> BenchConfig:
    smoke = bool(args.smoke)

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if smoke else full)

    return BenchConfig(
        systems=tuple(args.systems),
        duration_s=pick(args.duration, 10.0, 1.0),
        warmup_s=pick(args.warmup, 3.0, 0.5),
        fixed_rates=pick(args.rates, DEFAULT_RATES, (50.0,)),
        connections=pick(args.connections, 8, 2),
        depth=pick(args.depth, 8, 2),
        replay_requests=pick(args.replay_requests, 2000, 50),
        correctness_sample=10 if smoke else 50,
        server_core=args.server_core,
        client_core=args.client_core,
        smoke=smoke,
        drain_s=1.0 if smoke else 2.0,
        idle_s=0.5 if smoke else 3.0,
    )


def preflight(config: BenchConfig) -> None:
    """Refuse to start what cannot give meaningful figures."""
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found (util-linux): it pins the server and the client")
    allowed = os.sched_getaffinity(0)
    for core in (config.server_core, config.client_core):
        if core not in allowed:
            raise SystemExit(f"core {core} is not available to this process ({sorted(allowed)})")
    if config.server_core == config.client_core:
        raise SystemExit("--server-core and --client-core must differ")


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def log(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    if args.render is not None:
        earlier = json.loads(args.render.read_text())
        earlier["targets"] = targets(earlier["systems"])
        docs_path = args.docs or REPO / "docs" / "benchmarks.md"
        update_docs(docs_path, render_markdown(earlier))
        log(f"table from {args.render} written to {docs_path}")
        return 0
    config = make_config(args)
    preflight(config)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started_at = dt.datetime.now(dt.UTC)
    mlserver_install_s = None
    if "mlserver" in config.systems:
        mlserver_install_s = ensure_mlserver_venv(MLSERVER_VENV, log)
    tools = BenchTools(build_loadgen(CACHE), build_floor_server(CACHE), MLSERVER_VENV)
    workload = PER_PARTNER if args.workload == "per-partner" else REFERENCE
    model = prepare_model(SMOKE if config.smoke else workload, CACHE, log)
    replay = ReplaySet.from_logs(model, config.replay_requests)
    log(
        f"workload {model.spec.key}: version {model.version}, {model.trees} trees;"
        f" {len(replay)} requests x {len(replay.candidates)} candidates"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-work-"))
    failed = True
    try:
        measured = run_systems(config, model, replay, tools, workdir, log)
        failed = False
    finally:
        if args.keep_workdir or failed:
            log(f"server logs and load reports kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    systems = measured["systems"]
    versions = our_versions()
    if "mlserver" in config.systems and MLSERVER_VENV.exists():
        versions.update(
            {f"mlserver-venv:{k}": v for k, v in package_versions(MLSERVER_VENV).items()}
        )
    results: dict[str, Any] = {
        "schema": 1,
        "date": started_at.date().isoformat(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench", *arguments]),
        "smoke": config.smoke,
        "git": git_commit(REPO),
        "machine": machine_info(),
        "versions": versions,
        "workload": {
            **model.describe(),
            "replay_requests": len(replay),
            "candidates": len(replay.candidates),
        },
        "config": {
            "systems": list(config.systems),
            "duration_s": config.duration_s,
            "warmup_s": config.warmup_s,
            "fixed_rates": list(config.fixed_rates),
            "connections": config.connections,
            "depth": config.depth,
            "server_core": config.server_core,
            "client_core": config.client_core,
            "max_rate_share": config.max_rate_share,
            "drain_s": config.drain_s,
            "idle_s": config.idle_s,
        },
        "loadgen": {
            "binary": tools.loadgen.name,
            "floor_server": tools.floor_server.name,
            "compiler": compiler_version(),
        },
        "mlserver_install_s": mlserver_install_s,
        "systems": systems,
        "agreement": measured["agreement"],
    }
    results["targets"] = targets(systems)
    out_dir: Path = args.out or (
        Path(tempfile.mkdtemp(prefix="bench-smoke-"))
        if config.smoke
        else REPO / "bench" / "results"
    )
    docs: Path = args.docs or (
        out_dir / "benchmarks.md" if config.smoke else REPO / "docs" / "benchmarks.md"
    )
    if config.smoke and args.docs is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "docs" / "benchmarks.md", docs)
    path = write_results(results, out_dir)
    update_docs(docs, render_markdown(results))
    log(f"results: {path}")
    log(f"table:   {docs}")
    ok = all("error" not in s for s in systems.values()) and measured["agreement"]["agree"]
    if not ok:
        log("FAILED: a system failed or the systems' scores disagree (see the results)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

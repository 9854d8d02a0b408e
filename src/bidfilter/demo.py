"""``bidfilter demo``: the whole system on a laptop, with nothing but this package.

Synthetic logs -> training -> a version published to a local store -> ``bidfilter serve`` in a
child process -> the load generator for a while -> the auction simulator -> a summary. The
server is always stopped at the end (SIGTERM, then SIGKILL if it does not drain).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from bidfilter.artifact import open_store
from bidfilter.replay import run_loadgen, simulate
from bidfilter.replay.simulation_plot import plot_simulation
from bidfilter.synth import generate
from bidfilter.training.config import TrainConfig
from bidfilter.training.pipeline import train

_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def _server(store: Path, workdir: Path, workers: int) -> Iterator[tuple[int, int]]:
    port, metrics_port = _free_port(), _free_port()
    log = workdir / "server.log"
    command = [
        sys.executable, "-m", "bidfilter", "serve",
        "--store", str(store),
        "--port", str(port),
        "--metrics-port", str(metrics_port),
        "--workers", str(workers),
        "--cache-dir", str(workdir / "cache"),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _ready(metrics_port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready; see {log}")
            time.sleep(0.1)
        yield port, metrics_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def run_demo(
    workdir: Path,
    *,
    requests: int,
    seed: int,
    as_json: bool,
    load_seconds: float = 30.0,
    rate: float = 1000.0,
    workers: int = 2,
) -> int:
    # The demo narrates each stage itself; the library's INFO lines would say it all twice.
    library_log = logging.getLogger("bidfilter")
    level = library_log.level
    library_log.setLevel(logging.WARNING)
    try:
        return _run_demo(
            workdir,
            requests=requests,
            seed=seed,
            as_json=as_json,
            load_seconds=load_seconds,
            rate=rate,
            workers=workers,
        )
    finally:
        library_log.setLevel(level)


def _run_demo(
    workdir: Path,
    *,
    requests: int,
    seed: int,
    as_json: bool,
    load_seconds: float = 30.0,
    rate: float = 1000.0,
    workers: int = 2,
) -> int:
    logs = workdir / "logs"
    store_dir = workdir / "store"
    if logs.exists():
        shutil.rmtree(logs)  # logs are regenerated each run; the store keeps every version
    workdir.mkdir(parents=True, exist_ok=True)
    interactive = not as_json and sys.stderr.isatty()

    def say(message: str) -> None:
        if not as_json:
            print(message, flush=True)

    say(f"[1/5] writing {requests} synthetic OpenRTB requests x 20 partners to {logs}")
    synth = generate(logs, requests=requests, partners=20, seed=seed, progress=interactive)
    say(f"      overall bid rate {synth.overall_bid_rate:.2%}")
    say(f"[2/5] training and publishing to {store_dir}")
    store = open_store(str(store_dir))
    result = train(
        logs, store, TrainConfig(), progress=interactive, on_stage=lambda m: say(f"      {m}")
    )
    version_dir = store_dir / "versions" / result.version
    test = result.report["test"]
    summary: dict[str, Any] = {
        "logs": str(logs),
        "synth": synth.to_dict(),
        "train": result.summary(),
        "plots": [str(version_dir / "savings_vs_recall.png"), str(version_dir / "calibration.png")],
        "report": str(version_dir / "report.json"),
    }
    say(f"[3/5] starting bidfilter serve ({workers} workers) on the new model")
    with _server(store_dir, workdir, workers) as (port, metrics_port):
        say(f"      Thrift on 127.0.0.1:{port}, metrics on http://127.0.0.1:{metrics_port}/metrics")
        say(f"[4/5] load: {rate:.0f} bid requests/s for {load_seconds:.0f} s (open loop)")
        load = run_loadgen(
            ("127.0.0.1", port), logs, rate=rate, duration=load_seconds, progress=interactive
        )
        summary["load"] = load.to_dict()
        say("\n".join(f"      {line}" for line in load.to_text().splitlines()))
        say("[5/5] the auction with and without the filter (20,000 logged requests)")
        simulation = simulate(("127.0.0.1", port), logs, limit=20_000, in_flight=32)
        png = plot_simulation(simulation, workdir / "simulation.png")
        summary["simulation"] = replace(simulation, png=png).to_dict()
        summary["plots"].append(str(png))
        say("\n".join(f"      {line}" for line in simulation.to_table().splitlines()))
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    say("")
    say(f"model {result.version}: bid recall {test['bid_recall']:.2%}, call savings"
        f" {test['call_savings']:.2%} on held-out traffic"
        + (f" (a perfect model: {test['oracle_call_savings']:.2%})"
           if "oracle_call_savings" in test else ""))  # fmt: skip
    say(f"report {summary['report']}")
    for plot in summary["plots"]:
        say(f"plot   {plot}")
    return 0

"""One benchmark run: for each system, start it pinned, check its scores, load it, stop it.

Per system, in order, with the server alone on the server core and the load generator alone on
the client core:

1. start it and wait until it is ready;
2. correctness: score a sample of the replayed requests through it and compare with XGBoost's
   own prediction on bidfilter's feature rows (and, at the end, the systems with each other;
   the floor scores nothing and is not checked);
3. idle: the server's own CPU use without load, for a few seconds; then a warm-up: a short
   closed-loop run, not counted in the results;
4. maximum throughput: closed loop, ``connections x depth`` requests in flight;
5. latency: open loop at half of that maximum, and at each fixed offered rate the system can
   carry (at most ``max_rate_share`` of its maximum); the floor and the matched server also
   run at the half-load rates of the systems before them, so each of their latencies has the
   references' beside it;
6. peak memory of all its processes; stop it.

Every measured run also records the server's CPU time (all its processes, from /proc) per
request, the load generator's own CPU share (its headroom), the other load on the server's core
(the machine may be shared) and the load average.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import xgboost as xgb

from bench.load_client import LoadSpec, run_load
from bench.procfs import (
    core_busy_seconds,
    cpu_seconds_between,
    load_average,
    sample_session,
)
from bench.report import TARGET_LATENCY_RATE, run_at
from bench.systems import (
    REFERENCE_SYSTEMS,
    BidfilterSystem,
    FloorSystem,
    MatchedSystem,
    MLServerSystem,
    SystemStartError,
    SystemUnderTest,
    ThreadPoolSystem,
)
from bench.workload import PreparedModel, ReplaySet, feature_rows, write_requests_file
from bidfilter.features import FeatureSpec

Log = Callable[[str], object]
_MS_PER_HOUR: Final = 3_600_000


@dataclass(frozen=True)
class BenchConfig:
    systems: tuple[str, ...]
    duration_s: float
    warmup_s: float
    fixed_rates: tuple[float, ...]
    connections: int
    depth: int
    replay_requests: int
    correctness_sample: int
    server_core: int
    client_core: int
    smoke: bool
    idle_s: float = 3.0
    tolerance: float = 1e-5
    max_rate_share: float = 0.8
    drain_s: float = 2.0


def plan_rates(max_rate: float, fixed: Sequence[float], share: float) -> tuple[float, list[float]]:
    """Half of ``max_rate`` (rounded), and the sorted offered rates to run: it, and each fixed
    rate up to ``share`` of the maximum."""
    half = max_rate / 2
    if half >= 100:
        half = round(half, -1)
    half = max(round(half), 1)
    rates = {float(half)} | {float(r) for r in fixed if r <= share * max_rate}
    return float(half), sorted(rates)


@dataclass(frozen=True)
class BenchTools:
    """What the harness built or installed before the runs."""

    loadgen: Path
    floor_server: Path
    mlserver_venv: Path


def ok_answers(report: dict[str, Any]) -> int:
    """Answers that are what the system is for: a scored Thrift reply, or an HTTP 200."""
    results = report["results"]
    return int(results["scored"] if report["kind"] == "thrift" else results["http_ok"])


class SystemRun:
    """The measurements of one system (see the module docstring for the sequence)."""

    def __init__(
        self,
        system: SystemUnderTest,
        model: PreparedModel,
        replay: ReplaySet,
        config: BenchConfig,
        loadgen: Path,
        log: Log,
        extra_rates: Sequence[float] = (),
    ) -> None:
        self.system = system
        self.model = model
        self.replay = replay
        self.config = config
        self.loadgen = loadgen
        self.log = log
        self.extra_rates = extra_rates
        self.requests_file = system.workdir / "requests.bin"
        self.scores: np.ndarray | None = None
        self.reference: np.ndarray | None = None
        self._runs = 0

    def run(self) -> dict[str, Any]:
        system, config = self.system, self.config
        system.workdir.mkdir(parents=True, exist_ok=True)
        write_requests_file(self.requests_file, system.wire_messages(self.replay))
        self.log(f"[{system.name}] starting on core {config.server_core}")
        started = time.monotonic()
        system.start()
        result: dict[str, Any] = {
            "label": system.label,
            "wire": system.wire,
            "server_core": config.server_core,
            "client_core": config.client_core,
            "command": ["taskset", "-c", str(config.server_core), *system.command()],
            "startup_s": round(time.monotonic() - started, 2),
        }
        correctness = self.check_scores()
        if correctness is not None:
            result["correctness"] = correctness
            self.log(
                f"[{system.name}] scores agree with XGBoost: max |diff| "
                f"{correctness['max_abs_diff_vs_xgboost']:.2e}"
            )
        result["idle_cpu_share"] = self.idle_cpu_share()
        self.log(
            f"[{system.name}] idle: {result['idle_cpu_share']:.1%} of a core"
            f" over {config.idle_s:g} s"
        )
        closed = LoadSpec(
            "closed",
            config.warmup_s,
            config.connections,
            depth=config.depth,
            drain_s=config.drain_s,
        )
        self.log(f"[{system.name}] warm-up {config.warmup_s:g} s")
        result["warmup"] = self.measured(closed)
        self.log(f"[{system.name}] max throughput: closed loop {config.duration_s:g} s")
        maximum = self.measured(
            LoadSpec(
                "closed",
                config.duration_s,
                config.connections,
                depth=config.depth,
                drain_s=config.drain_s,
            )
        )
        result["max"] = maximum
        max_rate = maximum["ok_rate"]
        result["max_throughput_rps"] = max_rate
        self.log(
            f"[{system.name}]   {max_rate:,.0f} req/s, server CPU "
            f"{_fmt(maximum['server_cpu_us_per_request'])} us/req, "
            f"loadgen CPU {maximum['load']['cpu_share']:.0%}"
        )
        if max_rate <= 0:
            raise RuntimeError(f"{system.name} answered nothing correctly at full load")
        fixed = [*config.fixed_rates, *self.extra_rates]
        half, rates = plan_rates(max_rate, fixed, config.max_rate_share)
        if not system.runs_half_load:  # its max is the load generator's: half says nothing
            rates = [rate for rate in rates if rate != half or rate in fixed]
        else:
            result["half_load_rate"] = half
        result["rates"] = []
        for rate in rates:
            self.log(f"[{system.name}] open loop at {rate:,.0f} req/s for {config.duration_s:g} s")
            run = self.measured(
                LoadSpec(
                    "open",
                    config.duration_s,
                    config.connections,
                    rate=rate,
                    drain_s=config.drain_s,
                )
            )
            latency = run["load"]["latency_us"]
            self.log(
                f"[{system.name}]   p50 {latency['p50'] / 1000:.2f} ms, p99 "
                f"{latency['p99'] / 1000:.2f} ms, p99.9 {latency['p99_9'] / 1000:.2f} ms, server "
                f"CPU {_fmt(run['server_cpu_us_per_request'])} us/req, loadgen CPU "
                f"{run['load']['cpu_share']:.0%}"
            )
            result["rates"].append(run)
        memory = sample_session(system.pid)
        result["memory"] = {
            "peak_rss_sum_mib": round(memory.peak_rss_sum_mib, 1),
            "peak_rss_max_mib": round(memory.peak_rss_max_mib, 1),
            "processes": memory.describe(),
        }
        return result

    # -- correctness

    def check_scores(self) -> dict[str, Any] | None:
        """Scores of a sample vs XGBoost on the same rows (retried across an hour boundary:
        the hour is a feature, and each system computes it at its own clock); None for a
        system that does not score."""
        config, replay = self.config, self.replay
        indices = list(range(min(config.correctness_sample, len(replay))))
        spec = FeatureSpec.from_dict(self.model.manifest.feature_spec)
        booster = xgb.Booster(model_file=str(self.model.model_file))
        booster.set_param({"nthread": 1})
        openrtb = [replay.openrtb[i] for i in indices]
        for _attempt in range(3):
            before = time.time_ns() // 1_000_000
            rows = feature_rows(spec, openrtb, replay.candidates, before)
            reference = np.stack(
                [np.asarray(booster.inplace_predict(r), dtype=np.float64) for r in rows]
            )
            sample = ReplaySet(openrtb, replay.candidates, rows, before)
            scored = self.system.scores(sample, range(len(indices)))
            if scored is None:
                return None
            scores = scored
            after = time.time_ns() // 1_000_000
            if before // _MS_PER_HOUR == after // _MS_PER_HOUR:
                break
        self.scores, self.reference = scores, reference
        diff = float(np.max(np.abs(scores - reference)))
        agree = diff <= config.tolerance
        if not agree:
            raise AssertionError(
                f"{self.system.name}: scores differ from XGBoost's by up to {diff:.3g}"
                f" (tolerance {config.tolerance:g})"
            )
        return {
            "requests": len(indices),
            "candidates": len(replay.candidates),
            "max_abs_diff_vs_xgboost": diff,
            "tolerance": config.tolerance,
            "agree": agree,
        }

    def idle_cpu_share(self) -> float:
        """The server's CPU use without load (timers, polling, metrics), as a share of a core."""
        before = sample_session(self.system.pid)
        started = time.monotonic()
        time.sleep(self.config.idle_s)
        after = sample_session(self.system.pid)
        return cpu_seconds_between(before, after) / (time.monotonic() - started)

    # -- one measured load run

    def measured(self, spec: LoadSpec) -> dict[str, Any]:
        system, config = self.system, self.config
        self._runs += 1
        report_file = system.workdir / f"load-{self._runs:02d}.json"
        load_before = load_average()
        busy_before = core_busy_seconds()
        before = sample_session(system.pid)
        report = run_load(
            self.loadgen,
            port=system.port,
            requests_file=self.requests_file,
            wire=system.wire,
            spec=spec,
            core=config.client_core,
            report_file=report_file,
        )
        after = sample_session(system.pid)
        busy_after = core_busy_seconds()
        server_cpu = cpu_seconds_between(before, after)
        answered = int(report["answered"])
        ok = ok_answers(report)
        server_core_busy = busy_after[config.server_core] - busy_before[config.server_core]
        client_core_busy = busy_after[config.client_core] - busy_before[config.client_core]
        achieved = float(report["achieved_rate"])
        return {
            "spec": asdict(spec),
            "load": report,
            "ok": ok,
            "ok_share": ok / answered if answered else 0.0,
            "ok_rate": achieved * ok / answered if answered else 0.0,
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_us_per_request": server_cpu * 1e6 / answered if answered else None,
            "server_cpu_share": server_cpu / report["wall_s"] if report["wall_s"] else None,
            "server_core_busy_s": round(server_core_busy, 3),
            # Busy time on the server's core that was not the server: other load on the machine.
            "server_core_other_s": round(max(server_core_busy - server_cpu, 0.0), 3),
            "client_core_busy_s": round(client_core_busy, 3),
            "loadgen_cpu_share": report["cpu_share"],
            "load_average_before": load_before,
            "load_average_after": load_average(),
        }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def matched_work_us(systems: dict[str, Any]) -> float:
    """The CPU per request bidfilter spends beyond the floor's, at the latency target's rate
    (else at bidfilter's half load): what the matched server spins per request."""
    ours, floor = systems.get("bidfilter", {}), systems.get("floor", {})
    if "max" not in ours or "max" not in floor:
        raise RuntimeError("the matched server needs bidfilter and the floor measured first")
    for rate in (TARGET_LATENCY_RATE, ours["half_load_rate"]):
        run, floor_run = run_at(ours, rate), run_at(floor, rate)
        if run and floor_run:
            spent = run["server_cpu_us_per_request"] - floor_run["server_cpu_us_per_request"]
            return float(max(spent, 0.0))
    raise RuntimeError("bidfilter and the floor share no offered rate")


def make_system(
    name: str,
    model: PreparedModel,
    workdir: Path,
    core: int,
    tools: BenchTools,
    measured: dict[str, Any],
) -> SystemUnderTest:
    if name == "bidfilter":
        return BidfilterSystem(model, workdir, core)
    if name == "threadpool":
        return ThreadPoolSystem(model, workdir, core)
    if name == "mlserver":
        return MLServerSystem(model, workdir, core, tools.mlserver_venv)
    if name == "floor":
        return FloorSystem(model, workdir, core, tools.floor_server)
    if name == "matched":
        work_us = matched_work_us(measured)
        return MatchedSystem(model, workdir, core, tools.floor_server, work_us)
    raise ValueError(f"unknown system {name!r}")


def run_systems(
    config: BenchConfig,
    model: PreparedModel,
    replay: ReplaySet,
    tools: BenchTools,
    workdir: Path,
    log: Log,
) -> dict[str, Any]:
    """Every system of ``config``, one after the other, the reference systems last (they run
    at the others' half-load rates too); a system that fails gets ``error``."""
    systems: dict[str, Any] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    order = {name: index + 1 for index, name in enumerate(REFERENCE_SYSTEMS)}
    for name in sorted(config.systems, key=lambda n: order.get(n, 0)):
        try:
            system = make_system(name, model, workdir, config.server_core, tools, systems)
        except RuntimeError as error:
            log(f"[{name}] not run: {error}")
            systems[name] = {"label": name, "error": str(error)}
            continue
        others_half = [s["half_load_rate"] for s in systems.values() if "half_load_rate" in s]
        run = SystemRun(system, model, replay, config, tools.loadgen, log, others_half)
        try:
            systems[name] = run.run()
        except (SystemStartError, RuntimeError, AssertionError, OSError, ValueError) as error:
            log(f"[{name}] FAILED: {error}")
            systems[name] = {"label": system.label, "error": str(error)}
        finally:
            system.stop()
        if run.scores is not None and run.reference is not None:
            scores[name] = (run.scores, run.reference)
    return {"systems": systems, "agreement": cross_agreement(scores, config.tolerance)}


def cross_agreement(
    scores: dict[str, tuple[np.ndarray, np.ndarray]], tolerance: float
) -> dict[str, Any]:
    """Pairwise max |difference| of the systems' scores on the same sample.

    Two systems checked in different hours (the hour is a feature) are compared through the
    reference instead: the sum of each one's distance to its own reference.
    """
    pairs: dict[str, float] = {}
    names = sorted(scores)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (score_a, ref_a), (score_b, ref_b) = scores[a], scores[b]
            if score_a.shape != score_b.shape:
                continue
            if np.array_equal(ref_a, ref_b):
                diff = float(np.max(np.abs(score_a - score_b)))
            else:
                diff = float(np.max(np.abs(score_a - ref_a)) + np.max(np.abs(score_b - ref_b)))
            pairs[f"{a}~{b}"] = diff
    return {
        "pairs_max_abs_diff": pairs,
        "tolerance": tolerance,
        "agree": all(diff <= tolerance for diff in pairs.values()),
    }

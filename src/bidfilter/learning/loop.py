"""The closed loop, simulated: a synthetic world day by day, filtered by the model of the day
before, observed only through what was sent, retrained and promoted as live.

Day 0 is unfiltered. Every later day, each retraining policy's serving version decides that day's
traffic through ``scoring.decide`` (the server's decision code: thresholds, exploration, control
group, propensities); the simulator alone knows what every partner would have done, and measures
each day's figures against that truth. What the policy's logs record, and so what it retrains on:

* ``debiased``: what was sent (``sent``, ``propensity``, ``control``): training weighs by
  inverse propensity and leaves unexplored partners unfiltered (docs/training.md).
* ``naive``: the same traffic taken at face value: every candidate logged as called, an unsent
  call as a no-bid, the mistake a log pipeline makes that records "no bid" for every partner
  that did not answer.
* ``full_information``: every partner's answer, as if all had been called: the reference no
  live system has.

After each day the policy retrains on its latest ``window_days`` of logs and promotes the
candidate only if :func:`~bidfilter.learning.promotion.judge` lets it (``retrain``). The world
has a partner that changes its targeting part-way (``retarget_day``) and one that joins part-way
(``join_day``); both are reported per day.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bidfilter.artifact import LocalModelStore
from bidfilter.learning.promotion import PromotionCounts, PromotionPolicy, retrain
from bidfilter.logs import AuctionLogWriter, auction_batch, log_files
from bidfilter.openrtb import BidRequest, InvalidRequestError, parse_bid_request
from bidfilter.scoring import Exploration, ServingModel, decide
from bidfilter.synth import WorldChanges, generate, partner_ids
from bidfilter.training.config import DatasetConfig, ModelConfig, TrainConfig
from bidfilter.training.dataset import ExtractedCache
from bidfilter.training.evaluate import evaluate

log = logging.getLogger(__name__)

POLICIES: Final = ("debiased", "naive", "full_information")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    days: int = 21
    requests_per_day: int = 20_000
    partners: int = 20
    seed: int = 0
    window_days: int = 5
    # Serving, the same for every policy: what they differ in is what their training sees.
    exploration: float = 0.05
    # A partner the serving version's report calls sparse (few effective validation bids) is
    # explored at least this much: where the logs say least, they are made to say more.
    sparse_exploration: float = 0.15
    control_share: float = 0.02
    target_recall: float = 0.99
    policies: tuple[str, ...] = POLICIES
    # Retraining: train's defaults but for a faster booster (a daily retrain of 20 partners on a
    # week of traffic, three times a day in the simulation) and a short recency half-life, so
    # that a partner that changed weighs by its new behaviour within days.
    trees: int = 60
    learning_rate: float = 0.3
    early_stopping_rounds: int = 5
    early_stopping_rows: int = 100_000
    # XGBoost threads per retraining. One: the boosters are small, and on a shared machine two
    # OpenMP threads waiting on each other's barriers were 8 times slower than one (measured).
    threads: int = 1
    recency_half_life_days: float = 2.0
    # Thresholds keep the target on a lower confidence bound of each partner's recall, this many
    # standard errors down (training/thresholds.py: confident_target).
    recall_confidence_z: float = 1.28
    retarget_day: float | None = None  # default: half-way
    join_day: float | None = None  # default: a third of the way

    def __post_init__(self) -> None:
        for name in ("days", "requests_per_day", "partners", "window_days", "trees", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.days < 3:
            raise ValueError("days must be at least 3 (a change of targeting needs room)")
        if self.partners < 2:
            raise ValueError("partners must be at least 2 (one retargets, one joins)")
        unknown = sorted(set(self.policies) - set(POLICIES))
        if unknown:
            raise ValueError(f"policies: {unknown[0]!r} is none of {', '.join(POLICIES)}")
        if self.recall_confidence_z < 0:
            raise ValueError(f"recall_confidence_z must be >= 0, not {self.recall_confidence_z}")
        for name in ("exploration", "sparse_exploration", "control_share", "target_recall"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")

    @property
    def changes(self) -> WorldChanges:
        """The busiest-numbered partner (dsp-01) retargets; the last one joins."""
        retarget = self.retarget_day if self.retarget_day is not None else self.days // 2
        join = self.join_day if self.join_day is not None else max(self.days // 3, 1)
        return WorldChanges(retarget={0: float(retarget)}, join={self.partners - 1: float(join)})

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            dataset=DatasetConfig(recency_half_life_days=self.recency_half_life_days),
            model=ModelConfig(
                trees=self.trees,
                learning_rate=self.learning_rate,
                early_stopping_rounds=self.early_stopping_rounds,
                early_stopping_rows=self.early_stopping_rows,
                threads=self.threads,
                seed=self.seed,
            ),
            target_recall=self.target_recall,
            recall_confidence_z=self.recall_confidence_z,
            plots=False,
        )


@dataclass
class _Day:
    """One day of the world: its requests parsed once, every partner's true answer."""

    index: int
    ts_ms: np.ndarray
    request_ids: list[str]
    texts: list[str]
    requests: list[BidRequest]
    offsets: np.ndarray  # (n + 1,) entries of request i: offsets[i]:offsets[i + 1]
    partners: list[str]
    bids: np.ndarray
    prices: np.ndarray
    oracle: np.ndarray


@dataclass
class _Policy:
    name: str
    root: Path
    store: LocalModelStore
    counts: PromotionCounts = field(default_factory=PromotionCounts)
    models: dict[str, ServingModel] = field(default_factory=dict)

    def serving(self) -> ServingModel | None:
        version = self.store.latest()
        if version is None:
            return None
        if version not in self.models:
            self.models = {
                version: ServingModel.load(self.store.fetch(version, self.root / "cache"))
            }
        return self.models[version]


def _days(world: Path) -> Iterator[_Day]:
    for index, path in enumerate(log_files(world)):
        table = pq.read_table(path)
        lists = table.column("partners").combine_chunks()
        flat = pc.list_flatten(lists)
        texts = table.column("request").to_pylist()
        requests = []
        for text in texts:
            try:
                requests.append(parse_bid_request(text))
            except InvalidRequestError as error:  # synth writes valid requests only
                raise RuntimeError(f"the world holds an invalid request: {error}") from None
        yield _Day(
            index=index,
            ts_ms=table.column("ts").cast(pa.int64()).to_numpy(),
            request_ids=table.column("request_id").to_pylist(),
            texts=texts,
            requests=requests,
            offsets=lists.offsets.to_numpy().astype(np.int64),
            partners=flat.field("partner").to_pylist(),
            bids=flat.field("bid").to_numpy(zero_copy_only=False).astype(bool),
            prices=flat.field("price").to_numpy(),
            oracle=flat.field("oracle_p").to_numpy(),
        )


def _serve(
    day: _Day, model: ServingModel | None, config: LoopConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sent, propensity) per entry and control per request, as the server would decide."""
    sent = np.ones(len(day.partners), dtype=bool)
    propensity = np.ones(len(day.partners))
    control = np.zeros(len(day.requests), dtype=bool)
    if model is None:
        return sent, propensity, control  # no version yet: everything goes out
    exploration = Exploration(rate=config.exploration, sparse_partner=config.sparse_exploration)
    for i, request in enumerate(day.requests):
        start, end = int(day.offsets[i]), int(day.offsets[i + 1])
        verdict = decide(
            model,
            request,
            day.partners[start:end],
            int(day.ts_ms[i]),
            exploration=exploration,
            control_share=config.control_share,
        )
        sent[start:end] = verdict.sent
        propensity[start:end] = [d.propensity for d in verdict.decisions]
        control[i] = verdict.control
    return sent, propensity, control


def _observed(
    policy: str,
    day: _Day,
    sent: np.ndarray,
    propensity: np.ndarray,
    control: np.ndarray,
    version: str | None,
) -> pa.RecordBatch:
    """The day's auction log as the policy's pipeline records it."""
    offsets = day.offsets.astype(np.int32)
    common = (day.ts_ms, day.request_ids, day.texts, offsets, day.partners)
    if policy == "full_information":
        return auction_batch(*common, day.bids, day.prices, day.oracle, control=control)
    kept = sent & day.bids
    prices = np.where(kept, day.prices, 0.0)
    if policy == "naive":
        return auction_batch(*common, kept, prices, day.oracle, control=control)
    return auction_batch(
        *common,
        kept,
        prices,
        day.oracle,
        sent=sent,
        propensity=propensity,
        model_version=[version] * len(day.partners),
        control=control,
    )


def _truth(
    day: _Day, sent: np.ndarray, names: tuple[str, ...], watched: dict[str, str]
) -> dict[str, Any]:
    """The day's figures against every partner's true answer (what only the simulator knows)."""
    codes = {name: code for code, name in enumerate(names)}
    partner_codes = np.array([codes[p] for p in day.partners], dtype=np.int32)
    # evaluate() filters scores at thresholds: sent as 1.0 against 0.5 is the day's decisions.
    figures = evaluate(
        sent.astype(np.float64),
        day.bids,
        partner_codes,
        names,
        dict.fromkeys(names, 0.5),
        day.oracle,
    )
    overall, partners = figures["overall"], figures["partners"]
    return {
        "bid_recall": overall["bid_recall"],
        "call_savings": overall["call_savings"],
        "oracle_call_savings": overall["oracle_call_savings"],
        "bids": overall["bids"],
        "calls": overall["calls"],
        "partner_recall": {
            p: round(partners[p]["bid_recall"], 6) for p in names if partners[p]["bids"]
        },
        "watched": {
            role: {
                "partner": partner,
                "bid_recall": partners[partner]["bid_recall"],
                "call_savings": partners[partner]["call_savings"],
                "bids": partners[partner]["bids"],
            }
            for role, partner in watched.items()
            if partners[partner]["calls"]
        },
    }


def run_loop(
    config: LoopConfig, out: Path, on_step: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the simulation into ``out`` (world logs, each policy's logs and store); the report."""

    def step(message: str) -> None:
        log.info(message)
        if on_step is not None:
            on_step(message)

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    world = out / "world"
    if world.exists():
        shutil.rmtree(world)
    changes = config.changes
    names = partner_ids(config.partners)
    watched = {
        "retargeted": names[next(iter(changes.retarget))],
        "joined": names[next(iter(changes.join))],
    }
    step(
        f"world: {config.days} days x {config.requests_per_day} requests, {config.partners}"
        f" partners ({watched['retargeted']} retargets on day {changes.retarget[0]:g},"
        f" {watched['joined']} joins on day {changes.join[config.partners - 1]:g})"
    )
    generate(
        world,
        requests=config.days * config.requests_per_day,
        partners=config.partners,
        seed=config.seed,
        days=config.days,
        changes=changes,
    )
    policies = []
    for name in config.policies:
        root = out / name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        policies.append(_Policy(name, root, LocalModelStore(root / "store")))
    train_config = config.train_config()
    promotion = PromotionPolicy(target_recall=config.target_recall)
    results: dict[str, list[dict[str, Any]]] = {policy.name: [] for policy in policies}
    # Every retraining reads a window of the same world's requests: each is parsed once.
    extracted: ExtractedCache = {}
    for day in _days(world):
        for policy in policies:
            model = policy.serving()
            version = None if model is None else model.version
            sent, propensity, control = _serve(day, model, config)
            with AuctionLogWriter(policy.root / "logs", part_name=f"day-{day.index:03d}") as w:
                w.write(_observed(policy.name, day, sent, propensity, control, version))
            figures = _truth(day, sent, names, watched)
            trained = retrain(
                policy.root / "logs",
                policy.store,
                window_days=config.window_days,
                config=train_config,
                policy=promotion,
                counts=policy.counts,
                extracted=extracted,
            )
            promotion_record = trained.report.get("promotion", {})
            results[policy.name].append(
                {
                    "day": day.index,
                    "model_version": version,
                    **figures,
                    "control_requests": int(control.sum()),
                    "retrained_version": trained.version,
                    "promoted": trained.promoted,
                    "promotion_reason": promotion_record.get("reason"),
                }
            )
            retargeted = figures["watched"].get("retargeted", {}).get("bid_recall", float("nan"))
            step(
                f"day {day.index:2d} {policy.name:>16}: recall {figures['bid_recall']:.4f},"
                f" savings {figures['call_savings']:.4f} (oracle"
                f" {figures['oracle_call_savings']:.4f}),"
                f" {watched['retargeted']} recall {retargeted:.4f};"
                f" {'promoted' if trained.promoted else 'kept'} after retraining"
            )
    return {
        "config": asdict(config),
        "changes": {
            "retarget": watched["retargeted"],
            "retarget_day": changes.retarget[0],
            "join": watched["joined"],
            "join_day": changes.join[config.partners - 1],
        },
        "training": asdict(train_config),
        "seconds": round(time.monotonic() - started, 1),
        "policies": results,
        "summary": summarise(results, watched, changes, config),
    }


def summarise(
    results: dict[str, list[dict[str, Any]]],
    watched: dict[str, str],
    changes: WorldChanges,
    config: LoopConfig,
) -> dict[str, Any]:
    """Per policy, from day 3 on: the lowest daily recall, mean savings, and how many days the
    retargeted partner took to get its recall back above 0.97."""
    summary: dict[str, Any] = {}
    change_day = int(changes.retarget[0])
    for name, days in results.items():
        later = [d for d in days if d["day"] >= 3]
        if not later:
            continue
        recovered = next(
            (
                d["day"] - change_day
                for d in days
                if d["day"] >= change_day
                and d["watched"].get("retargeted", {}).get("bid_recall", 1.0) > 0.97
            ),
            None,
        )
        summary[name] = {
            "min_bid_recall_from_day_3": min(d["bid_recall"] for d in later),
            "mean_call_savings_from_day_3": float(np.mean([d["call_savings"] for d in later])),
            "mean_oracle_call_savings_from_day_3": float(
                np.mean([d["oracle_call_savings"] for d in later])
            ),
            "retargeted_recovery_days": recovered,
        }
    return summary

"""Guarded promotion: a retrained version becomes LATEST only if it is not worse than the one
serving, judged on the newest logged traffic, which neither has trained on.

``retrain`` trains on the latest window of logs, then (before publishing) scores the candidate
and the serving version on the candidate's test period (its newest requests: labelled entries,
inverse-propensity weighted, control requests included) and promotes the candidate when

* its bid recall is at least the target minus ``recall_tolerance``, and
* its call savings are at least the serving version's minus ``savings_tolerance``, or the serving
  version's recall, overall or for one partner with enough logged bids, has itself fallen below
  the target minus the tolerance where the candidate's is higher (a partner changed what it
  buys: keeping its bids comes first).

Otherwise the candidate is published beside it (for inspection, ``bidfilter model promote`` to
force it) and LATEST stays. Either way the version's report.json says why (``promotion``), a
log line says it, and the decision is counted. Rolling back is ``bidfilter model promote OLD``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bidfilter.artifact import ModelStore
from bidfilter.learning.evidence import Evidence, Figures
from bidfilter.logs import log_files
from bidfilter.logs.remote import download_latest_partitions, is_remote
from bidfilter.scoring import ServingModel
from bidfilter.training.config import TrainConfig
from bidfilter.training.dataset import ExtractedCache
from bidfilter.training.pipeline import REPORT_FILE, TrainResult, train

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PromotionPolicy:
    target_recall: float = 0.99
    recall_tolerance: float = 0.01
    savings_tolerance: float = 0.02

    def __post_init__(self) -> None:
        for name in ("target_recall", "recall_tolerance", "savings_tolerance"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Judgement:
    promote: bool
    reason: str
    candidate: Figures
    current: Figures | None
    current_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promote,
            "reason": self.reason,
            "candidate": self.candidate.to_dict(),
            "current": None if self.current is None else self.current.to_dict(),
            "current_version": self.current_version,
        }


def judge(
    candidate: Figures,
    current: Figures | None,
    policy: PromotionPolicy,
    current_version: str | None = None,
) -> Judgement:
    floor = policy.target_recall - policy.recall_tolerance

    def verdict(promote: bool, reason: str) -> Judgement:
        return Judgement(promote, reason, candidate, current, current_version)

    if candidate.bid_recall < floor:
        return verdict(
            False, f"candidate bid recall {candidate.bid_recall:.4f} is below {floor:.4f}"
        )
    if current is None:
        return verdict(True, "no version is serving")
    if current.bid_recall < floor and candidate.bid_recall > current.bid_recall:
        return verdict(
            True,
            f"the serving version's recall fell to {current.bid_recall:.4f};"
            f" the candidate keeps {candidate.bid_recall:.4f}",
        )
    repaired = [
        partner
        for partner, recall in current.partner_recall.items()
        if recall < floor and candidate.partner_recall.get(partner, 0.0) > recall
    ]
    if repaired:
        worst = min(repaired, key=current.partner_recall.__getitem__)
        return verdict(
            True,
            f"the serving version keeps {current.partner_recall[worst]:.4f} of {worst}'s bids,"
            f" the candidate {candidate.partner_recall[worst]:.4f}"
            + (f" (and {len(repaired) - 1} more partners)" if len(repaired) > 1 else ""),
        )
    lowest = current.call_savings - policy.savings_tolerance
    if candidate.call_savings < lowest:
        return verdict(
            False,
            f"candidate saves {candidate.call_savings:.4f} of calls, the serving version"
            f" {current.call_savings:.4f} (tolerance {policy.savings_tolerance})",
        )
    return verdict(
        True,
        f"recall {candidate.bid_recall:.4f} >= {floor:.4f}, savings"
        f" {candidate.call_savings:.4f} vs {current.call_savings:.4f}",
    )


@dataclass
class PromotionCounts:
    """Decisions taken in this process, for the metrics file."""

    promoted: int = 0
    refused: int = 0
    last: dict[str, Any] = field(default_factory=dict)

    def record(self, judgement: Judgement, version: str) -> None:
        if judgement.promote:
            self.promoted += 1
        else:
            self.refused += 1
        self.last = {"version": version, **judgement.to_dict()}

    def exposition(self) -> str:
        """Prometheus text format, for a node-exporter textfile collector or a scrape."""
        lines = [
            "# HELP bidfilter_retrain_decisions_total Retrained versions judged, by decision.",
            "# TYPE bidfilter_retrain_decisions_total counter",
            f'bidfilter_retrain_decisions_total{{decision="promoted"}} {self.promoted}',
            f'bidfilter_retrain_decisions_total{{decision="refused"}} {self.refused}',
        ]
        if self.last:
            for who in ("candidate", "current"):
                figures = self.last.get(who)
                if figures is None:
                    continue
                for key in ("bid_recall", "call_savings"):
                    name = f"bidfilter_retrain_{who}_{key}"
                    lines += [f"# TYPE {name} gauge", f"{name} {figures[key]}"]
        return "\n".join(lines) + "\n"


def promotion_gate(
    store: ModelStore,
    logs: str | os.PathLike[str],
    policy: PromotionPolicy,
    min_propensity: float,
    cache: Path,
    counts: PromotionCounts | None = None,
) -> Callable[[Path], tuple[bool, dict[str, Any]]]:
    """The ``train`` gate: judge the built candidate against LATEST on the candidate's own test
    period of ``logs`` (the newest requests, which neither version trained on)."""

    def gate(folder: Path) -> tuple[bool, dict[str, Any]]:
        candidate = ServingModel.load(folder)
        test_start = json.loads((folder / REPORT_FILE).read_text())["data"]["test_start"]
        since = int(dt.datetime.fromisoformat(test_start).timestamp() * 1000)
        evidence = Evidence.from_logs(logs, since, min_propensity)
        current_version = store.latest()
        current = None
        if current_version is not None:
            current = ServingModel.load(store.fetch(current_version, cache))
        judgement = judge(
            evidence.figures(candidate),
            None if current is None else evidence.figures(current),
            policy,
            current_version,
        )
        log.info(
            "version %s %s: %s (judged on %d requests from %s)",
            candidate.version,
            "promoted" if judgement.promote else "refused",
            judgement.reason,
            len(evidence),
            test_start,
        )
        if counts is not None:
            counts.record(judgement, candidate.version)
        return judgement.promote, {
            **judgement.to_dict(),
            "evidence_requests": len(evidence),
            "policy": asdict(policy),
        }

    return gate


def latest_window(logs: str | os.PathLike[str], days: int, into: Path) -> Path:
    """A directory of links to the newest ``days`` date partitions of ``logs`` (what training
    then reads); the logs themselves are not touched."""
    partitions = sorted({p.parent for p in log_files(logs) if p.parent.name.startswith("date=")})
    if not partitions:
        raise ValueError(f"{logs}: no date=YYYY-MM-DD partitions to take a window of")
    into.mkdir(parents=True, exist_ok=True)
    for partition in partitions[-days:]:
        (into / partition.name).symlink_to(partition.resolve(), target_is_directory=True)
    return into


def retrain(
    logs: str | os.PathLike[str],
    store: ModelStore,
    *,
    window_days: int = 7,
    config: TrainConfig | None = None,
    policy: PromotionPolicy | None = None,
    counts: PromotionCounts | None = None,
    on_stage: Callable[[str], None] | None = None,
    extracted: ExtractedCache | None = None,
    endpoint_url: str | None = None,
) -> TrainResult:
    """Train on the latest ``window_days`` of ``logs`` (a directory, or ``s3://BUCKET/PREFIX``
    where a server's outcome log writes: those partitions are downloaded, ``endpoint_url``
    naming a non-AWS S3) and publish, promoting only if the candidate passes :func:`judge`
    against the serving version."""
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, not {window_days}")
    config = config or TrainConfig()
    policy = policy or PromotionPolicy(target_recall=config.target_recall)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bidfilter-retrain-") as scratch:
        into = Path(scratch) / "window"
        window = (
            download_latest_partitions(str(logs), window_days, into, endpoint_url=endpoint_url)
            if is_remote(str(logs))
            else latest_window(logs, window_days, into)
        )
        gate = promotion_gate(
            store, window, policy, config.dataset.min_propensity, Path(scratch) / "cache", counts
        )
        result = train(window, store, config, on_stage=on_stage, gate=gate, extracted=extracted)
    log.info("retrain took %.1f s", time.monotonic() - started)
    return result

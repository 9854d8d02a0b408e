"""The driver: build a synthetic world from a seed, then stream its auction logs to disk in chunks.

Per chunk of requests: arrival times and regions (timeline), request attributes (traffic), each
partner's true bid probability and outcome (policy), the BidRequest JSON (requests), then one log
batch appended by :class:`~bidfilter.logs.AuctionLogWriter`. Every chunk has its own RNG stream
derived from the seed and the chunk number, so output is byte-identical for a seed (and a given
chunk size) and memory stays bounded by one chunk.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from bidfilter.logs import AuctionLogWriter, auction_batch
from bidfilter.synth.devices import device_table
from bidfilter.synth.geography import region_table
from bidfilter.synth.inventory import build_inventory
from bidfilter.synth.partners import CALIBRATION_REQUESTS, build_partners
from bidfilter.synth.policy import PartnerPolicies, bid_prices, bid_probability
from bidfilter.synth.requests import RequestBuilder
from bidfilter.synth.timeline import Timeline, build_timeline
from bidfilter.synth.traffic import Traffic, TrafficModel

# A Monday at midnight UTC: the default window starts at the beginning of a week.
DEFAULT_START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)
CHUNK_REQUESTS = 20_000
PART_NAME = "part-00000"
_MS_PER_DAY = 86_400_000

# Independent RNG streams per purpose: changing how one is used leaves the others untouched.
_WORLD, _TIMELINE, _PARTNERS, _CHUNK, _DECORATIONS, _RETARGETED = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class WorldChanges:
    """Partners whose behaviour changes inside the window, for experiments on drift and cold start.

    ``retarget`` maps a partner's index to the day (counted from the window's start, fractions
    allowed) from which it bids by a new policy, drawn independently of its old one (another
    archetype, other tables), under the same id. ``join`` maps a partner's index to the day
    before which it is no candidate at all: it is absent from every earlier record.
    """

    retarget: Mapping[int, float] = field(default_factory=dict)
    join: Mapping[int, float] = field(default_factory=dict)

    def check(self, partners: int, days: int) -> None:
        for name, changes in (("retarget", self.retarget), ("join", self.join)):
            for index, day in changes.items():
                if not 0 <= index < partners:
                    raise SynthError(name, f"partner index {index} is not in [0, {partners})")
                if not 0 < day < days:
                    raise SynthError(name, f"day {day} is not inside the window of {days} days")


class SynthError(ValueError):
    """Invalid generation parameters; ``field`` names the offending one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote, with the realised bid rates."""

    requests: int
    partners: tuple[str, ...]
    bid_rate: dict[str, float]  # share of requests each partner bid on
    overall_bid_rate: float  # over all (request, partner) pairs
    mean_oracle_p: float  # mean true bid probability, ~ overall_bid_rate
    archetypes: dict[str, str]  # the kind of buyer behind each partner id (hidden from training)
    seed: int
    days: int
    start: dt.datetime  # window start (UTC, inclusive)
    end: dt.datetime  # window end (UTC, exclusive)
    files: tuple[Path, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO-8601 times, string paths)."""
        return {
            "requests": self.requests,
            "partners": list(self.partners),
            "bid_rate": dict(self.bid_rate),
            "overall_bid_rate": self.overall_bid_rate,
            "mean_oracle_p": self.mean_oracle_p,
            "archetypes": dict(self.archetypes),
            "seed": self.seed,
            "days": self.days,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "files": [str(path) for path in self.files],
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests / self.seconds) if self.seconds else None,
        }


@dataclass(frozen=True)
class _World:
    timeline: Timeline
    traffic: TrafficModel
    policies: PartnerPolicies
    requests: RequestBuilder
    retargeted: PartnerPolicies | None = None  # the new policies of WorldChanges.retarget


def _build_world(
    seed: int, requests: int, partners: int, days: int, start: dt.datetime, retarget: bool
) -> _World:
    regions = region_table()
    inventory = build_inventory(np.random.default_rng([seed, _WORLD]))
    timeline_rng = np.random.default_rng([seed, _TIMELINE])
    timeline = build_timeline(
        timeline_rng, start, days, requests, regions.weight, regions.utcoffset
    )
    model = TrafficModel(inventory, regions, device_table())

    def calibration_sample(rng: np.random.Generator) -> Traffic:
        ts, region = timeline.sample(rng, CALIBRATION_REQUESTS)
        return model.draw(rng, ts, region)

    policies = build_partners(
        np.random.default_rng([seed, _PARTNERS]),
        partners,
        inventory,
        regions,
        timeline,
        calibration_sample,
    )
    retargeted = (
        build_partners(
            np.random.default_rng([seed, _RETARGETED]),
            partners,
            inventory,
            regions,
            timeline,
            calibration_sample,
        )
        if retarget
        else None
    )
    builder = RequestBuilder(inventory, regions, np.random.default_rng([seed, _DECORATIONS]))
    return _World(timeline, model, policies, builder, retargeted)


def _outcomes(
    world: _World,
    traffic: Traffic,
    ts_ms: np.ndarray,
    rng: np.random.Generator,
    changes: WorldChanges,
    start_ms: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(oracle probability, bids, prices), each (n, K), with the retargeted partners' columns
    taken from their new policies from their day on."""
    probability, draw = bid_probability(world.policies, traffic, rng)
    bids = rng.random(draw.shape) < draw
    prices = bid_prices(world.policies, traffic, bids, rng)
    if world.retargeted is None:
        return probability, bids, prices
    new_probability, new_draw = bid_probability(world.retargeted, traffic, rng)
    new_bids = rng.random(new_draw.shape) < new_draw
    new_prices = bid_prices(world.retargeted, traffic, new_bids, rng)
    for index, day in changes.retarget.items():
        after = ts_ms >= start_ms + day * _MS_PER_DAY
        probability[after, index] = new_probability[after, index]
        bids[after, index] = new_bids[after, index]
        prices[after, index] = new_prices[after, index]
    return probability, bids, prices


def _check(out_dir: Path, requests: int, partners: int, days: int, seed: int) -> None:
    for name, value in (("requests", requests), ("partners", partners), ("days", days)):
        if value < 1:
            raise SynthError(name, f"must be at least 1, got {value}")
    if seed < 0:
        raise SynthError("seed", f"must be non-negative, got {seed}")
    if out_dir.exists() and any(out_dir.glob("date=*/*.parquet")):
        raise SynthError("out_dir", f"{out_dir} already holds auction logs; use an empty directory")


def generate(
    out_dir: Path,
    *,
    requests: int,
    partners: int = 20,
    seed: int = 0,
    days: int = 28,
    start: dt.datetime | None = None,
    changes: WorldChanges | None = None,
    progress: bool = False,
) -> SynthSummary:
    """Write ``requests`` synthetic auctions with ``partners`` hidden partner policies to
    ``out_dir`` (Parquet, partitioned by UTC date), spread over ``days`` days from ``start``
    (default: Monday 2025-03-03 00:00 UTC; a naive datetime is taken as UTC), with ``changes``
    (partners that retarget or join part-way) if given."""
    began = time.perf_counter()
    out_dir = Path(out_dir)
    _check(out_dir, requests, partners, days, seed)
    changes = changes or WorldChanges()
    changes.check(partners, days)
    window_start = DEFAULT_START if start is None else start
    if window_start.tzinfo is None:
        window_start = window_start.replace(tzinfo=dt.UTC)
    start_ms = int(window_start.timestamp() * 1000)
    world = _build_world(
        seed, requests, partners, days, window_start, retarget=bool(changes.retarget)
    )
    # (K,) epoch ms from which each partner is a candidate (the window's start for most).
    joins = np.full(len(world.policies), np.iinfo(np.int64).min, dtype=np.int64)
    for index, day in changes.join.items():
        joins[index] = start_ms + int(day * _MS_PER_DAY)
    policies = world.policies
    k = len(policies)
    partner_names = pa.array(policies.partner_ids, pa.string())

    bid_counts = np.zeros(k, dtype=np.int64)
    oracle_sum = 0.0
    pairs = 0  # (request, candidate partner) pairs written
    written_days: set[int] = set()
    # Parquet encoding and compression release the GIL: write chunk i on a second thread while
    # chunk i + 1 is generated. One write in flight at most keeps memory to two chunks.
    pending: Future[None] | None = None
    with (
        AuctionLogWriter(out_dir, part_name=PART_NAME) as writer,
        ThreadPoolExecutor(max_workers=1) as executor,
        tqdm(total=requests, unit="req", unit_scale=True, disable=not progress) as bar,
    ):
        for chunk, first in enumerate(range(0, requests, CHUNK_REQUESTS)):
            count = min(CHUNK_REQUESTS, requests - first)
            rng = np.random.default_rng([seed, _CHUNK, chunk])
            ts_ms, region = world.timeline.draw(rng, first, count)
            traffic = world.traffic.draw(rng, ts_ms, region)
            probability, bids, prices = _outcomes(world, traffic, ts_ms, rng, changes, start_ms)
            request_ids, texts = world.requests.build(traffic, rng)
            present = ts_ms[:, None] >= joins[None, :]  # (n, K): a candidate yet
            bids &= present
            offsets = np.zeros(count + 1, dtype=np.int32)
            np.cumsum(present.sum(axis=1), out=offsets[1:])
            which_partner = pa.array(
                np.broadcast_to(np.arange(k, dtype=np.int32), (count, k))[present]
            )
            batch = auction_batch(
                ts_ms,
                request_ids,
                texts,
                offsets,
                partner_names.take(which_partner),
                bids[present],
                prices[present],
                probability[present],
            )
            if pending is not None:
                pending.result()
            pending = executor.submit(writer.write, batch)
            bid_counts += bids.sum(axis=0)
            oracle_sum += float(probability[present].sum())
            pairs += int(present.sum())
            written_days.update(np.unique(ts_ms // _MS_PER_DAY).tolist())
            bar.update(count)
        if pending is not None:
            pending.result()

    epoch = dt.date(1970, 1, 1)
    files = tuple(
        out_dir / f"date={(epoch + dt.timedelta(days=day)).isoformat()}" / f"{PART_NAME}.parquet"
        for day in sorted(written_days)
    )
    return SynthSummary(
        requests=requests,
        partners=policies.partner_ids,
        bid_rate={
            partner: float(count) / requests
            for partner, count in zip(policies.partner_ids, bid_counts.tolist(), strict=True)
        },
        overall_bid_rate=float(bid_counts.sum()) / pairs,
        mean_oracle_p=oracle_sum / pairs,
        archetypes=dict(zip(policies.partner_ids, policies.archetypes, strict=True)),
        seed=seed,
        days=days,
        start=window_start.astimezone(dt.UTC),
        end=(window_start + dt.timedelta(days=days)).astimezone(dt.UTC),
        files=files,
        seconds=time.perf_counter() - began,
    )

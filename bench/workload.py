"""The reference workload: one model, one set of bid requests, replayed against every system.

``prepare_model`` makes (once, then caches under ``bench/.cache/``) synthetic auction logs and a
model trained on them with the ``bidfilter`` CLI, exactly as a user would. ``ReplaySet`` holds
the bid requests to replay (real synthetic requests read from those logs), each with the same
candidates (every partner the model knows), and the feature rows bidfilter's own
``FeatureEncoder`` makes of them, so every system scores identical rows. ``write_requests_file``
turns them into what the compiled load generator replays byte for byte: framed Thrift binary
``filter`` calls, or HTTP/1.1 V2-inference POSTs.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import xgboost as xgb

from bidfilter.artifact import LocalModelStore, Manifest, verify
from bidfilter.features import FeatureEncoder, FeatureSpec
from bidfilter.logs import iter_log_batches
from bidfilter.openrtb import parse_bid_request
from bidfilter.thrift import CallEncoder, FilterRequest, Protocol, Transport

MLSERVER_MODEL_NAME: Final = "bidfilter"
"""The model's name in MLServer's repository (its REST path: /v2/models/<name>/infer)."""

_BUILD_TIMEOUT_S: Final = 3600.0
_RECORD_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class WorkloadSpec:
    """How the logs and the model are made: ``bidfilter synth`` and ``bidfilter train`` flags."""

    requests: int
    partners: int
    seed: int
    trees: int
    max_depth: int
    per_partner: bool = False
    """Train's default (one booster per partner, affinity columns) rather than the one shared
    booster on the base features that the published serving numbers were measured with."""

    @property
    def key(self) -> str:
        """The cache directory's name: the same spec always reuses the same logs and model."""
        return (
            f"workload-r{self.requests}-p{self.partners}-s{self.seed}"
            f"-t{self.trees}-d{self.max_depth}{'-pp' if self.per_partner else ''}"
        )

    @property
    def model_trees(self) -> int:
        """Trees in the published model: ``trees`` per partner when each has its own booster."""
        return self.trees * self.partners if self.per_partner else self.trees

    def synth_args(self, out: Path) -> list[str]:
        return [
            "synth",
            "--requests",
            str(self.requests),
            "--partners",
            str(self.partners),
            "--seed",
            str(self.seed),
            "--out",
            os.fspath(out),
        ]

    def train_args(self, logs: Path, store: Path) -> list[str]:
        # --early-stopping 0 turns early stopping off (xgboost.train skips it for 0), so the
        # model has exactly model_trees trees; prepare_model checks that it does.
        shape = [] if self.per_partner else ["--models", "shared", "--no-partner-affinity"]
        return [
            "train",
            "--logs",
            os.fspath(logs),
            "--store",
            os.fspath(store),
            "--trees",
            str(self.trees),
            "--max-depth",
            str(self.max_depth),
            "--early-stopping",
            "0",
            *shape,
        ]


REFERENCE = WorkloadSpec(requests=200_000, partners=20, seed=1, trees=100, max_depth=6)
"""The issue's workload: 200k synthetic requests, 20 partners, 100 trees of depth 6."""

PER_PARTNER = WorkloadSpec(
    requests=200_000, partners=20, seed=1, trees=100, max_depth=6, per_partner=True
)
"""The same logs with train's defaults: a booster of 100 trees per partner, affinity columns."""

SMOKE = WorkloadSpec(requests=10_000, partners=20, seed=1, trees=10, max_depth=4)
"""A tiny one for the CI smoke run: same shape (20 partners), seconds to build."""


@dataclass(frozen=True)
class PreparedModel:
    """A built workload: its logs, its store, and the published version's verified directory."""

    spec: WorkloadSpec
    root: Path
    logs: Path
    store: Path
    version: str
    version_dir: Path
    manifest: Manifest
    trees: int
    build_seconds: float

    @property
    def model_file(self) -> Path:
        return self.version_dir / self.manifest.model_file

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self.spec),
            "version": self.version,
            "model_file": self.manifest.model_file,
            "trees_in_model": self.trees,
            "features": len(FeatureSpec.from_dict(self.manifest.feature_spec).names),
            "cache": os.fspath(self.root),
            "build_seconds": self.build_seconds,
        }


def prepare_model(
    spec: WorkloadSpec, cache_dir: Path, log: Callable[[str], object] = print
) -> PreparedModel:
    """The workload of ``spec``: from the cache, or built (synth, then train) into it.

    Building happens in a scratch directory renamed into place when complete, so an interrupted
    build leaves nothing that looks finished.
    """
    root = cache_dir / spec.key
    done = root / "workload.json"
    if done.is_file():
        try:
            return _load_prepared(spec, root, json.loads(done.read_text()))
        except (OSError, ValueError, KeyError) as error:
            log(f"cached workload in {root} is unusable ({error}); rebuilding")
            shutil.rmtree(root, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = cache_dir / f".{spec.key}.partial.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = time.monotonic()
    try:
        log(f"building the workload {spec.key} (synth + train, cached for later runs)")
        _bidfilter(spec.synth_args(scratch / "logs"), scratch / "synth.log")
        _bidfilter(spec.train_args(scratch / "logs", scratch / "store"), scratch / "train.log")
        store = LocalModelStore(scratch / "store")
        version = store.latest()
        if version is None:
            raise RuntimeError(f"bidfilter train published nothing (see {scratch}/train.log)")
        record = {"version": version, "build_seconds": round(time.monotonic() - started, 1)}
        (scratch / "workload.json").write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(scratch, root)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _load_prepared(spec, root, record)


def _load_prepared(spec: WorkloadSpec, root: Path, record: dict[str, Any]) -> PreparedModel:
    version = str(record["version"])
    store_root = root / "store"
    version_dir = store_root / "versions" / version
    manifest = verify(version_dir)  # the same checks the server makes
    booster = xgb.Booster()
    booster.load_model(os.fspath(version_dir / manifest.model_file))
    trees = int(booster.num_boosted_rounds())
    if trees != spec.model_trees:
        raise ValueError(f"the model has {trees} trees, not {spec.model_trees}")
    if len(manifest.partners) != spec.partners:
        raise ValueError(f"the model knows {len(manifest.partners)} partners, not {spec.partners}")
    return PreparedModel(
        spec=spec,
        root=root,
        logs=root / "logs",
        store=store_root,
        version=version,
        version_dir=version_dir,
        manifest=manifest,
        trees=trees,
        build_seconds=float(record.get("build_seconds", 0.0)),
    )


def _bidfilter(args: list[str], log_file: Path) -> None:
    """Run one ``bidfilter`` command (this interpreter's), its output into ``log_file``."""
    with log_file.open("wb") as out:
        completed = subprocess.run(
            [sys.executable, "-m", "bidfilter", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    if completed.returncode != 0:
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"bidfilter {args[0]} failed ({completed.returncode}):\n{tail}")


# -- the requests to replay


@dataclass(frozen=True)
class ReplaySet:
    """Bid requests to replay, their candidates, and the feature rows they make.

    ``rows[i]`` is ``len(candidates) x F`` float32, made by bidfilter's ``FeatureEncoder`` at
    ``ts_ms`` (time features: hour and weekday), in candidate order: what MLServer receives.
    """

    openrtb: list[bytes]
    candidates: list[str]
    rows: list[np.ndarray]
    ts_ms: int

    def __len__(self) -> int:
        return len(self.openrtb)

    @classmethod
    def from_logs(cls, model: PreparedModel, count: int, ts_ms: int | None = None) -> ReplaySet:
        """The first ``count`` requests of the logs, oldest first, each with every partner."""
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        openrtb: list[bytes] = []
        for batch in iter_log_batches(model.logs, columns=["request"], batch_size=count):
            openrtb.extend(text.encode() for text in batch.column(0).to_pylist())
            if len(openrtb) >= count:
                break
        openrtb = openrtb[:count]
        spec = FeatureSpec.from_dict(model.manifest.feature_spec)
        candidates = list(spec.partners)
        stamp = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
        return cls(openrtb, candidates, feature_rows(spec, openrtb, candidates, stamp), stamp)


def feature_rows(
    spec: FeatureSpec, openrtb: Iterable[bytes], candidates: list[str], ts_ms: int
) -> list[np.ndarray]:
    """bidfilter's own rows for each request: what its server, and the baselines, score."""
    encoder = FeatureEncoder(spec)
    return [encoder.rows(parse_bid_request(data), ts_ms, candidates) for data in openrtb]


def thrift_calls(replay: ReplaySet) -> list[bytes]:
    """One framed Thrift binary ``filter`` call per request (seqids 1, 2, ...)."""
    encoder = CallEncoder(Protocol.BINARY, Transport.FRAMED)
    return [
        encoder.filter(seqid, FilterRequest(data, list(replay.candidates)))
        for seqid, data in enumerate(replay.openrtb, start=1)
    ]


def v2_inference_body(rows: np.ndarray) -> bytes:
    """A V2 inference request: one FP32 tensor of the rows (a missing feature is JSON null)."""
    data = [None if np.isnan(value) else float(value) for value in rows.reshape(-1).tolist()]
    body = {
        "inputs": [
            {"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": data}
        ]
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def http_posts(replay: ReplaySet, port: int) -> list[bytes]:
    """One HTTP/1.1 keep-alive POST to MLServer's V2 ``infer`` endpoint per request."""
    posts = []
    for rows in replay.rows:
        body = v2_inference_body(rows)
        head = (
            f"POST /v2/models/{MLSERVER_MODEL_NAME}/infer HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        )
        posts.append(head.encode() + body)
    return posts


def write_requests_file(path: Path, messages: Iterable[bytes]) -> int:
    """The load generator's input: records of [u32 little-endian length][message]."""
    count = 0
    with path.open("wb") as out:
        for message in messages:
            out.write(_RECORD_LENGTH.pack(len(message)))
            out.write(message)
            count += 1
    if count == 0:
        raise ValueError("no messages to write")
    return count

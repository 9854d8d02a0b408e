"""The "straightforward" baseline: the BidFilter service the way the AWS RTB Intelligence Kit
builds its filter server, ported to Python.

The official Apache Thrift library (code generated from the shipped IDL by ``thrift --gen py``
at start-up, into a temporary directory), a ``TThreadPoolServer`` (a thread per connection from
a fixed pool) over the framed transport and the binary protocol (the library's accelerated C
codec), and per call: parse the OpenRTB JSON and build the feature rows with bidfilter's own
parser and ``FeatureEncoder`` (so the rows are exactly bidfilter's), build an ``xgboost.DMatrix``,
``booster.predict``, compare with the artifact's per-partner thresholds. Exploration uses
bidfilter's hash, so its decisions match bidfilter's too. One change from the library's
defaults: accepted sockets get ``TCP_NODELAY``, as any RPC server sets, so Nagle's algorithm
does not hold pipelined replies back.

It implements the whole service (``filter``, ``filter_batch``, ``model_info``, ``ping``), so
the same clients and the same load generator drive it.

    python bench/baselines/thrift_threadpool.py --model STORE/versions/VERSION --port 9091
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import xgboost as xgb
from thrift.protocol import TBinaryProtocol  # type: ignore[import-untyped]
from thrift.server import TServer  # type: ignore[import-untyped]
from thrift.transport import TSocket, TTransport  # type: ignore[import-untyped]

from bidfilter.artifact import Manifest, verify
from bidfilter.features import FeatureEncoder, FeatureSpec
from bidfilter.openrtb import InvalidRequestError, parse_bid_request
from bidfilter.scoring import exploration_draw

THRIFT_COMPILER = "/usr/bin/thrift"
UNKNOWN_PARTNER_PROBABILITY = -1.0


def generate_code(out_dir: Path, compiler: str = THRIFT_COMPILER) -> tuple[ModuleType, ModuleType]:
    """Generate the official Python code from the IDL shipped in bidfilter; (ttypes, service)."""
    idl = importlib.resources.files("bidfilter") / "idl" / "bidfilter.thrift"
    idl_path = out_dir / "bidfilter.thrift"
    idl_path.write_bytes(idl.read_bytes())
    subprocess.run(
        [compiler, "--gen", "py", "-out", os.fspath(out_dir), os.fspath(idl_path)],
        check=True,
        timeout=60,
    )
    sys.path.insert(0, os.fspath(out_dir))
    ttypes = importlib.import_module("bidfilter_thrift.ttypes")
    service = importlib.import_module("bidfilter_thrift.BidFilter")
    return ttypes, service


class FilterHandler:
    """The service's methods, as the generated ``Processor`` calls them (from many threads)."""

    def __init__(self, version_dir: Path, ttypes: ModuleType, exploration_rate: float) -> None:
        manifest: Manifest = verify(version_dir)
        self.version = manifest.version
        self.spec = FeatureSpec.from_dict(manifest.feature_spec)
        self.encoder = FeatureEncoder(self.spec)
        self.booster = xgb.Booster(model_file=os.fspath(version_dir / manifest.model_file))
        self.booster.set_param({"nthread": 1})
        self.partners = list(self.spec.partners)
        self.thresholds = {p: float(manifest.thresholds[p]) for p in self.partners}
        self.exploration_rate = exploration_rate
        self.loaded_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.ttypes = ttypes

    def filter(self, request: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            bid_request = parse_bid_request(request.openrtb)
        except InvalidRequestError as error:
            raise self.ttypes.InvalidRequest(error.message, error.field) from None
        candidates: Sequence[str] = (
            request.candidates if request.candidates is not None else self.partners
        )
        known = [p for p in candidates if p in self.thresholds]
        scores: dict[str, float] = {}
        if known:
            rows = self.encoder.rows(bid_request, time.time_ns() // 1_000_000, known)
            matrix = xgb.DMatrix(
                rows,
                feature_names=self.spec.names,
                feature_types=self.spec.feature_types,
                enable_categorical=True,
                nthread=1,
            )
            predictions = np.asarray(self.booster.predict(matrix), dtype=np.float64)
            scores = dict(zip(known, predictions.tolist(), strict=True))
        decisions = []
        for partner in candidates:
            score = scores.get(partner)
            if score is None:
                decisions.append(
                    self.ttypes.PartnerDecision(
                        partner, UNKNOWN_PARTNER_PROBABILITY, True, False, 0.0
                    )
                )
                continue
            threshold = self.thresholds[partner]
            send = score >= threshold
            explore = (
                not send
                and self.exploration_rate > 0
                and exploration_draw(bid_request.id, partner) < self.exploration_rate
            )
            decisions.append(
                self.ttypes.PartnerDecision(partner, score, send or explore, explore, threshold)
            )
        return self.ttypes.FilterResponse(
            request_id=bid_request.id,
            decisions=decisions,
            model_version=self.version,
            outcome=self.ttypes.Outcome.SCORED,
            server_us=(time.perf_counter_ns() - started) // 1000,
        )

    def filter_batch(self, requests: Sequence[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self.filter(request))
            except self.ttypes.InvalidRequest as invalid:
                candidates = request.candidates if request.candidates is not None else []
                responses.append(
                    self.ttypes.FilterResponse(
                        request_id="",
                        decisions=[
                            self.ttypes.PartnerDecision(
                                p, UNKNOWN_PARTNER_PROBABILITY, True, False, 0.0
                            )
                            for p in candidates
                        ],
                        model_version=self.version,
                        outcome=self.ttypes.Outcome.FAIL_OPEN_ERROR,
                        error=f"{invalid.field}: {invalid.message}",
                    )
                )
        return responses

    def model_info(self) -> Any:
        return self.ttypes.ModelInfo(
            version=self.version,
            partners=self.partners,
            thresholds=self.thresholds,
            loaded_at=self.loaded_at,
        )

    def ping(self) -> str:
        return "pong"


class NoDelayServerSocket(TSocket.TServerSocket):  # type: ignore[misc]
    """The library's server socket, with Nagle's algorithm off on every accepted connection."""

    def accept(self) -> Any:
        client = super().accept()
        if client is not None and client.handle is not None:
            client.handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a published version directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9091)
    parser.add_argument("--threads", type=int, default=16, help="pool size (one per connection)")
    parser.add_argument("--exploration-rate", type=float, default=0.01)
    parser.add_argument("--thrift-compiler", default=THRIFT_COMPILER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM (how the harness stops it) unwinds through ``finally``: the generated code goes.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    generated = Path(tempfile.mkdtemp(prefix="bench-thrift-py-"))
    try:
        ttypes, service = generate_code(generated, args.thrift_compiler)
        handler = FilterHandler(Path(args.model), ttypes, args.exploration_rate)
        server = TServer.TThreadPoolServer(
            service.Processor(handler),
            NoDelayServerSocket(host=args.host, port=args.port),
            TTransport.TFramedTransportFactory(),
            TBinaryProtocol.TBinaryProtocolAcceleratedFactory(),
            daemon=True,
        )
        server.setNumThreads(args.threads)
        print(f"thrift thread-pool server on {args.host}:{args.port}", flush=True)
        server.serve()
    finally:
        shutil.rmtree(generated, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Instructions per call of the in-process serving path, counted by valgrind (callgrind).

Counts do not depend on what else the machine is doing, so they compare code paths where timings
on a shared machine cannot. The path is the worker's for one ``filter`` call: decode the framed
Thrift message, parse the bid request, build its features, score the 20 partners, decide, count,
encode the reply. Each variant runs twice under callgrind, with 0 and with ``--calls`` measured
calls after the same warm-up; the difference divided by ``--calls`` is the cost of one call.

The ``decision log`` variant serves with the outcome log at its defaults (``Settings()``: 5% of
requests held), reports every held request's outcome (the join, not the report's own Thrift
decoding) and, at the end, encodes the joined records as Parquet and writes them to a
directory, as the writer thread does: its excess over ``compiled evaluator`` is the decision
log's whole cost, amortised over the bid requests.

    python -m bench.instructions                 # compiled evaluator vs XGBoost's predict
    python -m bench.instructions --calls 500 --json
    python -m bench.instructions --workload per-partner   # train's defaults: 20 x 100 trees
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.workload import PER_PARTNER, REFERENCE, ReplaySet, prepare_model, thrift_calls

_COLLECTED = re.compile(rb"Collected : (\d+)")
_WARMUP_CALLS = 100


def _serve_calls(
    version_dir: Path, messages: list[bytes], calls: int, xgboost: bool, decision_log: bool
) -> None:
    """The measured body: run in a child process under valgrind."""
    from bidfilter.logs.decision_log import encode_records
    from bidfilter.logs.sink import DirectorySink
    from bidfilter.scoring import ServingModel
    from bidfilter.server import metrics as m
    from bidfilter.server.outcome_log import OutcomeLog
    from bidfilter.server.service import FilterService
    from bidfilter.settings import Settings
    from bidfilter.thrift import (
        AuctionOutcome,
        PartnerOutcome,
        Protocol,
        ReplyEncoder,
        ThriftConnectionDecoder,
        Transport,
    )

    random.seed(1)  # which requests the decision log holds: the same in both runs
    model = ServingModel.load(version_dir)
    if xgboost:
        object.__setattr__(model, "forest", None)  # the fallback path: XGBoost's own predict
    board = m.MetricsBoard(1)
    settings = Settings()
    with tempfile.TemporaryDirectory() as out:
        try:
            outcome_log = None
            if decision_log:
                outcome_log = OutcomeLog.from_settings(
                    settings, board.worker(0), 0, DirectorySink(Path(out))
                )
            service = FilterService(settings, board.worker(0), outcome_log)
            service.swap(model, 1)
            decoder = ThriftConnectionDecoder()
            encoder = ReplyEncoder(Protocol.BINARY, Transport.FRAMED)
            for message in messages[: _WARMUP_CALLS + calls]:
                for call in decoder.feed(message):
                    response = service.filter(call.args, time.perf_counter_ns(), False)  # type: ignore[arg-type,union-attr]
                    encoder.filter(call.seqid, response)
                    if response.logged:  # the SSP's report: everyone it sent, none bid
                        called = [PartnerOutcome(d.partner, d.send) for d in response.decisions]
                        service.report_outcomes([AuctionOutcome(response.request_id, called)])
                service.metrics.flush_due(time.perf_counter_ns())  # as the dispatcher does
            if outcome_log is not None:  # what the writer thread does with the joined records
                for date, (data, _) in encode_records(outcome_log.decisions.take()).items():
                    outcome_log.sink.put(date, "part-bench.parquet", data)
        finally:
            board.close()


def _count(
    messages_file: Path, version_dir: Path, calls: int, xgboost: bool, decision_log: bool
) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        str(messages_file),
        str(version_dir),
        str(calls),
    ]
    if xgboost:
        command.append("--xgboost")
    if decision_log:
        command.append("--decision-log")
    done = subprocess.run(command, capture_output=True, timeout=3600, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run failed: {done.stderr.decode()[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="measured calls (default 300)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--workload",
        choices=("reference", "per-partner"),
        default="reference",
        help="reference: one shared booster of 100 trees on the base features (the published"
        " serving numbers); per-partner: train's defaults on the same logs, 100 trees per"
        " partner and the affinity columns (default reference)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--xgboost", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--decision-log", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        messages_file, version_dir, calls = args.child
        messages = json.loads(Path(messages_file).read_text())
        _serve_calls(
            Path(version_dir),
            [bytes.fromhex(m) for m in messages],
            int(calls),
            args.xgboost,
            args.decision_log,
        )
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian package valgrind)")
    spec = PER_PARTNER if args.workload == "per-partner" else REFERENCE
    model = prepare_model(spec, Path(__file__).parent / ".cache")
    replay = ReplaySet.from_logs(model, _WARMUP_CALLS + args.calls)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        messages_file = Path(scratch) / "calls.json"
        messages_file.write_text(json.dumps([m.hex() for m in thrift_calls(replay)]))
        for name, xgboost, decision_log in (
            ("compiled evaluator", False, False),
            ("decision log", False, True),
            ("XGBoost predict", True, False),
        ):
            base = _count(messages_file, model.version_dir, 0, xgboost, decision_log)
            loaded = _count(messages_file, model.version_dir, args.calls, xgboost, decision_log)
            results[name] = (loaded - base) / args.calls
    if args.json:
        print(
            json.dumps(
                {"workload": spec.key, "calls": args.calls, "instructions_per_call": results}
            )
        )
    else:
        for name, per_call in results.items():
            print(f"{name:>20}: {per_call:,.0f} instructions per filter call")
    return 0


if __name__ == "__main__":
    sys.exit(main())

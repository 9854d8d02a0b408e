"""The ``bidfilter`` command. Thin: parses flags, builds settings, calls the library, prints.

Every command prints a human summary, or one JSON document with ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bidfilter import __version__
from bidfilter.settings import Settings, settings_error_lines
from bidfilter.training.config import (
    MIN_BIDS_TO_FILTER,
    DatasetConfig,
    ModelConfig,
    TrainConfig,
)

log = logging.getLogger("bidfilter")

DEFAULT_LOGS = ".bidfilter/logs"
DEFAULT_CLUSTER_STATE = ".bidfilter/cluster"
_MODEL = ModelConfig()
_DATASET = DatasetConfig()


def _print(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(result, indent=2, default=str) if as_json else human(result))


def _partner_recall(values: Sequence[str]) -> dict[str, float]:
    overrides = {}
    for value in values:
        partner, _, recall = value.partition("=")
        try:
            overrides[partner] = float(recall)
        except ValueError:
            raise SystemExit(f"--partner-recall expects PARTNER=RECALL, got {value!r}") from None
    return overrides


def _store(args: argparse.Namespace, settings: Settings, *, existing: bool = False) -> Any:
    """The store the flags name; with ``existing``, a local one must already be there."""
    return _open_store(
        args.store or settings.store,
        args.s3_endpoint_url or settings.s3_endpoint_url,
        existing=existing,
    )


def _open_store(uri: str, endpoint_url: str | None, *, existing: bool) -> Any:
    """With ``existing``, a local store must already be there: reading a mistyped path would
    otherwise look like an empty store (and a server would fail open on it for ever)."""
    from bidfilter.artifact import StoreError, open_store

    store = open_store(uri, endpoint_url=endpoint_url)
    root = getattr(store, "root", None)  # local stores only: S3 prefixes exist once written to
    if existing and root is not None and not root.is_dir():
        raise StoreError("store", f"no model store at {root} (no such directory)")
    return store


# --- commands ---------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.synth import generate

    summary = generate(
        Path(args.out),
        requests=args.requests,
        partners=args.partners,
        seed=args.seed,
        days=args.days,
        progress=not args.json and sys.stderr.isatty(),
    )
    _print(
        summary.to_dict(),
        args.json,
        lambda d: (
            f"wrote {d['requests']} requests x {len(d['partners'])} partners to {args.out}"
            f" (overall bid rate {d['overall_bid_rate']:.2%})"
        ),
    )
    return 0


def cmd_import_ipinyou(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.logs.ipinyou import import_ipinyou

    summary = import_ipinyou([Path(p) for p in args.files], Path(args.out), progress=not args.json)
    _print(summary.to_dict(), args.json, lambda d: json.dumps(d, indent=2, default=str))
    return 0


def cmd_import_jsonl(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.logs.importing import import_jsonl

    summary = import_jsonl([Path(p) for p in args.files], Path(args.out))
    _print(summary.to_dict(), args.json, lambda d: json.dumps(d, indent=2, default=str))
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        dataset=DatasetConfig(
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            negative_rate=args.negative_rate,
            vocabulary_min_count=args.vocabulary_min_count,
            recency_half_life_days=args.recency_half_life_days or None,
            currency_rates=Path(args.currency_rates) if args.currency_rates else None,
            seed=args.seed,
        ),
        model=ModelConfig(
            trees=args.trees,
            max_depth=args.max_depth,
            learning_rate=args.learning_rate,
            early_stopping_rounds=args.early_stopping,
            early_stopping_per_partner=args.early_stopping_loss == "per-partner",
            seed=args.seed,
        ),
        target_recall=args.target_recall,
        partner_recall=_partner_recall(args.partner_recall),
        min_validation_bids=args.min_validation_bids,
    )


def _train_summary(d: dict[str, Any]) -> str:
    test = d["test"]
    lines = [
        f"published version {d['version']} to {d['store']} ({d['trees']} trees, {d['seconds']} s)",
        f"  test AUC            {test['auc']:.4f}",
        f"  test log-loss       {test['logloss']:.4f}",
        f"  bid recall          {test['bid_recall']:.2%}",
        f"  call savings        {test['call_savings']:.2%}",
    ]
    if test.get("oracle_call_savings") is not None:
        lines.append(
            f"  oracle savings      {test['oracle_call_savings']:.2%}  (same recall, perfect model)"
        )
    return "\n".join(lines)


def _check_partner_recall(args: argparse.Namespace) -> None:
    """Refuse a --partner-recall for a partner the logs never name, before training reads them."""
    overrides = _partner_recall(args.partner_recall)
    if not overrides:
        return
    from bidfilter.logs import logged_partners

    known = logged_partners(args.logs)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SystemExit(
            f"--partner-recall: no partner {', '.join(map(repr, unknown))} in {args.logs}"
            f" (it names {', '.join(sorted(known)) or 'none'})"
        )


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    _check_partner_recall(args)
    if args.engine == "spark":
        try:
            from bidfilter.training.spark import spark_session, train_on_spark
        except ImportError as error:
            raise SystemExit(
                f"--engine spark needs the spark extra ({error.name or error} is missing):"
                " pip install 'bidfilter[spark]' (and Java 17+)"
            ) from None

        with spark_session(args.spark_master) as spark:
            result = train_on_spark(spark, args.logs, _store(args, settings), _train_config(args))
    else:
        from bidfilter.training.pipeline import train

        result = train(
            args.logs,
            _store(args, settings),
            _train_config(args),
            progress=not args.json and sys.stderr.isatty(),
        )
    _print(result.summary(), args.json, _train_summary)
    return 0


def cmd_model_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(args, settings, existing=True)
    latest = store.latest()
    versions = store.versions()
    result = {"store": store.uri, "latest": latest, "versions": versions}

    def human(d: dict[str, Any]) -> str:
        if not versions:
            return f"no versions in {store.uri}"
        return "\n".join(f"{'*' if v == latest else ' '} {v}" for v in versions)

    _print(result, args.json, human)
    return 0


def cmd_model_show(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec

    store = _store(args, settings, existing=True)
    version = args.version or store.latest()
    if version is None:
        raise SystemExit(f"no versions in {store.uri}")
    manifest = msgspec.to_builtins(store.read_manifest(version))
    manifest.pop("feature_spec", None)
    manifest["latest"] = version == store.latest()
    if "report.json" in manifest["files"]:  # read_text's default: the training report
        report = json.loads(store.read_text(version))
        manifest["warnings"] = report.get("warnings", [])
        manifest["drifted"] = (report.get("drift") or {}).get("drifted", [])

    def human(d: dict[str, Any]) -> str:
        test = d["metrics"].get("test", {})
        lines = [
            f"version     {d['version']}{'  (LATEST)' if d['latest'] else ''}",
            f"created     {d['created_at']}",
            f"data        {d['data_start']} .. {d['data_end']}",
            f"partners    {len(d['partners'])}",
            f"files       {', '.join(sorted(d['files']))}",
        ]
        for key in ("auc", "bid_recall", "call_savings", "oracle_call_savings"):
            if test.get(key) is not None:
                lines.append(f"test {key:<18} {test[key]:.4f}")
        lines.append("thresholds  " + ", ".join(f"{p}={t:.4f}" for p, t in d["thresholds"].items()))
        if d.get("drifted"):
            lines.append("drifting    " + ", ".join(d["drifted"]))
        lines += [f"warning     {warning}" for warning in d.get("warnings", [])]
        return "\n".join(lines)

    _print(manifest, args.json, human)
    return 0


def cmd_model_promote(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(args, settings, existing=True)
    previous = store.latest()
    store.promote(args.version)
    log.info("LATEST moved from %s to %s in %s", previous, args.version, store.uri)
    _print(
        {"store": store.uri, "latest": args.version, "previous": previous},
        args.json,
        lambda d: f"LATEST -> {d['latest']} (was {d['previous']})",
    )
    return 0


_SERVE_FLAGS = (
    "store",
    "s3_endpoint_url",
    "host",
    "port",
    "workers",
    "metrics_port",
    "poll_s",
    "cache_dir",
    "exploration_rate",
    "deadline_share_of_tmax",
    "default_deadline_ms",
    "max_pending_calls",
    "max_connections",
    "idle_timeout_s",
    "read_timeout_s",
    "max_message_bytes",
    "max_unsent_bytes",
    "max_candidates",
    "max_batch",
    "drain_s",
    "ready_share",
    "heartbeat_timeout_s",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.server.supervisor import Supervisor

    overrides = {
        name: getattr(args, name) for name in _SERVE_FLAGS if getattr(args, name) is not None
    }
    settings = Settings(**{**settings.model_dump(), **overrides})
    # An existing, empty store is served fail-open until a version appears; a missing one is
    # more likely a typo than a store to come.
    store = _open_store(settings.store, settings.s3_endpoint_url, existing=True)
    return Supervisor(settings, store).run()


def _target(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--target expects HOST:PORT with a port in 1..65535, got {value!r}")
    return host, int(port)


def _client_errors(
    handler: Callable[[argparse.Namespace, Settings], int],
) -> Callable[[argparse.Namespace, Settings], int]:
    """A server that cannot be reached is the user's to fix: say which, without a traceback."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        from bidfilter.client import BidFilterClientError

        try:
            return handler(args, settings)
        except BidFilterClientError as error:
            log.error("%s", error)
            return 2

    return run


@_client_errors
def cmd_loadgen(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.client import run_loadgen

    if (args.rate is None) == (not args.max):
        raise SystemExit("give exactly one of --rate R or --max")
    report = run_loadgen(
        _target(args.target),
        Path(args.logs),
        rate=args.rate,
        duration=args.duration,
        connections=args.connections,
        protocol=args.protocol,
        transport=args.transport,
        processes=args.processes,
        progress=sys.stderr.isatty() or args.progress,
        candidates=args.candidates,
        timeout=args.timeout,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.to_text())
    return 0


@_client_errors
def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.client import simulate

    report = simulate(
        _target(args.target),
        Path(args.logs),
        auction=args.auction,
        limit=args.limit,
        out_png=Path(args.png) if args.png else None,
        protocol=args.protocol,
        transport=args.transport,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.to_table())
    return 0


def cmd_idl(args: argparse.Namespace, settings: Settings) -> int:
    from importlib.resources import files

    print(files("bidfilter").joinpath("idl/bidfilter.thrift").read_text(), end="")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.demo import run_demo

    return run_demo(
        Path(args.workdir),
        requests=args.requests,
        seed=args.seed,
        as_json=args.json,
        load_seconds=args.load_seconds,
        rate=args.rate,
        workers=args.workers,
    )


def _cluster_errors(
    handler: Callable[[argparse.Namespace, Settings], int],
) -> Callable[[argparse.Namespace, Settings], int]:
    """Cluster errors name the process or setting at fault: show them without a traceback."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        from bidfilter.cluster import ClusterError

        try:
            return handler(args, settings)
        except ClusterError as error:
            log.error("%s", error)
            return 2

    return run


@_cluster_errors
def cmd_cluster_up(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.cluster import ClusterError, find_haproxy, plan_cluster, up

    if _store(args, settings, existing=True).latest() is None:
        # The servers would start fail-open and never turn ready: HAProxy would wait in vain.
        raise ClusterError(
            "store",
            f"no model published in {args.store or settings.store}: run bidfilter train first",
        )
    plan = plan_cluster(
        args.servers,
        store=args.store or settings.store,
        state_dir=Path(args.state_dir),
        front_port=args.port,
        base_port=args.base_port,
        haproxy=find_haproxy(args.haproxy),
        workers=args.workers,
        s3_endpoint_url=args.s3_endpoint_url or settings.s3_endpoint_url,
    )
    status = up(plan, timeout=args.timeout)
    _print(
        status.to_dict(),
        args.json,
        lambda d: (
            f"cluster up: {len(plan.servers)} servers behind HAProxy on"
            f" 127.0.0.1:{plan.front_port}\n{status.to_text()}"
        ),
    )
    return 0


@_cluster_errors
def cmd_cluster_status(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.cluster import status

    found = status(Path(args.state_dir))
    if found is None:
        _print(
            {"state_dir": args.state_dir, "all_up": False, "servers": []},
            args.json,
            lambda d: f"no cluster in {args.state_dir}",
        )
        return 1
    _print(found.to_dict(), args.json, lambda d: found.to_text())
    return 0 if found.all_up else 1


@_cluster_errors
def cmd_cluster_down(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec

    from bidfilter.cluster import down

    stopped = down(Path(args.state_dir), timeout=args.timeout)
    _print(
        {"state_dir": args.state_dir, "stopped": msgspec.to_builtins(stopped or [])},
        args.json,
        lambda d: (
            "\n".join(
                f"{s['name']:<10} pid {s['pid'] or '-'}  {s['outcome']}" for s in d["stopped"]
            )
            or f"no cluster in {args.state_dir}; nothing to stop"
        ),
    )
    return 0


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidfilter",
        description="Predict which demand partners will bid on an OpenRTB request;"
        " filter the calls that would get no bid.",
    )
    parser.add_argument("--version", action="version", version=f"bidfilter {__version__}")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (env BIDFILTER_LOG_LEVEL)")
    parser.add_argument("--log-json", action="store_true", default=None, help="log as JSON lines")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print one JSON document for machines")
        return sub

    def store_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--store",
            help="model store: a directory, file://PATH or s3://BUCKET/PREFIX"
            " (env BIDFILTER_STORE; default ./.bidfilter/store)",
        )
        sub.add_argument(
            "--s3-endpoint-url",
            help="S3-compatible endpoint such as MinIO"
            " (env BIDFILTER_S3_ENDPOINT_URL or AWS_ENDPOINT_URL)",
        )

    synth = command(
        "synth",
        cmd_synth,
        "Write synthetic OpenRTB 2.6 auction logs whose partners bid by hidden policies.",
    )
    synth.add_argument(
        "--requests", type=int, default=100_000, help="bid requests (default 100000)"
    )
    synth.add_argument("--partners", type=int, default=20, help="demand partners (default 20)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same logs")
    synth.add_argument(
        "--days", type=int, default=28, help="days of traffic to spread over (default 28)"
    )
    synth.add_argument(
        "--out", default=DEFAULT_LOGS, help=f"log directory (default {DEFAULT_LOGS})"
    )

    ipinyou = command(
        "import-ipinyou",
        cmd_import_ipinyou,
        "Convert iPinYou bid/impression logs into auction logs.",
    )
    ipinyou.add_argument("files", nargs="+", help="iPinYou log files (.txt, .gz, .bz2)")
    ipinyou.add_argument("--out", required=True, help="auction-log directory to write")

    jsonl = command(
        "import-jsonl", cmd_import_jsonl, "Convert JSON-lines auction logs into Parquet."
    )
    jsonl.add_argument("files", nargs="+", help="JSON-lines files, one auction record per line")
    jsonl.add_argument("--out", required=True, help="auction-log directory to write")

    train = command(
        "train",
        cmd_train,
        "Train the bid-probability model on auction logs, pick per-partner thresholds for a target"
        " bid recall, evaluate on the latest part of the logs, and publish a new version.",
    )
    train.add_argument(
        "--logs", default=DEFAULT_LOGS, help=f"auction-log directory (default {DEFAULT_LOGS})"
    )
    store_flags(train)
    train.add_argument(
        "--target-recall",
        type=float,
        default=TrainConfig().target_recall,
        help="share of each partner's bids to keep on the validation set (default 0.99)",
    )
    train.add_argument(
        "--partner-recall",
        action="append",
        default=[],
        metavar="PARTNER=RECALL",
        help="override the target recall for one partner (repeatable)",
    )
    train.add_argument(
        "--trees", type=int, default=300, help="maximum boosting rounds (default 300)"
    )
    train.add_argument(
        "--max-depth",
        type=int,
        default=_MODEL.max_depth,
        help=f"tree depth (default {_MODEL.max_depth})",
    )
    train.add_argument(
        "--learning-rate",
        type=float,
        default=_MODEL.learning_rate,
        help=f"shrinkage (default {_MODEL.learning_rate})",
    )
    train.add_argument(
        "--early-stopping",
        type=int,
        default=_MODEL.early_stopping_rounds,
        help=f"stop after N rounds without improvement (default {_MODEL.early_stopping_rounds})",
    )
    train.add_argument(
        "--negative-rate",
        type=float,
        default=_DATASET.negative_rate,
        help="share of non-bid training rows kept, reweighted to stay calibrated"
        f" (default {_DATASET.negative_rate})",
    )
    train.add_argument(
        "--early-stopping-loss",
        choices=["per-partner", "pooled"],
        default="per-partner" if _MODEL.early_stopping_per_partner else "pooled",
        help="what early stopping watches: the mean of the partners' validation log-losses"
        " (per-partner, the default: every partner counts) or the log-loss of all rows (pooled:"
        " the busiest partners decide)",
    )
    train.add_argument(
        "--recency-half-life-days",
        type=float,
        default=_DATASET.recency_half_life_days or 0.0,
        metavar="DAYS",
        help="training rows weigh 0.5 ** (age / DAYS), age counted back from the validation"
        f" period; 0 weighs all days alike (default {_DATASET.recency_half_life_days})",
    )
    train.add_argument(
        "--vocabulary-min-count",
        type=int,
        default=_DATASET.vocabulary_min_count,
        metavar="N",
        help="a categorical value seen fewer times in training is out of vocabulary"
        f" (default {_DATASET.vocabulary_min_count})",
    )
    train.add_argument(
        "--currency-rates",
        metavar="FILE",
        help='US dollars per unit of each currency, as {"usd_per_unit": {"EUR": 1.08, ...}}'
        " (default: the table bidfilter ships, features/data/usd_rates.json); saved in the model,"
        " so serving converts floors as training did",
    )
    train.add_argument(
        "--min-validation-bids",
        type=int,
        default=TrainConfig().min_validation_bids,
        metavar="N",
        help="a partner with fewer validation bids gets a smoothed threshold (and under"
        f" {MIN_BIDS_TO_FILTER} none: it is not filtered); report.json lists them"
        f" (default {TrainConfig().min_validation_bids})",
    )
    train.add_argument(
        "--valid-fraction", type=float, default=0.1, help="validation share (default 0.1)"
    )
    train.add_argument(
        "--test-fraction", type=float, default=0.1, help="test share, the latest (default 0.1)"
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local: this process, logs in a directory (default); spark: Apache Spark, for logs"
        " past one machine's memory or time budget, at any path Spark reads (s3://...);"
        " needs pyspark and Java 17+ (docs/training.md)",
    )
    train.add_argument(
        "--spark-master",
        metavar="URL",
        help="with --engine spark: local[N], yarn, spark://HOST:PORT... (default: the master"
        " spark-submit set, else local[2])",
    )

    model = commands.add_parser("model", help="List, inspect and promote published model versions.")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    def model_command(
        name: str, handler: Callable[..., int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = model_commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print one JSON document for machines")
        store_flags(sub)
        return sub

    model_command("list", cmd_model_list, "List versions, oldest first; * marks LATEST.")
    show = model_command("show", cmd_model_show, "Show a version's manifest and test metrics.")
    show.add_argument("version", nargs="?", help="version id (default: LATEST)")
    promote = model_command(
        "promote", cmd_model_promote, "Point LATEST at a version: roll forward or back."
    )
    promote.add_argument("version", help="version id")

    serve = commands.add_parser(
        "serve",
        help="Serve bid-filter decisions over Thrift (binary/compact, framed/unframed).",
        description="Serve bid-filter decisions over Apache Thrift with N worker processes on one"
        " port, hot-reloading the newest model from the store. Every flag can also be set as a"
        " BIDFILTER_<NAME> environment variable (e.g. BIDFILTER_PORT=9090).",
    )
    serve.set_defaults(handler=cmd_serve)
    store_flags(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="Thrift port (default 9090; 0 picks one)")
    serve.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    serve.add_argument(
        "--metrics-port", type=int, help="HTTP /healthz, /readyz, /metrics port (default 9100)"
    )
    serve.add_argument("--poll-s", type=float, help="seconds between LATEST checks (default 30)")
    serve.add_argument("--cache-dir", help="where fetched versions go (default .bidfilter/cache)")
    serve.add_argument(
        "--exploration-rate",
        type=float,
        help="share of below-threshold pairs sent anyway, flagged explore (default 0.01)",
    )
    serve.add_argument(
        "--deadline-share-of-tmax",
        type=float,
        help="without deadline_ms, fail open after this share of the request's tmax (default 0.5)",
    )
    serve.add_argument(
        "--default-deadline-ms", type=float, help="without deadline_ms or tmax (default 50)"
    )
    serve.add_argument(
        "--max-pending-calls",
        type=int,
        help="per worker; calls beyond it are answered fail-open at once (default 512)",
    )
    serve.add_argument("--max-connections", type=int, help="per worker (default 4096)")
    serve.add_argument(
        "--idle-timeout-s",
        type=float,
        help="close a connection that sends nothing for this long (default 300)",
    )
    serve.add_argument(
        "--read-timeout-s",
        type=float,
        help="close a connection that takes longer to finish a started message, and bound"
        " the TLS handshake (default 10)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        help="largest Thrift message or frame; a bigger frame is refused from its header"
        " (default 1048576)",
    )
    serve.add_argument(
        "--max-unsent-bytes",
        type=int,
        help="replies a client has not read, per connection: past a high-water mark the"
        " connection is not read, past this (or over the mark for --read-timeout-s) it is"
        " dropped (default 4194304)",
    )
    serve.add_argument(
        "--max-candidates", type=int, help="candidates per request, else refused (default 1000)"
    )
    serve.add_argument(
        "--max-batch", type=int, help="requests per filter_batch, else refused (default 1000)"
    )
    serve.add_argument(
        "--drain-s", type=float, help="on SIGTERM, seconds to finish in-flight calls (default 10)"
    )
    serve.add_argument(
        "--ready-share",
        type=float,
        help="/readyz answers 200 while at least this share of the workers serves, so one lost"
        " worker does not take the whole server out of its load balancer (default 0.5)",
    )
    serve.add_argument(
        "--heartbeat-timeout-s",
        type=float,
        help="a worker whose event loop has not turned for this long (stopped, or stuck in one"
        " call) is killed and replaced (default 5)",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="serve Thrift over TLS (1.2+) with this certificate (chain); needs --tls-key."
        " The HTTP side port stays plaintext",
    )
    serve.add_argument(
        "--tls-key", type=Path, metavar="PEM", help="the unencrypted private key of --tls-cert"
    )
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="mutual TLS: refuse clients without a certificate signed by this CA",
    )

    def client_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--target", required=True, help="the server, HOST:PORT")
        sub.add_argument(
            "--logs", default=DEFAULT_LOGS, help=f"auction logs to replay (default {DEFAULT_LOGS})"
        )
        sub.add_argument("--protocol", choices=["binary", "compact"], default="binary")
        sub.add_argument("--transport", choices=["framed", "unframed"], default="framed")
        sub.add_argument(
            "--tls-ca",
            type=Path,
            metavar="PEM",
            help="connect over TLS, trusting this CA (TLS is on with any --tls-* flag;"
            " default CA: the system's)",
        )
        sub.add_argument(
            "--tls-cert",
            type=Path,
            metavar="PEM",
            help="client certificate, for a server that requires one (mutual TLS)",
        )
        sub.add_argument(
            "--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert, if apart"
        )

    loadgen = command(
        "loadgen",
        cmd_loadgen,
        "Replay OpenRTB requests from logs at a fixed offered rate (open loop, latency measured"
        " from each call's intended send time: no coordinated omission) or as fast as possible;"
        " report throughput, latency percentiles, outcomes, calls filtered and bids lost.",
    )
    client_flags(loadgen)
    pace = loadgen.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="calls per second offered, in total")
    pace.add_argument("--max", action="store_true", help="as fast as the server answers")
    loadgen.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    loadgen.add_argument("--connections", type=int, default=4, help="per process (default 4)")
    loadgen.add_argument("--processes", type=int, default=1, help="generator processes (default 1)")
    loadgen.add_argument(
        "--candidates",
        choices=["logged", "all"],
        default="logged",
        help="send each record's logged partners, or none (server decides on all it knows)",
    )
    loadgen.add_argument("--timeout", type=float, default=1.0, help="per call, seconds (default 1)")
    loadgen.add_argument("--progress", action="store_true", help="live progress even without a tty")
    loadgen.add_argument("--json-out", metavar="OUT", help="also write the JSON report to OUT")

    simulate = command(
        "simulate",
        cmd_simulate,
        "Run the SSP auction on logged traffic with and without the filter: partner calls, bids,"
        " filled auctions and revenue, as a table and a PNG.",
    )
    client_flags(simulate)
    simulate.add_argument(
        "--auction", choices=["second_price", "first_price"], default="second_price"
    )
    simulate.add_argument("--limit", type=int, help="only the first N logged auctions")
    simulate.add_argument(
        "--png", default="simulation.png", help="plot file (default simulation.png)"
    )

    idl = commands.add_parser("idl", help="Print the Thrift IDL, to generate clients from.")
    idl.set_defaults(handler=cmd_idl)

    demo = command(
        "demo",
        cmd_demo,
        "Run the whole system on a laptop: synthetic logs, training, a published model, the"
        " server, the load generator and the auction simulator; then a summary.",
    )
    demo.add_argument("--workdir", default=".bidfilter/demo", help="where logs and the store go")
    demo.add_argument(
        "--requests", type=int, default=200_000, help="synthetic requests (default 200000)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--load-seconds", type=float, default=30.0, help="load duration (default 30)")
    demo.add_argument("--rate", type=float, default=1000.0, help="offered calls/s (default 1000)")
    demo.add_argument("--workers", type=int, default=2, help="server workers (default 2)")

    cluster = commands.add_parser(
        "cluster",
        help="Run N servers on this machine behind a real HAProxy: up, status, down.",
        description="A local cluster: N `bidfilter serve` processes on 127.0.0.1, each with its"
        " own Thrift and side port, behind HAProxy (TCP mode, health checks on /readyz). Needs"
        " HAProxy (Debian/Ubuntu package `haproxy`). State, logs and the HAProxy config go to"
        " --state-dir.",
    )
    cluster_commands = cluster.add_subparsers(
        dest="cluster_command", required=True, metavar="ACTION"
    )

    def cluster_command(
        name: str, handler: Callable[..., int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = cluster_commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print one JSON document for machines")
        sub.add_argument(
            "--state-dir",
            default=DEFAULT_CLUSTER_STATE,
            help="pid files, logs, HAProxy config and stats socket"
            f" (default {DEFAULT_CLUSTER_STATE})",
        )
        return sub

    cluster_up = cluster_command(
        "up",
        cmd_cluster_up,
        "Start N servers and HAProxy in the background; return once HAProxy's health checks"
        " see every server ready (else stop them again and say why).",
    )
    cluster_up.add_argument("--servers", type=int, default=2, help="servers (default 2)")
    cluster_up.add_argument("--workers", type=int, default=1, help="workers per server (default 1)")
    store_flags(cluster_up)
    cluster_up.add_argument(
        "--port", type=int, default=9090, help="HAProxy's Thrift front-end port (default 9090)"
    )
    cluster_up.add_argument(
        "--base-port",
        type=int,
        default=9200,
        help="server i (from 1) gets Thrift port BASE+2(i-1) and side port BASE+2(i-1)+1"
        " (default 9200)",
    )
    cluster_up.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for ready (default 60)"
    )
    cluster_up.add_argument(
        "--haproxy", metavar="PATH", help="HAProxy executable (default: PATH, /usr/sbin/haproxy)"
    )
    cluster_command(
        "status",
        cmd_cluster_status,
        "Show each server (process, /readyz, model version) and HAProxy's view of it;"
        " exit status 0 only if everything is up.",
    )
    cluster_down = cluster_command(
        "down",
        cmd_cluster_down,
        "Stop the cluster: HAProxy stops accepting, servers get SIGTERM and drain; whatever"
        " still runs after --timeout is killed. Logs stay in the state dir.",
    )
    cluster_down.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to drain (default 30)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bidfilter.artifact import ArtifactError, StoreError
    from bidfilter.logging_setup import configure_logging

    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        # Into the settings, not only this process's logging: `serve` hands them to workers.
        settings = Settings(
            **{
                **settings.model_dump(),
                "log_level": args.log_level or settings.log_level,
                "log_json": bool(args.log_json or settings.log_json),
            }
        )
    except ValidationError as error:
        for line in settings_error_lines(error):
            print(f"bidfilter: {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, settings)
    except ValidationError as error:  # a flag's value (serve) out of its setting's range
        for line in settings_error_lines(error):
            log.error("%s", line)
        return 2
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, ArtifactError, StoreError) as error:
        # Library errors carry the field and message; show them without a traceback.
        log.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())

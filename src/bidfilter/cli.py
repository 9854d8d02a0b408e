"""The ``bidfilter`` command. Thin: parses flags, builds settings, calls the library, prints.

Every command prints a human summary, or one JSON document with ``--json`` for scripts. Each
group of commands is one ``add_*`` function beside its handlers; ``build_parser`` lists them.
Flags that set a ``Settings`` field (every ``serve`` flag, ``--store``, ``--log-level``...) are
made from the field, so its name, type, help, default and ``BIDFILTER_*`` variable are written
once, in ``settings.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from bidfilter import __version__
from bidfilter.settings import Settings, settings_error_lines
from bidfilter.training.config import (
    MIN_BIDS_TO_FILTER,
    DatasetConfig,
    ModelConfig,
    TrainConfig,
)

if TYPE_CHECKING:
    from bidfilter.artifact import ModelStore

log = logging.getLogger("bidfilter")

Handler: TypeAlias = Callable[[argparse.Namespace, Settings], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DEFAULT_LOGS = ".bidfilter/logs"
DEFAULT_CLUSTER_STATE = ".bidfilter/cluster"
_TRAIN = TrainConfig()
_MODEL = ModelConfig()
_DATASET = DatasetConfig()


# --- flags --------------------------------------------------------------------------------------


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to each flag's help, except where there is no value to show (an
    optional flag's ``None``, a switch's ``False``, a repeatable flag's ``[]``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


# A flag that sets a Settings field stores under this prefix, and only when given (its argparse
# default is SUPPRESS): what was not given is left to the environment, then the field's default.
_SETTING = "setting:"


def add_setting_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """One flag per ``Settings`` field named: ``--max-batch`` for ``max_batch``, its type from
    the field's annotation, its help from the field's description, default and variable."""
    for name in names:
        field = Settings.model_fields[name]
        flag, variable = "--" + name.replace("_", "-"), "BIDFILTER_" + name.upper()
        shown = _shown_default(field)
        help_text = f"{field.description} ({f'default: {shown}; ' if shown else ''}env {variable})"
        kind = _flag_type(field.annotation)
        common: dict[str, Any] = {
            "dest": _SETTING + name,
            "default": argparse.SUPPRESS,
            "help": help_text,
        }
        if kind is bool:
            parser.add_argument(flag, action="store_true", **common)
        else:
            parser.add_argument(flag, type=kind, metavar=name.upper(), **common)


def _shown_default(field: FieldInfo) -> str:
    """The default as help shows it; empty when there is none to show (``None``, ``False``, a
    default computed at start, which the description explains)."""
    if field.default_factory is not None or field.default is None or field.default is False:
        return ""
    return str(field.default)


def _flag_type(annotation: Any) -> Callable[[str], Any]:
    """What argparse converts a setting's text with: ``Path | None`` -> ``Path``; a ``Literal``
    stays text, for the settings to check (and name the variable in the error)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = (arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return str
    kind: Callable[[str], Any] = annotation
    return kind


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings: the flags given, else ``BIDFILTER_*`` variables, else the defaults."""
    given = {
        name.removeprefix(_SETTING): value
        for name, value in vars(args).items()
        if name.startswith(_SETTING)
    }
    return Settings(**given)


def _command(
    commands: Commands,
    name: str,
    handler: Handler,
    help_text: str,
    *,
    description: str | None = None,
    json_flag: bool = True,
) -> argparse.ArgumentParser:
    sub = commands.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        formatter_class=_DefaultsFormatter,
    )
    sub.set_defaults(handler=handler)
    if json_flag:
        sub.add_argument("--json", action="store_true", help="print one JSON document for machines")
    return sub


def _group(commands: Commands, name: str, help_text: str, description: str) -> Commands:
    """A command of actions (``model list``, ``cluster up``...): the parser its actions go in."""
    group = commands.add_parser(name, help=help_text, description=description)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    add_setting_flags(parser, ("store", "s3_endpoint_url"))


def _print(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(result, indent=2, default=str) if as_json else human(result))


def _store(settings: Settings, *, existing: bool = False) -> ModelStore:
    """The store the settings name. With ``existing``, a local store must already be there:
    reading a mistyped path would otherwise look like an empty store (and a server would fail
    open on it for ever)."""
    from bidfilter.artifact import StoreError, open_store

    store = open_store(settings.store, endpoint_url=settings.s3_endpoint_url)
    root = getattr(store, "root", None)  # local stores only: S3 prefixes exist once written to
    if existing and root is not None and not root.is_dir():
        raise StoreError("store", f"no model store at {root} (no such directory)")
    return store


# --- data: synth, import-ipinyou, import-jsonl -------------------------------------------------


def add_data_commands(commands: Commands) -> None:
    synth = _command(
        commands,
        "synth",
        cmd_synth,
        "Write synthetic OpenRTB 2.6 auction logs whose partners bid by hidden policies.",
    )
    synth.add_argument("--requests", type=int, default=100_000, help="bid requests")
    synth.add_argument("--partners", type=int, default=20, help="demand partners")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same logs")
    synth.add_argument("--days", type=int, default=28, help="days of traffic to spread over")
    synth.add_argument("--out", default=DEFAULT_LOGS, help="log directory")
    for flag, help_text in (
        ("retarget", "from day DAY on, PARTNER (e.g. dsp-05) bids by a new, unrelated policy"),
        ("join", "PARTNER is no candidate before day DAY (absent from earlier records)"),
    ):
        synth.add_argument(
            "--" + flag, action="append", default=[], metavar="PARTNER@DAY", help=help_text
        )

    importers = [
        ("import-ipinyou", cmd_import_ipinyou, "Convert iPinYou bid/impression logs into auction"
         " logs.", "iPinYou log files (.txt, .gz, .bz2)"),
        ("import-jsonl", cmd_import_jsonl, "Convert JSON-lines auction logs into Parquet.",
         "JSON-lines files, one auction record per line"),
    ]  # fmt: skip
    for name, handler, help_text, files_help in importers:
        importer = _command(commands, name, handler, help_text)
        importer.add_argument("files", nargs="+", help=files_help)
        importer.add_argument("--out", required=True, help="auction-log directory to write")


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.synth import SynthError, WorldChanges, generate, partner_ids

    names = partner_ids(args.partners)

    def changes(flag: str) -> dict[int, float]:
        parsed = {}
        for value in getattr(args, flag):
            partner, _, day = value.partition("@")
            if partner not in names:
                raise SynthError(flag, f"{partner!r} is none of {names[0]} .. {names[-1]}")
            try:
                parsed[names.index(partner)] = float(day)
            except ValueError:
                raise SynthError(flag, f"expected PARTNER@DAY, got {value!r}") from None
        return parsed

    summary = generate(
        Path(args.out),
        requests=args.requests,
        partners=args.partners,
        seed=args.seed,
        days=args.days,
        changes=WorldChanges(retarget=changes("retarget"), join=changes("join")),
        progress=not args.json and sys.stderr.isatty(),
    )

    def human(d: dict[str, Any]) -> str:
        partners = len(d["partners"])
        return (
            f"wrote {d['requests']} requests x {partners} partners to {args.out}"
            f" (overall bid rate {d['overall_bid_rate']:.2%})"
        )

    _print(summary.to_dict(), args.json, human)
    return 0


def cmd_import_ipinyou(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.logs.ipinyou import import_ipinyou

    summary = import_ipinyou([Path(p) for p in args.files], Path(args.out), progress=not args.json)
    _print(summary.to_dict(), args.json, lambda d: json.dumps(d, indent=2, default=str))
    return 0


def cmd_import_jsonl(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.logs import import_jsonl

    summary = import_jsonl([Path(p) for p in args.files], Path(args.out))
    _print(summary.to_dict(), args.json, lambda d: json.dumps(d, indent=2, default=str))
    return 0


# --- train ---------------------------------------------------------------------------------------


# A train flag that sets one TrainConfig field stores under this prefix and the field's path
# ("model.trees": the trees of its ModelConfig), which is all _train_config needs to know of it.
_CONFIG_FIELD = "config:"
_CONFIGS: dict[str, Any] = {"": _TRAIN, "model": _MODEL, "dataset": _DATASET}
# A two-way train flag sets one bool field: flag -> (field path, the choice naming True, the one
# naming False, help).
_SWITCHES: dict[str, tuple[str, str, str, str]] = {
    "early-stopping-loss": (
        "model.early_stopping_per_partner",
        "per-partner",
        "pooled",
        "what early stopping watches: the mean of the partners' validation log-losses"
        " (per-partner: every partner counts) or the log-loss of all rows (pooled: the busiest"
        " partners decide)",
    ),
    "models": (
        "model.per_partner",
        "per-partner",
        "shared",
        "one booster per partner, merged into one served model, or one booster shared by every"
        " partner (docs/training.md)",
    ),
    "thresholds": (
        "smoothed_thresholds",
        "smoothed",
        "empirical",
        "each partner's threshold: the Harrell-Davis estimate of its bids' score quantile"
        " (smoothed: every bid weighs in) or the one order statistic that keeps the target share"
        " of validation bids (empirical; sparse partners are smoothed still)",
    ),
}


def add_train_command(commands: Commands) -> None:
    """Every ``train`` flag. One that sets a single ``TrainConfig`` field is a line of
    ``fields`` (the field's path and the flag's help; the flag is named after the field, whose
    type and default it takes); the others are spelled out, and ``_train_config`` reads them."""
    train = _command(
        commands,
        "train",
        cmd_train,
        "Train the bid-probability model on auction logs, pick per-partner thresholds for a target"
        " bid recall, evaluate on the latest part of the logs, and publish a new version.",
    )
    train.add_argument("--logs", default=DEFAULT_LOGS, help="auction-log directory")
    _add_store_flags(train)
    fields = {
        "target_recall": "share of each partner's bids to keep on the validation set",
        "min_validation_bids": "a partner with fewer validation bids is sparse: a smoothed"
        f" threshold even with --thresholds empirical (and under {MIN_BIDS_TO_FILTER} bids none:"
        " it is not filtered); report.json lists them",
        "model.trees": "maximum boosting rounds",
        "model.max_depth": "tree depth",
        "model.learning_rate": "shrinkage",
        "dataset.negative_rate": "share of non-bid training rows kept, reweighted to stay"
        " calibrated",
        "dataset.vocabulary_min_count": "a categorical value seen fewer times in training is out"
        " of vocabulary",
        "dataset.valid_fraction": "validation share",
        "dataset.test_fraction": "test share, the latest",
    }
    for path, help_text in fields.items():
        part, _, name = path.rpartition(".")
        config = _CONFIGS[part]
        train.add_argument(
            "--" + name.replace("_", "-"),
            type=typing.get_type_hints(type(config))[name],
            default=getattr(config, name),
            dest=_CONFIG_FIELD + path,
            metavar=name.upper(),
            help=help_text,
        )
    for flag, (path, true_choice, false_choice, help_text) in _SWITCHES.items():
        part, _, name = path.rpartition(".")
        train.add_argument(
            "--" + flag,
            choices=[true_choice, false_choice],
            default=true_choice if getattr(_CONFIGS[part], name) else false_choice,
            help=help_text,
        )
    train.add_argument(
        "--partner-recall",
        action="append",
        default=[],
        metavar="PARTNER=RECALL",
        help="override the target recall for one partner (repeatable)",
    )
    train.add_argument(
        "--early-stopping",
        type=int,
        default=_MODEL.early_stopping_rounds,
        metavar="N",
        help="stop after N rounds without improvement",
    )
    train.add_argument(
        "--recency-half-life-days",
        type=float,
        default=_DATASET.recency_half_life_days or 0.0,
        metavar="DAYS",
        help="training rows weigh 0.5 ** (age / DAYS), age counted back from the validation"
        " period; 0 weighs all days alike",
    )
    train.add_argument(
        "--no-partner-affinity",
        action="store_true",
        help="leave out the per-partner bid-rate and count columns for publisher, domain and tag"
        " (docs/features.md)",
    )
    train.add_argument(
        "--currency-rates",
        metavar="FILE",
        help='US dollars per unit of each currency, as {"usd_per_unit": {"EUR": 1.08, ...}}'
        " (default: the table bidfilter ships, features/data/usd_rates.json); saved in the model,"
        " so serving converts floors as training did",
    )
    train.add_argument("--seed", type=int, default=_DATASET.seed, help="random seed")
    train.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local: this process, logs in a directory; spark: Apache Spark, for logs past one"
        " machine's memory or time budget, at any path Spark reads (s3://...); needs pyspark and"
        " Java 17+ (docs/training.md)",
    )
    train.add_argument(
        "--spark-master",
        metavar="URL",
        help="with --engine spark: local[N], yarn, spark://HOST:PORT... (default: the master"
        " spark-submit set, else local[2])",
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    fields: dict[str, dict[str, Any]] = {part: {} for part in _CONFIGS}
    for dest, value in vars(args).items():
        if dest.startswith(_CONFIG_FIELD):
            part, _, name = dest.removeprefix(_CONFIG_FIELD).rpartition(".")
            fields[part][name] = value
    for flag, (path, true_choice, _, _) in _SWITCHES.items():
        part, _, name = path.rpartition(".")
        fields[part][name] = getattr(args, flag.replace("-", "_")) == true_choice
    return TrainConfig(
        dataset=DatasetConfig(
            **fields["dataset"],
            recency_half_life_days=args.recency_half_life_days or None,
            partner_affinity=not args.no_partner_affinity,
            currency_rates=Path(args.currency_rates) if args.currency_rates else None,
            seed=args.seed,
        ),
        model=ModelConfig(
            **fields["model"],
            early_stopping_rounds=args.early_stopping,
            seed=args.seed,
        ),
        partner_recall=_partner_recall(args.partner_recall),
        **fields[""],
    )


def _partner_recall(values: Sequence[str]) -> dict[str, float]:
    overrides = {}
    for value in values:
        partner, _, recall = value.partition("=")
        try:
            overrides[partner] = float(recall)
        except ValueError:
            raise SystemExit(f"--partner-recall expects PARTNER=RECALL, got {value!r}") from None
    return overrides


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
            result = train_on_spark(spark, args.logs, _store(settings), _train_config(args))
    else:
        from bidfilter.training.pipeline import train

        result = train(
            args.logs,
            _store(settings),
            _train_config(args),
            progress=not args.json and sys.stderr.isatty(),
        )
    _print(result.summary(), args.json, _train_summary)
    return 0


# --- model ---------------------------------------------------------------------------------------


def add_model_commands(commands: Commands) -> None:
    actions = _group(
        commands,
        "model",
        "List, inspect and promote published model versions.",
        "List, inspect and promote published model versions.",
    )
    _add_store_flags(
        _command(actions, "list", cmd_model_list, "List versions, oldest first; * marks LATEST.")
    )
    show = _command(actions, "show", cmd_model_show, "Show a version's manifest and test metrics.")
    _add_store_flags(show)
    show.add_argument("version", nargs="?", help="version id (default: LATEST)")
    promote = _command(
        actions, "promote", cmd_model_promote, "Point LATEST at a version: roll forward or back."
    )
    _add_store_flags(promote)
    promote.add_argument("version", help="version id")


def cmd_model_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings, existing=True)
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

    store = _store(settings, existing=True)
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
    store = _store(settings, existing=True)
    previous = store.latest()
    store.promote(args.version)
    log.info("LATEST moved from %s to %s in %s", previous, args.version, store.uri)
    _print(
        {"store": store.uri, "latest": args.version, "previous": previous},
        args.json,
        lambda d: f"LATEST -> {d['latest']} (was {d['previous']})",
    )
    return 0


# --- serve ---------------------------------------------------------------------------------------

# Global flags (before the command), not serve's own.
_GLOBAL_SETTINGS = ("log_level", "log_json")


# --- learning once live: retrain, loop ------------------------------------------------------


def add_learning_commands(commands: Commands) -> None:
    from bidfilter.learning.loop import POLICIES, LoopConfig

    loop_defaults = LoopConfig()
    retrain = _command(
        commands,
        "retrain",
        cmd_retrain,
        "Train on the latest window of logs and promote the new version only if it is not worse"
        " than the serving one on the newest logged traffic (docs/learning.md).",
    )
    retrain.add_argument(
        "--logs",
        default=DEFAULT_LOGS,
        help="auction-log directory, or s3://BUCKET/PREFIX (where serve --outcome-log writes)",
    )
    _add_store_flags(retrain)
    retrain.add_argument("--window-days", type=int, default=7, help="days of logs to train on")
    retrain.add_argument("--target-recall", type=float, default=_TRAIN.target_recall)
    retrain.add_argument(
        "--recall-tolerance",
        type=float,
        default=0.01,
        help="refuse a candidate whose estimated bid recall is below the target by more",
    )
    retrain.add_argument(
        "--savings-tolerance",
        type=float,
        default=0.02,
        help="refuse a candidate that saves less than the serving version by more",
    )
    retrain.add_argument(
        "--every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run again every SECONDS until stopped (0: once)",
    )
    retrain.add_argument(
        "--max-runs", type=int, default=0, help="with --every, stop after this many (0: never)"
    )
    retrain.add_argument(
        "--metrics-file",
        metavar="FILE",
        help="after each decision, write Prometheus metrics here (a textfile collector's file)",
    )
    loop = _command(
        commands,
        "loop",
        cmd_loop,
        "Simulate the closed loop on a synthetic world, day by day: filter, observe only what was"
        " sent, retrain, promote; three retraining policies side by side (docs/learning.md).",
    )
    for name, help_text in (
        ("days", "days to simulate"),
        ("requests_per_day", "bid requests a day"),
        ("partners", "demand partners"),
        ("seed", "world seed"),
        ("window_days", "days of logs each retraining reads"),
        ("exploration", "exploration probability below the threshold, every partner"),
        ("control_share", "share of requests in the control group"),
        ("trees", "most trees per partner in each retraining"),
    ):
        default = getattr(loop_defaults, name)
        loop.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default, help=help_text
        )
    loop.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="comma-separated retraining policies to run",
    )
    loop.add_argument("--out", required=True, help="directory for the world, logs and stores")
    loop.add_argument("--png", help="plot recall and savings per day into this file")


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from bidfilter.learning.promotion import PromotionCounts, PromotionPolicy, retrain

    store = _store(settings, existing=True)
    policy = PromotionPolicy(args.target_recall, args.recall_tolerance, args.savings_tolerance)
    config = TrainConfig(target_recall=args.target_recall)
    counts = PromotionCounts()
    runs = 0
    while True:
        result = retrain(
            args.logs, store, window_days=args.window_days, config=config, policy=policy,
            counts=counts, endpoint_url=settings.s3_endpoint_url,
        )  # fmt: skip
        runs += 1
        if args.metrics_file:
            target = Path(args.metrics_file)
            staging = target.with_name(f".{target.name}.tmp")
            staging.write_text(counts.exposition())
            staging.replace(target)  # a collector never reads half a file
        _print(
            {**result.summary(), "promoted": result.promoted, **result.report["promotion"]},
            args.json,
            lambda d: (
                f"{d['version']}: {'promoted' if d['promoted'] else 'refused'} ({d['reason']})"
            ),
        )
        if args.every <= 0 or (args.max_runs and runs >= args.max_runs):
            return 0
        time.sleep(args.every)


def cmd_loop(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.learning.loop import LoopConfig, run_loop

    config = LoopConfig(
        days=args.days,
        requests_per_day=args.requests_per_day,
        partners=args.partners,
        seed=args.seed,
        window_days=args.window_days,
        exploration=args.exploration,
        control_share=args.control_share,
        trees=args.trees,
        policies=tuple(p for p in args.policies.split(",") if p),
    )
    report = run_loop(config, Path(args.out))  # each step is logged
    if args.png:
        from bidfilter.learning.loop_plot import plot_loop

        plot_loop(report, Path(args.png))
    (Path(args.out) / "loop.json").write_text(json.dumps(report, indent=2) + "\n")

    def human(d: dict[str, Any]) -> str:
        lines = [f"closed loop: {d['config']['days']} days in {d['seconds']:.0f} s"]
        for name, entry in d["summary"].items():
            lines.append(
                f"  {name:>16}: min recall (day 3+) {entry['min_bid_recall_from_day_3']:.4f},"
                f" mean savings {entry['mean_call_savings_from_day_3']:.4f} (oracle"
                f" {entry['mean_oracle_call_savings_from_day_3']:.4f}), retargeted partner back"
                f" above 0.97 after {entry['retargeted_recovery_days']} days"
            )
        return "\n".join(lines)

    _print(report, args.json, human)
    return 0


def add_serve_command(commands: Commands) -> None:
    """A flag per setting: a field added to ``Settings`` is a ``serve`` flag at once."""
    serve = _command(
        commands,
        "serve",
        cmd_serve,
        "Serve bid-filter decisions over Thrift (binary/compact, framed/unframed).",
        description="Serve bid-filter decisions over Apache Thrift with N worker processes on one"
        " port, hot-reloading the newest model from the store. Every flag can also be set as a"
        " BIDFILTER_<NAME> environment variable (e.g. BIDFILTER_PORT=9090).",
        json_flag=False,
    )
    add_setting_flags(
        serve, (name for name in Settings.model_fields if name not in _GLOBAL_SETTINGS)
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.server.supervisor import Supervisor

    # An existing, empty store is served fail-open until a version appears; a missing one is
    # more likely a typo than a store to come.
    return Supervisor(settings, _store(settings, existing=True)).run()


# --- replay: loadgen, simulate -------------------------------------------------------------------


def add_replay_commands(commands: Commands) -> None:
    loadgen = _command(
        commands,
        "loadgen",
        cmd_loadgen,
        "Replay OpenRTB requests from logs at a fixed offered rate (open loop, latency measured"
        " from each call's intended send time: no coordinated omission) or as fast as possible;"
        " report throughput, latency percentiles, outcomes, calls filtered and bids lost.",
    )
    _add_target_flags(loadgen)
    pace = loadgen.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="calls per second offered, in total")
    pace.add_argument("--max", action="store_true", help="as fast as the server answers")
    loadgen.add_argument("--duration", type=float, default=10.0, help="seconds")
    loadgen.add_argument("--connections", type=int, default=4, help="per process")
    loadgen.add_argument("--processes", type=int, default=1, help="generator processes")
    loadgen.add_argument(
        "--candidates",
        choices=["logged", "all"],
        default="logged",
        help="send each record's logged partners, or none (server decides on all it knows)",
    )
    loadgen.add_argument("--timeout", type=float, default=1.0, help="per call, seconds")
    loadgen.add_argument("--progress", action="store_true", help="live progress even without a tty")
    loadgen.add_argument("--json-out", metavar="OUT", help="also write the JSON report to OUT")

    simulate = _command(
        commands,
        "simulate",
        cmd_simulate,
        "Run the SSP auction on logged traffic with and without the filter: partner calls, bids,"
        " filled auctions and revenue, as a table and a PNG.",
    )
    _add_target_flags(simulate)
    simulate.add_argument(
        "--auction",
        choices=["second_price", "first_price"],
        default="second_price",
        help="how the SSP settles an auction",
    )
    simulate.add_argument("--limit", type=int, help="only the first N logged auctions")
    simulate.add_argument("--png", default="simulation.png", help="plot file")
    simulate.add_argument(
        "--qps-cap-share",
        type=_cap_share,
        metavar="S",
        help="also cap each partner at share S (0 < S <= 1) of its unfiltered calls per second,"
        " value-ranked and by random dropping (docs/client.md)",
    )
    simulate.add_argument(
        "--replay-rate",
        type=_replay_rate,
        default=1000.0,
        metavar="R",
        help="with --qps-cap-share: requests per simulated second (the logged clock scaled to"
        " this mean rate), or 'logged' for the logged clock",
    )
    simulate.add_argument("--seed", type=int, default=0, help="random throttling's seed")


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    """The server the replay tools call, how, and what they replay."""
    parser.add_argument("--target", required=True, help="the server, HOST:PORT")
    parser.add_argument("--logs", default=DEFAULT_LOGS, help="auction logs to replay")
    parser.add_argument(
        "--protocol", choices=["binary", "compact"], default="binary", help="Thrift protocol"
    )
    parser.add_argument(
        "--transport", choices=["framed", "unframed"], default="framed", help="Thrift transport"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="connect over TLS, trusting this CA (TLS is on with any --tls-* flag;"
        " default CA: the system's)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="client certificate, for a server that requires one (mutual TLS)",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert, if apart"
    )


def _cap_share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        share = float("nan")
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"expects a share in (0, 1], got {value!r}")
    return share


def _replay_rate(value: str) -> float | None:
    if value == "logged":
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = float("nan")
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expects requests per second > 0 or 'logged', got {value!r}"
        )
    return rate


def _replay_target(args: argparse.Namespace) -> dict[str, Any]:
    """What the target flags say, as ``run_loadgen`` and ``simulate`` take it."""
    return {
        "target": _target(args.target),
        "logs": Path(args.logs),
        "protocol": args.protocol,
        "transport": args.transport,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }


def _target(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--target expects HOST:PORT with a port in 1..65535, got {value!r}")
    return host, int(port)


def cmd_loadgen(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.replay import run_loadgen

    if (args.rate is None) == (not args.max):
        raise SystemExit("give exactly one of --rate R or --max")
    report = run_loadgen(
        **_replay_target(args),
        rate=args.rate,
        duration=args.duration,
        connections=args.connections,
        processes=args.processes,
        progress=sys.stderr.isatty() or args.progress,
        candidates=args.candidates,
        timeout=args.timeout,
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.to_text())
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.replay import simulate

    report = simulate(
        **_replay_target(args),
        auction=args.auction,
        limit=args.limit,
        qps_cap_share=args.qps_cap_share,
        replay_rate=args.replay_rate,
        seed=args.seed,
    )
    if args.png:
        # Imported here: matplotlib takes most of a second to import, and is needed for this only.
        from bidfilter.replay.simulation_plot import plot_simulation

        report = replace(report, png=plot_simulation(report, Path(args.png)))
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.to_table())
    return 0


# --- demo, idl -----------------------------------------------------------------------------------


def add_demo_and_idl_commands(commands: Commands) -> None:
    _command(
        commands,
        "idl",
        cmd_idl,
        "Print the Thrift IDL, to generate clients from.",
        json_flag=False,
    )
    demo = _command(
        commands,
        "demo",
        cmd_demo,
        "Run the whole system on a laptop: synthetic logs, training, a published model, the"
        " server, the load generator and the auction simulator; then a summary.",
    )
    demo.add_argument("--workdir", default=".bidfilter/demo", help="where logs and the store go")
    demo.add_argument("--requests", type=int, default=200_000, help="synthetic requests")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--load-seconds", type=float, default=30.0, help="load duration")
    demo.add_argument("--rate", type=float, default=1000.0, help="offered calls/s")
    demo.add_argument("--workers", type=int, default=2, help="server workers")


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


# --- cluster -------------------------------------------------------------------------------------


def add_cluster_commands(commands: Commands) -> None:
    actions = _group(
        commands,
        "cluster",
        "Run N servers on this machine behind a real HAProxy: up, status, down.",
        "A local cluster: N `bidfilter serve` processes on 127.0.0.1, each with its own Thrift"
        " and side port, behind HAProxy (TCP mode, health checks on /readyz). Needs HAProxy"
        " (Debian/Ubuntu package `haproxy`). State, logs and the HAProxy config go to"
        " --state-dir.",
    )

    def action(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = _command(actions, name, handler, help_text)
        sub.add_argument(
            "--state-dir",
            default=DEFAULT_CLUSTER_STATE,
            help="pid files, logs, HAProxy config and stats socket",
        )
        return sub

    up = action(
        "up",
        cmd_cluster_up,
        "Start N servers and HAProxy in the background; return once HAProxy's health checks"
        " see every server ready (else stop them again and say why).",
    )
    _add_store_flags(up)
    up.add_argument("--servers", type=int, default=2, help="servers")
    up.add_argument("--workers", type=int, default=1, help="workers per server")
    up.add_argument("--port", type=int, default=9090, help="HAProxy's Thrift front-end port")
    up.add_argument(
        "--base-port",
        type=int,
        default=9200,
        help="server i (from 1) gets Thrift port BASE+2(i-1) and side port BASE+2(i-1)+1",
    )
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for ready")
    up.add_argument(
        "--haproxy", metavar="PATH", help="HAProxy executable (default: PATH, /usr/sbin/haproxy)"
    )
    action(
        "status",
        cmd_cluster_status,
        "Show each server (process, /readyz, model version) and HAProxy's view of it;"
        " exit status 0 only if everything is up.",
    )
    down = action(
        "down",
        cmd_cluster_down,
        "Stop the cluster: HAProxy stops accepting, servers get SIGTERM and drain; whatever"
        " still runs after --timeout is killed. Logs stay in the state dir.",
    )
    down.add_argument("--timeout", type=float, default=30.0, help="seconds to drain")


def cmd_cluster_up(args: argparse.Namespace, settings: Settings) -> int:
    from bidfilter.cluster import ClusterError, find_haproxy, plan_cluster, up

    if _store(settings, existing=True).latest() is None:
        # The servers would start fail-open and never turn ready: HAProxy would wait in vain.
        raise ClusterError(
            "store", f"no model published in {settings.store}: run bidfilter train first"
        )
    plan = plan_cluster(
        args.servers,
        store=settings.store,
        state_dir=Path(args.state_dir),
        front_port=args.port,
        base_port=args.base_port,
        haproxy=find_haproxy(args.haproxy),
        workers=args.workers,
        s3_endpoint_url=settings.s3_endpoint_url,
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


# --- the command ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidfilter",
        description="Predict which demand partners will bid on an OpenRTB request;"
        " filter the calls that would get no bid.",
        formatter_class=_DefaultsFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bidfilter {__version__}")
    add_setting_flags(parser, _GLOBAL_SETTINGS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(commands)
    add_train_command(commands)
    add_model_commands(commands)
    add_serve_command(commands)
    add_learning_commands(commands)
    add_replay_commands(commands)
    add_demo_and_idl_commands(commands)
    add_cluster_commands(commands)
    return parser


def _reported_errors() -> tuple[type[Exception], ...]:
    """The errors shown in one line, without a traceback: library errors carry the field (or
    the server, the process) at fault and a message. The client's and the cluster's count once
    their package is imported (a command that never imported one cannot have raised its errors):
    checking an error must not import the Thrift codec or the cluster."""
    from bidfilter.artifact import ArtifactError, StoreError

    reported: list[type[Exception]] = [ValueError, OSError, ArtifactError, StoreError]
    if "bidfilter.client" in sys.modules:
        from bidfilter.client import BidFilterClientError

        reported.append(BidFilterClientError)
    if "bidfilter.cluster" in sys.modules:
        from bidfilter.cluster import ClusterError

        reported.append(ClusterError)
    return tuple(reported)


def main(argv: Sequence[str] | None = None) -> int:
    from bidfilter.logging_setup import configure_logging

    args = build_parser().parse_args(argv)
    try:
        # Into the settings, not only this process's logging: `serve` hands them to workers.
        settings = settings_from(args)
    except ValidationError as error:  # a flag's or a variable's value out of its range
        for line in settings_error_lines(error):
            print(f"bidfilter: {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if not isinstance(error, _reported_errors()):
            raise
        log.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())

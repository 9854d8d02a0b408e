"""The ``bidfilter`` command: help, JSON output, the training path and model management."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bidfilter.artifact import open_store
from bidfilter.cli import main

SUBCOMMANDS = ["synth", "import-ipinyou", "import-jsonl", "train", "demo"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out
    assert len(out.splitlines()) > 4


@pytest.mark.parametrize("action", ["list", "show", "promote"])
def test_model_actions_explain_themselves(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["model", action, "--help"])
    assert exited.value.code == 0
    assert "--store" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    done = subprocess.run(
        [Path(sys.executable).parent / "bidfilter", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("bidfilter ")


def test_synth_train_and_model_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs, store = tmp_path / "logs", tmp_path / "store"
    code, out, _ = run(
        capsys,
        "synth",
        "--requests",
        "3000",
        "--partners",
        "4",
        "--days",
        "2",
        "--out",
        str(logs),
        "--json",
    )
    assert code == 0
    assert json.loads(out)["requests"] == 3000

    code, out, _ = run(
        capsys, "train", "--logs", str(logs), "--store", str(store), "--trees", "20", "--json"
    )
    assert code == 0
    first = json.loads(out)
    assert first["test"]["bid_recall"] > 0.8
    code, out, _ = run(
        capsys, "train", "--logs", str(logs), "--store", str(store), "--trees", "10", "--json"
    )
    second = json.loads(out)["version"]

    code, out, _ = run(capsys, "model", "list", "--store", str(store), "--json")
    listing = json.loads(out)
    assert listing["versions"] == sorted([first["version"], second])
    assert listing["latest"] == second

    code, out, _ = run(capsys, "model", "promote", first["version"], "--store", str(store))
    assert code == 0
    assert f"LATEST -> {first['version']}" in out
    code, out, _ = run(capsys, "model", "show", "--store", str(store), "--json")
    shown = json.loads(out)
    assert shown["version"] == first["version"]
    assert shown["latest"] is True
    assert set(shown["thresholds"]) == {"dsp-01", "dsp-02", "dsp-03", "dsp-04"}
    # The training report's warnings come along: a small log leaves partners few bids.
    report = json.loads(open_store(str(store)).read_text(first["version"]))
    assert shown["warnings"] == report["warnings"] and shown["warnings"]
    assert shown["drifted"] == report["drift"]["drifted"]

    code, out, _ = run(capsys, "model", "show", "--store", str(store))
    assert "(LATEST)" in out and "thresholds" in out
    assert all(f"warning     {warning}" in out for warning in shown["warnings"])


def test_errors_name_the_problem_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "model", "promote", "nope-version", "--store", str(tmp_path))
    assert code == 2
    assert "version" in err
    assert "Traceback" not in err
    code, _, err = run(
        capsys, "train", "--logs", str(tmp_path / "missing"), "--store", str(tmp_path)
    )
    assert code == 2
    assert "missing" in err


def test_bad_partner_recall_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="PARTNER=RECALL"):
        main(["train", "--logs", str(tmp_path), "--partner-recall", "dsp-01"])


def test_demo_runs_the_whole_system_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "demo",
        "--workdir",
        str(tmp_path),
        "--requests",
        "4000",
        "--load-seconds",
        "2",
        "--rate",
        "200",
        "--workers",
        "1",
        "--json",
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["synth"]["requests"] == 4000
    assert summary["train"]["test"]["bid_recall"] > 0.9
    load = summary["load"]
    assert load["completed"] >= 300
    assert load["errors"] == {} or sum(load["errors"].values()) == 0
    assert (
        summary["simulation"]["with_filter"]["partner_calls"]
        < summary["simulation"]["without_filter"]["partner_calls"]
    )
    for plot in summary["plots"]:
        assert Path(plot).read_bytes()[:4] == b"\x89PNG"
    assert "stopped" in (tmp_path / "server.log").read_text()


def test_environment_configures_and_logs_can_be_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """BIDFILTER_* variables stand in for flags; BIDFILTER_LOG_JSON makes every log line JSON."""
    logs, store = tmp_path / "logs", tmp_path / "store"
    main(
        [
            "synth",
            "--requests",
            "2000",
            "--partners",
            "3",
            "--days",
            "2",
            "--out",
            str(logs),
            "--json",
        ]
    )
    monkeypatch.setenv("BIDFILTER_STORE", str(store))
    monkeypatch.setenv("BIDFILTER_LOG_JSON", "true")
    capsys.readouterr()
    assert main(["train", "--logs", str(logs), "--trees", "5", "--json"]) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    assert main(["model", "promote", version]) == 0  # the store comes from the environment
    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(r["message"].startswith("LATEST moved") for r in records)
    assert {"ts", "level", "logger", "message"} <= set(records[0])


def test_read_commands_refuse_a_store_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-store"
    for argv in (["model", "list"], ["model", "show"], ["model", "promote", "v1"]):
        code, _, err = run(capsys, *argv, "--store", str(missing))
        assert code == 2, argv
        assert str(missing) in err and "Traceback" not in err
    assert not missing.exists()  # a read never creates it
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = run(capsys, "model", "list", "--store", str(empty))
    assert code == 0 and "no versions" in out  # an existing, empty store is not an error


def test_partner_recall_for_an_unknown_partner_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    assert run(capsys, "synth", "--requests", "300", "--partners", "3", "--out", str(logs))[0] == 0
    with pytest.raises(SystemExit) as exited:
        main(["train", "--logs", str(logs), "--store", str(tmp_path / "s"),
              "--partner-recall", "dsp-01=0.9", "--partner-recall", "dsp-77=0.9"])  # fmt: skip
    message = str(exited.value.code)
    assert "'dsp-77'" in message and "dsp-01" in message and "'dsp-01'" not in message
    assert not (tmp_path / "s").exists()  # refused before any training


def test_train_on_spark_without_the_extra_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark now fails
    spark = "bidfilter.training.spark"
    for name in [n for n in sys.modules if n == spark or n.startswith(f"{spark}.")]:
        monkeypatch.delitem(sys.modules, name)  # the package and its engine: both import again
    with pytest.raises(SystemExit, match=r"bidfilter\[spark\]"):
        main(["train", "--engine", "spark", "--logs", str(tmp_path), "--store", str(tmp_path)])


@pytest.mark.parametrize("command", ["loadgen", "simulate"])
def test_replay_tools_against_a_closed_or_invalid_port_say_so(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    port_allocator: Callable[[], int],
) -> None:
    logs = tmp_path / "logs"
    assert run(capsys, "synth", "--requests", "200", "--partners", "2", "--out", str(logs))[0] == 0
    timing = ["--rate", "10", "--duration", "1"] if command == "loadgen" else ["--limit", "5"]
    target = f"127.0.0.1:{port_allocator()}"
    code, _, err = run(capsys, command, "--target", target, "--logs", str(logs), *timing)
    assert code == 2
    assert target in err and "connect" in err and "Traceback" not in err
    with pytest.raises(SystemExit, match=r"1\.\.65535"):
        main([command, "--target", "127.0.0.1:99999", "--logs", str(logs), *timing])


def test_cluster_up_without_a_model_says_so_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "store"
    empty.mkdir()
    argv = ["cluster", "up", "--store", str(empty), "--state-dir", str(tmp_path / "cluster")]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "no model published" in err and "Traceback" not in err
    assert not (tmp_path / "cluster").exists()  # nothing was started


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (
            ["serve", "--max-message-bytes", "3000000000"],
            {},
            "--max-message-bytes (BIDFILTER_MAX_MESSAGE_BYTES): Input should be less than or"
            " equal to 268435456 (got 3000000000)",
        ),
        (["serve"], {"BIDFILTER_MAX_BATCH": "0"}, "--max-batch (BIDFILTER_MAX_BATCH)"),
        (["--log-level", "bogus", "model", "list"], {}, "--log-level (BIDFILTER_LOG_LEVEL)"),
    ],
)
def test_settings_out_of_range_are_refused_at_start_in_one_line(
    argv: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    """The server must not start (and report ready) with a setting that cannot work."""
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("BIDFILTER_")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "bidfilter"), *argv, "--store", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **env},
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_bad_currency_rates_file_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs, rates = tmp_path / "logs", tmp_path / "rates.json"
    assert run(capsys, "synth", "--requests", "300", "--partners", "3", "--out", str(logs))[0] == 0
    rates.write_text('{"usd_per_unit": {"EUR": "a lot"}}')
    code, _, err = run(capsys, "train", "--logs", str(logs), "--store", str(tmp_path / "s"),
                       "--currency-rates", str(rates))  # fmt: skip
    assert code != 0
    assert str(rates) in err and "usd_per_unit.EUR" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_every_setting_is_a_serve_flag_that_names_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The serve flags are made from the settings: a new field is a flag, with its help."""
    from bidfilter.settings import Settings

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        if name not in ("log_level", "log_json"):  # flags of every command, before it
            assert f"--{name.replace('_', '-')} " in out and f"BIDFILTER_{name.upper()}" in out
    assert "(default: 9090; env BIDFILTER_PORT)" in " ".join(out.split())


def test_a_flag_wins_over_its_variable_which_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bidfilter.cli import build_parser, settings_from
    from bidfilter.settings import Settings

    monkeypatch.setenv("BIDFILTER_PORT", "9999")
    monkeypatch.setenv("BIDFILTER_MAX_BATCH", "7")
    monkeypatch.delenv("BIDFILTER_DRAIN_S", raising=False)
    settings = settings_from(build_parser().parse_args(["serve", "--port", "1234"]))
    assert (settings.port, settings.max_batch) == (1234, 7)
    assert settings.drain_s == Settings.model_fields["drain_s"].default

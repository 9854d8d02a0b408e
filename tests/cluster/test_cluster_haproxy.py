"""The HAProxy side, without running a cluster: the rendered config (checked by HAProxy
itself), `show stat` parsing, and the message when HAProxy is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bidfilter.cluster import ClusterError, find_haproxy, parse_show_stat, plan_cluster
from bidfilter.cluster import haproxy as haproxy_module
from bidfilter.cluster.haproxy import check_config, render_config

SAMPLE = Path(__file__).parent / "haproxy_2.6_show_stat.csv"  # HAProxy 2.6, one server killed


def test_config_is_valid_for_haproxy_and_checks_each_side_port(
    haproxy: Path, tmp_path: Path
) -> None:
    plan = plan_cluster(
        3, store="store", state_dir=tmp_path, front_port=9090, base_port=9200, haproxy=haproxy
    )
    config = render_config(plan)
    assert re.findall(r"^\s+server (\S+) (\S+) check port (\d+)$", config, re.MULTILINE) == [
        ("server-1", "127.0.0.1:9200", "9201"),
        ("server-2", "127.0.0.1:9202", "9203"),
        ("server-3", "127.0.0.1:9204", "9205"),
    ]
    for directive in (
        "mode tcp",
        "bind 127.0.0.1:9090",
        f"stats socket {tmp_path / 'haproxy.sock'} ",
        "http-check send meth GET uri /readyz",
        "http-check expect status 200",
        "on-marked-down shutdown-sessions",
        "option redispatch",
        "retries 3",
    ):
        assert directive in config
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    check_config(haproxy, path)  # raises if HAProxy disagrees


def test_a_config_haproxy_refuses_is_reported_with_its_words(haproxy: Path, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text("frontend thrift\n    bind 127.0.0.1:9090\n    no-such-directive 1\n")
    with pytest.raises(ClusterError, match="no-such-directive") as refused:
        check_config(haproxy, path)
    assert refused.value.field == "haproxy"


def test_show_stat_rows() -> None:
    rows = {(row.proxy, row.name): row for row in parse_show_stat(SAMPLE.read_text())}
    assert list(rows) == [
        ("thrift", "FRONTEND"),
        ("servers", "server-1"),
        ("servers", "server-2"),
        ("servers", "BACKEND"),
    ]
    killed, survivor = rows["servers", "server-1"], rows["servers", "server-2"]
    assert (killed.status, killed.check_status, killed.up) == ("DOWN", "L4CON", False)
    assert (killed.total_sessions, killed.redispatches) == (4, 2)
    assert (survivor.status, survivor.check_status, survivor.up) == ("UP", "L7OK", True)
    assert survivor.current_sessions == 4
    assert killed.is_server and not rows["servers", "BACKEND"].is_server


def test_show_stat_refuses_other_text() -> None:
    with pytest.raises(ClusterError, match="not `show stat` output"):
        parse_show_stat("Unknown command. Please enter one of the following commands only:\n")


def test_missing_haproxy_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(haproxy_module, "DEBIAN_PATH", tmp_path / "no-haproxy")
    with pytest.raises(ClusterError, match=r"apt-get install haproxy") as missing:
        find_haproxy()
    assert missing.value.field == "haproxy"
    with pytest.raises(ClusterError, match="does not exist"):
        find_haproxy(str(tmp_path / "elsewhere" / "haproxy"))

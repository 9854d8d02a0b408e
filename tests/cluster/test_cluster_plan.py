"""Planning a cluster: ports, paths and the state file that status and down read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from bidfilter.cluster import ClusterError, plan_cluster, read_plan
from bidfilter.cluster.plan import write_plan

HAPROXY = Path("/usr/sbin/haproxy")


def test_ports_paths_and_state_file_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    plan = plan_cluster(
        2,
        store="models",
        state_dir=Path("state"),
        front_port=9090,
        base_port=9300,
        haproxy=HAPROXY,
        workers=3,
    )
    assert [(s.name, s.port, s.side_port, s.workers) for s in plan.servers] == [
        ("server-1", 9300, 9301, 3),
        ("server-2", 9302, 9303, 3),
    ]
    # Absolute: the servers are detached and may be asked about from another directory.
    assert plan.state_dir == str(tmp_path / "state")
    assert {s.store for s in plan.servers} == {str(tmp_path / "models")}
    assert plan.servers[1].pid_file == tmp_path / "state" / "server-2" / "serve.pid"
    assert (
        plan_cluster(
            1,
            store="s3://bucket/models",
            state_dir=tmp_path,
            front_port=1,
            base_port=2,
            haproxy=HAPROXY,
        )
        .servers[0]
        .store
        == "s3://bucket/models"
    )

    assert read_plan(tmp_path / "state") is None
    (tmp_path / "state").mkdir()
    write_plan(plan)
    assert read_plan(tmp_path / "state") == plan


@pytest.mark.parametrize(
    ("servers", "front_port", "base_port", "field"),
    [
        (0, 9090, 9200, "servers"),
        (2, 9202, 9200, "port"),  # the front end on a server's port
        (2, 70000, 9200, "port"),
        (3, 9090, 65531, "base_port"),  # runs past 65535
    ],
)
def test_impossible_plans_say_which_setting(
    servers: int, front_port: int, base_port: int, field: str, tmp_path: Path
) -> None:
    with pytest.raises(ClusterError) as refused:
        plan_cluster(
            servers,
            store="s",
            state_dir=tmp_path,
            front_port=front_port,
            base_port=base_port,
            haproxy=HAPROXY,
        )
    assert refused.value.field == field


def test_a_state_dir_too_deep_for_the_stats_socket_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(ClusterError, match="shorter --state-dir"):
        plan_cluster(1, store="s", state_dir=deep, front_port=1, base_port=2, haproxy=HAPROXY)


def test_a_state_file_that_is_not_a_plan_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text('{"servers": "many"}')
    with pytest.raises(ClusterError, match="not a cluster state file") as refused:
        read_plan(tmp_path)
    assert refused.value.field == "state_dir"

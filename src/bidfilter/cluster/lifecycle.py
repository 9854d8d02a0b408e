"""``up``, ``status`` and ``down`` of a local cluster, all driven by the plan in the state dir.

``up`` refuses to start over a cluster that is still running, checks that every port is free
(a stale server would otherwise share its port through SO_REUSEPORT and take half the traffic),
starts the servers and HAProxy detached, and returns once HAProxy's own checks see every server
ready; if that does not happen it stops what it started and says why. ``down`` soft-stops
HAProxy (no new connections), sends SIGTERM to the servers (they drain), waits, kills what is
left, and removes the pid files and the plan; the logs and the HAProxy config stay.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

import msgspec

from bidfilter.cluster.errors import ClusterError
from bidfilter.cluster.haproxy import (
    BACKEND,
    ServerStat,
    check_config,
    parse_show_stat,
    render_config,
    show_stat,
)
from bidfilter.cluster.plan import HOST, ClusterPlan, ServerSpec, read_plan, write_plan
from bidfilter.cluster.processes import (
    is_ours,
    is_running,
    read_pid,
    signal_process,
    spawn_detached,
    wait_exited,
)

_POLL_S: Final = 0.1
_HTTP_TIMEOUT_S: Final = 2.0
_KILL_WAIT_S: Final = 5.0
_MODEL_INFO = re.compile(r'^bidfilter_model_info\{version="([^"]*)"\} 1', re.MULTILINE)


def server_argv(plan: ClusterPlan, server: ServerSpec) -> list[str]:
    argv = [
        plan.python,
        "-m",
        "bidfilter",
        "serve",
        "--host",
        HOST,
        "--port",
        str(server.port),
        "--metrics-port",
        str(server.side_port),
        "--workers",
        str(server.workers),
        "--store",
        server.store,
        "--cache-dir",
        str(server.cache_dir),
    ]
    if plan.s3_endpoint_url:
        argv += ["--s3-endpoint-url", plan.s3_endpoint_url]
    return argv


def haproxy_argv(plan: ClusterPlan) -> list[str]:
    return [plan.haproxy, "-db", "-f", str(plan.haproxy_config)]


# --- status ---------------------------------------------------------------------------------


class ServerStatus(msgspec.Struct, kw_only=True):
    """A server as its process, its side port and HAProxy see it."""

    name: str
    pid: int | None
    running: bool
    port: int
    side_port: int
    readyz: int | None  # HTTP status of /readyz; None: no answer
    model_version: str | None
    haproxy_status: str | None  # e.g. "UP", "DOWN", "UP 1/2"; None: HAProxy did not say
    haproxy_check: str | None  # e.g. "L7OK", "L4CON"
    log: str


class HaproxyStatus(msgspec.Struct, kw_only=True):
    pid: int | None
    running: bool
    front_port: int
    stats_socket: str
    config: str
    log: str


class ClusterStatus(msgspec.Struct, kw_only=True):
    state_dir: str
    haproxy: HaproxyStatus
    servers: list[ServerStatus]

    @property
    def all_up(self) -> bool:
        """Every process runs and HAProxy's checks pass for every server."""
        return self.haproxy.running and all(
            s.running and s.haproxy_status == "UP" and s.haproxy_check == "L7OK"
            for s in self.servers
        )

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        result["all_up"] = self.all_up
        return result

    def to_text(self) -> str:
        proxy = self.haproxy
        lines = [
            f"HAProxy   {_process(proxy.pid, proxy.running)}  front end {HOST}:{proxy.front_port}"
            f"  stats socket {proxy.stats_socket}",
            f"{'server':<10}{'process':<22}{'thrift':<8}{'side':<7}{'readyz':<8}"
            f"{'haproxy':<16}model",
        ]
        for s in self.servers:
            seen = " ".join(part for part in (s.haproxy_status, s.haproxy_check) if part)
            lines.append(
                f"{s.name:<10}{_process(s.pid, s.running):<22}{s.port:<8}{s.side_port:<7}"
                f"{s.readyz if s.readyz is not None else '-':<8}{seen or '-':<16}"
                f"{s.model_version or '-'}"
            )
        lines.append(f"state and logs in {self.state_dir}")
        return "\n".join(lines)


def _process(pid: int | None, running: bool) -> str:
    if pid is None:
        return "not started"
    return f"pid {pid} {'running' if running else 'gone'}"


def _http_get(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(
            f"http://{HOST}:{port}{path}", timeout=_HTTP_TIMEOUT_S
        ) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None


def _haproxy_rows(plan: ClusterPlan) -> dict[str, ServerStat]:
    """HAProxy's rows for the servers, by name; empty if it does not answer."""
    try:
        rows = parse_show_stat(show_stat(plan.stats_socket))
    except OSError:
        return {}
    return {row.name: row for row in rows if row.proxy == BACKEND and row.is_server}


def _running_pid(pid_file: Path, argv: list[str]) -> int | None:
    pid = read_pid(pid_file)
    return pid if pid is not None and is_ours(pid, argv) else None


def cluster_status(plan: ClusterPlan) -> ClusterStatus:
    """Each server's process, /readyz and model version, and HAProxy's view of it."""
    rows = _haproxy_rows(plan)
    servers = []
    for spec in plan.servers:
        pid = read_pid(spec.pid_file)
        running = pid is not None and is_ours(pid, server_argv(plan, spec))
        readyz = _http_get(spec.side_port, "/readyz") if running else None
        metrics = _http_get(spec.side_port, "/metrics") if running else None
        version = _MODEL_INFO.search(metrics[1]) if metrics is not None else None
        row = rows.get(spec.name)
        servers.append(
            ServerStatus(
                name=spec.name,
                pid=pid,
                running=running,
                port=spec.port,
                side_port=spec.side_port,
                readyz=readyz[0] if readyz is not None else None,
                model_version=version.group(1) if version is not None else None,
                haproxy_status=row.status if row is not None else None,
                haproxy_check=row.check_status if row is not None else None,
                log=str(spec.log),
            )
        )
    haproxy_pid = read_pid(plan.haproxy_pid_file)
    return ClusterStatus(
        state_dir=plan.state_dir,
        haproxy=HaproxyStatus(
            pid=haproxy_pid,
            running=haproxy_pid is not None and is_ours(haproxy_pid, haproxy_argv(plan)),
            front_port=plan.front_port,
            stats_socket=str(plan.stats_socket),
            config=str(plan.haproxy_config),
            log=str(plan.haproxy_log),
        ),
        servers=servers,
    )


def status(state_dir: Path) -> ClusterStatus | None:
    """The status of the cluster ``up`` started in ``state_dir``, or ``None`` if there is none."""
    plan = read_plan(state_dir)
    return cluster_status(plan) if plan is not None else None


# --- up -------------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _check_ports_free(plan: ClusterPlan) -> None:
    wanted = [(plan.front_port, "the HAProxy front end")]
    for spec in plan.servers:
        wanted += [
            (spec.port, f"{spec.name}'s Thrift port"),
            (spec.side_port, f"{spec.name}'s side port"),
        ]
    for port, role in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR as the servers and HAProxy set it: connections of a previous run in
            # TIME_WAIT do not block the port, a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
            except OSError as error:
                raise ClusterError(
                    "port", f"{HOST}:{port}, {role}, is not free ({error.strerror})"
                ) from None


def _running(plan: ClusterPlan) -> list[str]:
    """Names and pids of the plan's processes that still run."""
    found = []
    for spec in plan.servers:
        pid = _running_pid(spec.pid_file, server_argv(plan, spec))
        if pid is not None:
            found.append(f"{spec.name} pid {pid}")
    pid = _running_pid(plan.haproxy_pid_file, haproxy_argv(plan))
    if pid is not None:
        found.append(f"haproxy pid {pid}")
    return found


def up(plan: ClusterPlan, *, timeout: float = 60.0) -> ClusterStatus:
    """Start the servers and HAProxy of ``plan``; return once HAProxy sees every server ready.

    Raises ``ClusterError`` if a cluster already runs in the state dir, a port is taken,
    HAProxy refuses its config, a process exits, or ``timeout`` seconds pass first; in the last
    two cases everything started is stopped again (the logs stay).
    """
    state_dir = Path(plan.state_dir)
    previous = read_plan(state_dir)
    if previous is not None:
        running = _running(previous)
        if running:
            raise ClusterError(
                "state_dir",
                f"a cluster is already up in {state_dir} ({', '.join(running)});"
                f" stop it first: bidfilter cluster down --state-dir {state_dir}",
            )
        _remove_pid_files(previous)
    _check_ports_free(plan)
    for spec in plan.servers:
        Path(spec.directory).mkdir(parents=True, exist_ok=True)
    plan.haproxy_config.write_text(render_config(plan))
    check_config(Path(plan.haproxy), plan.haproxy_config)
    write_plan(plan)
    try:
        for spec in plan.servers:
            spawn_detached(server_argv(plan, spec), log=spec.log, pid_file=spec.pid_file)
        spawn_detached(haproxy_argv(plan), log=plan.haproxy_log, pid_file=plan.haproxy_pid_file)
        _wait_until_up(plan, timeout)
    except BaseException:
        stop(plan, timeout=_KILL_WAIT_S)
        raise
    return cluster_status(plan)


def _wait_until_up(plan: ClusterPlan, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    rows: dict[str, ServerStat] = {}
    while time.monotonic() < deadline:
        for spec in plan.servers:
            pid = read_pid(spec.pid_file)
            if pid is None or not is_running(pid):
                raise ClusterError(
                    spec.name, f"exited while starting; the end of {spec.log}:\n{_tail(spec.log)}"
                )
        pid = read_pid(plan.haproxy_pid_file)
        if pid is None or not is_running(pid):
            raise ClusterError(
                "haproxy",
                f"exited while starting; the end of {plan.haproxy_log}:\n{_tail(plan.haproxy_log)}",
            )
        rows = _haproxy_rows(plan)
        if len(rows) == len(plan.servers) and all(row.up for row in rows.values()):
            return
        time.sleep(_POLL_S)
    seen = ", ".join(
        f"{s.name} {rows[s.name].status} ({rows[s.name].check_status})"
        if s.name in rows
        else f"{s.name} unknown"
        for s in plan.servers
    )
    raise ClusterError(
        "timeout",
        f"HAProxy did not see every server ready within {timeout:g} s: {seen};"
        f" logs in {plan.state_dir}",
    )


# --- down -----------------------------------------------------------------------------------


class Stopped(msgspec.Struct, kw_only=True):
    """How one process ended: ``stopped`` (by its signal), ``killed`` (it did not stop in
    time) or ``not running`` (it was already gone)."""

    name: str
    pid: int | None
    outcome: str


def _remove_pid_files(plan: ClusterPlan) -> None:
    for path in [*(s.pid_file for s in plan.servers), plan.haproxy_pid_file, plan.stats_socket]:
        path.unlink(missing_ok=True)


def stop(plan: ClusterPlan, *, timeout: float = 30.0) -> list[Stopped]:
    """Stop the plan's processes: HAProxy stops accepting, servers drain for up to ``timeout``
    seconds; whatever still runs then is killed. Removes the pid files and the plan."""
    haproxy = _running_pid(plan.haproxy_pid_file, haproxy_argv(plan))
    if haproxy is not None:
        signal_process(haproxy, signal.SIGUSR1)  # soft stop: open connections may finish
    servers = {s.name: _running_pid(s.pid_file, server_argv(plan, s)) for s in plan.servers}
    for pid in servers.values():
        if pid is not None:
            signal_process(pid, signal.SIGTERM)  # the supervisor drains its workers
    late = set(wait_exited([pid for pid in servers.values() if pid is not None], timeout))
    for pid in late:
        signal_process(pid, signal.SIGKILL, group=True)  # with its workers
    wait_exited(list(late), _KILL_WAIT_S)
    results = [
        Stopped(
            name=spec.name,
            pid=servers[spec.name] or read_pid(spec.pid_file),
            outcome=_outcome(servers[spec.name], late),
        )
        for spec in plan.servers
    ]
    haproxy_late: set[int] = set()
    if haproxy is not None and wait_exited([haproxy], _KILL_WAIT_S):
        # Sessions outlived the servers' drain (a client that never hangs up): cut them.
        haproxy_late.add(haproxy)
        signal_process(haproxy, signal.SIGTERM)
        if wait_exited([haproxy], _KILL_WAIT_S):
            signal_process(haproxy, signal.SIGKILL)
            wait_exited([haproxy], _KILL_WAIT_S)
    results.append(
        Stopped(
            name="haproxy",
            pid=haproxy or read_pid(plan.haproxy_pid_file),
            outcome=_outcome(haproxy, haproxy_late),
        )
    )
    _remove_pid_files(plan)
    with contextlib.suppress(FileNotFoundError):
        plan.state_path.unlink()
    return results


def _outcome(pid: int | None, late: set[int]) -> str:
    if pid is None:
        return "not running"
    return "killed" if pid in late else "stopped"


def down(state_dir: Path, *, timeout: float = 30.0) -> list[Stopped] | None:
    """Stop the cluster ``up`` started in ``state_dir``; ``None`` if there is none."""
    plan = read_plan(state_dir)
    return stop(plan, timeout=timeout) if plan is not None else None

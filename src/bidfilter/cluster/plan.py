"""What a local cluster is made of: N ``bidfilter serve`` processes and one HAProxy in front.

A ``ClusterPlan`` is decided once, by ``plan_cluster``, and written into the state directory by
``up`` (``cluster.json``), so that ``status`` and ``down`` act on exactly what was started,
whatever flags they are given. Every path in it is absolute: the processes run detached, from
wherever they were started.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import msgspec

from bidfilter.cluster.errors import ClusterError

HOST: Final = "127.0.0.1"
STATE_FILE: Final = "cluster.json"
# sun_path holds 108 bytes with the terminating NUL.
_MAX_UNIX_SOCKET_PATH: Final = 107


class ServerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One ``bidfilter serve``: its Thrift port, its HTTP side port and its own directory
    (log, pid file and model cache)."""

    name: str
    port: int
    side_port: int
    store: str
    workers: int
    directory: str

    @property
    def log(self) -> Path:
        return Path(self.directory) / "serve.log"

    @property
    def pid_file(self) -> Path:
        return Path(self.directory) / "serve.pid"

    @property
    def cache_dir(self) -> Path:
        return Path(self.directory) / "cache"


class ClusterPlan(msgspec.Struct, frozen=True, kw_only=True):
    """The servers, the front-end port HAProxy listens on, where the state lives, and the
    programs that run: ``python`` (for ``python -m bidfilter serve``) and ``haproxy``."""

    state_dir: str
    front_port: int
    servers: tuple[ServerSpec, ...]
    python: str
    haproxy: str
    s3_endpoint_url: str | None = None

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    @property
    def haproxy_config(self) -> Path:
        return Path(self.state_dir) / "haproxy.cfg"

    @property
    def haproxy_log(self) -> Path:
        return Path(self.state_dir) / "haproxy.log"

    @property
    def haproxy_pid_file(self) -> Path:
        return Path(self.state_dir) / "haproxy.pid"

    @property
    def stats_socket(self) -> Path:
        return Path(self.state_dir) / "haproxy.sock"


def _absolute_store(store: str) -> str:
    """A local store as an absolute path (the servers may not share our working directory)."""
    if "://" in store and not store.startswith("file://"):
        return store
    return str(Path(store.removeprefix("file://")).expanduser().resolve())


def plan_cluster(
    servers: int,
    *,
    store: str,
    state_dir: Path,
    front_port: int,
    base_port: int,
    haproxy: Path,
    workers: int = 1,
    s3_endpoint_url: str | None = None,
) -> ClusterPlan:
    """``servers`` servers on consecutive port pairs from ``base_port``: server ``i`` (from 1)
    takes ``base_port + 2(i-1)`` for Thrift and the next port for its side port. The servers run
    on this interpreter, behind the HAProxy at ``haproxy`` (see ``haproxy.find_haproxy``)."""
    if servers < 1:
        raise ClusterError("servers", f"at least one server is needed, not {servers}")
    if workers < 1:
        raise ClusterError("workers", f"each server needs at least one worker, not {workers}")
    backend_ports = range(base_port, base_port + 2 * servers)
    if base_port < 1 or backend_ports[-1] > 65535:
        raise ClusterError(
            "base_port", f"ports {base_port}..{backend_ports[-1]} are not all valid TCP ports"
        )
    if not 1 <= front_port <= 65535:
        raise ClusterError("port", f"{front_port} is not a valid TCP port")
    if front_port in backend_ports:
        raise ClusterError(
            "port",
            f"the front-end port {front_port} is one of the servers' ports"
            f" {base_port}..{backend_ports[-1]}; choose another --port or --base-port",
        )
    state = state_dir.expanduser().resolve()
    socket_path = state / "haproxy.sock"
    if len(str(socket_path).encode()) > _MAX_UNIX_SOCKET_PATH:
        raise ClusterError(
            "state_dir",
            f"{state} is too long for HAProxy's unix stats socket"
            f" ({_MAX_UNIX_SOCKET_PATH} bytes at most); choose a shorter --state-dir",
        )
    return ClusterPlan(
        state_dir=str(state),
        front_port=front_port,
        servers=tuple(
            ServerSpec(
                name=f"server-{i + 1}",
                port=base_port + 2 * i,
                side_port=base_port + 2 * i + 1,
                store=_absolute_store(store),
                workers=workers,
                directory=str(state / f"server-{i + 1}"),
            )
            for i in range(servers)
        ),
        python=sys.executable,
        haproxy=str(haproxy),
        s3_endpoint_url=s3_endpoint_url,
    )


def write_plan(plan: ClusterPlan) -> None:
    """Write ``cluster.json`` (atomically: a reader never sees half of it)."""
    path = plan.state_path
    staging = path.with_suffix(".tmp")
    staging.write_bytes(msgspec.json.format(msgspec.json.encode(plan)) + b"\n")
    staging.replace(path)


def read_plan(state_dir: Path) -> ClusterPlan | None:
    """The plan ``up`` wrote into ``state_dir``, or ``None`` if there is none."""
    path = state_dir.expanduser().resolve() / STATE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=ClusterPlan)
    except msgspec.ValidationError as error:
        raise ClusterError("state_dir", f"{path} is not a cluster state file: {error}") from None
    except msgspec.DecodeError as error:
        raise ClusterError("state_dir", f"{path} is not JSON: {error}") from None

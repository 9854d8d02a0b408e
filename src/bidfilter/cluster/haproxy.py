"""HAProxy in front of the servers: finding it, its configuration, and reading its view.

``render_config`` and ``parse_show_stat`` are pure (a plan in, text out; text in, rows out), so
they are tested without HAProxy; ``check_config`` and ``show_stat`` are the two places that run
or talk to it.

The configuration is TCP mode (HAProxy passes Thrift bytes through without parsing them) with
an HTTP health check on each server's side port (``GET /readyz``: 200 once every worker has a
model), so a server is only sent connections when it can answer with a model.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Final

import msgspec

from bidfilter.cluster.errors import ClusterError
from bidfilter.cluster.plan import HOST, ClusterPlan

APT_PACKAGE: Final = "haproxy"
DEBIAN_PATH: Final = Path("/usr/sbin/haproxy")
FRONTEND: Final = "thrift"
BACKEND: Final = "servers"

# Above the servers' own idle timeout (300 s): a quiet connection is closed by the server,
# between two calls, never cut by HAProxy while a call may be on its way.
_IDLE_TIMEOUT: Final = "330s"
_SERVER_DEFAULTS: Final = (
    "inter 500ms fastinter 250ms downinter 1s fall 2 rise 2 on-marked-down shutdown-sessions"
)


def find_haproxy(explicit: str | None = None) -> Path:
    """The HAProxy executable: ``explicit``, else ``haproxy`` on PATH, else Debian's
    /usr/sbin/haproxy (sbin is often not on a user's PATH)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ClusterError("haproxy", f"{explicit} does not exist")
        return path
    found = shutil.which("haproxy")
    if found is not None:
        return Path(found)
    if DEBIAN_PATH.is_file():
        return DEBIAN_PATH
    raise ClusterError(
        "haproxy",
        f"HAProxy is not installed (no haproxy on PATH, nor {DEBIAN_PATH}); install the"
        f" Debian/Ubuntu package `{APT_PACKAGE}`: sudo apt-get install {APT_PACKAGE}",
    )


def render_config(plan: ClusterPlan) -> str:
    """The haproxy.cfg for ``plan``: one TCP front end, the servers behind it."""
    servers = "\n".join(
        f"    server {s.name} {HOST}:{s.port} check port {s.side_port}" for s in plan.servers
    )
    return f"""\
# Written by `bidfilter cluster up`; rewritten on every `up`, edits are lost.
global
    stats socket {plan.stats_socket} mode 600 level user
    # `cluster down` soft-stops HAProxy (no new connections; open ones finish): bound it.
    hard-stop-after 30s

defaults
    mode tcp
    # A refused or failed connect is tried again (`retries`), each time on another server
    # (`redispatch 1`): a server that just died costs a client a few milliseconds, not an error.
    retries 3
    option redispatch 1
    timeout connect 1s
    # Thrift connections are long-lived and mostly idle between bursts.
    timeout client {_IDLE_TIMEOUT}
    timeout server {_IDLE_TIMEOUT}
    # A connection one side has closed should not hold its slot for the idle timeout.
    timeout client-fin 10s
    timeout server-fin 10s
    timeout check 2s

frontend {FRONTEND}
    bind {HOST}:{plan.front_port}
    default_backend {BACKEND}

backend {BACKEND}
    # Connections, not requests, are balanced: each lives long, so count them.
    balance leastconn
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {HOST}
    http-check expect status 200
    # Checks every 500 ms; two failures mark a server down, two successes up again. A server
    # marked down has its connections closed, so its clients reconnect, to a live server.
    default-server {_SERVER_DEFAULTS}
{servers}
"""


def check_config(haproxy: Path, config: Path) -> None:
    """Have HAProxy validate ``config`` (``haproxy -c``); raises ``ClusterError`` with its words."""
    done = subprocess.run(
        [str(haproxy), "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()
        raise ClusterError("haproxy", f"HAProxy refuses {config}:\n{output}")


class ServerStat(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``show stat``: a front end, a back end, or a server of a back end.

    ``status`` is HAProxy's: ``UP``, ``DOWN``, ``UP 1/2`` (up, one check failed of the two that
    mark it down), ``DOWN 1/2``, ``MAINT``, ``no check``; for proxies ``OPEN`` or ``UP``.
    ``check_status`` is the last check's result (``L7OK``, ``L4CON``: connection refused,
    ``L7STS``: wrong HTTP status, ``L4TOUT``: timeout, ``INI``: none yet), empty for proxies.
    """

    proxy: str
    name: str
    status: str
    check_status: str
    current_sessions: int
    total_sessions: int
    connection_errors: int
    retries: int
    redispatches: int

    @property
    def is_server(self) -> bool:
        return self.name not in ("FRONTEND", "BACKEND")

    @property
    def up(self) -> bool:
        """Up by a passing check, not only by HAProxy's assumption before the first one."""
        return self.status == "UP" and self.check_status == "L7OK"


def _count(value: str) -> int:
    return int(value) if value.isdigit() else 0


def parse_show_stat(text: str) -> list[ServerStat]:
    """The rows of ``show stat`` CSV output (header ``# pxname,svname,...``)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ClusterError("haproxy", f"not `show stat` output: {text[:200]!r}")
    rows = csv.DictReader([lines[0][2:], *(line for line in lines[1:] if line)])
    return [
        ServerStat(
            proxy=row["pxname"],
            name=row["svname"],
            status=row["status"],
            check_status=row.get("check_status", "").lstrip("* "),
            current_sessions=_count(row["scur"]),
            total_sessions=_count(row["stot"]),
            connection_errors=_count(row["econ"]),
            retries=_count(row["wretr"]),
            redispatches=_count(row["wredis"]),
        )
        for row in rows
    ]


def show_stat(stats_socket: Path, timeout: float = 2.0) -> str:
    """Ask HAProxy's stats socket ``show stat``; raises ``OSError`` if it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(stats_socket))
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()

"""A fleet on one machine: hosts as network namespaces, faults across them, and the scenarios.

Every host is a network namespace with one veth into a bridge that lives in a namespace of its
own (the switch), so the hosts talk over real TCP/IP through real interfaces, on which ``tc
netem`` adds latency and loss and ``ip link set down`` cuts a host off:

- ``lb``: HAProxy in TCP mode (the AWS NLB's stand-in), health-checking each server's
  ``/readyz``;
- ``server-1``, ``server-2``: ``bidfilter serve``, reading the model store from S3;
- ``s3``: moto's standalone S3 server, holding the model store;
- the client is the root namespace (the test or bench process itself), on a veth of its own.

Namespace names carry the creating pid and the subnet is one not routed here yet, so parallel
runs do not collide. ``Fleet.close`` kills every process in the fleet's namespaces and removes
the namespaces (and with them the bridge and every veth).

The four scenarios (``host_kill``, ``lossy_link``, ``s3_partition``, ``rolling_update``) run
paced load through HAProxy while they inject their fault, and return their figures; the tests
assert on them, ``bench/fleet_faults.py`` prints them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import boto3
import numpy as np

# tests/ holds no packages: the server and cluster test helpers are imported from their folders.
sys.path[:0] = [
    str(Path(__file__).parents[1] / "server"),
    str(Path(__file__).parents[1] / "cluster"),
]
# logged_requests: re-exported, for the tests and the bench to read the requests they send.
from cluster_harness import logged_requests as logged_requests  # noqa: E402
from serving import copy_as_new_version  # noqa: E402

from bidfilter.artifact import open_store  # noqa: E402
from bidfilter.client import AsyncBidFilterClient, ConnectionSettings, Outcome  # noqa: E402
from bidfilter.cluster import (  # noqa: E402
    BACKEND,
    FRONTEND,
    ClusterError,
    ServerStat,
    find_haproxy,
    parse_show_stat,
    show_stat,
)
from bidfilter.cluster.haproxy import check_config  # noqa: E402

SERVERS: Final = ("server-1", "server-2")
THRIFT_PORT: Final = 9090  # the same on every host: each has its own network stack
SIDE_PORT: Final = 9100
S3_PORT: Final = 5000
BUCKET: Final = "fleet-models"
STORE_URI: Final = f"s3://{BUCKET}/bidfilter"
POLL_S: Final = 1.0  # the servers' LATEST checks
STARTUP_TIMEOUT_S: Final = 120.0  # numpy and xgboost imports on a busy 2-core machine

_RELAY: Final = Path(__file__).with_name("impaired_link.py")
# The last octet of each host's address; the client (root namespace) is .1.
_OCTETS: Final = {"lb": 2, "server-1": 11, "server-2": 12, "s3": 30}

# Load: paced calls through HAProxy with retries, as an SSP's auction server sends them.
RATE: Final = 200.0  # calls per second, in total
CALLERS: Final = 8
CONNECTIONS: Final = 4
CALL_TIMEOUT_S: Final = 2.0  # per attempt: a dead host's calls are retried after it
RETRIES: Final = 3
DEADLINE_MS: Final = 5000  # a busy CI machine must not turn answers into FAIL_OPEN_DEADLINE
# A call is slow (still hurt by a fault) past max(this, 5 x the p99 before the fault).
SLOW_FLOOR_S: Final = 0.25

# A version is published from inside the S3 host, over its loopback: the publisher (a CI
# pipeline) still reaches S3 while the S3 host is partitioned away from the servers.
_PUBLISH = (
    "import sys, time; from pathlib import Path; from bidfilter.artifact import open_store;"
    " open_store(sys.argv[1], endpoint_url=sys.argv[2]).publish(Path(sys.argv[3]));"
    " print(time.monotonic())"
)

Requests = list[tuple[bytes, list[str]]]


class FleetUnavailableError(Exception):
    """This machine cannot build the fleet (not root, no iproute2, tc or HAProxy, no netns)."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Poll ``condition`` every 20 ms; the monotonic time it held, or ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic()


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _free_subnet() -> str:
    """``10.77.N``: a /24 that no route or address of this machine uses yet."""
    used = _run("ip", "-4", "route", "show", "table", "all") + _run("ip", "-4", "addr")
    start = os.getpid() % 200
    for step in range(200):
        prefix = f"10.77.{20 + (start + step) % 200}"
        if f"{prefix}." not in used:
            return prefix
    raise FleetUnavailableError("no free /24 in 10.77.0.0/16 for the fleet")


def check_tools() -> Path:
    """HAProxy's path, once every tool the fleet needs is known to be here."""
    if os.geteuid() != 0:
        raise FleetUnavailableError("network namespaces need root (ip netns add)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise FleetUnavailableError(f"`{tool}` (iproute2) is not installed")
    try:
        return find_haproxy()
    except ClusterError as error:
        raise FleetUnavailableError(error.message) from None


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: str
    switch_port: str  # its veth's peer, in the switch namespace

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *command]


class Fleet:
    """The hosts, their processes, and the faults; ``close()`` removes all of it."""

    def __init__(self, workdir: Path, python: Path = Path(sys.executable)) -> None:
        self.haproxy = check_tools()
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.python = python
        self.tag = f"bff{os.getpid()}"
        self.client_veth = self.tag  # the root namespace's end, at most 15 characters
        self.switch = f"{self.tag}-switch"
        self.prefix = _free_subnet()
        self.client_address = f"{self.prefix}.1"
        self.hosts = {
            name: Host(name, f"{self.tag}-{name}", f"{self.prefix}.{octet}", f"p-{name}")
            for name, octet in _OCTETS.items()
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.relays: dict[str, subprocess.Popen[bytes]] = {}
        self._checksums_finished = False
        self.stats_socket = workdir / "haproxy.sock"
        self.env = self._environment()
        self._namespaces: list[str] = []

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.hosts['s3'].address}:{S3_PORT}"

    @property
    def front(self) -> tuple[str, int]:
        return self.hosts["lb"].address, THRIFT_PORT

    def _environment(self) -> dict[str, str]:
        """Dummy credentials that moto accepts, isolated from any real AWS setup or
        BIDFILTER_* setting of the caller."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BIDFILTER_"))}
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing-secret",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(self.workdir / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.workdir / "no-aws-credentials"),
            AWS_EC2_METADATA_DISABLED="true",
        )
        return env

    # --- building and removing ------------------------------------------------------------------

    def build(self) -> None:
        """Namespaces, the bridge, a veth per host; raises ``FleetUnavailableError`` if this
        machine cannot create namespaces at all."""
        try:
            _run("ip", "netns", "add", self.switch)
        except RuntimeError as error:
            raise FleetUnavailableError(f"cannot create a network namespace: {error}") from None
        self._namespaces.append(self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts.values():
            _run("ip", "netns", "add", host.netns)
            self._namespaces.append(host.netns)
            _run("ip", "-n", host.netns, "link", "set", "lo", "up")
            _run(
                "ip", "-n", host.netns, "link", "add", "eth0", "type", "veth",
                "peer", "name", host.switch_port, "netns", self.switch,
            )  # fmt: skip
            _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _run("ip", "-n", host.netns, "link", "set", "eth0", "up")
            _run("ip", "-n", self.switch, "link", "set", host.switch_port, "master", "br0", "up")
        _run(
            "ip", "link", "add", self.client_veth, "type", "veth",
            "peer", "name", "p-client", "netns", self.switch,
        )  # fmt: skip
        _run("ip", "addr", "add", f"{self.client_address}/24", "dev", self.client_veth)
        _run("ip", "link", "set", self.client_veth, "up")
        _run("ip", "-n", self.switch, "link", "set", "p-client", "master", "br0", "up")

    def pids(self, host: str) -> list[int]:
        out = _run("ip", "netns", "pids", self.hosts[host].netns)
        return [int(pid) for pid in out.split()]

    def kill_all(self, host: str, signum: int = signal.SIGKILL) -> None:
        """``signum`` to every process in the host's namespace: only this fleet's processes
        live there. Listed again until none is left, in case one forked meanwhile."""
        for _ in range(20):
            pids = self.pids(host)
            if not pids:
                return
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signum)
            if signum != signal.SIGKILL:
                return  # a polite signal: the caller waits for them to go
            time.sleep(0.05)
        raise RuntimeError(f"processes in {host} survive SIGKILL: {self.pids(host)}")

    def _reap(self, host: str, timeout: float) -> None:
        process = self.processes.pop(host, None)
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def close(self) -> None:
        """Stop every process (SIGTERM, servers drain; then SIGKILL), remove every namespace
        and veth. Safe to call on a fleet built only in part."""
        try:
            for relay in self.relays.values():
                relay.kill()
                relay.wait(5)
            self.relays.clear()
            live = [name for name in self.hosts if self.hosts[name].netns in self._namespaces]
            for name in live:
                self.kill_all(name, signal.SIGTERM)
            deadline = time.monotonic() + 15
            for name in live:
                while self.pids(name) and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.kill_all(name)
                self._reap(name, 5)
        finally:
            # The root end first, explicitly: a namespace's devices are removed asynchronously
            # after `ip netns del`, and the veth must be gone when this returns.
            subprocess.run(
                ["ip", "link", "del", self.client_veth], capture_output=True, check=False
            )
            for netns in reversed(self._namespaces):
                subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
            self._namespaces.clear()

    # --- processes ------------------------------------------------------------------------------

    def _start(self, host: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{host}.log"
        with log.open("ab") as sink:
            # A session of its own: signals meant for the test (Ctrl-C) do not reach it.
            process = subprocess.Popen(
                self.hosts[host].argv(*command),
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.processes[host] = process
        return process

    def _check_alive(self, host: str) -> None:
        process = self.processes[host]
        if process.poll() is not None:
            raise RuntimeError(
                f"{host} exited with {process.returncode}:\n{_tail(self.workdir / f'{host}.log')}"
            )

    def start_s3(self) -> None:
        # 0.0.0.0: the fleet reaches it on its address, the publisher on the host's loopback.
        self._start(
            "s3", [str(self.python), "-m", "moto.server", "-H", "0.0.0.0", "-p", str(S3_PORT)]
        )

        def answers() -> bool:
            self._check_alive("s3")
            return _http_status(f"{self.s3_endpoint}/") is not None

        wait_until(answers, "moto answering", 30)
        boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=BUCKET)

    def publish(self, version_dir: Path) -> float:
        """Publish a version to the S3 store from inside the S3 host; returns when LATEST moved
        to it (``time.monotonic()``, one clock for every process here), read from the publisher:
        its own exit can take longer than a server's next poll."""
        endpoint = f"http://127.0.0.1:{S3_PORT}"
        command = [str(self.python), "-c", _PUBLISH, STORE_URI, endpoint, str(version_dir)]
        done = subprocess.run(
            self.hosts["s3"].argv(*command),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"publishing {version_dir.name} failed: {done.stderr.strip()}")
        return float(done.stdout.split()[-1])

    def haproxy_config(self) -> str:
        lb = self.hosts["lb"].address
        servers = "\n".join(
            f"    server {name} {self.hosts[name].address}:{THRIFT_PORT} check port {SIDE_PORT}"
            for name in SERVERS
        )
        # As `bidfilter cluster up` writes it (src/bidfilter/cluster/haproxy.py), but on the
        # hosts' addresses and with a 1 s check timeout: a host that vanishes answers no check
        # at all (no refusal), and two timed-out checks are what marks it down.
        return f"""\
global
    stats socket {self.stats_socket} mode 600 level user
    hard-stop-after 5s

defaults
    mode tcp
    retries 3
    option redispatch 1
    timeout connect 1s
    timeout client 330s
    timeout server 330s
    timeout client-fin 10s
    timeout server-fin 10s
    timeout check 1s

frontend {FRONTEND}
    bind {lb}:{THRIFT_PORT}
    default_backend {BACKEND}

backend {BACKEND}
    balance leastconn
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {lb}
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 1s fall 2 rise 2 \
on-marked-down shutdown-sessions
{servers}
"""

    def start_haproxy(self) -> None:
        config = self.workdir / "haproxy.cfg"
        config.write_text(self.haproxy_config())
        check_config(self.haproxy, config)
        self._start("lb", [str(self.haproxy), "-db", "-f", str(config)])

        def answers() -> bool:
            self._check_alive("lb")
            try:
                show_stat(self.stats_socket)
            except OSError:
                return False
            return True

        wait_until(answers, "HAProxy's stats socket", 30)

    def start_server(self, host: str) -> None:
        """Start ``bidfilter serve`` on ``host`` and wait until HAProxy sends it traffic."""
        address = self.hosts[host].address
        bidfilter = self.python.parent / "bidfilter"  # the venv's console script
        self._start(
            host,
            [
                str(bidfilter), "serve",
                "--store", STORE_URI, "--s3-endpoint-url", self.s3_endpoint,
                "--host", address, "--port", str(THRIFT_PORT),
                "--metrics-port", str(SIDE_PORT), "--workers", "1",
                "--poll-s", str(POLL_S), "--cache-dir", str(self.workdir / f"cache-{host}"),
            ],
        )  # fmt: skip

        def in_service() -> bool:
            self._check_alive(host)
            row = self.haproxy_view().get(host)
            return row is not None and row.up

        try:
            wait_until(in_service, f"{host} in service", STARTUP_TIMEOUT_S)
        except TimeoutError as error:
            raise TimeoutError(f"{error}:\n{_tail(self.workdir / f'{host}.log')}") from None

    def start(self, initial_version: Path) -> None:
        """S3 with ``initial_version`` published, HAProxy, then both servers (in parallel)."""
        self.start_s3()
        self.publish(initial_version)
        self.start_haproxy()
        errors: list[BaseException] = []

        def start(host: str) -> None:
            try:
                self.start_server(host)
            except BaseException as error:  # reported below, from the caller's thread
                errors.append(error)

        threads = [threading.Thread(target=start, args=(host,)) for host in SERVERS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    # --- faults and views -----------------------------------------------------------------------

    def set_link(self, host: str, up: bool) -> None:
        """The host's interface up or down: down, nothing of it reaches the wire."""
        _run("ip", "-n", self.hosts[host].netns, "link", "set", "eth0", "up" if up else "down")

    def _link_ends(self, host: str) -> list[tuple[str, str]]:
        """(namespace, device) of both ends of the host's link: each shapes what it sends."""
        return [(self.hosts[host].netns, "eth0"), (self.switch, self.hosts[host].switch_port)]

    def impair(self, host: str, delay_ms: float, loss_percent: float) -> str:
        """Delay and loss on the host's link, both ways; returns how it was done: ``tc
        netem``, or where the kernel has no sch_netem, a user-space relay (impaired_link.py)."""
        spec = ["delay", f"{delay_ms:g}ms", "loss", f"{loss_percent:g}%"]
        try:
            for namespace, device in self._link_ends(host):
                _run("ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", device,
                     "root", "netem", *spec)  # fmt: skip
        except RuntimeError as error:
            if "qdisc kind is unknown" not in str(error):
                raise
        else:
            return "tc netem"
        self._start_relay(host, delay_ms, loss_percent)
        return "a user-space relay (this kernel has no sch_netem)"

    def _start_relay(self, host: str, delay_ms: float, loss_percent: float) -> None:
        if not self._checksums_finished:
            for other in self.hosts.values():
                _run(*other.argv(str(self.python), str(_RELAY), "no-tx-checksum", "eth0"))
            _run(str(self.python), str(_RELAY), "no-tx-checksum", self.client_veth)
            self._checksums_finished = True
        port, inner, outer = self.hosts[host].switch_port, f"q-{host}", f"b-{host}"
        sw = self.switch
        _run("ip", "-n", sw, "link", "add", inner, "type", "veth", "peer", "name", outer)
        _run("ip", "-n", sw, "link", "set", outer, "master", "br0", "up")
        _run("ip", "-n", sw, "link", "set", inner, "promisc", "on", "up")
        log = self.workdir / f"relay-{host}.log"
        with log.open("wb") as sink:
            self.relays[host] = subprocess.Popen(
                ["ip", "netns", "exec", sw, str(self.python), str(_RELAY), "relay", port, inner,
                 "--delay-ms", str(delay_ms), "--loss", str(loss_percent / 100)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(lambda: b"relaying" in log.read_bytes(), f"the relay of {host}'s link", 10)
        # Only now out of the bridge: the host's frames go through the relay from here on.
        _run("ip", "-n", sw, "link", "set", port, "nomaster", "promisc", "on")

    def clear_impairment(self, host: str) -> str:
        """The host's link as it was; what the relay did, if one ran, else ''."""
        for namespace, device in self._link_ends(host):
            subprocess.run(
                ["ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", device, "root"],
                capture_output=True,
                check=False,  # none there: nothing to remove
            )
        relay = self.relays.pop(host, None)
        if relay is None:
            return ""
        port, sw = self.hosts[host].switch_port, self.switch
        _run("ip", "-n", sw, "link", "set", port, "promisc", "off", "master", "br0")
        relay.terminate()
        relay.wait(10)
        _run("ip", "-n", sw, "link", "del", f"q-{host}")
        return _tail(self.workdir / f"relay-{host}.log", 1)

    def kill_host(self, host: str) -> None:
        """The host dies as when its power is cut: its link goes down first, so that not even
        a RST or FIN leaves it, then every process in it is SIGKILLed."""
        self.set_link(host, False)
        self.kill_all(host)
        self._reap(host, 5)

    def haproxy_view(self) -> dict[str, ServerStat]:
        rows = parse_show_stat(show_stat(self.stats_socket))
        return {row.name: row for row in rows if row.proxy == BACKEND and row.is_server}

    def served_version(self, host: str) -> str | None:
        """The version ``host`` serves by its /readyz (``ready: VERSION (...)``), or None."""
        url = f"http://{self.hosts[host].address}:{SIDE_PORT}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                head = response.read().decode().partition("\n")[0]
        except (urllib.error.URLError, OSError):
            return None
        return head.split()[1] if head.startswith("ready: ") else None

    def store_poll_failures(self, host: str) -> int:
        url = f"http://{self.hosts[host].address}:{SIDE_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("bidfilter_store_poll_failures_total "):
                    return int(line.split()[1])
        raise RuntimeError(f"{host}: no bidfilter_store_poll_failures_total in /metrics")

    def heal(self) -> None:
        """Every link up and without netem, every server back in service (restarted if dead)."""
        for host in self.hosts:
            self.set_link(host, True)
            self.clear_impairment(host)
        for host in SERVERS:
            if host not in self.processes or self.processes[host].poll() is not None:
                self._reap(host, 5)
                self.start_server(host)
        wait_until(lambda: all(self.haproxy_view()[host].up for host in SERVERS), "servers UP", 30)


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)  # any HTTP answer means the server is up
    except OSError:
        return None


@contextmanager
def running_fleet(workdir: Path, initial_version: Path) -> Iterator[Fleet]:
    """A started fleet serving ``initial_version``; always removed afterwards."""
    fleet = Fleet(workdir)
    try:
        fleet.build()
        fleet.start(initial_version)
        yield fleet
    finally:
        fleet.close()


# --- load -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    started: float
    ended: float
    version: str | None  # the model version that answered
    outcome: Outcome | None
    error: str | None  # set: the call is lost

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


@dataclass
class PacedLoad:
    """``RATE`` filter calls a second through HAProxy from a thread, until ``stop()``; bounded
    by ``max_seconds`` and ``max_calls`` whatever happens."""

    host: str
    port: int
    requests: Requests
    max_seconds: float = 120.0
    max_calls: int = 50_000
    calls: list[Call] = field(default_factory=list)
    retried: int = 0
    connects: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PacedLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(self.max_seconds + (RETRIES + 1) * CALL_TIMEOUT_S + 5)
        if self._thread.is_alive():
            raise RuntimeError("the load did not stop")

    def started_after(self, moment: float) -> int:
        return sum(c.started > moment for c in self.calls)

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        numbers = iter(range(self.max_calls))
        async with AsyncBidFilterClient(
            ConnectionSettings(self.host, self.port, timeout=CALL_TIMEOUT_S, retries=RETRIES),
            connections=CONNECTIONS,
        ) as client:

            async def caller() -> None:
                next_at = time.monotonic()
                for number in numbers:
                    now = time.monotonic()
                    if self._stop.is_set() or now > deadline:
                        return
                    # Paced, without bursts to catch up after a stall.
                    next_at = max(next_at + CALLERS / RATE, now)
                    openrtb, partners = self.requests[number % len(self.requests)]
                    try:
                        response = await client.filter(openrtb, partners, deadline_ms=DEADLINE_MS)
                    except Exception as error:  # every failure is a lost call
                        call = Call(now, time.monotonic(), None, None, f"{type(error).__name__}")
                    else:
                        call = Call(
                            now, time.monotonic(), response.model_version, response.outcome, None
                        )
                    self.calls.append(call)
                    await asyncio.sleep(next_at - time.monotonic())

            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            self.retried, self.connects = client.retried, client.connects


# --- figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One scenario's figures. Latencies are of the calls started during the fault."""

    scenario: str
    calls_sent: int
    calls_answered: int
    calls_lost: int
    fail_open: int
    calls_in_fault: int  # started during the fault: the ones the latencies are of
    p50_ms: float
    p99_ms: float
    max_ms: float
    recover_s: float  # what it measures: ``recover_what``
    recover_what: str
    retried: int
    lost_errors: list[str]
    notes: str = ""


def _percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else 0.0


def _slow_threshold_s(calls: list[Call], before: float) -> float:
    baseline = [c.latency_s for c in calls if c.ended < before]
    p99 = float(np.percentile(baseline, 99)) if baseline else 0.0
    return max(SLOW_FLOOR_S, 5 * p99)


def _last_hurt_end(calls: list[Call], fault_start: float) -> float | None:
    """When the last call that the fault slowed down (or lost) ended."""
    slow = _slow_threshold_s(calls, fault_start)
    hurt = [
        c.ended
        for c in calls
        if c.ended > fault_start and (c.error is not None or c.latency_s > slow)
    ]
    return max(hurt, default=None)


def _figures(
    scenario: str,
    load: PacedLoad,
    window: tuple[float, float],
    recover_s: float,
    recover_what: str,
    notes: str = "",
) -> Figures:
    calls = load.calls
    during = [c.latency_s for c in calls if window[0] <= c.started <= window[1]]
    lost = [c.error for c in calls if c.error is not None]
    return Figures(
        scenario=scenario,
        calls_sent=len(calls),
        calls_answered=len(calls) - len(lost),
        calls_lost=len(lost),
        fail_open=sum(c.outcome not in (None, Outcome.SCORED) for c in calls),
        calls_in_fault=len(during),
        p50_ms=round(_percentile_ms(during, 50), 1),
        p99_ms=round(_percentile_ms(during, 99), 1),
        max_ms=round(max(during, default=0.0) * 1000, 1),
        recover_s=round(recover_s, 2),
        recover_what=recover_what,
        retried=load.retried,
        lost_errors=sorted(set(lost)),
        notes=notes,
    )


# --- scenarios ------------------------------------------------------------------------------------

CALLS_BEFORE: Final = 200  # answered before a fault is injected
LOSSY: Final = (20.0, 2.0)  # ms of delay and % of loss, each way
LOSSY_FOR_S: Final = 6.0
PARTITION_FOR_S: Final = 8.0  # long enough for several of each server's polls to fail
# /readyz names a version once the supervisor has verified it; each worker swaps a moment
# later: the calls started this long after every /readyz switched must all be of it.
SETTLE_S: Final = 2.0
ROLLOUT_TIMEOUT_S: Final = 90.0  # a poll stuck in botocore's connect timeouts when it heals


@dataclass
class HostKill(Figures):
    victim_status: tuple[str, str] = ("", "")  # HAProxy's (status, check) after the kill
    detect_s: float = 0.0  # kill -> HAProxy marks it down
    back_in_service_s: float = 0.0  # restart -> HAProxy sends it traffic again
    calls_after_down: int = 0
    unscored_after_down: int = 0  # answered by nobody or not SCORED, among those


def host_kill(fleet: Fleet, requests: Requests, victim: str = "server-1") -> HostKill:
    """Kill a server host whole under load; then boot it again."""
    with PacedLoad(*fleet.front, requests) as load:
        wait_until(lambda: len(load.calls) >= CALLS_BEFORE, "calls before the kill", 30)
        # Each server holds some of the client's connections (via HAProxy), so the dead host
        # surely takes calls with it.
        view = fleet.haproxy_view()
        if not all(view[host].current_sessions >= 1 for host in SERVERS):
            raise RuntimeError(f"not every server holds a session: {view}")
        killed_at = time.monotonic()
        fleet.kill_host(victim)
        down_at = wait_until(
            lambda: fleet.haproxy_view()[victim].status == "DOWN", f"{victim} marked down", 30
        )
        wait_until(lambda: load.started_after(down_at) >= 300, "calls after the mark-down", 30)
    seen = fleet.haproxy_view()[victim]
    last_hurt = _last_hurt_end(load.calls, killed_at)
    after = [c for c in load.calls if c.started > down_at]
    booted_at = time.monotonic()
    fleet.set_link(victim, True)
    fleet.start_server(victim)
    back_s = time.monotonic() - booted_at
    figures = _figures(
        "host killed",
        load,
        (killed_at, down_at),
        (last_hurt - killed_at) if last_hurt else 0.0,
        "kill -> last slowed call answered",
        f"{victim} {seen.status} ({seen.check_status}) {down_at - killed_at:.1f} s after the"
        f" kill; back in service {back_s:.1f} s after its restart",
    )
    return HostKill(
        **vars(figures),
        victim_status=(seen.status, seen.check_status),
        detect_s=round(down_at - killed_at, 2),
        back_in_service_s=round(back_s, 2),
        calls_after_down=len(after),
        unscored_after_down=sum(c.outcome != Outcome.SCORED for c in after),
    )


@dataclass
class LossyLink(Figures):
    p50_before_ms: float = 0.0


def lossy_link(fleet: Fleet, requests: Requests, victim: str = "server-1") -> LossyLink:
    """``netem delay 20ms loss 2%`` on one server's link (both ways) under load."""
    with PacedLoad(*fleet.front, requests) as load:
        wait_until(lambda: len(load.calls) >= CALLS_BEFORE, "calls before the fault", 30)
        fault_at = time.monotonic()
        try:
            how = fleet.impair(victim, *LOSSY)
            time.sleep(LOSSY_FOR_S)
        finally:
            relayed = fleet.clear_impairment(victim)
        healed_at = time.monotonic()
        wait_until(lambda: load.started_after(healed_at) >= 300, "calls after the fault", 30)
    last_hurt = _last_hurt_end(load.calls, fault_at)
    before = [c.latency_s for c in load.calls if c.ended < fault_at]
    figures = _figures(
        "lossy link",
        load,
        (fault_at, healed_at),
        max(0.0, last_hurt - healed_at) if last_hurt else 0.0,
        "fault removed -> last slowed call answered",
        f"{LOSSY[0]:g} ms and {LOSSY[1]:g}% loss each way on {victim}'s link for"
        f" {LOSSY_FOR_S:g} s, by {how}" + (f" ({relayed} frames)" if relayed else ""),
    )
    return LossyLink(**vars(figures), p50_before_ms=round(_percentile_ms(before, 50), 1))


@dataclass
class Rollout(Figures):
    old_version: str = ""
    new_version: str = ""
    switched_s: dict[str, float] = field(default_factory=dict)  # per server, from the reference
    served_during_fault: dict[str, str | None] = field(default_factory=dict)
    # Polls that gave up on the store: few or none, as botocore's timeouts (5 s to connect, 60 s
    # to read, 3 attempts) outlast a short partition and a hung poll just resumes after it.
    poll_failures_during_fault: dict[str, int] = field(default_factory=dict)
    published_before_heal_s: float = 0.0
    versions_during_fault: list[str] = field(default_factory=list)
    versions_after: list[str] = field(default_factory=list)  # calls SETTLE_S after the switch


class SwitchWatch:
    """Watches every server's /readyz from before a version is published, so that each switch
    is timed when it happens, not when someone first looks after the publish."""

    def __init__(self, fleet: Fleet, version: str) -> None:
        self.fleet = fleet
        self.version = version
        self.seen: dict[str, float] = {}  # server -> monotonic time it first served the version
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SwitchWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.seen) < len(SERVERS):
            for host in SERVERS:
                if host not in self.seen and self.fleet.served_version(host) == self.version:
                    self.seen[host] = time.monotonic()
            time.sleep(0.02)

    def wait(self, since: float) -> dict[str, float]:
        """Seconds from ``since`` until each server served the version."""
        self._thread.join(ROLLOUT_TIMEOUT_S)
        if len(self.seen) < len(SERVERS):
            raise TimeoutError(f"{self.version} not served everywhere in {ROLLOUT_TIMEOUT_S:g} s")
        return {host: round(at - since, 2) for host, at in self.seen.items()}


def _new_version(store_dir: Path) -> tuple[str, str, Path]:
    """(current, new, the new version's directory): a copy of the local store's LATEST under a
    new id, published there first (copy_as_new_version), to publish to S3 next."""
    local = open_store(str(store_dir))
    old = local.latest()
    assert old is not None
    new = copy_as_new_version(store_dir, old)
    return old, new, store_dir / "versions" / new


def _rollout_figures(
    scenario: str,
    load: PacedLoad,
    window: tuple[float, float],
    reference: float,
    versions: tuple[str, str],
    switched: dict[str, float],
    what: str,
) -> Rollout:
    """Figures of a rollout whose servers switched ``switched`` seconds after ``reference``."""
    everywhere = reference + max(switched.values())
    order = ", ".join(
        f"{host} +{s:.1f} s" for host, s in sorted(switched.items(), key=lambda i: i[1])
    )
    figures = _figures(scenario, load, window, max(switched.values()), what, f"switched: {order}")
    return Rollout(
        **vars(figures),
        old_version=versions[0],
        new_version=versions[1],
        switched_s=switched,
        versions_after=sorted(
            {str(c.version) for c in load.calls if c.started > everywhere + SETTLE_S}
        ),
    )


def s3_partition(fleet: Fleet, requests: Requests, store_dir: Path) -> Rollout:
    """The S3 host is cut off; a new version is published meanwhile; then the link heals."""
    old, new, version_dir = _new_version(store_dir)
    with PacedLoad(*fleet.front, requests) as load:
        wait_until(lambda: len(load.calls) >= CALLS_BEFORE, "calls before the partition", 30)
        failures_before = {host: fleet.store_poll_failures(host) for host in SERVERS}
        cut_at = time.monotonic()
        fleet.set_link("s3", False)
        with SwitchWatch(fleet, new) as watch:
            try:
                published_at = fleet.publish(version_dir)
                time.sleep(max(0.0, cut_at + PARTITION_FOR_S - time.monotonic()))
                served = {host: fleet.served_version(host) for host in SERVERS}
                failures = {
                    host: fleet.store_poll_failures(host) - failures_before[host]
                    for host in SERVERS
                }
            finally:
                fleet.set_link("s3", True)
            healed_at = time.monotonic()
            switched = watch.wait(healed_at)
        everywhere = healed_at + max(switched.values())
        wait_until(
            lambda: load.started_after(everywhere + SETTLE_S) >= 200, "calls on the new version", 30
        )
    result = _rollout_figures(
        "S3 partitioned during a rollout",
        load,
        (cut_at, healed_at),
        healed_at,
        (old, new),
        switched,
        "heal -> new version served everywhere",
    )
    result.served_during_fault = served
    result.published_before_heal_s = round(healed_at - published_at, 2)
    given_up = ", ".join(f"{host} {n}" for host, n in sorted(failures.items()))
    result.notes += (
        f"; published {result.published_before_heal_s:.1f} s before the heal;"
        f" polls given up meanwhile: {given_up}"
    )
    result.poll_failures_during_fault = failures
    result.versions_during_fault = sorted(
        {str(c.version) for c in load.calls if cut_at <= c.started <= healed_at}
    )
    return result


def rolling_update(fleet: Fleet, requests: Requests, store_dir: Path) -> Rollout:
    """A new version published under load; each server picks it up at its own next poll."""
    old, new, version_dir = _new_version(store_dir)
    with PacedLoad(*fleet.front, requests) as load:
        wait_until(lambda: len(load.calls) >= CALLS_BEFORE, "calls before the rollout", 30)
        with SwitchWatch(fleet, new) as watch:
            published_at = fleet.publish(version_dir)
            switched = watch.wait(published_at)
        everywhere = published_at + max(switched.values())
        wait_until(
            lambda: load.started_after(everywhere + SETTLE_S) >= 200, "calls on the new version", 30
        )
    return _rollout_figures(
        "rolling model update",
        load,
        (published_at, everywhere),
        published_at,
        (old, new),
        switched,
        "published -> new version served everywhere",
    )

"""The systems under test: start one pinned to a core, score a sample with it, stop it.

- ``BidfilterSystem``: ``bidfilter serve --workers 1`` (a supervisor and one worker process);
- ``MLServerSystem``: Seldon MLServer with its XGBoost runtime, one parallel worker, REST V2;
- ``ThreadPoolSystem``: ``bench/baselines/thrift_threadpool.py`` (official Thrift library,
  ``TThreadPoolServer``, a DMatrix per call);
- ``FloorSystem``: not a competitor but the machine's floor, ``bench/loadgen/floor_server.c``,
  which answers every call with one canned reply: the kernel's CPU cost per request and the
  latency tail that no server could beat on this machine;
- ``MatchedSystem``: the same C server spinning, per request, the CPU bidfilter spends beyond
  the floor's: the latency that much CPU per request gets here, with no overhead of its own.

Each runs under ``taskset -c CORE`` (children inherit the pinning) in a session of its own, so
``bench.procfs`` finds all of its processes and ``stop`` ends all of them: SIGTERM to the
process group, SIGKILL after a grace period, then any straggler of the session by pid. Servers
listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, Final

import numpy as np

from bench.mlserver_venv import mlserver_executable
from bench.procfs import session_processes
from bench.workload import (
    MLSERVER_MODEL_NAME,
    PreparedModel,
    ReplaySet,
    http_posts,
    thrift_calls,
    v2_inference_body,
)
from bidfilter.client import BidFilterClient, ConnectionSettings
from bidfilter.features import FeatureSpec
from bidfilter.thrift import (
    FilterResponse,
    Outcome,
    PartnerDecision,
    Protocol,
    ReplyEncoder,
    Transport,
)

HOST: Final = "127.0.0.1"
_STOP_GRACE_S: Final = 15.0
_POLL_S: Final = 0.2
_BASELINE_SCRIPT: Final = Path(__file__).resolve().parent / "baselines" / "thrift_threadpool.py"


class SystemStartError(RuntimeError):
    """A system did not become ready; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


class SystemUnderTest(ABC):
    """One server to benchmark; ``start`` it, measure, then always ``stop`` it."""

    name: ClassVar[str]
    label: ClassVar[str]
    wire: ClassVar[str]  # "thrift" or "http": what the load generator speaks to it
    startup_timeout_s: ClassVar[float] = 90.0
    runs_half_load: ClassVar[bool] = True  # open loop at half of its own max throughput

    def __init__(self, model: PreparedModel, workdir: Path, core: int) -> None:
        self.model = model
        self.workdir = workdir / self.name
        self.core = core
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- what each system defines

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line (run under taskset)."""

    @abstractmethod
    def is_ready(self) -> bool:
        """Whether the server answers (called until true, or the start-up timeout)."""

    @abstractmethod
    def scores(self, replay: ReplaySet, indices: Sequence[int]) -> np.ndarray | None:
        """Bid probabilities for the requests ``indices`` of ``replay`` (n x candidates); None
        from a system that does not score (the floor)."""

    @abstractmethod
    def wire_messages(self, replay: ReplaySet) -> list[bytes]:
        """What the load generator sends, one complete message per request."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Write what the server needs before it starts (configuration files)."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    # -- lifecycle

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self) -> None:
        """Start pinned to ``core`` and wait until ready; raises ``SystemStartError``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            ["taskset", "-c", str(self.core), *self.command()],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SystemStartError(
                    f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(_POLL_S)
        raise SystemStartError(
            f"{self.name} not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """End every process of the server's session (TERM, then KILL); safe to call twice."""
        process = self._process
        if process is not None:
            session = process.pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(session, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(session, signal.SIGKILL)
                process.wait(timeout=10)
            # Anything of the session left (another process group, or slow to exit).
            deadline = time.monotonic() + 5
            while session_processes(session) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in session_processes(session):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"


class _ThriftSystem(SystemUnderTest):
    """A server of the BidFilter Thrift service: bidfilter's own client scores with it."""

    wire = "thrift"

    def _client(self) -> BidFilterClient:
        return BidFilterClient(
            ConnectionSettings(HOST, self.port, timeout=10.0, retries=0), pool_size=1
        )

    def is_ready(self) -> bool:
        try:
            with BidFilterClient(
                ConnectionSettings(HOST, self.port, timeout=2.0, retries=0)
            ) as client:
                client.ping()
            return True
        except Exception:  # not listening yet, or not answering yet
            return False

    def scores(self, replay: ReplaySet, indices: Sequence[int]) -> np.ndarray:
        out = np.empty((len(indices), len(replay.candidates)), dtype=np.float64)
        with self._client() as client:
            for row, index in enumerate(indices):
                response = client.filter(replay.openrtb[index], replay.candidates)
                if response.outcome != Outcome.SCORED:
                    raise AssertionError(
                        f"{self.name}: request {index} answered {response.outcome.name}"
                        f" ({response.error})"
                    )
                partners = [d.partner for d in response.decisions]
                if partners != replay.candidates:
                    raise AssertionError(f"{self.name}: decisions not in candidate order")
                out[row] = [d.bid_probability for d in response.decisions]
        return out

    def wire_messages(self, replay: ReplaySet) -> list[bytes]:
        return thrift_calls(replay)


class BidfilterSystem(_ThriftSystem):
    name = "bidfilter"
    label = "bidfilter"

    def __init__(self, model: PreparedModel, workdir: Path, core: int) -> None:
        super().__init__(model, workdir, core)
        self.metrics_port = free_port()

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bidfilter",
            "serve",
            "--store",
            os.fspath(self.model.store),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--workers",
            "1",
            "--cache-dir",
            os.fspath(self.workdir / "cache"),
            "--poll-s",
            "3600",
        ]

    def is_ready(self) -> bool:
        return _http_status(self.metrics_port, "/readyz") == 200 and super().is_ready()


class ThreadPoolSystem(_ThriftSystem):
    name = "threadpool"
    label = "Thrift thread pool"
    threads: ClassVar[int] = 16

    def command(self) -> list[str]:
        return [
            sys.executable,
            os.fspath(_BASELINE_SCRIPT),
            "--model",
            os.fspath(self.model.version_dir),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
        ]


class MLServerSystem(SystemUnderTest):
    """MLServer 1.x with mlserver-xgboost: one model, one parallel worker, REST V2 on HTTP/1.1.

    The model file is the artifact's own booster (``model.ubj``, one of the file names the
    XGBoost runtime looks for). ``debug`` is off, as in production (it turns on access logs).
    """

    name = "mlserver"
    label = "MLServer (XGBoost runtime)"
    wire = "http"
    startup_timeout_s = 180.0

    def __init__(self, model: PreparedModel, workdir: Path, core: int, venv: Path) -> None:
        super().__init__(model, workdir, core)
        self.venv = venv
        self.grpc_port = free_port()
        self.metrics_port = free_port()

    @property
    def repository(self) -> Path:
        return self.workdir / "repository"

    def prepare(self) -> None:
        model_dir = self.repository / MLSERVER_MODEL_NAME
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.model.model_file, model_dir / "model.ubj")
        model_settings = {
            "name": MLSERVER_MODEL_NAME,
            "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": "./model.ubj", "version": self.model.version},
        }
        (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        settings = {
            "debug": False,
            "host": HOST,
            "http_port": self.port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "parallel_workers": 1,
        }
        (self.repository / "settings.json").write_text(json.dumps(settings, indent=2))

    def command(self) -> list[str]:
        return [os.fspath(mlserver_executable(self.venv)), "start", os.fspath(self.repository)]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
        env.pop("PYTHONPATH", None)
        return env

    def is_ready(self) -> bool:
        return _http_status(self.port, f"/v2/models/{MLSERVER_MODEL_NAME}/ready") == 200

    def infer(self, rows: np.ndarray) -> np.ndarray:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            connection.request(
                "POST",
                f"/v2/models/{MLSERVER_MODEL_NAME}/infer",
                body=v2_inference_body(rows),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise AssertionError(f"mlserver answered {response.status}: {payload[:500]!r}")
        answer: dict[str, Any] = json.loads(payload)
        return np.asarray(answer["outputs"][0]["data"], dtype=np.float64)

    def scores(self, replay: ReplaySet, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self.infer(replay.rows[index]) for index in indices])

    def wire_messages(self, replay: ReplaySet) -> list[bytes]:
        return http_posts(replay, self.port)


class FloorSystem(SystemUnderTest):
    """``floor_server``: every call answered with the same bidfilter reply, no work done."""

    name = "floor"
    label = "floor (C, canned reply)"
    wire = "thrift"
    startup_timeout_s = 10.0
    runs_half_load = False  # it runs at the rates of the systems under test

    def __init__(self, model: PreparedModel, workdir: Path, core: int, binary: Path) -> None:
        super().__init__(model, workdir, core)
        self.binary = binary
        self.reply_file = self.workdir / "reply.bin"

    def wire_messages(self, replay: ReplaySet) -> list[bytes]:
        return thrift_calls(replay)

    def prepare(self) -> None:
        # What bidfilter answers to the replayed requests (every partner of the model is a
        # candidate), so the kernel moves as many bytes.
        partners = FeatureSpec.from_dict(self.model.manifest.feature_spec).partners
        decisions = [PartnerDecision(p, 0.5, True, False, 0.1) for p in partners]
        response = FilterResponse("floor", decisions, self.model.version, Outcome.SCORED, 50)
        reply = ReplyEncoder(Protocol.BINARY, Transport.FRAMED).filter(1, response)
        self.reply_file.write_bytes(reply)

    def command(self) -> list[str]:
        return [
            os.fspath(self.binary),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--reply",
            os.fspath(self.reply_file),
            *self.work_arguments(),
        ]

    def work_arguments(self) -> list[str]:
        return []

    def is_ready(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1.0).close()
            return True
        except OSError:
            return False

    def scores(self, replay: ReplaySet, indices: Sequence[int]) -> None:
        return None


class MatchedSystem(FloorSystem):
    """The floor server, spinning ``work_us`` of CPU per request before it answers."""

    name = "matched"
    label = "C server, bidfilter's CPU per request"

    def __init__(
        self, model: PreparedModel, workdir: Path, core: int, binary: Path, work_us: float
    ) -> None:
        super().__init__(model, workdir, core, binary)
        self.work_us = work_us

    def work_arguments(self) -> list[str]:
        return ["--work-us", f"{self.work_us:.1f}"]


SYSTEM_NAMES: Final = ("bidfilter", "mlserver", "threadpool", "floor", "matched")
# Measured after the servers under test, in this order: each needs the figures before it.
REFERENCE_SYSTEMS: Final = ("floor", "matched")

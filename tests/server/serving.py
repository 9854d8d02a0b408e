"""Real ``bidfilter serve`` processes for the tests: start, probe, stop; and publishing helpers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bidfilter.artifact import new_version_id, open_store, write_manifest

BIDFILTER = Path(sys.executable).parent / "bidfilter"


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path
    cache_dir: Path

    def http(self, path: str, method: str = "GET") -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.metrics_port}{path}", method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()}")
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"condition not met in {timeout} s; server log:\n{self.log.read_text()}"
        )

    def ready(self) -> bool:
        return self.http("/readyz")[0] == 200

    def every_worker_ready(self) -> bool:
        """/readyz is 200 once a share of the workers serves; tests start with all of them."""
        status, body = self.http("/readyz")
        workers = [line for line in body.splitlines() if line.startswith("worker ")]
        return status == 200 and bool(workers) and all(w.endswith(": ready") for w in workers)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


class ServerPool:
    """Starts servers for a test (or a module) and stops every one of them afterwards."""

    def __init__(self, workdir: Path, ports: Callable[[], int]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.started: list[RunningServer] = []

    def __call__(
        self, store: str | Path, *, workers: int = 1, wait_ready: bool = True, **flags: object
    ) -> RunningServer:
        port, metrics_port = self.ports(), self.ports()
        n = len(self.started)
        log = self.workdir / f"server-{n}.log"
        cache_dir = self.workdir / f"cache-{n}"
        command = [
            str(BIDFILTER),
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--workers",
            str(workers),
            "--cache-dir",
            str(cache_dir),
        ]
        for name, value in flags.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFILTER_")}
        with log.open("wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        server = RunningServer(process, port, metrics_port, log, cache_dir)
        self.started.append(server)
        server.wait_until(lambda: server.http("/healthz")[0] == 200)
        server.wait_until(lambda: "workers starting" not in server.http("/readyz")[1])
        if wait_ready:
            server.wait_until(server.every_worker_ready)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


def copy_as_new_version(
    store_dir: Path,
    version: str,
    *,
    break_model: bool = False,
    edit_model: Callable[[Path], None] | None = None,
) -> str:
    """Publish a copy of ``version`` under a new id (LATEST moves to it). With ``break_model``
    the copy's model file is garbage, though it matches its manifest: only loading can tell;
    ``edit_model`` changes the copy's model file in place before the manifest is written."""
    source = store_dir / "versions" / version
    manifest = json.loads((source / "manifest.json").read_text())
    new = new_version_id()
    staging = store_dir.parent / f"staging-{new}"
    shutil.copytree(source, staging)
    (staging / "manifest.json").unlink()
    if break_model:
        (staging / "model.ubj").write_bytes(b"\x00garbage, not a model")
    if edit_model is not None:
        edit_model(staging / "model.ubj")
    write_manifest(
        staging,
        version=new,
        data_start=manifest["data_start"],
        data_end=manifest["data_end"],
        feature_spec=manifest["feature_spec"],
        feature_spec_version=manifest["feature_spec_version"],
        model_file=manifest["model_file"],
        partners=manifest["partners"],
        thresholds=manifest["thresholds"],
        metrics=manifest["metrics"],
    )
    open_store(str(store_dir)).publish(staging)
    shutil.rmtree(staging)
    return new


@dataclass
class LoadResult:
    responses: int = 0
    errors: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)


class BackgroundLoad:
    """Filter calls from a thread (asyncio client, pipelined, retrying on another connection)
    until ``stop()`` or ``max_seconds``; bounded in time and count, always."""

    def __init__(
        self,
        port: int,
        requests: list[tuple[bytes, list[str]]],
        *,
        concurrency: int = 8,
        max_seconds: float = 30.0,
        max_calls: int = 200_000,
    ) -> None:
        self.port = port
        self.requests = requests
        self.concurrency = concurrency
        self.max_seconds = max_seconds
        self.max_calls = max_calls
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(self.max_seconds + 10)
        return self.result

    def wait_for(self, calls: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.result.responses < calls and time.monotonic() < deadline:
            time.sleep(0.02)

    async def _run(self) -> None:
        from bidfilter.client import AsyncBidFilterClient, ConnectionSettings

        deadline = time.monotonic() + self.max_seconds
        counter = iter(range(self.max_calls))
        async with AsyncBidFilterClient(
            ConnectionSettings("127.0.0.1", self.port, timeout=5.0, retries=5), connections=2
        ) as client:

            async def caller() -> None:
                for i in counter:
                    if self._stop.is_set() or time.monotonic() > deadline:
                        return
                    openrtb, partners = self.requests[i % len(self.requests)]
                    try:
                        response = await client.filter(openrtb, partners)
                    except Exception as error:  # every failure is a finding
                        self.result.errors.append(f"{type(error).__name__}: {error}")
                        continue
                    self.result.responses += 1
                    versions = self.result.versions
                    versions[response.model_version] = versions.get(response.model_version, 0) + 1
                    outcome = response.outcome.name
                    self.result.outcomes[outcome] = self.result.outcomes.get(outcome, 0) + 1

            await asyncio.gather(*(caller() for _ in range(self.concurrency)))

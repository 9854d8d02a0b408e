"""Faults around the model store: unreachable at start, lost while serving, a store that
accepts connections and never answers, a corrupted artifact, and pointers or manifests that
try to lead the loader out of the store.

Real ``bidfilter serve`` processes, real TCP, and a real S3 API server (moto's standalone
server, a subprocess on 127.0.0.1) on a port chosen in advance, so the store can be down first
and come up later. The server polls the store every 0.2 s here (30 s by default).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from serving import BackgroundLoad, RunningServer, ServerPool, copy_as_new_version

from bidfilter.artifact import open_store
from bidfilter.client import BidFilterClient, ConnectionSettings
from bidfilter.thrift import Outcome

POLL_S = 0.2
POLL_FAILURES = "bidfilter_store_poll_failures_total"
RELOADS_FAILED = 'bidfilter_model_reloads_total{result="failure"}'
RELOADS_DONE = 'bidfilter_model_reloads_total{result="success"}'
S3_START_TIMEOUT_S = 60.0  # moto imports a lot: slow on a busy 2-core machine


class S3Endpoint:
    """moto's standalone S3 server on a fixed port of 127.0.0.1, stopped and started at will.

    Until ``start()`` nothing listens on ``url``, so a store there is refused at once. moto keeps
    its buckets in memory: after ``stop()`` and ``start()`` the store is empty again.
    """

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._process is None, "already running"
        with self.log.open("ab") as sink:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + S3_START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"moto did not start on {self.url}:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            return False


@pytest.fixture
def s3_endpoint(tmp_path: Path, port_allocator: Callable[[], int]) -> Iterator[S3Endpoint]:
    """An S3 endpoint on a free port, not started yet; stopped after the test whatever happens."""
    endpoint = S3Endpoint(port_allocator(), tmp_path / "moto.log")
    yield endpoint
    endpoint.stop()


def metric(server: RunningServer, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", server.http("/metrics")[1], re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def new_s3_store(endpoint: S3Endpoint) -> str:
    """A fresh bucket on ``endpoint``; returns the store URI under it."""
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint.url).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/bidfilter"


def publish(uri: str, endpoint: S3Endpoint, version_dir: Path) -> str:
    return open_store(uri, endpoint_url=endpoint.url).publish(version_dir)


def second_version(trained_store: tuple[Path, str], scratch: Path) -> Path:
    """A copy of the trained version under a new id, as a directory ready to publish."""
    shutil.copytree(trained_store[0], scratch)
    version = copy_as_new_version(scratch, trained_store[1])
    return scratch / "versions" / version


def test_store_unreachable_at_start_fails_open_then_loads_once_it_answers(
    server_pool: ServerPool,
    s3_endpoint: S3Endpoint,
    aws_credentials: None,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    store_dir, version = trained_store
    # Nothing listens on the endpoint yet: every look at the store is refused.
    server = server_pool(
        "s3://models/bidfilter", wait_ready=False, s3_endpoint_url=s3_endpoint.url, poll_s=POLL_S
    )
    assert server.http("/readyz")[0] == 503
    openrtb, partners = replay_requests[0]
    with BidFilterClient(ConnectionSettings("127.0.0.1", server.port)) as client:
        response = client.filter(openrtb, partners)
        assert response.outcome == Outcome.FAIL_OPEN_NO_MODEL
        assert [d.partner for d in response.decisions] == partners
        assert all(d.send for d in response.decisions)
        server.wait_until(lambda: metric(server, POLL_FAILURES) >= 2)
        assert "unreachable" in server.log.read_text()

        s3_endpoint.start()
        boto3.client("s3", endpoint_url=s3_endpoint.url).create_bucket(Bucket="models")
        publish("s3://models/bidfilter", s3_endpoint, store_dir / "versions" / version)
        published = time.monotonic()
        server.wait_until(server.ready, timeout=60)
        loaded_in = time.monotonic() - published
        print(f"loaded {loaded_in:.1f} s after the store answered")
        # Polled every 0.2 s, the store is seen within a few retries (botocore backs off a
        # refused connection by up to a few seconds), not at the 30 s default poll.
        assert loaded_in < 30
        response = client.filter(openrtb, partners)
    assert response.outcome == Outcome.SCORED
    assert response.model_version == version
    assert metric(server, RELOADS_DONE) == 1
    assert "answers again" in server.log.read_text()


def test_store_lost_while_serving_keeps_the_model_and_catches_up_when_back(
    server_pool: ServerPool,
    s3_endpoint: S3Endpoint,
    aws_credentials: None,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
    tmp_path: Path,
) -> None:
    store_dir, first = trained_store
    s3_endpoint.start()
    uri = new_s3_store(s3_endpoint)
    publish(uri, s3_endpoint, store_dir / "versions" / first)
    server = server_pool(uri, workers=2, s3_endpoint_url=s3_endpoint.url, poll_s=POLL_S)
    assert f"ready: {first}" in server.http("/readyz")[1]

    with BackgroundLoad(server.port, replay_requests, concurrency=4, max_seconds=120) as load:
        load.wait_for(200)
        s3_endpoint.stop()
        failures_at_loss = metric(server, POLL_FAILURES)
        server.wait_until(lambda: metric(server, POLL_FAILURES) >= failures_at_loss + 3)
        # Calls answered while the store is down: all by the model already loaded.
        before = dict(load.result.outcomes)
        load.wait_for(load.result.responses + 300, timeout=60)
        during = {k: v - before.get(k, 0) for k, v in load.result.outcomes.items()}
        assert during.get("SCORED", 0) >= 200, during
        assert server.ready()

        # The store comes back (empty: moto keeps buckets in memory) and a version is published.
        s3_endpoint.start()
        bucket = uri.removeprefix("s3://").partition("/")[0]
        boto3.client("s3", endpoint_url=s3_endpoint.url).create_bucket(Bucket=bucket)
        second = publish(uri, s3_endpoint, second_version(trained_store, tmp_path / "scratch"))
        server.wait_until(lambda: f"ready: {second}" in server.http("/readyz")[1], timeout=60)
        # /readyz names the version the supervisor verified; the workers swap just after.
        server.wait_until(lambda: load.result.versions.get(second, 0) >= 200, timeout=60)
        result = load.stop()

    print(f"store lost and back: {result.responses} calls, {result.outcomes}, {during=}")
    assert result.errors == []
    assert set(result.versions) == {first, second}
    # Nothing failed and no model gap showed; a deadline fail-open under CI load is an answer.
    assert set(result.outcomes) <= {"SCORED", "FAIL_OPEN_DEADLINE"}
    assert metric(server, RELOADS_DONE) == 2
    assert metric(server, RELOADS_FAILED) == 0
    log = server.log.read_text()
    assert "unreachable" in log
    assert "answers again" in log


def test_a_store_that_accepts_and_never_answers_does_not_hold_up_serving(
    server_pool: ServerPool,
    aws_credentials: None,
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    """The kernel completes connections to a listening socket nobody reads: every request to
    the store hangs until botocore's read timeout (60 s, three tries). The server must still
    come up and answer fail-open meanwhile, rather than wait for its first look at the store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}"
        started = time.monotonic()
        server = server_pool(
            "s3://models/bidfilter", wait_ready=False, s3_endpoint_url=endpoint, poll_s=POLL_S
        )
        up_in = time.monotonic() - started
        print(f"serving fail-open {up_in:.1f} s after start, the store still hanging")
        assert up_in < 30
        assert server.http("/healthz")[0] == 200
        assert server.http("/readyz")[0] == 503
        with BidFilterClient(ConnectionSettings("127.0.0.1", server.port)) as client:
            response = client.filter(*replay_requests[0])
        assert response.outcome == Outcome.FAIL_OPEN_NO_MODEL
    # Closing the socket resets the hung connections, so the server is not left waiting on
    # them when the fixture stops it.


def test_a_corrupted_artifact_is_refused_counted_and_logged(
    server_pool: ServerPool,
    s3_endpoint: S3Endpoint,
    aws_credentials: None,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
    tmp_path: Path,
) -> None:
    """A file changed in the store after publishing (same size, other bytes: only its sha256
    can tell) is refused before anything loads it; the old version keeps serving."""
    store_dir, first = trained_store
    s3_endpoint.start()
    uri = new_s3_store(s3_endpoint)
    corrupt = publish(uri, s3_endpoint, second_version(trained_store, tmp_path / "scratch"))
    publish(uri, s3_endpoint, store_dir / "versions" / first)
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint.url)
    key = f"{prefix}/versions/{corrupt}/model.ubj"
    model = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    model[len(model) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(model))

    server = server_pool(uri, s3_endpoint_url=s3_endpoint.url, poll_s=POLL_S)
    assert f"ready: {first}" in server.http("/readyz")[1]
    open_store(uri, endpoint_url=s3_endpoint.url).promote(corrupt)
    server.wait_until(lambda: metric(server, RELOADS_FAILED) == 1)

    assert f"ready: {first}" in server.http("/readyz")[1]
    with BidFilterClient(ConnectionSettings("127.0.0.1", server.port)) as client:
        response = client.filter(*replay_requests[0])
    assert response.outcome == Outcome.SCORED
    assert response.model_version == first
    refusal = next(
        line
        for line in server.log.read_text().splitlines()
        if f"refused model version {corrupt}" in line
    )
    assert "model.ubj" in refusal and "sha256" in refusal
    # Nothing of the corrupted version is left in the cache (a partial copy included).
    cache = tmp_path / "cache-0"
    assert sorted(p.name for p in cache.iterdir()) == [first]
    # A refused version is not fetched again at every poll.
    time.sleep(10 * POLL_S)
    assert metric(server, RELOADS_FAILED) == 1


def test_pointers_and_manifests_leading_out_of_the_store_are_refused(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
    tmp_path: Path,
) -> None:
    store_dir, first = trained_store
    store = tmp_path / "store"
    shutil.copytree(store_dir, store)
    server = server_pool(store, poll_s=POLL_S)
    assert f"ready: {first}" in server.http("/readyz")[1]

    # A LATEST naming anything but a version id: climbing out, absolute, with separators.
    for pointer in ("../../etc", "/etc", f"versions/{first}", "..", f"{first}/../../../etc"):
        failures = metric(server, POLL_FAILURES)
        (store / "LATEST").write_text(f"{pointer}\n")
        server.wait_until(lambda failures=failures: metric(server, POLL_FAILURES) > failures)
        assert f"ready: {first}" in server.http("/readyz")[1], pointer
    assert "LATEST does not hold a version id: '../../etc'" in server.log.read_text()

    # A version whose manifest lists a file outside its directory, with a real file there for
    # a careless loader to copy. It is made aside (the server must never see it untampered),
    # then put into the store and named by LATEST.
    escaping_dir = second_version(trained_store, tmp_path / "scratch")
    escaping = escaping_dir.name
    manifest = json.loads((escaping_dir / "manifest.json").read_text())
    manifest["files"]["../../escape.txt"] = manifest["files"]["report.json"]
    (escaping_dir / "manifest.json").write_text(json.dumps(manifest))
    shutil.copytree(escaping_dir, store / "versions" / escaping)
    (store / "escape.txt").write_text("outside the version\n")
    (store / "LATEST").write_text(f"{escaping}\n")
    server.wait_until(lambda: metric(server, RELOADS_FAILED) == 1)

    assert f"ready: {first}" in server.http("/readyz")[1]
    with BidFilterClient(ConnectionSettings("127.0.0.1", server.port)) as client:
        response = client.filter(*replay_requests[0])
    assert response.outcome == Outcome.SCORED
    assert response.model_version == first
    assert f"refused model version {escaping}: ../../escape.txt" in server.log.read_text()
    copies = [p for p in tmp_path.rglob("escape.txt") if p != store / "escape.txt"]
    assert copies == []
    assert sorted(p.name for p in (tmp_path / "cache-0").iterdir()) == [first]

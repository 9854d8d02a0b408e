"""Fixtures for every test package: real servers on 127.0.0.1, started once, always stopped."""

from __future__ import annotations

import importlib
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
from types import ModuleType

import boto3
import pytest
from hypothesis import settings

_SERVER_START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer, even an error status, means the server is up
    except OSError:
        return False


@pytest.fixture(scope="session")
def port_allocator() -> Callable[[], int]:
    """A function returning a free port on 127.0.0.1 each time it is called."""
    return free_port


@pytest.fixture
def free_tcp_port() -> int:
    """A port on 127.0.0.1 with nothing listening (for servers to bind, or to be unreachable)."""
    return free_port()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API server (moto's standalone server, a subprocess); yields its endpoint URL.

    A separate process rather than moto's in-process mock, so that requests go through
    botocore's real HTTP stack: timeouts, retries, signing and streaming bodies all run.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("s3_server") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + _SERVER_START_TIMEOUT
        while not _answers(endpoint):
            if process.poll() is not None:
                pytest.fail(f"moto server exited with {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"moto server did not answer on {endpoint}:\n{_tail(log_path)}")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy AWS credentials in the environment, isolated from the developer's own AWS setup."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_bucket(s3_server: str, aws_credentials: None) -> str:
    """The name of a new, empty bucket on ``s3_server`` (one per test, so tests never collide)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


settings.register_profile("bidfilter", deadline=None, print_blob=True)
settings.load_profile("bidfilter")


@pytest.fixture(scope="session")
def synth_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small synthetic auction logs (4000 requests x 6 partners over 3 days), made once."""
    from bidfilter.synth import generate

    out = tmp_path_factory.mktemp("synth") / "logs"
    generate(out, requests=4000, partners=6, seed=7, days=3)
    return out


@pytest.fixture(scope="session")
def trained_store(synth_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A local store holding one small model trained on ``synth_logs``: (store dir, version)."""
    from bidfilter.artifact import open_store
    from bidfilter.training.config import ModelConfig, TrainConfig
    from bidfilter.training.pipeline import train

    store_dir = tmp_path_factory.mktemp("trained-store")
    config = TrainConfig(model=ModelConfig(trees=40, learning_rate=0.3, early_stopping_rounds=5))
    result = train(synth_logs, open_store(str(store_dir)), config)
    return store_dir, result.version


@pytest.fixture(scope="session")
def thrift_generated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ModuleType, ModuleType]]:
    """(ttypes, BidFilter service) modules that the Apache Thrift compiler generates from the
    shipped IDL into a temporary directory (never the repository); removed again at the end."""
    import bidfilter

    idl = Path(bidfilter.__file__).parent / "idl" / "bidfilter.thrift"
    package = "bidfilter_thrift"  # the IDL's `namespace py`
    compiler = shutil.which("thrift")
    if compiler is None:
        pytest.skip("the Apache Thrift compiler `thrift` is not installed (thrift-compiler)")
    out = tmp_path_factory.mktemp("thrift-gen-py")
    subprocess.run(
        [compiler, "--gen", "py", "-out", str(out), str(idl)], check=True, capture_output=True
    )
    sys.path.insert(0, str(out))
    try:
        yield (
            importlib.import_module(f"{package}.ttypes"),
            importlib.import_module(f"{package}.BidFilter"),
        )
    finally:
        sys.path.remove(str(out))
        for name in list(sys.modules):
            if name == package or name.startswith(f"{package}."):
                del sys.modules[name]

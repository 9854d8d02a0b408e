"""Security properties of a running server: it binds loopback unless told otherwise, its HTTP
side port changes nothing, it never writes credentials to its logs (not even at DEBUG), and
nothing in the package unpickles data."""

from __future__ import annotations

import ast
import http.client
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from serving import BIDFILTER, RunningServer, ServerPool, copy_as_new_version

import bidfilter
from bidfilter.artifact import open_store
from bidfilter.client import BidFilterClient, ConnectionSettings
from bidfilter.settings import Settings
from bidfilter.thrift import Outcome

SRC = Path(bidfilter.__file__).parent


def non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route lookup matters
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def accepts(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=3).close()
    except OSError:
        return False
    return True


def test_the_default_bind_address_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("BIDFILTER_")]:
        monkeypatch.delenv(name)
    assert Settings().host == "127.0.0.1"


def test_a_server_started_with_defaults_is_not_reachable_from_other_hosts(
    server_pool: ServerPool, trained_store: tuple[Path, str]
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    # The probe can tell: a socket bound to every interface does answer on that address.
    with socket.create_server(("0.0.0.0", 0)) as everywhere:
        assert accepts(address, everywhere.getsockname()[1])
    server = server_pool(trained_store[0])  # no --host: the default
    for port in (server.port, server.metrics_port):
        assert accepts("127.0.0.1", port)
        assert not accepts(address, port), f"port {port} answers on {address}"


_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/reload", "/model", "/shutdown", "/admin")


def test_the_http_side_port_has_nothing_that_changes_anything(
    server_pool: ServerPool,
    trained_store: tuple[Path, str],
    replay_requests: list[tuple[bytes, list[str]]],
) -> None:
    server = server_pool(trained_store[0])
    ready_before = server.http("/readyz")
    state = re.compile(r"^bidfilter_(model|workers|worker_restarts)\S* .*$", re.MULTILINE)
    state_before = state.findall(server.http("/metrics")[1])
    answers: dict[tuple[str, str], int] = {}
    for path in _PATHS:
        for method in _METHODS:
            connection = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=5)
            try:
                body = b'{"version": "../../etc", "workers": 0}'
                connection.request(method, path, body=body)
                response = connection.getresponse()
                answers[(method, path)] = response.status
                response.read()
            finally:
                connection.close()
    refused = {key: status for key, status in answers.items() if status not in (404, 405)}
    assert refused == {}
    assert server.http("/readyz") == ready_before
    assert state.findall(server.http("/metrics")[1]) == state_before
    with BidFilterClient(ConnectionSettings("127.0.0.1", server.port)) as client:
        assert client.filter(*replay_requests[0]).outcome == Outcome.SCORED


def test_credentials_never_reach_the_logs_even_at_debug(
    server_pool: ServerPool,
    s3_server: str,
    s3_bucket: str,
    trained_store: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An S3 store, credentials from the environment, DEBUG logging in every process: the
    secret key and the session token appear nowhere in what the server prints or serves."""
    canary = uuid.uuid4().hex
    secrets = {
        "AWS_SECRET_ACCESS_KEY": f"secret-{canary}",
        "AWS_SESSION_TOKEN": f"session-token-{canary}",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    store_dir, first = trained_store
    uri = f"s3://{s3_bucket}/bidfilter"
    store = open_store(uri, endpoint_url=s3_server)
    store.publish(store_dir / "versions" / first)

    # ServerPool passes flags after ``serve``; the log level is a global flag (and workers
    # read it from the environment), so this server is launched here and stopped by the pool.
    port, metrics_port = server_pool.ports(), server_pool.ports()
    log = tmp_path / "debug-server.log"
    command = [str(BIDFILTER), "--log-level", "DEBUG", "serve", "--store", uri]
    command += ["--s3-endpoint-url", s3_server, "--port", str(port)]
    command += ["--metrics-port", str(metrics_port), "--workers", "1", "--poll-s", "0.2"]
    cache_dir = tmp_path / "debug-cache"
    command += ["--cache-dir", str(cache_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFILTER_")}
    env["BIDFILTER_LOG_LEVEL"] = "DEBUG"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(process, port, metrics_port, log, cache_dir)
    server_pool.started.append(server)
    server.wait_until(server.ready, timeout=60)

    # A second version: polls, a manifest, a listing, downloads, all signed with the secrets.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    local = scratch / "store"
    shutil.copytree(store_dir, local)
    second = copy_as_new_version(local, first)
    store.publish(local / "versions" / second)
    server.wait_until(lambda: f"ready: {second}" in server.http("/readyz")[1], timeout=60)
    served = server.http("/metrics")[1] + server.http("/readyz")[1] + server.http("/healthz")[1]
    assert server.stop() == 0

    output = log.read_text(errors="replace")
    assert " DEBUG " in output  # DEBUG really was on
    leaked = [name for name, value in secrets.items() if value in output or value in served]
    assert leaked == [], f"{leaked} in the server's output"


_UNPICKLERS = frozenset({"pickle", "_pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve"})


def unpickler_imports(source: str) -> list[str]:
    """Modules that can unpickle data, imported by ``source`` (a Python module's text)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
        else:
            continue
        found += [n for n in names if str(n).split(".")[0] in _UNPICKLERS]
    return found


def test_the_scanner_finds_unpickling_imports() -> None:
    assert unpickler_imports("import os, pickle") == ["pickle"]
    assert unpickler_imports("from joblib import load") == ["joblib"]
    assert unpickler_imports("import dill.settings as d") == ["dill.settings"]
    assert unpickler_imports("m = __import__('cloudpickle')") == ["cloudpickle"]
    assert unpickler_imports("import json\nfrom pathlib import Path") == []


def test_nothing_in_the_package_can_unpickle() -> None:
    """Models are XGBoost UBJSON, manifests JSON: nothing the server reads is a pickle, and no
    module imports a library that could load one. (multiprocessing pickles the supervisor's
    own messages to its workers over a pipe between the two; that is not data from outside.)"""
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 20  # the package, not an empty directory
    offenders = {
        str(path.relative_to(SRC)): found
        for path in modules
        if (found := unpickler_imports(path.read_text()))
    }
    assert offenders == {}
    loads_pickles = re.compile(r"allow_pickle\s*=\s*True|torch\.load|pd\.read_pickle")
    assert [p.name for p in modules if loads_pickles.search(p.read_text())] == []

"""TLS and mutual TLS on the Thrift port, over real TCP on 127.0.0.1.

Certificates are made for this module, in a temporary directory, with ``cryptography``: a CA, a
server certificate for 127.0.0.1 and localhost, a client certificate, and a second CA that no
server trusts, with a client certificate of its own. Two real ``bidfilter serve`` processes
(one worker each, so every connection shares one event loop): one serving TLS, one requiring
client certificates. ``read_timeout_s`` (which also bounds a TLS handshake, and the wait for a
client's close_notify) has no flag: it is set through its ``BIDFILTER_*`` variable, hence the
launcher here. Every client gives up after a few seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport.TSSLSocket import TSSLSocket
from thrift.transport.TTransport import TFramedTransport

# tests/ holds no packages: the server test helpers are imported from their folder.
sys.path[:0] = [str(Path(__file__).parents[1] / "server")]
from serving import RunningServer, ServerPool  # noqa: E402

from bidfilter.cli import main  # noqa: E402
from bidfilter.client import (  # noqa: E402
    AsyncBidFilterClient,
    BidFilterClient,
    BidFilterTimeoutError,
    BidFilterUnavailableError,
    ConnectionSettings,
    client_context,
)
from bidfilter.server.tls import TLSSettingsError, server_context  # noqa: E402
from bidfilter.settings import Settings  # noqa: E402
from bidfilter.thrift import CallEncoder, Outcome, Protocol, Transport  # noqa: E402

READ_TIMEOUT_S = 4.0  # also the TLS handshake timeout
SLACK_S = 3.0  # how late a close may come on a loaded machine
OPENRTB = (
    b'{"id":"tls-1","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":0.5}],'
    b'"site":{"domain":"news.example.com"},"device":{"os":"iOS","geo":{"country":"FRA"}},'
    b'"tmax":120}'
)
CANDIDATES = ["dsp-02", "not-a-partner", "dsp-01"]


# -- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued  # trusted by no server
    stranger: Issued  # a client certificate the other CA signed


def issue(
    out: Path,
    name: str,
    *,
    issuer: Issued | None = None,
    usage: x509.ObjectIdentifier | None = None,
    addresses: Sequence[x509.GeneralName] = (),
    valid_days: tuple[float, float] = (-1, 365),
) -> Issued:
    """A P-256 key and its certificate (a CA when ``issuer`` is None), written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if issuer is None:
        issuer_name, signing_key = subject, key
    else:
        issuer_name = x509.load_pem_x509_certificate(issuer.cert.read_bytes()).subject
        loaded = serialization.load_pem_private_key(issuer.key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signing_key = loaded
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid_days[0]))
        .not_valid_after(now + datetime.timedelta(days=valid_days[1]))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if addresses:
        builder = builder.add_extension(x509.SubjectAlternativeName(addresses), critical=False)
    certificate = builder.sign(signing_key, hashes.SHA256())
    issued = Issued(out / f"{name}.crt", out / f"{name}.key")
    issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    ca = issue(out, "ca")
    other_ca = issue(out, "other-ca")
    return Pki(
        ca=ca,
        server=issue(
            out,
            "server",
            issuer=ca,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            addresses=[
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ],
        ),
        client=issue(out, "client", issuer=ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        other_ca=other_ca,
        stranger=issue(out, "stranger", issuer=other_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
    )


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory, port_allocator: Callable[[], int]
) -> Iterator[ServerPool]:
    servers = ServerPool(tmp_path_factory.mktemp("tls-servers"), port_allocator)
    yield servers
    servers.stop_all()


def start_server(pool: ServerPool, store: Path, **tls: Path) -> RunningServer:
    # Readiness is read on the side port: plaintext HTTP, TLS or not.
    return pool(store, read_timeout_s=READ_TIMEOUT_S, drain_s=1, **tls)


@pytest.fixture(scope="module")
def tls_server(pki: Pki, trained_store: tuple[Path, str], pool: ServerPool) -> RunningServer:
    return start_server(pool, trained_store[0], tls_cert=pki.server.cert, tls_key=pki.server.key)


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, trained_store: tuple[Path, str], pool: ServerPool) -> RunningServer:
    return start_server(
        pool,
        trained_store[0],
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        tls_client_ca=pki.ca.cert,
    )


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("transport", list(Transport))
def test_sync_client_round_trip_over_tls_in_every_wire_format(
    tls_server: RunningServer,
    pki: Pki,
    trained_store: tuple[Path, str],
    protocol: Protocol,
    transport: Transport,
) -> None:
    with BidFilterClient(
        ConnectionSettings(
            "127.0.0.1",
            tls_server.port,
            protocol=protocol,
            transport=transport,
            tls_ca=pki.ca.cert,
            timeout=5.0,
            connect_timeout=5.0,
        )
    ) as client:
        assert client.ping() == "pong"
        assert client.model_info().version == trained_store[1]
        response = client.filter(OPENRTB, CANDIDATES)
    assert response.outcome is Outcome.SCORED
    assert [d.partner for d in response.decisions] == CANDIDATES


def test_async_client_pipelines_over_tls(
    tls_server: RunningServer, pki: Pki, trained_store: tuple[Path, str]
) -> None:
    async def scenario() -> list[Outcome]:
        async with AsyncBidFilterClient(
            ConnectionSettings(
                "localhost",  # the certificate names localhost too
                tls_server.port,
                ssl_context=client_context(pki.ca.cert),
                timeout=5.0,
                connect_timeout=5.0,
            ),
            connections=2,
        ) as client:
            assert (await client.model_info()).version == trained_store[1]
            responses = await asyncio.gather(
                *(client.filter(OPENRTB, CANDIDATES) for _ in range(50))
            )
            assert client.connects == 2
        return [r.outcome for r in responses]

    assert asyncio.run(scenario()) == [Outcome.SCORED] * 50


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_official_thrift_client_over_tls(
    mutual: bool,
    request: pytest.FixtureRequest,
    pki: Pki,
    thrift_generated: tuple[ModuleType, ModuleType],
    trained_store: tuple[Path, str],
) -> None:
    server: RunningServer = request.getfixturevalue("mtls_server" if mutual else "tls_server")
    ttypes, service = thrift_generated
    client_cert: dict[str, Any] = (
        {"certfile": str(pki.client.cert), "keyfile": str(pki.client.key)} if mutual else {}
    )
    sock = TSSLSocket("127.0.0.1", server.port, ca_certs=str(pki.ca.cert), **client_cert)
    sock.setTimeout(5000)
    wire = TFramedTransport(sock)
    wire.open()
    try:
        client = service.Client(TBinaryProtocol(wire))
        assert client.ping() == "pong"
        assert client.model_info().version == trained_store[1]
        response = client.filter(ttypes.FilterRequest(openrtb=OPENRTB, candidates=CANDIDATES))
        assert response.outcome == ttypes.Outcome.SCORED
        assert [d.partner for d in response.decisions] == CANDIDATES
    finally:
        wire.close()


# -- who is trusted --------------------------------------------------------------------------


def refusal(server: RunningServer, **tls: Any) -> str | None:
    """How a sync client with these TLS options fails its ping (``None``: it was answered).

    A prompt failure, never a timeout: a refused handshake must not look like a slow server.
    """
    try:
        with BidFilterClient(
            ConnectionSettings(
                "127.0.0.1", server.port, retries=0, timeout=5.0, connect_timeout=5.0, **tls
            )
        ) as client:
            assert client.ping() == "pong"
    except BidFilterUnavailableError as error:
        assert not isinstance(error, BidFilterTimeoutError), error
        return error.message
    return None


def test_mutual_tls_answers_only_clients_with_a_certificate_from_its_ca(
    mtls_server: RunningServer, pki: Pki
) -> None:
    assert refusal(mtls_server, tls_ca=pki.ca.cert) is not None  # no client certificate
    stranger = {"tls_cert": pki.stranger.cert, "tls_key": pki.stranger.key}
    assert refusal(mtls_server, tls_ca=pki.ca.cert, **stranger) is not None
    client = {"tls_cert": pki.client.cert, "tls_key": pki.client.key}
    assert refusal(mtls_server, tls_ca=pki.ca.cert, **client) is None

    async def async_calls(**tls: Any) -> str:
        async with AsyncBidFilterClient(
            ConnectionSettings(
                "127.0.0.1", mtls_server.port, retries=0, timeout=5.0, connect_timeout=5.0, **tls
            )
        ) as client:
            return await client.ping()

    with pytest.raises(BidFilterUnavailableError):
        asyncio.run(async_calls(tls_ca=pki.ca.cert))
    assert asyncio.run(async_calls(tls_ca=pki.ca.cert, **client)) == "pong"


def test_clients_verify_the_servers_certificate_and_name(
    tls_server: RunningServer, pki: Pki
) -> None:
    untrusted = refusal(tls_server, tls_ca=pki.other_ca.cert)
    assert untrusted is not None and "CERTIFICATE_VERIFY_FAILED" in untrusted
    wrong_name = refusal(tls_server, tls_ca=pki.ca.cert, server_hostname="bidfilter.example")
    assert wrong_name is not None and "CERTIFICATE_VERIFY_FAILED" in wrong_name
    assert refusal(tls_server, tls_ca=pki.ca.cert, server_hostname="localhost") is None


# -- misbehaving clients ---------------------------------------------------------------------


async def closed_after(reader: asyncio.StreamReader, started: float, limit: float) -> bytes:
    """Everything the server sends until it closes the connection, within ``limit`` s."""
    received = b""
    async with asyncio.timeout(limit):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not data:
                return received
            received += data


def test_plaintext_clients_on_the_tls_port_are_closed_and_tls_clients_unaffected(
    tls_server: RunningServer, pki: Pki
) -> None:
    port = tls_server.port

    async def plaintext_ping() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        try:
            writer.write(CallEncoder(Protocol.BINARY, Transport.FRAMED).ping(1))
            received = await closed_after(reader, started, READ_TIMEOUT_S + SLACK_S)
        finally:
            writer.close()
        return time.monotonic() - started, received

    async def plaintext_pings() -> list[tuple[float, bytes]]:
        closed = []
        for _ in range(20):  # one after another, spread over the TLS client's calls
            closed.append(await plaintext_ping())
            await asyncio.sleep(0.02)
        return closed

    async def scenario() -> tuple[list[tuple[float, bytes]], list[float]]:
        latencies: list[float] = []
        async with AsyncBidFilterClient(
            ConnectionSettings("127.0.0.1", port, tls_ca=pki.ca.cert, timeout=5.0, retries=0),
            connections=1,
        ) as client:
            assert await client.ping() == "pong"  # connected before the others come
            plaintext = asyncio.ensure_future(plaintext_pings())
            while not plaintext.done():
                before = time.monotonic()
                response = await client.filter(OPENRTB, CANDIDATES)
                latencies.append(time.monotonic() - before)
                assert response.outcome is Outcome.SCORED
                await asyncio.sleep(0.01)
            assert client.connects == 1  # the TLS connection lived through it all
            return await plaintext, latencies

    closed, latencies = asyncio.run(scenario())
    for seconds, received in closed:
        # The handshake fails on the first bytes: closed at once, not by a timeout. At most a
        # TLS alert record comes back, never a Thrift reply.
        assert seconds < READ_TIMEOUT_S * 0.5, seconds
        assert received == b"" or received[0] == 0x15, received
    assert len(latencies) >= 10
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


def test_a_handshake_that_never_completes_is_closed_after_the_read_timeout(
    tls_server: RunningServer,
) -> None:
    # A TLS record header announcing a 512-byte ClientHello, then nothing.
    partial_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"

    async def stalled(first_bytes: bytes) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
        started = time.monotonic()
        try:
            writer.write(first_bytes)
            assert await closed_after(reader, started, READ_TIMEOUT_S + SLACK_S) == b""
        finally:
            writer.close()
        return time.monotonic() - started

    async def scenario() -> list[float]:
        return await asyncio.gather(stalled(b""), stalled(partial_hello))

    for seconds in asyncio.run(scenario()):
        assert READ_TIMEOUT_S * 0.9 <= seconds <= READ_TIMEOUT_S + SLACK_S, seconds


def connections_open(server: RunningServer) -> float:
    text = server.http("/metrics")[1]
    match = re.search(r"^bidfilter_connections_open (\S+)$", text, re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


def test_a_client_that_never_answers_the_close_frees_its_slot_after_the_read_timeout(
    tls_server: RunningServer, pki: Pki
) -> None:
    # Closing a TLS connection waits for the client's close_notify: a client that has stopped
    # reading never sends it, and must not keep its connection (and its slot) for long.
    tls_server.wait_until(lambda: connections_open(tls_server) == 0, timeout=10)
    raw = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
    with client_context(pki.ca.cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        # A message started and never finished: the read timeout closes the connection.
        sock.sendall(CallEncoder(Protocol.BINARY, Transport.FRAMED).ping(1)[:5])
        started = time.monotonic()
        tls_server.wait_until(lambda: connections_open(tls_server) == 1, timeout=5)
        tls_server.wait_until(
            lambda: connections_open(tls_server) == 0, timeout=2 * READ_TIMEOUT_S + SLACK_S
        )
        seconds = time.monotonic() - started
    # The read timeout, then as long again for the close_notify that never comes.
    assert 2 * READ_TIMEOUT_S * 0.9 <= seconds <= 2 * READ_TIMEOUT_S + SLACK_S, seconds


# -- settings --------------------------------------------------------------------------------


def test_valid_settings_build_a_tls_1_2_context(pki: Pki) -> None:
    assert server_context(Settings()) is None
    tls = server_context(Settings(tls_cert=pki.server.cert, tls_key=pki.server.key))
    assert tls is not None
    assert tls.minimum_version is ssl.TLSVersion.TLSv1_2
    assert tls.verify_mode is ssl.CERT_NONE
    mutual = server_context(
        Settings(tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=pki.ca.cert)
    )
    assert mutual is not None and mutual.verify_mode is ssl.CERT_REQUIRED


def test_settings_errors_name_the_field(pki: Pki, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    missing = tmp_path / "missing.pem"
    cert, server_key = pki.server.cert, pki.server.key
    cases: list[tuple[dict[str, Path], str, str]] = [
        ({"tls_cert": cert}, "tls_key", "required"),
        ({"tls_key": server_key}, "tls_cert", "required"),
        ({"tls_client_ca": pki.ca.cert}, "tls_cert", "required"),
        ({"tls_cert": missing, "tls_key": server_key}, "tls_cert", "cannot read"),
        ({"tls_cert": server_key, "tls_key": server_key}, "tls_cert", "no PEM certificate"),
        ({"tls_cert": cert, "tls_key": missing}, "tls_key", "cannot read"),
        ({"tls_cert": cert, "tls_key": pki.client.key}, "tls_key", "not a PEM private key"),
        ({"tls_cert": cert, "tls_key": encrypted}, "tls_key", "encrypted"),
        (
            {"tls_cert": cert, "tls_key": server_key, "tls_client_ca": missing},
            "tls_client_ca",
            "cannot read",
        ),
        (
            {"tls_cert": cert, "tls_key": server_key, "tls_client_ca": server_key},
            "tls_client_ca",
            "no PEM CA certificate",
        ),
    ]
    for settings, field, message in cases:
        with pytest.raises(TLSSettingsError) as raised:
            server_context(Settings(**settings))
        assert raised.value.field == field, settings
        assert message in raised.value.message, (settings, raised.value.message)


def test_serve_stops_at_startup_on_a_bad_tls_setting(
    pki: Pki, tmp_path: Path, port_allocator: Callable[[], int]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFILTER_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bidfilter",
            "serve",
            "--store",
            str(tmp_path),  # exists: the TLS setting is what is wrong
            "--port",
            str(port_allocator()),
            "--metrics-port",
            str(port_allocator()),
            "--workers",
            "1",
            "--tls-cert",
            str(pki.server.cert),
            "--tls-key",
            str(pki.client.key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert "tls_key:" in done.stderr and "Traceback" not in done.stderr
    assert "serving Thrift" not in done.stderr  # stopped before any worker started


@pytest.mark.parametrize(
    ("valid_days", "logged"),
    [
        ((-30, -1), "expired on"),
        ((1, 30), "is not valid before"),
        ((-1, 3), "expires on"),
    ],
)
def test_a_certificate_past_or_near_its_end_is_logged_at_start(
    pki: Pki,
    trained_store: tuple[Path, str],
    pool: ServerPool,
    tmp_path: Path,
    valid_days: tuple[float, float],
    logged: str,
) -> None:
    """OpenSSL loads such a certificate silently; only verifying clients would find out."""
    server_auth = ExtendedKeyUsageOID.SERVER_AUTH
    issued = issue(tmp_path, "dated", issuer=pki.ca, usage=server_auth, valid_days=valid_days)
    server = start_server(pool, trained_store[0], tls_cert=issued.cert, tls_key=issued.key)
    log = server.log.read_text()
    assert f"tls_cert {issued.cert} {logged}" in log
    not_after = x509.load_pem_x509_certificate(issued.cert.read_bytes()).not_valid_after_utc
    gauge = f"bidfilter_tls_certificate_expiry_timestamp_seconds {not_after.timestamp():.0f}"
    assert gauge in server.http("/metrics")[1].splitlines()


def test_a_certificate_well_within_its_validity_logs_no_warning(tls_server: RunningServer) -> None:
    log = tls_server.log.read_text()
    assert "TLS on the Thrift port" in log
    assert "expires on" not in log and "expired on" not in log


def test_client_tls_options_name_the_option(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^tls_key: "):
        BidFilterClient(ConnectionSettings("127.0.0.1", 1, tls_key=pki.client.key))
    with pytest.raises(ValueError, match=r"^tls_ca: "):
        BidFilterClient(ConnectionSettings("127.0.0.1", 1, tls_ca=tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"^tls_cert: "):
        AsyncBidFilterClient(
            ConnectionSettings("127.0.0.1", 1, tls_cert=pki.client.cert, tls_key=pki.server.key)
        )
    with pytest.raises(ValueError, match="not both"):
        BidFilterClient(
            ConnectionSettings("127.0.0.1", 1, ssl_context=client_context(), tls_ca=pki.ca.cert)
        )
    plain = ConnectionSettings("127.0.0.1", 1)
    assert plain.ssl_context is None and plain.server_hostname is None
    secure = ConnectionSettings("127.0.0.1", 1, tls_ca=pki.ca.cert)
    assert secure.ssl_context is not None and secure.server_hostname == "127.0.0.1"
    assert secure.ssl_context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_loadgen_and_simulate_commands_connect_over_tls(
    tls_server: RunningServer,
    pki: Pki,
    synth_logs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = ["--target", f"127.0.0.1:{tls_server.port}", "--logs", str(synth_logs)]
    tls = ["--tls-ca", str(pki.ca.cert)]
    load = [*target, "--rate", "50", "--duration", "1", "--connections", "1", "--timeout", "5"]
    assert main(["loadgen", *load, *tls, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["completed"] == 50, report
    assert sum(report["errors"].values()) == 0, report

    png = tmp_path / "simulation.png"
    assert main(["simulate", *target, "--limit", "50", "--png", str(png), *tls, "--json"]) == 0
    simulation = json.loads(capsys.readouterr().out)
    assert simulation["errors"] == {}, simulation
    assert sum(simulation["outcomes"].values()) == 50, simulation

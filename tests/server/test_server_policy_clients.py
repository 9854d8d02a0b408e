"""A real server with a control group and exploration, called over TCP by official clients: one
generated from the shipped IDL reads ``propensity`` and ``control``; one generated from the IDL
before them (``tests/data/idl/bidfilter-v1.thrift``) still decodes every reply."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from serving import RunningServer, ServerPool
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TFramedTransport

from bidfilter.scoring import exploration_draw, in_control_group

OLD_IDL = Path(__file__).parents[1] / "data" / "idl" / "bidfilter-v1.thrift"
OLD_PACKAGE = "bidfilter_thrift_v1_server"
CONTROL_SHARE = 0.3
EXPLORATION_RATE = 0.2


@pytest.fixture(scope="module")
def policy_server(
    trained_store: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
    port_allocator: Callable[[], int],
) -> Iterator[RunningServer]:
    pool = ServerPool(tmp_path_factory.mktemp("policy-server"), port_allocator)
    yield pool(
        trained_store[0],
        workers=1,
        control_share=CONTROL_SHARE,
        exploration_rate=EXPLORATION_RATE,
        sparse_partner_exploration=0.0,
    )
    pool.stop_all()


@pytest.fixture(scope="module")
def old_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ModuleType, ModuleType]]:
    compiler = shutil.which("thrift")
    if compiler is None:
        pytest.skip("the Apache Thrift compiler `thrift` is not installed (thrift-compiler)")
    out = tmp_path_factory.mktemp("thrift-gen-py-v1-server")
    subprocess.run(
        [compiler, "--gen", "py", "-out", str(out), str(OLD_IDL)], check=True, capture_output=True
    )
    (out / "bidfilter_thrift").rename(out / OLD_PACKAGE)
    sys.path.insert(0, str(out))
    try:
        yield (
            importlib.import_module(f"{OLD_PACKAGE}.ttypes"),
            importlib.import_module(f"{OLD_PACKAGE}.BidFilter"),
        )
    finally:
        sys.path.remove(str(out))
        for name in list(sys.modules):
            if name == OLD_PACKAGE or name.startswith(f"{OLD_PACKAGE}."):
                del sys.modules[name]


def connect(server: RunningServer, service: ModuleType, compact: bool) -> tuple[Any, Any]:
    sock = TSocket("127.0.0.1", server.port)
    sock.setTimeout(5000)
    wire = TFramedTransport(sock)
    wire.open()
    protocol = TCompactProtocol(wire) if compact else TBinaryProtocol(wire)
    return service.Client(protocol), wire


@pytest.mark.parametrize("compact", [False, True], ids=["binary", "compact"])
def test_clients_old_and_new_against_a_server_recording_its_policy(
    policy_server: RunningServer,
    thrift_generated: tuple[ModuleType, ModuleType],
    old_service: tuple[ModuleType, ModuleType],
    logged_requests: list[tuple[bytes, list[str]]],
    compact: bool,
) -> None:
    new_types, new_service = thrift_generated
    old_types, old_services = old_service
    new_client, new_wire = connect(policy_server, new_service, compact)
    old_client, old_wire = connect(policy_server, old_services, compact)
    controls = below = 0
    try:
        for openrtb, partners in logged_requests[:120]:
            request_id = json.loads(openrtb)["id"]
            new = new_client.filter(new_types.FilterRequest(openrtb=openrtb, candidates=partners))
            old = old_client.filter(old_types.FilterRequest(openrtb=openrtb, candidates=partners))
            # The old client decodes the same answer, without the fields it does not know.
            assert not hasattr(old, "control")
            assert not any(hasattr(d, "propensity") for d in old.decisions)
            assert [(d.partner, d.send, d.explore) for d in old.decisions] == [
                (d.partner, d.send, d.explore) for d in new.decisions
            ]
            assert new.outcome == new_types.Outcome.SCORED
            in_control = in_control_group(request_id, CONTROL_SHARE)
            assert new.control is (True if in_control else None)
            controls += in_control
            for decision in new.decisions:
                if in_control or decision.bid_probability >= decision.threshold:
                    assert decision.propensity == 1.0 and decision.send
                else:
                    below += 1
                    assert decision.propensity == EXPLORATION_RATE
                    assert decision.explore == (
                        exploration_draw(request_id, decision.partner) < EXPLORATION_RATE
                    )
    finally:
        new_wire.close()
        old_wire.close()
    assert 0 < controls < 120 and below > 0
    metrics = policy_server.http("/metrics")[1]
    line = next(x for x in metrics.splitlines() if x.startswith("bidfilter_control_requests_total"))
    assert float(line.split()[1]) >= 2 * controls  # both clients' calls (and the other protocol's)

"""The server over real TCP, called by clients that the Apache Thrift compiler generated from the
shipped IDL and that run on the official Python library: every protocol x transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from serving import RunningServer
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TFramedTransport

PROTOCOLS = {"binary": TBinaryProtocol, "compact": TCompactProtocol}
TRANSPORTS = {"framed": TFramedTransport, "unframed": TBufferedTransport}


@pytest.fixture(params=[(p, t) for p in PROTOCOLS for t in TRANSPORTS], ids=lambda pt: "-".join(pt))
def official_client(
    request: pytest.FixtureRequest,
    module_server: RunningServer,
    thrift_generated: tuple[ModuleType, ModuleType],
) -> Iterator[Any]:
    protocol, transport = request.param
    _, service = thrift_generated
    sock = TSocket("127.0.0.1", module_server.port)
    sock.setTimeout(5000)
    wire = TRANSPORTS[transport](sock)
    wire.open()
    yield service.Client(PROTOCOLS[protocol](wire))
    wire.close()


def test_ping_and_model_info(official_client: Any, trained_store: tuple[Path, str]) -> None:
    assert official_client.ping() == "pong"
    info = official_client.model_info()
    assert info.version == trained_store[1]
    assert info.partners == [f"dsp-{i:02d}" for i in range(1, 7)]
    assert set(info.thresholds) == set(info.partners)
    assert info.loaded_at.endswith("+00:00")


def test_filter_scores_candidates_in_order(
    official_client: Any,
    thrift_generated: tuple[ModuleType, ModuleType],
    logged_requests: list[tuple[bytes, list[str]]],
    trained_store: tuple[Path, str],
) -> None:
    ttypes, _ = thrift_generated
    sent = 0
    for openrtb, _partners in logged_requests[:50]:
        candidates = ["dsp-04", "not-a-partner", "dsp-01"]
        response = official_client.filter(
            ttypes.FilterRequest(openrtb=openrtb, candidates=candidates)
        )
        assert response.outcome == ttypes.Outcome.SCORED
        assert response.model_version == trained_store[1]
        assert [d.partner for d in response.decisions] == candidates
        unknown = response.decisions[1]
        assert unknown.bid_probability == -1.0 and unknown.send
        for decision in (response.decisions[0], response.decisions[2]):
            assert 0.0 <= decision.bid_probability <= 1.0
            assert decision.send == (
                decision.bid_probability >= decision.threshold or decision.explore
            )
            sent += decision.send
        assert response.server_us >= 0
    assert 0 < sent < 100


def test_all_partners_when_no_candidates(
    official_client: Any,
    thrift_generated: tuple[ModuleType, ModuleType],
    logged_requests: list[tuple[bytes, list[str]]],
) -> None:
    ttypes, _ = thrift_generated
    response = official_client.filter(ttypes.FilterRequest(openrtb=logged_requests[0][0]))
    assert [d.partner for d in response.decisions] == [f"dsp-{i:02d}" for i in range(1, 7)]


def test_invalid_request_names_the_field(
    official_client: Any, thrift_generated: tuple[ModuleType, ModuleType]
) -> None:
    ttypes, _ = thrift_generated
    with pytest.raises(ttypes.InvalidRequest) as caught:
        official_client.filter(ttypes.FilterRequest(openrtb=b'{"id": "x", "imp": []}'))
    assert caught.value.field == "imp"
    with pytest.raises(ttypes.InvalidRequest) as caught:
        official_client.filter(ttypes.FilterRequest(openrtb=b"not json"))
    assert caught.value.field == "$"
    # The connection is still good after a refused request.
    assert official_client.ping() == "pong"


def test_filter_batch_marks_the_bad_item_and_scores_the_rest(
    official_client: Any,
    thrift_generated: tuple[ModuleType, ModuleType],
    logged_requests: list[tuple[bytes, list[str]]],
) -> None:
    ttypes, _ = thrift_generated
    good = ttypes.FilterRequest(openrtb=logged_requests[1][0], candidates=["dsp-02"])
    bad = ttypes.FilterRequest(openrtb=b'{"id": "b", "imp": [{"id": "1"}]}', candidates=["dsp-02"])
    responses = official_client.filter_batch([good, bad, good])
    assert [r.outcome for r in responses] == [
        ttypes.Outcome.SCORED,
        ttypes.Outcome.FAIL_OPEN_ERROR,
        ttypes.Outcome.SCORED,
    ]
    assert responses[1].error is not None and "imp[0]" in responses[1].error
    assert [d.send for d in responses[1].decisions] == [True]
    assert responses[0].error is None

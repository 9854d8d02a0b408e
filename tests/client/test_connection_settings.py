"""``ConnectionSettings``: one frozen value, checked once, that both clients take."""

from __future__ import annotations

import dataclasses

import pytest

from bidfilter.client import (
    AsyncBidFilterClient,
    BidFilterClient,
    ConnectionSettings,
    Protocol,
    Transport,
    client_context,
)


def test_one_value_configures_both_clients() -> None:
    settings = ConnectionSettings("127.0.0.1", 9090, protocol="compact", transport="unframed")  # type: ignore[arg-type]
    assert (settings.protocol, settings.transport) == (Protocol.COMPACT, Transport.UNFRAMED)
    assert BidFilterClient(settings, pool_size=2).settings is settings
    assert AsyncBidFilterClient(settings, connections=2).settings is settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.timeout = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"connect_timeout": -1.0}, "connect_timeout"),
    ],
)
def test_bad_values_are_refused_when_made(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionSettings("127.0.0.1", 9090, **options)  # type: ignore[arg-type]


def test_a_copy_keeps_the_tls_context_it_was_made_with() -> None:
    context = client_context()
    secure = ConnectionSettings("filter.internal", 9090, ssl_context=context)
    assert secure.server_hostname == "filter.internal"
    slower = dataclasses.replace(secure, timeout=5.0)
    assert slower.ssl_context is context and slower.server_hostname == "filter.internal"
    assert slower.target == "filter.internal:9090"

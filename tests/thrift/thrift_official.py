"""The official Apache Thrift Python library, as the reference bidfilter's codec is held to.

``Official`` wraps the code the compiler generates from the IDL (see the ``official`` fixture)
and converts bidfilter's values to its classes; ``official_bytes`` is what the official
protocols write through ``TMemoryBuffer`` (h11's test-against-the-stdlib habit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from thrift.protocol.TBinaryProtocol import TBinaryProtocol, TBinaryProtocolAccelerated
from thrift.protocol.TCompactProtocol import TCompactProtocol, TCompactProtocolAccelerated
from thrift.protocol.TProtocol import TProtocolBase
from thrift.transport.TTransport import TFramedTransport, TMemoryBuffer, TTransportBase

from bidfilter.thrift import (
    AuctionOutcome,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    OutcomeReceipt,
    Protocol,
)

ProtocolFactory = Callable[[TTransportBase], TProtocolBase]
OFFICIAL_PROTOCOLS: dict[Protocol, ProtocolFactory] = {
    Protocol.BINARY: TBinaryProtocol,
    Protocol.COMPACT: TCompactProtocol,
}
ACCELERATED_PROTOCOLS: dict[Protocol, ProtocolFactory] = {
    Protocol.BINARY: TBinaryProtocolAccelerated,
    Protocol.COMPACT: TCompactProtocolAccelerated,
}


@dataclass(frozen=True)
class Official:
    """The generated code: ``ttypes`` (structs) and ``service`` (Client, Processor, args)."""

    ttypes: ModuleType
    service: ModuleType

    # -- conversions between bidfilter's values and the generated classes --------------------

    def request(self, value: FilterRequest) -> Any:
        return self.ttypes.FilterRequest(value.openrtb, value.candidates, value.deadline_ms)

    def response(self, value: FilterResponse) -> Any:
        decisions = [
            self.ttypes.PartnerDecision(
                d.partner, d.bid_probability, d.send, d.explore, d.threshold, d.propensity
            )
            for d in value.decisions
        ]
        return self.ttypes.FilterResponse(
            value.request_id,
            decisions,
            value.model_version,
            int(value.outcome),
            value.server_us,
            value.error,
            value.control,
            value.logged,
        )

    def outcomes(self, values: list[AuctionOutcome]) -> list[Any]:
        return [
            self.ttypes.AuctionOutcome(
                o.request_id,
                [
                    self.ttypes.PartnerOutcome(
                        p.partner, p.called, p.bid, p.price, p.timed_out, p.error
                    )
                    for p in o.partners
                ],
            )
            for o in values
        ]

    def receipt(self, value: OutcomeReceipt) -> Any:
        return self.ttypes.OutcomeReceipt(value.accepted, value.unknown, value.duplicate)

    def model_info(self, value: ModelInfo) -> Any:
        return self.ttypes.ModelInfo(
            value.version, value.partners, value.thresholds, value.loaded_at
        )

    def invalid(self, value: InvalidRequest) -> Any:
        return self.ttypes.InvalidRequest(value.message, value.field)


def official_bytes(
    protocol: Protocol,
    write: Callable[[TProtocolBase], object],
    *,
    framed: bool = False,
    accelerated: bool = False,
) -> bytes:
    """What ``write`` writes through the official protocol (and TFramedTransport if asked)."""
    memory = TMemoryBuffer()
    transport: TTransportBase = TFramedTransport(memory) if framed else memory
    factory = (ACCELERATED_PROTOCOLS if accelerated else OFFICIAL_PROTOCOLS)[protocol]
    write(factory(transport))
    transport.flush()
    return bytes(memory.getvalue())


def official_reader(
    protocol: Protocol, data: bytes, *, framed: bool = False, accelerated: bool = False
) -> TProtocolBase:
    """An official protocol reading ``data``."""
    memory = TMemoryBuffer(data)
    transport: TTransportBase = TFramedTransport(memory) if framed else memory
    factory = (ACCELERATED_PROTOCOLS if accelerated else OFFICIAL_PROTOCOLS)[protocol]
    return factory(transport)


def official_call(
    official: Official,
    protocol: Protocol,
    method: str,
    seqid: int,
    *args: Any,
    framed: bool = False,
    accelerated: bool = False,
) -> bytes:
    """The CALL message the generated ``Client.send_<method>`` writes (args: official values)."""

    def write(oprot: TProtocolBase) -> None:
        client = official.service.Client(oprot)
        client._seqid = seqid
        getattr(client, f"send_{method}")(*args)

    return official_bytes(protocol, write, framed=framed, accelerated=accelerated)


class Handler:
    """A service handler for the generated ``Processor``: every method returns (or raises)
    ``outcome``."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def _answer(self, *args: Any) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    filter = filter_batch = model_info = ping = report_outcomes = _answer


def official_reply(
    official: Official,
    protocol: Protocol,
    call: bytes,
    outcome: Any,
    *,
    framed: bool = False,
    accelerated: bool = False,
) -> bytes:
    """What the generated ``Processor`` answers to ``call`` when the handler gives ``outcome``."""
    processor = official.service.Processor(Handler(outcome))
    iprot = official_reader(protocol, call, framed=framed, accelerated=accelerated)
    return official_bytes(
        protocol,
        lambda oprot: processor.process(iprot, oprot),
        framed=framed,
        accelerated=accelerated,
    )


def official_receive(
    official: Official,
    protocol: Protocol,
    method: str,
    reply: bytes,
    *,
    framed: bool = False,
    accelerated: bool = False,
) -> Any:
    """What the generated ``Client.recv_<method>`` makes of ``reply`` (or raises)."""
    iprot = official_reader(protocol, reply, framed=framed, accelerated=accelerated)
    return getattr(official.service.Client(iprot), f"recv_{method}")()

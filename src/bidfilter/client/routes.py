"""Which connection a request's outcome must be reported on.

A server process joins a reported outcome only with a decision it holds itself, and a TCP
connection (behind any load balancer) always reaches the same process. So a client remembers,
for each response that says ``logged``, the connection it came on, and sends the outcome there.
An outcome with no route (not logged, forgotten, or its connection gone) still goes to the
server, on any connection, where it is counted ``unknown``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Final, Generic, TypeVar

from bidfilter.thrift import AuctionOutcome, FilterResponse, OutcomeReceipt

MAX_ROUTES: Final = 100_000
"""Logged request ids remembered at most (the oldest are forgotten first): at the default 5%
logged, two minutes of a thousand requests a second."""

_C = TypeVar("_C")


class OutcomeRoutes(Generic[_C]):
    def __init__(self, limit: int = MAX_ROUTES) -> None:
        self.limit = limit
        self._by_id: dict[str, _C] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._by_id)

    def remember(self, response: FilterResponse, connection: _C) -> None:
        if not response.logged or not response.request_id:
            return
        routes = self._by_id
        routes[response.request_id] = connection
        if len(routes) > self.limit:
            del routes[next(iter(routes))]

    def route(
        self, outcomes: Sequence[AuctionOutcome], *, usable: Callable[[_C], bool]
    ) -> Iterator[tuple[_C | None, list[AuctionOutcome]]]:
        """The outcomes grouped by the connection each must go on (``None``: any), in the
        order of their first outcome; their routes are forgotten (an outcome is reported once)."""
        groups: dict[int, tuple[_C | None, list[AuctionOutcome]]] = {}
        for outcome in outcomes:
            connection = self._by_id.pop(outcome.request_id, None)
            if connection is not None and not usable(connection):
                connection = None
            key = 0 if connection is None else id(connection)
            groups.setdefault(key, (connection, []))[1].append(outcome)
        yield from groups.values()


def summed(receipts: Sequence[OutcomeReceipt]) -> OutcomeReceipt:
    """One receipt for the calls an outcome report was split into."""
    return OutcomeReceipt(
        accepted=sum(r.accepted for r in receipts),
        unknown=sum(r.unknown for r in receipts),
        duplicate=sum(r.duplicate for r in receipts),
    )

"""The messages on the pipe between the supervisor and a worker, one type per thing said.

They cross the pipe pickled (a few dozen bytes; the busiest is one beat every half second), and
the receiver matches on their type, not on a string in position 0 of a tuple.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Load:
    """Supervisor to worker: load the verified model directory ``path`` (also given to a new
    worker at spawn, for the model current then)."""

    path: str
    generation: int


@dataclass(frozen=True, slots=True)
class Ready:
    """Worker to supervisor: listening on the Thrift port."""

    slot: int


@dataclass(frozen=True, slots=True)
class Beat:
    """Worker to supervisor, from its event loop every ``HEARTBEAT_INTERVAL_S``: the loop turns."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """Worker to supervisor: serving ``generation`` now."""

    generation: int
    version: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Worker to supervisor: the model of ``generation`` did not load or verify."""

    generation: int
    error: str


WorkerMessage = Ready | Beat | Loaded | Refused
"""What a worker tells its supervisor."""

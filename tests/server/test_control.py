"""The supervisor-worker messages cross a real pipe intact, and are told apart by type."""

from __future__ import annotations

from multiprocessing import Pipe

from bidfilter.server.control import Beat, Load, Loaded, Ready, Refused


def test_every_message_crosses_a_pipe() -> None:
    ours, theirs = Pipe()
    with ours, theirs:
        for message in (Load("/cache/v1", 3), Ready(1), Beat(), Loaded(3, "v1"), Refused(3, "bad")):
            ours.send(message)
            received = theirs.recv()
            assert received == message and type(received) is type(message)

"""What goes wrong for a client, each error naming where.

A call either gets the server's answer or fails to reach it. The server's answers that are
errors come from the codec unchanged: ``RemoteInvalidRequestError`` (the request was refused;
``field`` names the offending field) and ``RemoteApplicationError`` (a ``TApplicationException``).
Neither is retried: asking again gets the same answer.

Failing to reach the server is ``BidFilterUnavailableError`` (every attempt met a refused
connection, a reset, an EOF or a garbled reply) or its ``BidFilterTimeoutError`` (the last
attempt timed out). ``ClientClosedError`` is a call on a closed client. Callers map these once,
by type, never by matching their text.
"""

from __future__ import annotations


class BidFilterClientError(Exception):
    """Base of the client's own errors: ``field`` says where, ``message`` says what."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class BidFilterUnavailableError(BidFilterClientError):
    """No attempt of a call got an answer. ``field`` is ``"connection"`` (or ``"timeout"`` for
    the ``BidFilterTimeoutError`` subclass); ``attempts`` is how many connections were tried."""

    def __init__(self, field: str, message: str, *, attempts: int) -> None:
        super().__init__(field, message)
        self.attempts = attempts


class BidFilterTimeoutError(BidFilterUnavailableError):
    """The last attempt of a call got no answer within the client's ``timeout``."""


class ClientClosedError(BidFilterClientError):
    """A call on a client that was closed (or closed while the call was in flight)."""

    def __init__(self) -> None:
        super().__init__("client", "the client is closed")


class AttemptFailedError(Exception):
    """One attempt of a call failed on its connection and may be tried on another (internal).

    ``timed_out`` tells a timeout from a broken connection, for the error raised when the
    attempts run out.
    """

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


def unavailable(last: AttemptFailedError, attempts: int, target: str) -> BidFilterUnavailableError:
    """The error for a call whose ``attempts`` all failed, the last with ``last``."""
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    message = f"{target}: {tries} failed, the last: {last.reason}"
    if last.timed_out:
        return BidFilterTimeoutError("timeout", message, attempts=attempts)
    return BidFilterUnavailableError("connection", message, attempts=attempts)

"""The parser's one error type: what is wrong, and where."""

from __future__ import annotations


class InvalidRequestError(ValueError):
    """A BidRequest that bidfilter refuses. ``field`` is a JSON path such as ``imp[0].banner.w``
    (``$`` for the document as a whole); ``message`` says what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

"""The HTTP side port: ``/healthz``, ``/readyz`` and ``/metrics``, read-only, tiny and bounded.

Only GET and HEAD are answered (there is nothing to change over HTTP); requests must arrive
within a few seconds and fit in 8 KiB; every response closes its connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Route = Callable[[], tuple[int, str, bytes]]  # -> status, content type, body

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_MAX_HEAD = 8192
_READ_TIMEOUT_S = 5.0


async def _respond(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, head_only: bool
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head if head_only else head + body)
    await writer.drain()


async def serve_http(host: str, port: int, routes: dict[str, Route]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                await _respond(writer, 400, "text/plain", b"bad request\n", False)
                return
            method, target = parts[0], parts[1].split("?", 1)[0]
            route = routes.get(target)
            if route is None:
                await _respond(writer, 404, "text/plain", b"not found\n", method == "HEAD")
            elif method not in ("GET", "HEAD"):
                await _respond(writer, 405, "text/plain", b"only GET and HEAD\n", False)
            else:
                status, content_type, body = route()
                await _respond(writer, status, content_type, body, method == "HEAD")
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            pass
        except Exception:
            log.exception("HTTP side port handler failed")
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)

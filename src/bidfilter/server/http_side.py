"""The HTTP side port: ``/healthz``, ``/readyz`` and ``/metrics``, read-only, tiny and bounded.

Only GET and HEAD are answered (there is nothing to change over HTTP); requests must arrive
within a few seconds and fit in 8 KiB; every response closes its connection. At most
``MAX_CONNECTIONS`` are open at once: past that a new one is dropped at once, so silent clients
cannot use up the supervisor's file descriptors (and with them ``/readyz`` and worker respawns).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

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
_REQUEST_TIMEOUT_S = 2.0  # to send the request and take the response: a probe needs far less
MAX_CONNECTIONS = 64


@dataclass
class SidePortStats:
    """Connections of the side port, for ``/metrics``."""

    open: int = 0
    accepted: int = 0
    refused: int = 0  # over MAX_CONNECTIONS
    timed_out: int = 0


async def _respond(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, head_only: bool
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head if head_only else head + body)
    await writer.drain()


async def serve_http(
    host: str, port: int, routes: dict[str, Route], stats: SidePortStats
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if stats.open >= MAX_CONNECTIONS:
            stats.refused += 1
            writer.transport.abort()
            return
        stats.open += 1
        stats.accepted += 1
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                await _answer(reader, writer, routes)
                writer.close()
                await writer.wait_closed()  # the response flushed, then the fd is free
        except TimeoutError:
            stats.timed_out += 1
        except ConnectionError:
            pass
        except Exception:
            log.exception("HTTP side port handler failed")
        finally:
            stats.open -= 1
            if not writer.transport.is_closing() or writer.transport.get_write_buffer_size():
                writer.transport.abort()  # timed out or failed: drop it, not wait on it

    return await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, routes: dict[str, Route]
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return
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

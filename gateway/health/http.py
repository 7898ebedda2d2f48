"""A tiny HTTP/1.1 server for the status views, on asyncio streams.

GET (and HEAD) only, one request per connection (``Connection: close``), a
request head of at most ``StatusConfig.max_request_bytes`` read within
``request_timeout_s``, at most ``MAX_CLIENTS`` at once. Routes: ``/status``
(the JSON document), ``/metrics`` (Prometheus text), ``/`` (the page).
Nothing else is served and nothing is ever written: the server only reads
the daemon's state through ``document``.

The server is auxiliary: if its address cannot be bound (in use, not an
address of this host), the error names the address, is logged and shown in
status, and the daemon goes on logging readings without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..config import StatusConfig
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import render_metrics
from .page import PAGE

__all__ = ["MAX_CLIENTS", "StatusServer"]

logger = logging.getLogger(__name__)

MAX_CLIENTS = 16
"""Connections served at once; more are closed at once (a phone and a scraper need two)."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
)


class StatusServer:
    """Serves ``document()`` on ``config.listen`` while ``serve`` runs.

    ``listening``: the bound ``host:port`` once bound (the port is the real one when
    ``listen`` asks for port 0); ``error``: why it is not serving, if it is not.
    """

    def __init__(self, config: StatusConfig, document: Callable[[], Mapping[str, Any]]) -> None:
        self.config = config
        self._document = document
        self._writers: set[asyncio.StreamWriter] = set()
        """The open client connections: at most ``MAX_CLIENTS``, closed when serving ends."""
        self.listening: str | None = None
        self.error: str | None = None
        self.bound = asyncio.Event()
        """Set once binding succeeded or failed."""

    def facts(self) -> dict[str, Any]:
        """For the status document's ``http``."""
        return {"listen": self.listening or self.config.listen, "error": self.error}

    async def serve(self) -> None:
        """Bind and serve until cancelled; a bind failure is logged and kept in ``error``."""
        address = self.config.address
        if address is None:
            self.bound.set()
            return
        host, port = address
        try:
            server = await asyncio.start_server(
                self._handle, host, port, limit=self.config.max_request_bytes
            )
        except OSError as exc:
            self.error = f"cannot listen on {self.config.listen}: {exc.strerror or exc}"
            logger.error(
                'status server: %s; set [status] listen to a free local address, or "" '
                "for none (the gateway goes on without it)",
                self.error,
            )
            self.bound.set()
            return
        sock = server.sockets[0].getsockname()
        shown = f"[{sock[0]}]" if ":" in sock[0] else sock[0]
        self.listening = f"{shown}:{sock[1]}"
        logger.info("status server on http://%s/ (/status, /metrics)", self.listening)
        self.bound.set()
        try:
            await server.serve_forever()
        finally:
            server.close()
            for writer in list(self._writers):  # Server.close_clients() is Python 3.13+
                writer.close()
            await server.wait_closed()  # from Python 3.12 on, waits for those to close

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CLIENTS:
            writer.close()
            return
        self._writers.add(writer)
        try:
            answer = await self._respond(reader)
            if answer is None:
                return  # no complete request head in time: close without answering
            status, headers, body = answer
            head = [f"HTTP/1.1 {status} {_REASONS[status]}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(head).encode("ascii") + body)
            async with asyncio.timeout(self.config.request_timeout_s):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _respond(
        self, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes] | None:
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _text(431, "request head too large\n")
        except (asyncio.IncompleteReadError, TimeoutError):
            return None
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _text(400, "bad request line\n")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            status, headers, body = _text(405, "GET only\n")
            headers["Allow"] = "GET, HEAD"
            return status, headers, body
        status, headers, body = self._route(target.split("?", 1)[0])
        return status, headers, b"" if method == "HEAD" else body

    def _route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/":
            return (
                200,
                {
                    "Content-Type": "text/html; charset=utf-8",
                    "Content-Security-Policy": _PAGE_CSP,
                    **_COMMON,
                },
                PAGE.encode(),
            )
        if path not in ("/status", "/metrics"):
            return _text(404, "not found: try /, /status or /metrics\n")
        doc = self._document()
        if not doc:
            return _text(503, "the gateway is starting\n")
        if path == "/status":
            body = json.dumps(doc, indent=1, sort_keys=True).encode()
            return 200, {"Content-Type": "application/json", **_COMMON}, body
        return 200, {"Content-Type": METRICS_TYPE, **_COMMON}, render_metrics(doc).encode()


_COMMON = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _text(status: int, text: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/plain; charset=utf-8", **_COMMON}, text.encode()

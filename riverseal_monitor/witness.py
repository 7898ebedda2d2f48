"""A C2SP tlog-witness over HTTP: asyncio streams, SQLite state, one Ed25519 key.

The decision is ``ledger_client.witness.decide`` (pure); this module is its
IO: a small HTTP/1.1 server (bounded headers and bodies, read timeouts,
keep-alive, a cap on connections) and the state database. Routes, under the
configured prefix:

- ``POST <prefix>/add-checkpoint``: cosign or refuse (docs/witness.md §2).
- ``GET <prefix>/<hex SHA-256 of origin>/checkpoint``: the last checkpoint it
  cosigned for that log, with the log's signature and its own cosignature.

State: one row per origin in ``witnessed``. An update is a compare-and-swap on
the (size, root) the decision was made from, so two requests racing from the
same old size cannot both advance it (the rollback the spec warns about); the
loser decides again against the new row and gets its 409. A validly signed
checkpoint refused as inconsistent is kept in ``refused``: it is evidence that
the log showed someone another history.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ledger_client.errors import LedgerClientError
from ledger_client.note import Verifier
from ledger_client.witness import (
    SIZE_CONTENT_TYPE,
    Cosigned,
    Refused,
    WitnessSigner,
    WitnessState,
    decide,
    origin_of,
)

from .errors import WitnessConfigError

__all__ = ["LoggedCheckpoint", "Witness", "WitnessConfig", "load_key", "load_logs"]

logger = logging.getLogger(__name__)

_KEPT_REFUSALS = 1000  # per origin: the newest refused checkpoints kept as evidence
_CAS_TRIES = 8  # each lost swap means another request advanced the row; 8 in a row is overload
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (
    origin     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    updated_s  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    id         INTEGER PRIMARY KEY,
    origin     TEXT NOT NULL,
    status     INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    request    BLOB NOT NULL,
    time_s     INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class WitnessConfig:
    """Where the witness keeps its key, log list and state, and its limits."""

    key_file: Path
    """``PRIVATE+KEY+<name>+<keyid>+<base64(0x04 || seed)>``; must not be readable by others."""
    logs_file: Path
    """The logs it witnesses: lines ``log <origin> <vkey> [<vkey> ...]`` (load_logs)."""
    db_path: Path
    """SQLite state: the last cosigned checkpoint per origin."""
    host: str = "127.0.0.1"
    port: int = 8380
    """0: any free port (tests)."""
    prefix: str = ""
    """The submission prefix, e.g. ``/witness`` (no trailing slash)."""
    max_body_bytes: int = 65_536
    """A request of 63 proof lines and a checkpoint with a few signatures is ~4 KiB."""
    max_header_bytes: int = 8_192
    read_timeout_s: float = 10.0
    """Longest wait for a request's headers or body (slow clients are cut off)."""
    idle_timeout_s: float = 60.0
    """A kept-alive connection with no new request for this long is closed."""
    max_connections: int = 64
    """Connections served at once; more are answered 503 and closed."""


@dataclass(frozen=True)
class LoggedCheckpoint:
    """A row of ``witnessed``: the newest checkpoint cosigned for an origin."""

    origin: str
    size: int
    root: bytes
    note: str
    """The checkpoint note with the log's signature(s) and this witness's cosignature."""


def load_key(path: Path) -> WitnessSigner:
    """The witness key; refused when group or others may read it (it signs for the regulator)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text("utf-8")
    except OSError as exc:
        raise WitnessConfigError(f"witness key {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WitnessConfigError(
            f"witness key {path} has mode {stat.S_IMODE(mode):04o}; it must be 0600 or stricter"
        )
    try:
        return WitnessSigner.from_skey(text)
    except LedgerClientError as exc:
        raise WitnessConfigError(f"witness key {path}: {exc}") from exc


def load_logs(path: Path) -> dict[str, tuple[Verifier, ...]]:
    """Parse the log list: ``log <origin> <vkey> [<vkey> ...]`` per line, ``#`` comments.

    Several vkeys on one line are the log's keys (a rotated box signs with the
    new one); each origin may appear once.
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WitnessConfigError(f"log list {path}: {exc}") from exc
    logs: dict[str, tuple[Verifier, ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"log list {path} line {number}"
        if tokens[0] != "log" or len(tokens) < 3:
            raise WitnessConfigError(f"{where}: expected 'log <origin> <vkey> [<vkey> ...]'")
        origin = tokens[1]
        if origin in logs:
            raise WitnessConfigError(f"{where}: origin {origin!r} is listed twice")
        try:
            logs[origin] = tuple(Verifier.from_vkey(v) for v in tokens[2:])
        except LedgerClientError as exc:
            raise WitnessConfigError(f"{where}: {exc}") from exc
    if not logs:
        raise WitnessConfigError(f"log list {path} names no log")
    return logs


class _State:
    """The SQLite state; its calls run in worker threads, one at a time."""

    def __init__(self, path: Path) -> None:
        self._mutex = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # persisted before the reply (spec)
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise WitnessConfigError(f"witness state {path}: {exc}") from exc

    def get(self, origin: str) -> LoggedCheckpoint | None:
        with self._mutex:
            row = self.db.execute(
                "SELECT size, root, note FROM witnessed WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else LoggedCheckpoint(origin, int(row[0]), bytes(row[1]), row[2])

    def swap(self, old: WitnessState | None, new: WitnessState, note: str, now: int) -> bool:
        """Store ``new`` only if the row is still ``old``; whether it was stored."""
        with self._mutex:
            return self._swap(old, new, note, now)

    def _swap(self, old: WitnessState | None, new: WitnessState, note: str, now: int) -> bool:
        if old is None:
            cur = self.db.execute(
                "INSERT INTO witnessed VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO NOTHING",
                (new.origin, new.size, new.root, note, now),
            )
        else:
            cur = self.db.execute(
                "UPDATE witnessed SET size = ?, root = ?, note = ?, updated_s = ? "
                "WHERE origin = ? AND size = ? AND root = ?",
                (new.size, new.root, note, now, old.origin, old.size, old.root),
            )
        return cur.rowcount == 1

    def refused(self, origin: str, status: int, reason: str, request: bytes, now: int) -> None:
        with self._mutex:
            self.db.execute(
                "INSERT INTO refused (origin, status, reason, request, time_s) "
                "VALUES (?, ?, ?, ?, ?)",
                (origin, status, reason, request, now),
            )
            # Only the log's own key can reach 422, but keep its evidence bounded anyway.
            self.db.execute(
                "DELETE FROM refused WHERE origin = ? AND id NOT IN "
                "(SELECT id FROM refused WHERE origin = ? ORDER BY id DESC LIMIT ?)",
                (origin, origin, _KEPT_REFUSALS),
            )

    def refusals(self) -> list[tuple[str, int, str]]:
        """(origin, status, reason) of every kept refusal, oldest first."""
        with self._mutex:
            rows = self.db.execute("SELECT origin, status, reason FROM refused ORDER BY id")
            return [(str(o), int(s), str(r)) for o, s, r in rows.fetchall()]

    def close(self) -> None:
        with self._mutex:
            self.db.close()


class _HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    body: bytes
    keep_alive: bool


class Witness:
    """The witness service. ``async with Witness(config) as w: await w.serve(stop)``.

    ``logs`` and ``signer`` default to the config's files; tests may pass them.
    ``clock`` gives POSIX seconds for cosignature times.
    """

    def __init__(
        self,
        config: WitnessConfig,
        *,
        logs: Mapping[str, Sequence[Verifier]] | None = None,
        signer: WitnessSigner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.logs = dict(logs) if logs is not None else load_logs(config.logs_file)
        self.signer = signer if signer is not None else load_key(config.key_file)
        self.clock = clock
        self._state: _State | None = None
        self._server: asyncio.Server | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(config.max_connections)
        self._closed = False
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        """The port it listens on, once entered."""

    @property
    def url(self) -> str:
        """The submission prefix as a URL, once entered."""
        return f"http://{self.config.host}:{self.port}{self.config.prefix}"

    async def __aenter__(self) -> Witness:
        if self._closed:
            raise WitnessConfigError("a closed Witness cannot be reopened")
        self._state = await asyncio.to_thread(_State, self.config.db_path)
        try:
            self._server = await asyncio.start_server(
                self._connection,
                self.config.host,
                self.config.port,
                limit=self.config.max_header_bytes,
            )
        except OSError as exc:
            self._state.close()
            raise WitnessConfigError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(
            "witness %s listening on %s for %d log(s)",
            self.signer.key.to_vkey(),
            self.url,
            len(self.logs),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):  # Server.close_clients() is Python 3.13+
                writer.close()
            await self._server.wait_closed()
        if self._state is not None:
            self._state.close()
            self._state = None

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        assert self._server is not None, "enter the Witness first"
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(self._server.serve_forever(), name="witness.http")
            await stop.wait()
            task.cancel()

    def state(self, origin: str) -> LoggedCheckpoint | None:
        """The newest cosigned checkpoint for ``origin`` (for tests and status)."""
        assert self._state is not None
        return self._state.get(origin)

    def refusals(self) -> list[tuple[str, int, str]]:
        """The inconsistent checkpoints refused so far: (origin, status, reason)."""
        assert self._state is not None
        return self._state.refusals()

    # --- add-checkpoint ------------------------------------------------------------

    async def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) of the reply to an add-checkpoint request."""
        state = self._state
        assert state is not None
        origin = origin_of(body)
        for _ in range(_CAS_TRIES):
            held = None if origin is None else await asyncio.to_thread(state.get, origin)
            stored = None if held is None else WitnessState(held.origin, held.size, held.root)
            now = int(self.clock())
            out = decide(body, logs=self.logs, stored=stored, signer=self.signer, now=now)
            if isinstance(out, Refused):
                if out.status == 422 and origin is not None:
                    # Validly signed but not consistent: evidence of a split view.
                    await asyncio.to_thread(
                        state.refused, origin, out.status, out.reason, body, now
                    )
                    logger.warning("refused a checkpoint of %s: %s", origin, out.reason)
                ctype = SIZE_CONTENT_TYPE if out.status == 409 else "text/plain; charset=utf-8"
                return out.status, ctype, out.body()
            assert isinstance(out, Cosigned)
            note = _request_note(body) + out.lines
            async with self._lock:
                stored_now = await asyncio.to_thread(state.swap, stored, out.state, note, now)
            if stored_now:
                return 200, "text/plain; charset=utf-8", out.lines.encode()
        return 503, "text/plain; charset=utf-8", b"too many concurrent updates, try again\n"

    # --- HTTP -----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            await _respond(writer, 503, "text/plain", b"too many connections\n", keep_alive=False)
            await _close(writer)
            return
        async with self._slots:
            self._writers.add(writer)
            try:
                first = True
                while True:
                    try:
                        request = await self._read_request(reader, first)
                    except _HttpError as exc:
                        await _respond(
                            writer, exc.status, "text/plain", f"{exc}\n".encode(), keep_alive=False
                        )
                        break
                    if request is None:
                        break
                    first = False
                    status, ctype, body = await self._route(request)
                    await _respond(writer, status, ctype, body, keep_alive=request.keep_alive)
                    if not request.keep_alive:
                        break
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client went away; nothing to answer
            finally:
                self._writers.discard(writer)
                await _close(writer)

    async def _read_request(self, reader: asyncio.StreamReader, first: bool) -> _Request | None:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.read_timeout_s if first else cfg.idle_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None  # closed between requests
            raise _HttpError(400, "incomplete request head") from exc
        except asyncio.LimitOverrunError as exc:
            raise _HttpError(431, "request head too large") from exc
        except TimeoutError as exc:
            if first:
                raise _HttpError(408, "request head not received in time") from exc
            return None
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError as exc:
            raise _HttpError(400, "malformed request line") from exc
        if not version.startswith("HTTP/1."):
            raise _HttpError(400, "only HTTP/1.x is spoken here")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    raise _HttpError(400, "malformed header line")
                headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise _HttpError(501, "send a Content-Length body, not a transfer encoding")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _HttpError(400, "bad Content-Length")
        length = int(length_text)
        if length > cfg.max_body_bytes:
            raise _HttpError(413, f"body larger than {cfg.max_body_bytes} bytes")
        try:
            async with asyncio.timeout(cfg.read_timeout_s):
                body = await reader.readexactly(length)
        except TimeoutError as exc:
            raise _HttpError(408, "request body not received in time") from exc
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        return _Request(method, target.split("?", 1)[0], body, keep_alive)

    async def _route(self, request: _Request) -> tuple[int, str, bytes]:
        prefix = self.config.prefix
        text = "text/plain; charset=utf-8"
        if request.path == f"{prefix}/add-checkpoint":
            if request.method != "POST":
                return 405, text, b"add-checkpoint takes POST\n"
            return await self.add_checkpoint(request.body)
        if (
            request.method == "GET"
            and request.path.startswith(prefix + "/")
            and request.path.endswith("/checkpoint")
        ):
            wanted = request.path[len(prefix) + 1 : -len("/checkpoint")]
            for origin in self.logs:
                if hashlib.sha256(origin.encode()).hexdigest() == wanted:
                    assert self._state is not None
                    held = await asyncio.to_thread(self._state.get, origin)
                    if held is not None:
                        return 200, text, held.note.encode()
            return 404, text, b"no checkpoint cosigned for that log\n"
        return 404, text, b"not found\n"


def _request_note(body: bytes) -> str:
    return body.decode("utf-8").partition("\n\n")[2]


async def _respond(
    writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, *, keep_alive: bool
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()

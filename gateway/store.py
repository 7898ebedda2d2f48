"""The log database: entries, Merkle subtree hashes, checkpoints and anchors in SQLite.

WAL mode with ``synchronous=FULL``: once ``commit`` returns, the batch
survives a crash or a power cut. Every perfect subtree hash is stored, so any
inclusion or consistency proof is O(log n) lookups. This module only moves
rows; what goes into them is decided by ``gateway.log``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from ledger_client.merkle import Node

from .errors import StoreError

__all__ = ["SCHEMA_VERSION", "AnchorRow", "CheckpointRow", "EntryRow", "Store"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    idx     INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL,
    sensor  TEXT,
    seq     INTEGER,
    time_ns INTEGER NOT NULL,
    dedup   TEXT,
    data    BLOB NOT NULL
);
CREATE UNIQUE INDEX entries_dedup ON entries (sensor, dedup) WHERE dedup IS NOT NULL;
CREATE INDEX entries_sensor_seq ON entries (sensor, seq) WHERE sensor IS NOT NULL;
CREATE INDEX entries_time ON entries (time_ns);
CREATE TABLE nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    size    INTEGER PRIMARY KEY,
    root    BLOB NOT NULL,
    note    TEXT NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE TABLE anchors (
    checkpoint INTEGER NOT NULL REFERENCES checkpoints (size),
    backend    TEXT NOT NULL,
    digest     BLOB NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'included', 'final')),
    receipt    TEXT NOT NULL DEFAULT '{}',
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (checkpoint, backend)
);
CREATE INDEX anchors_by_backend ON anchors (backend, checkpoint);
CREATE INDEX anchors_open ON anchors (backend, checkpoint) WHERE state != 'final';
"""


@dataclass(frozen=True, slots=True)
class EntryRow:
    index: int
    kind: str
    sensor: str | None
    seq: int | None
    time_ns: int
    dedup: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    size: int
    root: bytes
    note: str
    time_ns: int


@dataclass(frozen=True, slots=True)
class AnchorRow:
    checkpoint: int
    backend: str
    digest: bytes
    state: str
    receipt: str
    attempts: int
    last_error: str | None
    created_ns: int
    updated_ns: int


@contextlib.asynccontextmanager
async def _mapped(what: str) -> AsyncIterator[None]:
    """The one place sqlite3 errors become StoreError."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"log database: {what} failed: {exc}") from exc


class Store:
    """Async access to one log database. Use as ``async with Store(path) as store``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db: aiosqlite.Connection | None = None
        self._closed = False

    async def __aenter__(self) -> Store:
        if self._closed:
            raise StoreError("a closed Store cannot be reopened")
        if self.readonly and not self.path.exists():
            raise StoreError(f"log database {self.path} does not exist")
        async with _mapped("open"):
            if not self.readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA busy_timeout=10000")
            await self._migrate()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def _migrate(self) -> None:
        cur = await self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"
        )
        if await cur.fetchone() is None:
            if self.readonly:
                raise StoreError(f"{self.path} is not a riverseal log database")
            await self.db.executescript(
                "BEGIN IMMEDIATE;"
                + _SCHEMA
                + f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');COMMIT;"
            )
            return
        version = int(await self.get_meta("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this riverseal reads up to "
                f"{SCHEMA_VERSION} — upgrade riverseal, never downgrade a box's data"
            )

    # --- meta -------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with _mapped("reading meta"):
            cur = await self.db.execute("SELECT value FROM meta WHERE key = ?", (key,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        async with _mapped("writing meta"):
            await self.db.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- the log -------------------------------------------------------------

    async def size(self) -> int:
        async with _mapped("counting entries"):
            cur = await self.db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def last_seqs(self) -> dict[str, int]:
        async with _mapped("reading sequence numbers"):
            cur = await self.db.execute(
                "SELECT sensor, MAX(seq) FROM entries WHERE sensor IS NOT NULL GROUP BY sensor"
            )
            return {str(s): int(q) for s, q in await cur.fetchall()}

    async def existing_dedup(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (sensor, dedup key) pairs are already in the log."""
        pairs = list(keys)
        found: set[tuple[str, str]] = set()
        async with _mapped("checking duplicates"):
            for start in range(0, len(pairs), 400):
                chunk = pairs[start : start + 400]
                where = " OR ".join(["(sensor = ? AND dedup = ?)"] * len(chunk))
                cur = await self.db.execute(
                    f"SELECT sensor, dedup FROM entries WHERE {where}",
                    [v for pair in chunk for v in pair],
                )
                found.update((str(s), str(d)) for s, d in await cur.fetchall())
        return found

    async def commit_batch(
        self,
        entries: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        checkpoint: CheckpointRow | None = None,
    ) -> None:
        """Write entries, their subtree hashes and maybe a checkpoint in one transaction."""
        async with _mapped("committing entries"):
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                await self.db.executemany(
                    "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (e.index, e.kind, e.sensor, e.seq, e.time_ns, e.dedup, e.data)
                        for e in entries
                    ],
                )
                await self.db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)
                if checkpoint is not None:
                    await self._insert_checkpoint(checkpoint)
                await self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self.db.execute("ROLLBACK")
                raise

    async def _insert_checkpoint(self, cp: CheckpointRow) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?)",
            (cp.size, cp.root, cp.note, cp.time_ns),
        )

    async def add_checkpoint(self, cp: CheckpointRow) -> None:
        async with _mapped("writing a checkpoint"):
            await self._insert_checkpoint(cp)

    async def nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """Fetch stored subtree hashes: one query for a few, a range query per level for many."""
        wanted = list(nodes)
        if len(wanted) <= 100:  # one proof's worth: one query, point lookups OR-ed
            rows: Iterable[Any] = []
            if wanted:
                where = " OR ".join(["(level = ? AND idx = ?)"] * len(wanted))
                async with _mapped("reading subtree hashes"):
                    cur = await self.db.execute(
                        f"SELECT level, idx, hash FROM nodes WHERE {where}",
                        [v for n in wanted for v in n],
                    )
                    rows = await cur.fetchall()
            found = {Node(int(lv), int(i)): bytes(h) for lv, i, h in rows}
            if len(found) != len(set(wanted)):
                absent = next(x for x in wanted if x not in found)
                raise StoreError(f"log database is missing subtree hashes, e.g. {absent}")
            return found
        by_level: dict[int, list[int]] = {}
        for n in wanted:
            by_level.setdefault(n.level, []).append(n.index)
        out: dict[Node, bytes] = {}
        async with _mapped("reading subtree hashes"):
            for level, idxs in by_level.items():
                lo, hi = min(idxs), max(idxs)
                if len(idxs) * 4 < hi - lo:  # sparse: fetch exactly, in chunks
                    for start in range(0, len(idxs), 500):
                        chunk = idxs[start : start + 500]
                        marks = ",".join("?" * len(chunk))
                        cur = await self.db.execute(
                            f"SELECT idx, hash FROM nodes WHERE level = ? AND idx IN ({marks})",
                            [level, *chunk],
                        )
                        out.update((Node(level, int(i)), bytes(h)) for i, h in await cur.fetchall())
                else:
                    cur = await self.db.execute(
                        "SELECT idx, hash FROM nodes WHERE level = ? AND idx BETWEEN ? AND ?",
                        (level, lo, hi),
                    )
                    out.update((Node(level, int(i)), bytes(h)) for i, h in await cur.fetchall())
        missing = [x for x in wanted if x not in out]
        if missing:
            raise StoreError(f"log database is missing subtree hashes, e.g. {missing[0]}")
        return out

    async def entries(self, first: int, last: int) -> AsyncIterator[EntryRow]:
        async with (
            _mapped("reading entries"),
            self.db.execute(
                "SELECT idx, kind, sensor, seq, time_ns, dedup, data FROM entries "
                "WHERE idx BETWEEN ? AND ? ORDER BY idx",
                (first, last),
            ) as cur,
        ):
            async for r in cur:
                yield EntryRow(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], bytes(r[6]))

    async def index_range(
        self, since_ns: int | None, until_ns: int | None
    ) -> tuple[int, int] | None:
        """First and last index of entries received in [since, until]; None if none."""
        async with _mapped("selecting entries"):
            cur = await self.db.execute(
                "SELECT MIN(idx), MAX(idx) FROM entries WHERE time_ns >= ? AND time_ns <= ?",
                (
                    since_ns if since_ns is not None else -(2**62),
                    until_ns if until_ns is not None else 2**62,
                ),
            )
            row = await cur.fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1])

    # --- checkpoints and anchors ----------------------------------------------

    async def checkpoints(
        self, min_size: int = 0, max_size: int | None = None
    ) -> list[CheckpointRow]:
        async with _mapped("reading checkpoints"):
            cur = await self.db.execute(
                "SELECT size, root, note, time_ns FROM checkpoints WHERE size >= ? AND size <= ? "
                "ORDER BY size",
                (min_size, max_size if max_size is not None else 2**62),
            )
            return [
                CheckpointRow(int(s), bytes(r), n, int(t)) for s, r, n, t in await cur.fetchall()
            ]

    async def latest_checkpoint(self) -> CheckpointRow | None:
        async with _mapped("reading checkpoints"):
            cur = await self.db.execute(
                "SELECT size, root, note, time_ns FROM checkpoints ORDER BY size DESC LIMIT 1"
            )
            row = await cur.fetchone()
        return (
            None if row is None else CheckpointRow(int(row[0]), bytes(row[1]), row[2], int(row[3]))
        )

    async def anchors(self, backend: str | None = None) -> list[AnchorRow]:
        async with _mapped("reading anchors"):
            if backend is None:
                cur = await self.db.execute(
                    f"SELECT {_ANCHOR_COLS} FROM anchors ORDER BY checkpoint"
                )
            else:
                cur = await self.db.execute(
                    f"SELECT {_ANCHOR_COLS} FROM anchors WHERE backend = ? ORDER BY checkpoint",
                    (backend,),
                )
            return [_anchor_row(r) for r in await cur.fetchall()]

    async def open_anchors(self, backend: str) -> list[AnchorRow]:
        """Anchors of ``backend`` not yet final: the few the anchorer must poll."""
        async with _mapped("reading anchors"):
            cur = await self.db.execute(
                f"SELECT {_ANCHOR_COLS} FROM anchors WHERE backend = ? AND state != 'final' "
                "ORDER BY checkpoint",
                (backend,),
            )
            return [_anchor_row(r) for r in await cur.fetchall()]

    async def anchor_marks(self, backend: str) -> tuple[int | None, int | None]:
        """(newest final, newest of any state) anchored checkpoint size of ``backend``."""
        async with _mapped("reading anchors"):
            cur = await self.db.execute(
                "SELECT (SELECT MAX(checkpoint) FROM anchors "
                "        WHERE backend = ?1 AND state = 'final'),"
                "       (SELECT MAX(checkpoint) FROM anchors WHERE backend = ?1)",
                (backend,),
            )
            row = await cur.fetchone()
        assert row is not None
        return (None if row[0] is None else int(row[0]), None if row[1] is None else int(row[1]))

    async def last_final_anchor(self, backend: str) -> AnchorRow | None:
        """The final anchor of ``backend`` with the largest checkpoint, if any."""
        async with _mapped("reading anchors"):
            cur = await self.db.execute(
                f"SELECT {_ANCHOR_COLS} FROM anchors WHERE backend = ? AND state = 'final' "
                "ORDER BY checkpoint DESC LIMIT 1",
                (backend,),
            )
            row = await cur.fetchone()
        return None if row is None else _anchor_row(row)

    async def anchor_backends(self) -> list[str]:
        """Every backend label that has an anchor row."""
        async with _mapped("reading anchors"):
            cur = await self.db.execute("SELECT DISTINCT backend FROM anchors ORDER BY backend")
            return [str(b) for (b,) in await cur.fetchall()]

    async def drop_unsent_anchor(self, checkpoint: int, backend: str) -> bool:
        """Delete an anchor that never reached its ledger (pending, empty receipt).

        Only such a row can be deleted: one with a receipt may be on a ledger.
        """
        async with _mapped("dropping an unsent anchor"):
            cur = await self.db.execute(
                "DELETE FROM anchors WHERE checkpoint = ? AND backend = ? "
                "AND state = 'pending' AND receipt = '{}'",
                (checkpoint, backend),
            )
            return bool(cur.rowcount)

    async def put_anchor(self, row: AnchorRow) -> None:
        async with _mapped("writing an anchor"):
            await self.db.execute(
                f"INSERT INTO anchors ({_ANCHOR_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (checkpoint, backend) DO UPDATE SET state = excluded.state, "
                "receipt = excluded.receipt, attempts = excluded.attempts, "
                "last_error = excluded.last_error, updated_ns = excluded.updated_ns",
                (
                    row.checkpoint,
                    row.backend,
                    row.digest,
                    row.state,
                    row.receipt,
                    row.attempts,
                    row.last_error,
                    row.created_ns,
                    row.updated_ns,
                ),
            )


_ANCHOR_COLS = (
    "checkpoint, backend, digest, state, receipt, attempts, last_error, created_ns, updated_ns"
)


def _anchor_row(r: Any) -> AnchorRow:
    return AnchorRow(
        int(r[0]), r[1], bytes(r[2]), r[3], r[4], int(r[5]), r[6], int(r[7]), int(r[8])
    )

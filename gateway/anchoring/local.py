"""The ``local`` backend: an append-only SQLite journal on the box itself.

It proves nothing against the box's owner — the verifier reports it as
"local, not independent" — but it lets a demo or an offline station run the
whole anchoring path, and records when each digest was journalled.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiosqlite

from ledger_client.records import format_time

from ..errors import LedgerRejected, LedgerUnavailable
from .backend import AnchorProgress

__all__ = ["LocalJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq        INTEGER PRIMARY KEY,
    digest     BLOB NOT NULL UNIQUE,
    checkpoint INTEGER NOT NULL,
    time       TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the anchor journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the anchor journal is append-only'); END;
"""


class LocalJournal:
    name = "local"

    def __init__(self, path: Path, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._clock = clock
        self._db: aiosqlite.Connection | None = None

    async def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            try:
                self._db = await aiosqlite.connect(self.path, isolation_level=None)
                await self._db.execute("PRAGMA journal_mode=WAL")
                await self._db.execute("PRAGMA synchronous=FULL")
                await self._db.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise LedgerUnavailable(f"local journal {self.path}: {exc}") from exc
        return self._db

    async def submit(self, digest: bytes, checkpoint_size: int) -> AnchorProgress:
        db = await self._conn()
        try:
            await db.execute(
                "INSERT OR IGNORE INTO journal (digest, checkpoint, time) VALUES (?, ?, ?)",
                (digest, checkpoint_size, format_time(self._clock())),
            )
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"local journal {self.path}: {exc}") from exc
        return await self.poll(digest, {})

    async def poll(self, digest: bytes, receipt: Mapping[str, Any]) -> AnchorProgress:
        db = await self._conn()
        try:
            cur = await db.execute("SELECT seq, time FROM journal WHERE digest = ?", (digest,))
            row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"local journal {self.path}: {exc}") from exc
        if row is None:
            raise LedgerRejected(f"digest {digest.hex()} is not in the local journal")
        return AnchorProgress(
            "final", {"journal": self.path.name, "seq": int(row[0]), "time": str(row[1])}
        )

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                await db.close()

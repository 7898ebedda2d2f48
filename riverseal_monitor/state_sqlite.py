"""The monitor's state: the ``State`` protocol and its SQLite implementation (docs/monitor.md §5).

Per box the last verified checkpoint (with the tree's right edge, so a restart
resumes without refetching), the alerts with their open/cleared life, and the
verified series (readings, gap spans) for display. A step's readings, gaps and
checkpoint go in one transaction: after a crash the monitor resumes at the last
committed checkpoint and re-inserting what a lost step had written is a no-op,
so nothing is lost or counted twice. The SQL is plain (no SQLite-only syntax but
the ``INTEGER PRIMARY KEY`` row id) so a PostgreSQL backend can implement the
same protocol.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ledger_client.merkle import HASH_SIZE

from .anchors import AnchorMark
from .errors import StateError
from .follow import Alert, GapSpan, Reading, Verified
from .state import (
    ALERT_COLUMNS,
    ANCHOR_UPSERT,
    SERIES_SCHEMA,
    alert_docs,
    alert_values,
    anchor_values,
)

__all__ = ["SCHEMA", "SqliteState", "State"]

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS boxes (
    origin      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    root        BLOB NOT NULL,
    edge        BLOB NOT NULL,
    note        TEXT NOT NULL,
    cosigned    TEXT,
    verified_s  DOUBLE PRECISION NOT NULL,
    entries     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id          INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    key         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    sensor      TEXT,
    entry       BIGINT,
    size        BIGINT,
    raised_s    DOUBLE PRECISION NOT NULL,
    cleared_s   DOUBLE PRECISION,
    message     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (origin, key, cleared_s);
"""
    + SERIES_SCHEMA
)


class State(Protocol):
    """What the monitor needs of its database; every call may block on IO, so async."""

    async def load(self, origin: str) -> Verified | None:
        """The last verified checkpoint of ``origin`` (None: never verified)."""
        ...

    async def commit(
        self,
        origin: str,
        verified: Verified,
        readings: Sequence[Reading],
        gaps: Sequence[GapSpan],
        cosigned: str | None,
        now: float,
    ) -> None:
        """A verified step, in one transaction."""
        ...

    async def open_alerts(self) -> set[tuple[str, str]]:
        """(origin, key) of every alert not cleared."""
        ...

    async def raise_alert(self, alert: Alert) -> bool:
        """Store ``alert`` unless one with its origin and key is open; whether it was new."""
        ...

    async def clear(self, origin: str, keys: Iterable[str], now: float) -> list[str]:
        """Close the open alerts of ``origin`` with these keys; the keys that were open."""
        ...

    async def record_anchors(self, origin: str, marks: Sequence[AnchorMark], now: float) -> None:
        """Anchors read from ``origin``'s manifest, new or changed (``anchors`` table)."""
        ...

    async def close(self) -> None: ...


class SqliteState:
    """``State`` in one SQLite file (WAL); calls run in a worker thread, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # No fsync per step: everything here is re-derived from the boxes' mirrors,
            # so a power cut costs re-verifying the last steps, not evidence.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"monitor state {path}: {exc}") from exc

    async def __aenter__(self) -> SqliteState:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _run(self, fn: Any, *args: Any) -> Any:
        with self._mutex:
            try:
                return fn(*args)
            except sqlite3.Error as exc:
                raise StateError(f"monitor state {self.path}: {exc}") from exc

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(self._run, fn, *args)

    # --- boxes ---------------------------------------------------------------------------

    def _load(self, origin: str) -> Verified | None:
        row = self.db.execute(
            "SELECT size, root, edge, note FROM boxes WHERE origin = ?", (origin,)
        ).fetchone()
        if row is None:
            return None
        edge = bytes(row[2])
        hashes = tuple(edge[i : i + HASH_SIZE] for i in range(0, len(edge), HASH_SIZE))
        return Verified(int(row[0]), bytes(row[1]), hashes, str(row[3]))

    async def load(self, origin: str) -> Verified | None:
        result: Verified | None = await self._call(self._load, origin)
        return result

    def _commit(
        self,
        origin: str,
        v: Verified,
        readings: Sequence[Reading],
        gaps: Sequence[GapSpan],
        cosigned: str | None,
        now: float,
    ) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO readings (origin, idx, sensor, time, time_s, qc, vals, verified_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (origin, idx) DO NOTHING",
                [
                    (
                        r.origin,
                        r.index,
                        r.sensor,
                        r.time,
                        r.time_s,
                        "".join("-" if f is None else str(f) for *_, f in r.values),
                        json.dumps([[q, u, x, f] for q, u, x, f in r.values]),
                        now,
                    )
                    for r in readings
                ],
            )
            db.executemany(
                "INSERT INTO gaps (origin, idx, sensor, start, stop, reason) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (origin, idx) DO NOTHING",
                [(g.origin, g.index, g.sensor, g.start, g.end, g.reason) for g in gaps],
            )
            cur = db.execute(
                "UPDATE boxes SET size = ?, root = ?, edge = ?, note = ?, cosigned = ?, "
                "verified_s = ?, entries = ? WHERE origin = ?",
                (v.size, v.root, b"".join(v.edge), v.note, cosigned, now, v.size, origin),
            )
            if cur.rowcount == 0:
                db.execute(
                    "INSERT INTO boxes (origin, size, root, edge, note, cosigned, verified_s, "
                    "entries) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (origin, v.size, v.root, b"".join(v.edge), v.note, cosigned, now, v.size),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def commit(
        self,
        origin: str,
        verified: Verified,
        readings: Sequence[Reading],
        gaps: Sequence[GapSpan],
        cosigned: str | None,
        now: float,
    ) -> None:
        await self._call(self._commit, origin, verified, readings, gaps, cosigned, now)

    # --- alerts --------------------------------------------------------------------------

    def _open(self) -> set[tuple[str, str]]:
        rows = self.db.execute("SELECT origin, key FROM alerts WHERE cleared_s IS NULL")
        return {(str(o), str(k)) for o, k in rows.fetchall()}

    async def open_alerts(self) -> set[tuple[str, str]]:
        result: set[tuple[str, str]] = await self._call(self._open)
        return result

    def _raise(self, a: Alert) -> bool:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT id FROM alerts WHERE origin = ? AND key = ? AND cleared_s IS NULL",
                (a.origin, a.key),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO alerts (origin, key, kind, sensor, entry, size, raised_s, "
                    "message, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    alert_values(a),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return row is None

    async def raise_alert(self, alert: Alert) -> bool:
        result: bool = await self._call(self._raise, alert)
        return result

    def _clear(self, origin: str, keys: list[str], now: float) -> list[str]:
        cleared = []
        for key in keys:
            cur = self.db.execute(
                "UPDATE alerts SET cleared_s = ? WHERE origin = ? AND key = ? "
                "AND cleared_s IS NULL",
                (now, origin, key),
            )
            if cur.rowcount:
                cleared.append(key)
        return cleared

    async def clear(self, origin: str, keys: Iterable[str], now: float) -> list[str]:
        result: list[str] = await self._call(self._clear, origin, sorted(set(keys)), now)
        return result

    def _anchors(self, origin: str, marks: Sequence[AnchorMark], now: float) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(ANCHOR_UPSERT, anchor_values(origin, marks, now))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    async def record_anchors(self, origin: str, marks: Sequence[AnchorMark], now: float) -> None:
        if marks:
            await self._call(self._anchors, origin, marks, now)

    async def close(self) -> None:
        with self._mutex:
            self.db.close()


def read_alerts(path: Path, *, open_only: bool = False) -> list[dict[str, Any]]:
    """Every alert in the state file at ``path``, oldest first (``riverseal-monitor alerts``)."""
    where = " WHERE cleared_s IS NULL" if open_only else ""
    try:
        with _readonly(path) as db:
            rows = db.execute(f"SELECT {ALERT_COLUMNS} FROM alerts{where} ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise StateError(f"monitor state {path}: {exc}") from exc
    return alert_docs(rows)


def read_status(path: Path) -> list[dict[str, Any]]:
    """Per box: verified size, when, readings and open alerts (``riverseal-monitor status``)."""
    try:
        with _readonly(path) as db:
            boxes = db.execute(
                "SELECT origin, size, verified_s, cosigned IS NOT NULL FROM boxes ORDER BY origin"
            ).fetchall()
            out = []
            for origin, size, verified_s, cosigned in boxes:
                sensors = db.execute(
                    "SELECT sensor, COUNT(*), MAX(time) FROM readings WHERE origin = ? "
                    "GROUP BY sensor ORDER BY sensor",
                    (origin,),
                ).fetchall()
                (alerts,) = db.execute(
                    "SELECT COUNT(*) FROM alerts WHERE origin = ? AND cleared_s IS NULL",
                    (origin,),
                ).fetchone()
                out.append(
                    {
                        "origin": origin,
                        "verified_size": size,
                        "verified_s": verified_s,
                        "cosigned": bool(cosigned),
                        "open_alerts": alerts,
                        "sensors": {s: {"readings": n, "last": t} for s, n, t in sensors},
                    }
                )
    except sqlite3.Error as exc:
        raise StateError(f"monitor state {path}: {exc}") from exc
    return out


class _readonly:  # a context manager, named like one
    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise StateError(f"monitor state {path}: no such file")
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()

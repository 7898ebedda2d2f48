"""The monitor's state in PostgreSQL, shared by several instances (docs/monitor.md).

Same tables as the SQLite state (``State``), plus what instances share:

- ``leases``: one row per box, ``owner`` instance and ``expires_s`` on the
  database's clock; ``claim`` renews, takes free or expired rows up to a fair
  share and gives back any excess, all under one advisory lock so two instances
  never compute their shares from different counts.
- ``instances``: a heartbeat per instance; the live ones divide the boxes.
- alerts: a unique index on (origin, key) among open alerts, so raising is
  ``INSERT … ON CONFLICT DO NOTHING``: an instance that takes a box over and
  finds the condition again cannot raise it twice.
- ``boxes`` only moves forward (an upsert that keeps the larger size): a step
  committed late by an instance that lost its lease cannot undo a newer one.
- announcements are handed over with ``NOTIFY riverseal_monitor`` (the note is
  the payload); every instance ``LISTEN``s and keeps those of its boxes.

psycopg 3 (``pip install 'riverseal[monitor]'``); one connection for the calls
(serialised), one for ``LISTEN``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any

import psycopg

from ledger_client.merkle import HASH_SIZE

from .anchors import AnchorMark
from .errors import StateError
from .follow import Alert, GapSpan, Reading, Verified
from .state import (
    ALERT_COLUMNS,
    ANCHOR_UPSERT,
    ANCHORS_SQL,
    SERIES_SCHEMA,
    alert_docs,
    alert_values,
    anchor_values,
    series_doc,
)

__all__ = ["CHANNEL", "PostgresState", "is_postgres_url", "read_alerts_pg", "read_status_pg"]

CHANNEL = "riverseal_monitor"
"""The NOTIFY channel announcements are forwarded on."""

_LOCK = 0x7276_7365_616C  # pg_advisory_xact_lock key: schema creation and lease claims
_NOTIFY_MAX = 7900  # NOTIFY payloads are capped at 8000 bytes

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS boxes (
    origin      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    root        BYTEA NOT NULL,
    edge        BYTEA NOT NULL,
    note        TEXT NOT NULL,
    cosigned    TEXT,
    verified_s  DOUBLE PRECISION NOT NULL,
    entries     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id          BIGSERIAL PRIMARY KEY,
    origin      TEXT NOT NULL,
    key         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    sensor      TEXT,
    entry       BIGINT,
    size        BIGINT,
    raised_s    DOUBLE PRECISION NOT NULL,
    cleared_s   DOUBLE PRECISION,
    message     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    raised_by   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts (origin, key)
    WHERE cleared_s IS NULL;
"""
    + SERIES_SCHEMA
    + """
CREATE TABLE IF NOT EXISTS leases (
    origin      TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires_s   DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id          TEXT PRIMARY KEY,
    seen_s      DOUBLE PRECISION NOT NULL
);
"""
)

_NOW = "extract(epoch from clock_timestamp())"


def is_postgres_url(state: str) -> bool:
    """Whether a ``state`` setting names a PostgreSQL database rather than a file."""
    return state.startswith(("postgresql://", "postgres://"))


def _redact(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.split(':', 2)[0]}:…@{tail}" if at and head.count(":") >= 2 else url


class PostgresState:
    """``State``, ``Leases`` and ``Display`` in one PostgreSQL database."""

    def __init__(self, url: str, *, instance: str = "") -> None:
        self.url = url
        self.instance = instance
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._listen: psycopg.AsyncConnection[Any] | None = None
        self._mutex = asyncio.Lock()

    def _error(self, exc: BaseException) -> StateError:
        return StateError(f"monitor state {_redact(self.url)}: {exc}")

    async def __aenter__(self) -> PostgresState:
        try:
            self._db = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            async with self._db.transaction():
                await self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                await self._db.execute(SCHEMA)
        except psycopg.Error as exc:
            await self.close()
            raise self._error(exc) from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def db(self) -> psycopg.AsyncConnection[Any]:
        if self._db is None:
            raise StateError("monitor state: not open (use it as an async context manager)")
        return self._db

    async def close(self) -> None:
        for conn in (self._listen, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._listen = None

    # --- State -----------------------------------------------------------------------

    async def load(self, origin: str) -> Verified | None:
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "SELECT size, root, edge, note FROM boxes WHERE origin = %s", (origin,)
                )
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        if row is None:
            return None
        edge = bytes(row[2])
        hashes = tuple(edge[i : i + HASH_SIZE] for i in range(0, len(edge), HASH_SIZE))
        return Verified(int(row[0]), bytes(row[1]), hashes, str(row[3]))

    async def commit(
        self,
        origin: str,
        verified: Verified,
        readings: Sequence[Reading],
        gaps: Sequence[GapSpan],
        cosigned: str | None,
        now: float,
    ) -> None:
        v = verified
        rows = [
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
        ]
        async with self._mutex:
            try:
                async with self.db.transaction(), self.db.cursor() as cur:
                    if rows:
                        await cur.executemany(
                            "INSERT INTO readings (origin, idx, sensor, time, time_s, qc, vals, "
                            "verified_s) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                            "ON CONFLICT (origin, idx) DO NOTHING",
                            rows,
                        )
                    if gaps:
                        await cur.executemany(
                            "INSERT INTO gaps (origin, idx, sensor, start, stop, reason) "
                            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (origin, idx) DO NOTHING",
                            [(g.origin, g.index, g.sensor, g.start, g.end, g.reason) for g in gaps],
                        )
                    # Forward only: a late commit of an instance that lost the box is a no-op.
                    await cur.execute(
                        "INSERT INTO boxes (origin, size, root, edge, note, cosigned, verified_s, "
                        "entries) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
                        "root = excluded.root, edge = excluded.edge, note = excluded.note, "
                        "cosigned = excluded.cosigned, verified_s = excluded.verified_s, "
                        "entries = excluded.entries WHERE boxes.size < excluded.size",
                        (origin, v.size, v.root, b"".join(v.edge), v.note, cosigned, now, v.size),
                    )
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    async def open_alerts(self) -> set[tuple[str, str]]:
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "SELECT origin, key FROM alerts WHERE cleared_s IS NULL"
                )
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return {(str(o), str(k)) for o, k in rows}

    async def raise_alert(self, alert: Alert) -> bool:
        a = alert
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "INSERT INTO alerts (origin, key, kind, sensor, entry, size, raised_s, "
                    "message, detail, raised_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (origin, key) WHERE cleared_s IS NULL DO NOTHING RETURNING id",
                    (*alert_values(a), self.instance or None),
                )
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return row is not None

    async def clear(self, origin: str, keys: Iterable[str], now: float) -> list[str]:
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "UPDATE alerts SET cleared_s = %s WHERE origin = %s AND key = ANY(%s) "
                    "AND cleared_s IS NULL RETURNING key",
                    (now, origin, sorted(set(keys))),
                )
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return sorted(str(k) for (k,) in rows)

    async def record_anchors(self, origin: str, marks: Sequence[AnchorMark], now: float) -> None:
        if not marks:
            return
        async with self._mutex:
            try:
                async with self.db.transaction(), self.db.cursor() as cur:
                    await cur.executemany(
                        ANCHOR_UPSERT.replace("?", "%s"), anchor_values(origin, marks, now)
                    )
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    # --- Leases ----------------------------------------------------------------------

    async def claim(self, origins: Sequence[str], owner: str, lease_s: float) -> set[str]:
        wanted = sorted(set(origins))
        async with self._mutex:
            try:
                async with self.db.transaction(), self.db.cursor() as cur:
                    await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                    await cur.execute(f"SELECT {_NOW}")
                    (now,) = await cur.fetchone() or (0.0,)
                    now = float(now)
                    await cur.execute(
                        "INSERT INTO instances (id, seen_s) VALUES (%s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET seen_s = excluded.seen_s",
                        (owner, now),
                    )
                    await cur.execute(
                        "DELETE FROM instances WHERE seen_s < %s", (now - 10 * lease_s,)
                    )
                    await cur.execute(
                        "SELECT count(*) FROM instances WHERE seen_s >= %s", (now - lease_s,)
                    )
                    (live,) = await cur.fetchone() or (1,)
                    share = math.ceil(len(wanted) / max(1, int(live)))
                    await cur.execute(
                        "SELECT origin FROM leases WHERE owner = %s AND expires_s >= %s "
                        "AND origin = ANY(%s) ORDER BY origin",
                        (owner, now, wanted),
                    )
                    mine = [str(o) for (o,) in await cur.fetchall()]
                    if len(mine) > share:  # another instance came: give it its share
                        await cur.execute(
                            "DELETE FROM leases WHERE owner = %s AND origin = ANY(%s)",
                            (owner, mine[share:]),
                        )
                        mine = mine[:share]
                    await cur.execute(
                        "UPDATE leases SET expires_s = %s WHERE owner = %s AND origin = ANY(%s)",
                        (now + lease_s, owner, mine),
                    )
                    if len(mine) < share:
                        # Free or expired boxes, in an order of the owner's own so two
                        # instances starting together reach for different ones first.
                        await cur.execute(
                            "SELECT o FROM unnest(%s::text[]) AS o WHERE NOT EXISTS "
                            "(SELECT 1 FROM leases l WHERE l.origin = o AND l.expires_s >= %s) "
                            "ORDER BY md5(o || %s) LIMIT %s",
                            (wanted, now, owner, share - len(mine)),
                        )
                        free = [str(o) for (o,) in await cur.fetchall()]
                        if free:
                            await cur.executemany(
                                "INSERT INTO leases (origin, owner, expires_s) "
                                "VALUES (%s, %s, %s) ON CONFLICT (origin) DO UPDATE "
                                "SET owner = excluded.owner, expires_s = excluded.expires_s",
                                [(o, owner, now + lease_s) for o in free],
                            )
                        mine += free
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return set(mine)

    async def release(self, owner: str) -> None:
        async with self._mutex:
            try:
                async with self.db.transaction():
                    await self.db.execute("DELETE FROM leases WHERE owner = %s", (owner,))
                    await self.db.execute("DELETE FROM instances WHERE id = %s", (owner,))
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    async def forward(self, note: str) -> None:
        if len(note.encode()) > _NOTIFY_MAX:
            return  # not a note a box signs; the owner's poll finds the real one
        async with self._mutex:
            try:
                await self.db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, note))
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    async def forwarded(self) -> AsyncGenerator[str, None]:
        try:
            if self._listen is None:
                self._listen = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                await self._listen.execute(f"LISTEN {CHANNEL}")
            async for n in self._listen.notifies():
                yield n.payload
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    async def last_readings(self, origin: str) -> tuple[dict[str, float], float]:
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "SELECT sensor, max(time_s) FROM readings WHERE origin = %s GROUP BY sensor",
                    (origin,),
                )
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        last = {str(s): float(t) for s, t in rows}
        return last, max(last.values(), default=0.0)

    async def owners(self) -> dict[str, str]:
        """Each leased box's owner, expired or not (for status and tests)."""
        async with self._mutex:
            try:
                cur = await self.db.execute("SELECT origin, owner FROM leases")
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return {str(o): str(w) for o, w in rows}

    # --- Display ---------------------------------------------------------------------

    async def stations(self) -> list[dict[str, Any]]:
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "SELECT b.origin, b.size, b.verified_s, l.owner, "
                    "(SELECT array_agg(a.kind) FROM alerts a WHERE a.origin = b.origin "
                    " AND a.cleared_s IS NULL), "
                    "(SELECT json_build_object('kind', a.kind, 'message', a.message, "
                    " 'time_s', a.raised_s, 'cleared_s', a.cleared_s) FROM alerts a "
                    " WHERE a.origin = b.origin ORDER BY a.id DESC LIMIT 1) "
                    "FROM boxes b LEFT JOIN leases l ON l.origin = b.origin ORDER BY b.origin"
                )
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return [
            {
                "origin": o,
                "verified_size": int(size),
                "verified_s": float(vs),
                "owner": owner,
                "open": sorted(kinds or []),
                "last_alert": last,
            }
            for o, size, vs, owner, kinds, last in rows
        ]

    async def series(self, origin: str, after: float, limit: int) -> dict[str, Any]:
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "SELECT sensor, time_s, vals FROM (SELECT sensor, time_s, vals, "
                    "row_number() OVER (PARTITION BY sensor ORDER BY time_s DESC) AS n "
                    "FROM readings WHERE origin = %s AND time_s > %s) r WHERE n <= %s "
                    "ORDER BY sensor, time_s",
                    (origin, after, limit),
                )
                readings = await cur.fetchall()
                cur = await self.db.execute(
                    "SELECT sensor, start, stop, reason FROM gaps WHERE origin = %s ORDER BY idx",
                    (origin,),
                )
                gaps = await cur.fetchall()
                cur = await self.db.execute(
                    "SELECT size, verified_s FROM boxes WHERE origin = %s", (origin,)
                )
                box = await cur.fetchone()
                cur = await self.db.execute(ANCHORS_SQL.replace("?", "%s"), (origin,))
                anchors = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return series_doc(readings, gaps, box, anchors)

    async def cosigned(self, origin: str) -> str | None:
        async with self._mutex:
            try:
                cur = await self.db.execute(
                    "SELECT cosigned FROM boxes WHERE origin = %s", (origin,)
                )
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return None if row is None or row[0] is None else str(row[0])


async def read_alerts_pg(url: str, *, open_only: bool = False) -> list[dict[str, Any]]:
    """``riverseal-monitor alerts`` on a PostgreSQL state: every alert, oldest first."""
    where = " WHERE cleared_s IS NULL" if open_only else ""
    async with PostgresState(url) as st:
        try:
            cur = await st.db.execute(f"SELECT {ALERT_COLUMNS} FROM alerts{where} ORDER BY id")
            rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise st._error(exc) from exc
    return alert_docs(rows)


async def read_status_pg(url: str) -> list[dict[str, Any]]:
    """``riverseal-monitor status`` on a PostgreSQL state, as ``read_status`` gives it,
    with each box's lease owner."""
    async with PostgresState(url) as st:
        try:
            cur = await st.db.execute(
                "SELECT b.origin, b.size, b.verified_s, b.cosigned IS NOT NULL, l.owner, "
                "(SELECT count(*) FROM alerts a WHERE a.origin = b.origin "
                " AND a.cleared_s IS NULL) FROM boxes b LEFT JOIN leases l "
                "ON l.origin = b.origin ORDER BY b.origin"
            )
            boxes = await cur.fetchall()
            cur = await st.db.execute(
                "SELECT origin, sensor, count(*), max(time) FROM readings "
                "GROUP BY origin, sensor ORDER BY origin, sensor"
            )
            sensors = await cur.fetchall()
        except psycopg.Error as exc:
            raise st._error(exc) from exc
    per: dict[str, dict[str, Any]] = {}
    for origin, sensor, n, last in sensors:
        per.setdefault(origin, {})[sensor] = {"readings": int(n), "last": last}
    return [
        {
            "origin": origin,
            "verified_size": int(size),
            "verified_s": float(verified_s),
            "cosigned": bool(cosigned),
            "owner": owner,
            "open_alerts": int(alerts),
            "sensors": per.get(origin, {}),
        }
        for origin, size, verified_s, cosigned, owner, alerts in boxes
    ]

"""The log database: entries, Merkle subtree hashes, checkpoints and anchors in SQLite.

WAL mode with ``synchronous=FULL``: once ``commit`` returns, the batch
survives a crash or a power cut. This module only moves rows; what goes into
them is decided by ``gateway.log``.

Schema version 2 keeps the perfect subtree hashes of the tile levels only —
tree levels 0, 8, 16, …, exactly the hashes C2SP tlog-tiles hash tiles hold —
so hash tile (L, N) is one range query over 256 rows of tree level 8·L, and
the table holds about 1.004 rows per entry instead of 2. A subtree at tree
level 8·l + r is the perfect root of 2**r consecutive level-8·l hashes, so any
inclusion or consistency proof is still O(log n) range lookups (each at most
128 rows) plus at most 127 hashes per element.

A version 1 database (every level kept) is migrated on its first writable
open: copied with SQLite's online backup to ``<name>.v1-backup``, the copy
checked (``PRAGMA integrity_check`` and the root of its latest checkpoint
recomputed the version 2 way), and only then the live file changed in one
transaction. A read-only open reads version 1 as it is.

Schema version 3 replaces the index on (sensor, seq) by a ``sensors`` table —
each sensor's newest seq, its index and the last instant its records cover —
upserted once per sensor per batch in the batch's transaction: the index put a
page of its own under every reading. A version 2 database gets the table filled
from the index and the index dropped in one transaction at its first writable
open; a read-only open reads version 2 (or 1) on the index as it is.

Schema version 4 (new stores only) indexes duplicates by a number, ``dkey``
(``dedup_number``), instead of the dedup key's text: an index entry of some 15
bytes instead of 70, a third fewer pages written per commit. A version 3 store
keeps its text index and its version: converting it would mean reading every
row of a long log at the first start after an upgrade.

An entry's ``data`` column holds its bytes deflated (``encode_data``: a 0x01
byte, then raw deflate with a preset dictionary of a record's keys) whenever
that is shorter: a ~500-byte signed record shrinks to some 150–250 bytes, so
it costs a share of a 512-byte leaf page instead of an overflow page, written
to the WAL and again to the database file. Rows written before, raw JSON
(``{`` first), and bodies pruned by retention (empty) read as they are; every
read here returns the original bytes (``decode_data``), so leaf hashes, entry
bundles and exports are over the same bytes as before.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import zlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiosqlite

from ledger_client.errors import LedgerClientError
from ledger_client.merkle import EMPTY_ROOT, Frontier, Node
from ledger_client.records import parse_time
from ledger_client.tiles import TILE_HEIGHT, TILE_WIDTH, TileBuilder, encode_entry_bundle

from .errors import CorruptDatabase, StorageRefused, StoreError

__all__ = [
    "SCHEMA_VERSION",
    "AnchorRow",
    "CheckpointRow",
    "EntryRow",
    "Store",
    "decode_data",
    "encode_data",
    "file_problem",
    "header_problem",
    "store_error",
    "store_problems",
]

SCHEMA_VERSION = 4
"""4: entries carry ``dkey``, a number made from the dedup key (``dedup_number``),
indexed instead of the dedup text (new stores only: a version 3 store keeps its layout).
3: a ``sensors`` table instead of the (sensor, seq) index. 2: only tile-level
subtree hashes (tree levels 0, 8, 16, …). 1: every level."""

logger = logging.getLogger(__name__)

PAGE_SIZE = 1024
"""Page size of a new log database. Each commit writes every page it dirtied to the
WAL again: the tails of the entries, leaves, dedup and time trees, page 1 and the
sensors table. At SQLite's default of 4096 that is ~20 KB per commit; at 512 an entry
(~300 bytes deflated) takes a page of its own, at 1024 three share one. Measured
(benchmarks/bench_field_rates.py, 10 readings/s): 1024 writes some 7 % less than 512."""

WAL_AUTOCHECKPOINT_BYTES = 4 << 20
"""WAL size (in pages of the database's own size) before SQLite copies it into the
database file: a page committed many times in between (a sensor's index leaf) is
copied once. SQLite's default is 1000 pages."""

_DEFLATED = b"\x01"
"""First byte of a ``data`` value deflated without a dictionary (read, no longer written)."""

_DEFLATED_DICT = b"\x02"
"""First byte of a ``data`` value deflated with ``_DICTIONARY``. Neither marker is ever the
first byte of an entry (JSON, ``{``) or of a pruned body (empty)."""

# The preset dictionary of ``_DEFLATED_DICT``: a record's keys and constant values, so a
# record deflates to about a third (its signature and values) instead of two thirds,
# and two or three rows share a 512-byte leaf. Frozen: rows written with it must
# inflate forever; a different dictionary needs a marker of its own.
_DICTIONARY = (
    b'{"rec":{"clock":"unsynced","detail":{},"device":"rs-","event":"boot","from":"'
    b'2026-01-01T00:00:00.000000Z","index":0,"key":"","kind":"gap","reason":"sensor silent",'
    b'"sensor":"","seq":0,"src_seq_from":0,"src_seq_to":0,"time":"2026-01-01T00:00:00.000000Z",'
    b'"to":"2026-01-01T00:00:00.000000Z","v":1},"sig":""}'
    b'{"rec":{"clock":"synced","device":"rs-","index":0,"key":"","kind":"reading","raw":"{\\"'
    b'","sensor":"","sensor_time":"2026-01-01T00:00:00.000000Z","seq":0,"src_seq":0,'
    b'"time":"2026-01-01T00:00:00.000000Z","v":1,"values":[{"q":"ph","qc":{"flag":1,'
    b'"tests":"1111"},"u":"pH","v":7.0}]},"sig":"'
)

_DEFLATE_LEVEL = 6
"""zlib's default: ~6 µs for a 500-byte record here; lower levels gain nothing on it."""


def encode_data(data: bytes) -> bytes:
    """What the ``data`` column stores for entry bytes ``data``: ``_DEFLATED_DICT`` and its
    raw deflate stream (with ``_DICTIONARY``) when that is shorter, else ``data`` itself."""
    z = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15, zdict=_DICTIONARY)
    packed = _DEFLATED_DICT + z.compress(data) + z.flush()
    return packed if len(packed) < len(data) else data


def decode_data(blob: Any) -> bytes:
    """The entry bytes of a stored ``data`` value: deflated (``encode_data``), raw (rows of
    an older riverseal, or not worth deflating) or empty (pruned by retention)."""
    raw = bytes(blob)
    if raw[:1] not in (_DEFLATED, _DEFLATED_DICT):
        return raw
    z = zlib.decompressobj(-15, zdict=_DICTIONARY if raw[:1] == _DEFLATED_DICT else b"")
    try:
        out = z.decompress(raw[1:]) + z.flush()
    except zlib.error as exc:
        raise StoreError(f"log database holds an entry body that does not inflate: {exc}") from exc
    if not z.eof:
        raise StoreError("log database holds an entry body cut short")
    return out


_ORDER_DIGITS = 14
"""Digits of the node time a dedup number keeps: YYYYMMDDhhmmss of an RFC 3339 time."""


def dedup_number(sensor: str, dedup: str) -> int:
    """The ``dkey`` of a (sensor, dedup key): a 63-bit number whose high part is the first
    digits of the node's time (what follows the key's first "@", or the whole key) so that
    readings arriving together land in the index's last leaf, and whose low 16 bits are a
    hash of both. Stable across processes and versions: stored rows are looked up by it."""
    order = dedup[dedup.find("@") + 1 :]
    digits = "".join(c for c in order if "0" <= c <= "9")[:_ORDER_DIGITS]
    high = int(digits.ljust(_ORDER_DIGITS, "0")) if digits else 0
    tag = hashlib.blake2b(f"{sensor}\0{dedup}".encode(), digest_size=2).digest()
    return high << 16 | int.from_bytes(tag, "big")


_RANGES_PER_QUERY = 300  # three bound values each: under SQLite's oldest limit of 999

# Every read takes its rows whole in one call to aiosqlite's thread (``_row``, ``_rows``),
# long scans a page of rows at a time. The connection is shared by the daemon's tasks:
# a SELECT left unfinished across an await is a statement in progress under another
# task's COMMIT or WAL checkpoint, which then fails (SQLITE_LOCKED).
_ROWS_PER_READ = 256

# Schema 3: per sensor, its newest seq and index and the last instant its records cover,
# upserted once per sensor per batch. It replaces the index entries_sensor_seq, whose
# leaf for each sensor every reading dirtied (a page more per reading to write and to
# copy at each WAL checkpoint: docs/operations.md, "Writes and the SD card").
_SENSORS = """
CREATE TABLE sensors (
    sensor     TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    covered_ns INTEGER
) WITHOUT ROWID;
"""
# Schema 3's dedup index leads with the node's time in the key (``src_seq:<seq>@<time>``: what
# follows the first "@"; a key without "@", ``senml:<time>:…``, whole), so that keys
# arriving together sort together: a batch's keys land in the index's last leaf or two
# instead of one leaf per sensor (the key text, ``seq`` first, sorts 10 before 9).
# Unique on (order, sensor, dedup) is unique on (sensor, dedup): order is dedup's function.
# Stores made before schema 3 keep their (sensor, dedup) index, and stores made before 4
# this one (``Store._dedup_index``): rebuilding it would hold a big log's first start for
# minutes.
_DEDUP_ORDER = "substr(dedup, instr(dedup, '@') + 1)"

# Schema 4: level-0 hashes (one per entry) in ``leaves``, keyed by rowid: a batch's rows
# append to the last leaf page, where in ``nodes`` (a WITHOUT ROWID tree, which SQLite
# rebalances across three siblings when a page fills) they rewrote four or five pages
# per commit. ``nodes`` keeps the levels 8, 16, … (one row per 256 below).
# No index on time_ns: ``leaves.top`` is the latest entry time up to and including the
# row's entry (a running maximum, so it never decreases along the log) and the time
# questions are binary searches over it (``_first_top_at_least``): the index rewrote
# three or four pages per commit for questions asked at boot, hourly and per export.
# And the dedup index holds a number (``dedup_number``: the node time's digits, then
# 16 bits of a hash of sensor and key), not ~70 bytes of text. Equal numbers only make a
# candidate: ``existing_dedup`` compares sensor and key on the row itself. It is not
# UNIQUE: a single writer (the data directory's lock) checks before it inserts, and the
# number cannot be unique. A quarter of the index bytes, a third of the pages per commit.
_SCHEMA = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    idx     INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL,
    sensor  TEXT,
    seq     INTEGER,
    time_ns INTEGER NOT NULL,
    dedup   TEXT,
    data    BLOB NOT NULL,
    dkey    INTEGER
);
CREATE INDEX entries_dkey ON entries (dkey) WHERE dkey IS NOT NULL;
CREATE TABLE leaves (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL, top INTEGER NOT NULL);
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
    + _SENSORS
)


_UPSERT_SENSOR = (
    "INSERT INTO sensors VALUES (?, ?, ?, ?) ON CONFLICT (sensor) DO UPDATE SET "
    "seq = MAX(seq, excluded.seq), idx = MAX(idx, excluded.idx), "
    "covered_ns = MAX(COALESCE(covered_ns, excluded.covered_ns), "
    "COALESCE(excluded.covered_ns, covered_ns))"
)

# Witness cosignature lines (gateway/witnessing.py), one per checkpoint and witness vkey.
# Added without a schema version: created on any writable open, absent from older files.
_COSIGNATURES = """
CREATE TABLE IF NOT EXISTS cosignatures (
    checkpoint INTEGER NOT NULL,
    witness    TEXT NOT NULL,
    line       TEXT NOT NULL,
    PRIMARY KEY (checkpoint, witness)
);
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
async def _mapped(what: str, path: Path | None = None) -> AsyncIterator[None]:
    """The one place sqlite3 errors become StoreError."""
    try:
        yield
    except sqlite3.Error as exc:
        raise store_error(what, exc, path) from exc


# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_CORRUPT = 5, 6, 10, 11
_SQLITE_FULL, _SQLITE_NOTADB = 13, 26


def store_error(what: str, exc: sqlite3.Error, path: Path | None = None) -> StoreError:
    """The StoreError for a failed SQLite call: a full disk and I/O errors are retried by
    the daemon (StorageRefused), a damaged file never is (CorruptDatabase)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    where = "log database" if path is None else f"log database {path}"
    if primary == _SQLITE_FULL:
        return StorageRefused("full", f"{where}: {what} failed: the disk is full ({exc})")
    if primary == _SQLITE_IOERR:
        return StorageRefused("io-error", f"{where}: {what} failed: I/O error ({exc})")
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CorruptDatabase(path if path is not None else "(the log)", f"{what}: {exc}")
    return StoreError(f"{where}: {what} failed: {exc}")


_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_HEADER_BYTES = 32  # a -wal file this long or shorter holds no frame
_TABLES = frozenset({"meta", "entries", "nodes", "checkpoints", "anchors"})


def header_problem(head: bytes, file_size: int, *, wal_frames: bool = False) -> str | None:
    """What is wrong with a database file, judged by its first 100 bytes and its size.

    None for an empty file (a new log: the schema is made on open) or a header
    that agrees with the size. Pure: the caller reads the bytes. ``wal_frames``:
    its ``-wal`` file holds frames, so a file shorter than its header's page count
    is a checkpoint cut short (the header is written before the pages after it; a
    kill -9 or power cut there is normal), which SQLite finishes from the WAL on
    open, not a truncation.
    """
    if file_size == 0:
        return None
    if len(head) < 100:
        return f"it is {file_size} bytes, shorter than SQLite's 100-byte header (truncated)"
    if head[:16] != _SQLITE_MAGIC:
        return "it lacks SQLite's header: not a database, or its first page was overwritten"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return f"its header gives a page size of {page_size} bytes, which SQLite never writes"
    if file_size % page_size:
        return f"its {file_size} bytes are not a whole number of {page_size}-byte pages (truncated)"
    pages = int.from_bytes(head[28:32], "big")
    # The header's page count holds only while its two change counters agree.
    consistent = head[24:28] == head[92:96] and not wal_frames
    if pages and consistent and file_size < pages * page_size:
        return f"it holds {file_size // page_size} pages but its header counts {pages} (truncated)"
    return None


def file_problem(path: Path) -> str | None:
    """``header_problem`` of the file at ``path`` (None if there is no file)."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(100)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"log database {path}: cannot be read: {exc}") from exc
    try:
        wal = path.with_name(path.name + "-wal").stat().st_size
    except OSError:
        wal = 0
    return header_problem(head, size, wal_frames=wal > _WAL_HEADER_BYTES)


def store_problems(path: Path, *, full: bool = True) -> list[str]:
    """What is wrong with the log database at ``path``, for ``gateway check``; [] if sound.

    Header and size, then ``PRAGMA integrity_check`` (``quick_check`` unless
    ``full``: it skips the check that indexes match their tables), then the
    schema. Read-only; safe beside a running daemon (WAL readers do not block it).
    A missing file is no problem here: whether one should exist is the history's
    question (gateway/history.py).
    """
    if not path.exists():
        return []
    problem = file_problem(path)
    if problem is not None:
        return [f"log database {path}: {problem}"]
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            problems = _check_rows(db, full=full)
            if not problems:
                names = {str(n) for (n,) in db.execute("SELECT name FROM sqlite_master")}
                if "meta" in names and not names >= _TABLES:
                    problems = [f"tables missing: {', '.join(sorted(_TABLES - names))}"]
        finally:
            db.close()
    except sqlite3.Error as exc:
        problems = [f"PRAGMA {'integrity_check' if full else 'quick_check'}: {exc}"]
    return [f"log database {path}: {p}" for p in problems]


def _check_rows(db: sqlite3.Connection, *, full: bool) -> list[str]:
    pragma = "integrity_check" if full else "quick_check"
    rows = [str(r[0]) for r in db.execute(f"PRAGMA {pragma}(10)").fetchall()]
    return [] if rows == ["ok"] else [f"PRAGMA {pragma}: {r}" for r in rows]


class Store:
    """Async access to one log database. Use as ``async with Store(path) as store``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db: aiosqlite.Connection | None = None
        self._closed = False
        self.schema_version = 0
        """The database's schema version once open (1 only for a read-only version 1 file)."""
        self._leaves = True
        """Level-0 hashes are in ``leaves`` (made at schema 4 or later), not in ``nodes``;
        entry times are then searched through ``leaves.top``, not an index."""
        self._top: int | None = None
        """The newest ``leaves.top`` (schema 4): the latest entry time so far."""
        self._dedup_index: Literal["number", "ordered", "pair"] = "number"
        """What its dedup index holds: ``dkey`` (made at schema 4 or later), the key text led
        by ``_DEDUP_ORDER`` (schema 3) or (sensor, key) (older)."""

    async def __aenter__(self) -> Store:
        if self._closed:
            raise StoreError("a closed Store cannot be reopened")
        if self.readonly and not self.path.exists():
            raise StoreError(f"log database {self.path} does not exist")
        # A damaged file is refused before SQLite is let at it; never recreated.
        problem = await asyncio.to_thread(file_problem, self.path)
        if problem is not None:
            raise CorruptDatabase(self.path, problem)
        async with _mapped("open", self.path):
            if not self.readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            async with _mapped("open", self.path):
                # Only a new, empty file takes it (a WAL file keeps the size it has).
                await self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
                await self._db.execute("PRAGMA journal_mode=WAL")
                # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at each commit, so
                # an acknowledged batch could be lost in a power cut.
                await self._db.execute("PRAGMA synchronous=FULL")
                row = await self._row("PRAGMA page_size")
                pages = WAL_AUTOCHECKPOINT_BYTES // int(row[0] if row else PAGE_SIZE)
                await self._db.execute(f"PRAGMA wal_autocheckpoint={pages}")
                await self._db.execute("PRAGMA busy_timeout=10000")
            await self._quick_check()
            async with _mapped("open", self.path):
                await self._migrate()
        except BaseException:
            await self.__aexit__(None, None, None)  # no connection thread left behind
            raise
        return self

    async def _quick_check(self) -> None:
        """Every page of every table and index read once: a page of garbage is found
        at open, not when an export reaches it (benchmarks/store_check.py times it)."""
        async with _mapped("PRAGMA quick_check", self.path):
            found = await self._rows("PRAGMA quick_check(10)")
            rows = [str(r[0]) for r in found]
        if rows != ["ok"]:
            raise CorruptDatabase(self.path, "PRAGMA quick_check: " + "; ".join(rows))

    async def truncate_wal(self) -> None:
        """Copy the WAL into the database file and truncate it to nothing.

        The WAL counts against the data directory's quota and only a checkpoint
        shrinks it (gateway/storage.py asks for this before refusing writes)."""
        async with _mapped("checkpointing the WAL", self.path):
            # Its result row read to the end: a checkpoint statement left unfinished counts
            # as a write in progress, and the next COMMIT would fail on it.
            try:
                await self._rows("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (_SQLITE_BUSY, _SQLITE_LOCKED):
                    raise
                # A reader (another process, an export) holds the WAL: it stays as long as
                # it is, the caller goes on refusing, and asks again at the next commit.
                logger.warning("%s: the WAL could not be truncated now: %s", self.path, exc)

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

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row ``sql`` answers, None if none. Reads take their rows whole in one
        call (``_ROWS_PER_READ``, above, says why)."""
        return next(iter(await self.db.execute_fetchall(sql, params)), None)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row ``sql`` answers, read whole in one call."""
        return list(await self.db.execute_fetchall(sql, params))

    async def _has_table(self, name: str) -> bool:
        return (
            await self._row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            )
            is not None
        )

    async def _migrate(self) -> None:
        if not await self._has_table("meta"):
            if self.readonly:
                raise StoreError(f"{self.path} is not a riverseal log database")
            await self.db.executescript(
                "BEGIN IMMEDIATE;"
                + _SCHEMA
                + _COSIGNATURES
                + f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');COMMIT;"
            )
            self.schema_version = SCHEMA_VERSION
            self._dedup_index = "number"
            self._leaves = True
            return
        found = await self._rows("SELECT name FROM sqlite_master WHERE type='table'")
        missing = _TABLES - {str(n) for (n,) in found}
        if missing:
            raise CorruptDatabase(self.path, f"tables missing: {', '.join(sorted(missing))}")
        version = await self._schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this riverseal reads up to "
                f"{SCHEMA_VERSION} — upgrade riverseal, never downgrade a box's data"
            )
        if version == 1 and not self.readonly:
            await self._migrate_v1()
            version = await self._schema_version()
        if version == 2 and not self.readonly:
            await self._migrate_v2()
            version = await self._schema_version()
        self.schema_version = version
        self._leaves = await self._has_table("leaves")
        if self._leaves:
            row = await self._row("SELECT top FROM leaves ORDER BY idx DESC LIMIT 1")
            self._top = None if row is None else int(row[0])
        found = await self._rows(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND name IN ('entries_dkey', 'entries_dedup')"
        )
        made = {str(name): str(sql) for name, sql in found}
        if "entries_dkey" in made:
            self._dedup_index = "number"
        elif _DEDUP_ORDER in made.get("entries_dedup", ""):
            self._dedup_index = "ordered"
        else:
            self._dedup_index = "pair"
        if not self.readonly:
            await self.db.executescript(_COSIGNATURES)

    async def _schema_version(self) -> int:
        return int(await self.get_meta("schema_version") or 0)

    @property
    def backup_path(self) -> Path:
        """Where the migration from schema version 1 keeps its checked copy."""
        return self.path.with_name(self.path.name + ".v1-backup")

    async def _migrate_v1(self) -> None:
        """Schema 1 → 2: drop the subtree hashes of non-tile levels, after a checked backup.

        The write lock is held from before the backup to the commit, so the
        copy is exactly the database the migration starts from. A crash at
        any point leaves either the untouched version 1 file or the migrated
        one; a stale backup file is simply replaced by the next attempt.
        """
        db = self.db
        async with _mapped("migrating the log database from schema version 1"):
            await db.execute("BEGIN IMMEDIATE")
            try:
                if await self._schema_version() != 1:  # another process migrated it first
                    await db.execute("ROLLBACK")
                    return
                checked = await asyncio.to_thread(_backup_and_check, self.path, self.backup_path)
                cur = await db.execute(f"DELETE FROM nodes WHERE level % {TILE_HEIGHT} != 0")
                dropped = cur.rowcount
                await db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
        logger.warning(
            "migrated %s from schema version 1 to 2: %s subtree hashes of non-tile levels "
            "dropped (their pages are reused by new entries); the version 1 database is kept "
            "as %s (checked: %s)",
            self.path,
            f"{dropped:,}",
            self.backup_path,
            checked,
        )

    async def _migrate_v2(self) -> None:
        """Schema 2 → 3: the ``sensors`` table filled from the (sensor, seq) index, then the
        index dropped, in one transaction (a crash leaves the version 2 file as it was).

        One index lookup per sensor and its ``covered_until`` walk: seconds at most on a
        10-million-entry log of a few hundred sensors. No backup: nothing is lost that
        the entries do not still hold.
        """
        db = self.db
        async with _mapped("migrating the log database from schema version 2", self.path):
            await db.execute("BEGIN IMMEDIATE")
            try:
                if await self._schema_version() != 2:  # another process migrated it first
                    await db.execute("ROLLBACK")
                    return
                await db.execute(_SENSORS)
                rows = []
                for sensor, seq in await self._scan_last_seqs():
                    (idx,) = await self._row(
                        "SELECT idx FROM entries WHERE sensor = ? ORDER BY seq DESC LIMIT 1",
                        (sensor,),
                    ) or (None,)
                    covered = await self._walk_covered_until(sensor)
                    rows.append((sensor, seq, idx, covered))
                await db.executemany("INSERT INTO sensors VALUES (?, ?, ?, ?)", rows)
                await db.execute("DROP INDEX entries_sensor_seq")
                await db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
        logger.warning(
            "migrated %s from schema version 2 to 3: %d sensors' last seq, index and covered "
            "time moved into the sensors table, the index entries_sensor_seq dropped",
            self.path,
            len(rows),
        )

    # --- meta -------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with _mapped("reading meta"):
            row = await self._row("SELECT value FROM meta WHERE key = ?", (key,))
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
            row = await self._row("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries")
        return int(row[0]) if row else 0

    async def last_seqs(self) -> dict[str, int]:
        """Each sensor's newest seq: one row per sensor of the ``sensors`` table (the index
        scan on a read-only version 1 or 2 file)."""
        async with _mapped("reading sequence numbers"):
            if self.schema_version < 3:
                return dict(await self._scan_last_seqs())
            found = await self._rows("SELECT sensor, seq FROM sensors")
            return {str(s): int(q) for s, q in found}

    async def _scan_last_seqs(self) -> list[tuple[str, int]]:
        found = await self._rows(
            "SELECT sensor, MAX(seq) FROM entries WHERE sensor IS NOT NULL GROUP BY sensor"
        )
        return [(str(s), int(q)) for s, q in found]

    async def sensor_rows(self) -> dict[str, tuple[int, int, int | None]]:
        """The ``sensors`` table: sensor → (newest seq, its index, ``covered_until``)."""
        async with _mapped("reading the sensors table"):
            found = await self._rows("SELECT sensor, seq, idx, covered_ns FROM sensors")
            return {str(s): (int(q), int(i), None if c is None else int(c)) for s, q, i, c in found}

    async def existing_dedup(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (sensor, dedup key) pairs are already in the log."""
        pairs = list(keys)
        found: set[tuple[str, str]] = set()
        if self._dedup_index == "number":
            wanted = set(pairs)
            numbers = sorted({dedup_number(s, d) for s, d in wanted})
            async with _mapped("checking duplicates"):
                for start in range(0, len(numbers), _RANGES_PER_QUERY):
                    part = numbers[start : start + _RANGES_PER_QUERY]
                    rows = await self._rows(
                        "SELECT sensor, dedup FROM entries WHERE dkey IN "
                        f"({', '.join('?' * len(part))})",
                        part,
                    )
                    # A number names candidates; the row's own sensor and key decide.
                    found.update(p for p in ((str(s), str(d)) for s, d in rows) if p in wanted)
            return found
        if self._dedup_index == "ordered":  # the index's leading expression, computed alike
            term = f"({_DEDUP_ORDER} = ? AND sensor = ? AND dedup = ?)"
            values: list[tuple[str, ...]] = [(d[d.find("@") + 1 :], s, d) for s, d in pairs]
        else:
            term = "(sensor = ? AND dedup = ?)"
            values = list(pairs)
        async with _mapped("checking duplicates"):
            for start in range(0, len(values), _RANGES_PER_QUERY):
                chunk = values[start : start + _RANGES_PER_QUERY]
                rows = await self._rows(
                    f"SELECT sensor, dedup FROM entries WHERE {' OR '.join([term] * len(chunk))}",
                    [v for row in chunk for v in row],
                )
                found.update((str(s), str(d)) for s, d in rows)
        return found

    async def commit_batch(
        self,
        entries: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        checkpoint: CheckpointRow | None = None,
    ) -> None:
        """Write entries, their subtree hashes and maybe a checkpoint in one transaction."""
        statements, top = self._batch_statements(entries, nodes, checkpoint)
        async with _mapped("committing entries", self.path):
            await self._transaction(statements)
        self._top = top

    async def _transaction(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """``statements`` in one transaction, in one call to the connection's thread.

        Each awaited statement is a hand-over to aiosqlite's thread and back (a queue,
        a future, a wake-up of the event loop): at 1,000 readings/s, with eight of
        them per commit, those hand-overs cost more CPU than the inserts. aiosqlite
        has no public way to run a function on its thread; ``_execute`` is what its
        own methods use (pinned below 1.0 in pyproject.toml).
        """
        run: Callable[..., Awaitable[None]] = self.db._execute
        await run(_run_transaction, self.db._conn, statements)

    def _batch_statements(
        self,
        entries: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        checkpoint: CheckpointRow | None,
    ) -> tuple[list[tuple[str, list[tuple[Any, ...]]]], int | None]:
        """The inserts of a batch, and the newest entry time once it is committed (``_top``)."""
        out: list[tuple[str, list[tuple[Any, ...]]]] = []
        if self._dedup_index == "number":
            out.append(
                (
                    "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            e.index,
                            e.kind,
                            e.sensor,
                            e.seq,
                            e.time_ns,
                            e.dedup,
                            encode_data(e.data),
                            None
                            if e.dedup is None or e.sensor is None
                            else dedup_number(e.sensor, e.dedup),
                        )
                        for e in entries
                    ],
                )
            )
        else:
            out.append(
                (
                    "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (e.index, e.kind, e.sensor, e.seq, e.time_ns, e.dedup, encode_data(e.data))
                        for e in entries
                    ],
                )
            )
        top = None
        if self._leaves:
            top, tops = self._top, {}
            for e in sorted(entries, key=lambda e: e.index):
                top = e.time_ns if top is None else max(top, e.time_ns)
                tops[e.index] = top
            try:
                leaves = [(i, h, tops[i]) for lv, i, h in nodes if lv == 0]
            except KeyError as exc:
                raise StoreError(f"a leaf hash for index {exc} came without its entry") from None
            out.append(("INSERT INTO leaves VALUES (?, ?, ?)", leaves))
            out.append(("INSERT INTO nodes VALUES (?, ?, ?)", [n for n in nodes if n[0] != 0]))
        else:
            out.append(("INSERT INTO nodes VALUES (?, ?, ?)", list(nodes)))
        if self.schema_version >= 3:
            out.append((_UPSERT_SENSOR, list(_sensor_rows(entries))))
        if checkpoint is not None:
            out.append((_INSERT_CHECKPOINT, [_checkpoint_values(checkpoint)]))
        return out, top

    async def _first_top_at_least(self, time_ns: int) -> int | None:
        """Schema 4: the lowest index whose ``leaves.top`` is ``time_ns`` or later — the
        first entry received at or after it, as ``top`` only grows. A binary search
        over the rowid: some 24 lookups in a 10-million-entry log."""
        if self._top is None or self._top < time_ns:
            return None
        row = await self._row("SELECT MIN(idx), MAX(idx) FROM leaves")
        if row is None or row[0] is None:  # _top is set, so a leaf was committed
            raise CorruptDatabase(self.path, "leaves: empty, though entries are logged")
        lo, hi = int(row[0]), int(row[1])  # top[hi] >= time_ns
        while lo < hi:
            mid = (lo + hi) // 2
            top = await self._row("SELECT top FROM leaves WHERE idx = ?", (mid,))
            if top is None:
                raise CorruptDatabase(self.path, f"leaves: no row for index {mid}")
            if int(top[0]) >= time_ns:
                hi = mid
            else:
                lo = mid + 1
        return lo

    async def add_checkpoint(self, cp: CheckpointRow) -> None:
        async with _mapped("writing a checkpoint"):
            await self.db.execute(_INSERT_CHECKPOINT, _checkpoint_values(cp))

    async def commit_batch_with_meta(
        self,
        entries: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        checkpoint: CheckpointRow | None,
        meta: Mapping[str, str],
    ) -> None:
        """``commit_batch`` and these meta values in one transaction (a key rotation)."""
        statements, top = self._batch_statements(entries, nodes, checkpoint)
        statements.append(
            (
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(meta.items()),
            )
        )
        async with _mapped("committing entries and meta", self.path):
            await self._transaction(statements)
        self._top = top

    async def first_entry_at_or_after(self, time_ns: int) -> int | None:
        """The lowest index of an entry received at or after ``time_ns`` (None: none is)."""
        async with _mapped("selecting entries"):
            if self._leaves:
                return await self._first_top_at_least(time_ns)
            row = await self._row("SELECT MIN(idx) FROM entries WHERE time_ns >= ?", (time_ns,))
        return None if row is None or row[0] is None else int(row[0])

    async def prune_bodies(self, start: int, below: int, meta: Mapping[str, str]) -> int:
        """Empty the record bodies of entries ``[start, below)`` and set ``meta``, in one
        transaction; how many rows (gateway/retention.py). Rows, seqs and every subtree
        hash stay: the log's proofs do not need the bodies."""
        async with _mapped("pruning record bodies", self.path):
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = await self.db.execute(
                    "UPDATE entries SET data = X'' WHERE idx >= ? AND idx < ? AND data != X''",
                    (start, below),
                )
                n = cur.rowcount
                await self.db.executemany(
                    "INSERT INTO meta VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    list(meta.items()),
                )
                await self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self.db.execute("ROLLBACK")
                raise
        return int(n)

    async def newest_entry_time(self) -> int | None:
        """The latest record time (ns) of any entry, or None for an empty log."""
        if self._leaves:
            return self._top
        async with _mapped("reading entry times"):
            row = await self._row("SELECT MAX(time_ns) FROM entries")
        return None if row is None or row[0] is None else int(row[0])

    async def nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """Any perfect subtree hashes, folded from the tile-level rows that hold them.

        One query per 300 merged row ranges: a proof's worth is one query, an
        export's consecutive proofs merge into a few long ranges.
        """
        wanted = set(nodes)
        ranges = _tile_level_ranges(wanted)
        rows: dict[int, dict[int, bytes]] = {level: {} for level in ranges}
        async with _mapped("reading subtree hashes"):
            for sql, params in _range_queries(ranges, leaves=self._leaves):
                found = await self._rows(sql, params)
                for level, idx, h in found:
                    rows[level][idx] = h
        return _fold_from_tile_levels(wanted, ranges, rows)

    async def tile(self, level: int, index: int, width: int = TILE_WIDTH) -> bytes:
        """Hash tile (``level``, ``index``) of ``width`` hashes: its bytes, as published.

        StoreError if the tree is too small to have it (a tile of a smaller
        width is the same tile of an older tree size).
        """
        if not 1 <= width <= TILE_WIDTH or level < 0 or index < 0:
            raise ValueError(f"no tile ({level}, {index}) of width {width}")
        first = index * TILE_WIDTH
        async with _mapped("reading a hash tile"):
            if level == 0 and self._leaves:
                rows = await self._rows(
                    "SELECT hash FROM leaves WHERE idx BETWEEN ? AND ? ORDER BY idx",
                    (first, first + width - 1),
                )
            else:
                rows = await self._rows(
                    "SELECT hash FROM nodes WHERE level = ? AND idx BETWEEN ? AND ? ORDER BY idx",
                    (level * TILE_HEIGHT, first, first + width - 1),
                )
        if len(rows) != width:
            raise StoreError(
                f"hash tile {level}/{index} of width {width}: the tree has only {len(rows)} of "
                f"its hashes (level {level * TILE_HEIGHT}, from index {first})"
            )
        return b"".join(bytes(h) for (h,) in rows)

    async def entry_bundle(self, index: int, width: int = TILE_WIDTH) -> bytes:
        """Entry bundle ``index``: entries index·256 … index·256 + width − 1, as published."""
        if not 1 <= width <= TILE_WIDTH or index < 0:
            raise ValueError(f"no entry bundle {index} of width {width}")
        first = index * TILE_WIDTH
        async with _mapped("reading an entry bundle"):
            rows = await self._rows(
                "SELECT data FROM entries WHERE idx BETWEEN ? AND ? ORDER BY idx",
                (first, first + width - 1),
            )
        if len(rows) != width:
            raise StoreError(
                f"entry bundle {index} of width {width}: the log has only {len(rows)} of "
                f"entries {first}–{first + width - 1}"
            )
        if any(not d for (d,) in rows):
            raise StoreError(_pruned(first))
        try:
            return encode_entry_bundle(decode_data(d) for (d,) in rows)
        except ValueError as exc:
            raise StoreError(f"entry bundle {index}: {exc}") from exc

    async def entries(self, first: int, last: int) -> AsyncIterator[EntryRow]:
        """Entries ``first`` … ``last`` in index order, read a page of rows at a time."""
        at = first
        while at <= last:
            async with _mapped("reading entries"):
                rows = await self._rows(
                    "SELECT idx, kind, sensor, seq, time_ns, dedup, data FROM entries "
                    "WHERE idx BETWEEN ? AND ? ORDER BY idx LIMIT ?",
                    (at, last, _ROWS_PER_READ),
                )
            for r in rows:
                if not r[6]:
                    raise StoreError(_pruned(int(r[0])))
                yield EntryRow(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], decode_data(r[6]))
            if len(rows) < _ROWS_PER_READ:
                return
            at = int(rows[-1][0]) + 1

    async def index_range(
        self, since_ns: int | None, until_ns: int | None
    ) -> tuple[int, int] | None:
        """First and last index of entries received in [since, until]; None if none.

        Schema 4 has no time index: the first entry received at or after ``since`` is
        found through ``leaves.top``, and the rows from there to the end are read for
        the rest (record times are not strictly in log order: a gap is stamped when it
        is logged, and clocks step). A recent window reads a few rows; an old one reads
        the log from the window on, as an export of it then does."""
        if self._leaves:
            async with _mapped("selecting entries"):
                start = 0 if since_ns is None else await self._first_top_at_least(since_ns)
                if start is None:
                    return None
                row = await self._row(
                    "SELECT MIN(idx), MAX(idx) FROM entries "
                    "WHERE idx >= ? AND time_ns >= ? AND time_ns <= ?",
                    (
                        start,
                        since_ns if since_ns is not None else -(2**62),
                        until_ns if until_ns is not None else 2**62,
                    ),
                )
            return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
        async with _mapped("selecting entries"):
            row = await self._row(
                "SELECT MIN(idx), MAX(idx) FROM entries WHERE time_ns >= ? AND time_ns <= ?",
                (
                    since_ns if since_ns is not None else -(2**62),
                    until_ns if until_ns is not None else 2**62,
                ),
            )
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1])

    # --- what earlier runs left: downtime and history (gateway/daemon.py, history.py) ---

    async def record(self, index: int) -> dict[str, Any] | None:
        """The record of entry ``index`` (its ``rec``), None if the log has no such entry or
        its body was pruned (gateway/retention.py)."""
        async with _mapped("reading an entry"):
            row = await self._row("SELECT data FROM entries WHERE idx = ?", (index,))
        return None if row is None or not row[0] else _rec(row[0])

    async def covered_until(self, sensor: str) -> int | None:
        """The last instant ``sensor``'s records cover (ns): the latest reading ``time`` or
        gap ``to``, exactly as written (microseconds).

        None if the sensor has no record. Walks the sensor's records newest
        first on the (sensor, seq) index and stops at the first whose own
        time is before the best instant found: a record never covers an
        instant after its own time (a reading's instant is its time, a gap
        is written once its span has ended), so nothing older can be later.
        Usually two or three rows, however long the log.
        """
        if self.schema_version >= 3:
            async with _mapped("reading a sensor's covered time"):
                row = await self._row("SELECT covered_ns FROM sensors WHERE sensor = ?", (sensor,))
            return None if row is None or row[0] is None else int(row[0])
        async with _mapped("reading a sensor's last records"):
            return await self._walk_covered_until(sensor)

    async def _walk_covered_until(self, sensor: str) -> int | None:
        """``covered_until`` from the (sensor, seq) index of a version 1 or 2 file."""
        best: int | None = None
        after = (2**62, 2**62)  # (seq, idx) of the last row read; seq repeats across kinds
        while True:
            rows = await self._rows(
                "SELECT kind, time_ns, data, seq, idx FROM entries WHERE sensor = ? "
                "AND (seq < ? OR (seq = ? AND idx < ?)) ORDER BY seq DESC, idx DESC LIMIT ?",
                (sensor, after[0], after[0], after[1], _ROWS_PER_READ),
            )
            for kind, time_ns, data, _, _ in rows:
                if (best is not None and int(time_ns) < best) or not data:
                    return best  # (a pruned body: all before it are pruned too)
                rec = _rec(data)
                instant = rec.get("time") if kind == "reading" else rec.get("to")
                if kind not in ("reading", "gap") or not isinstance(instant, str):
                    continue
                ns = _time_ns(instant)
                if best is None or ns > best:
                    best = ns
            if len(rows) < _ROWS_PER_READ:
                return best
            after = (int(rows[-1][3]), int(rows[-1][4]))

    async def last_event(
        self, names: Iterable[str], *, before: int | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        """The newest event record named one of ``names`` (below index ``before``): its index
        and record.

        Walks the log backwards from the end: as long as the distance back to
        the event. The daemon keeps a pointer to its last ``boot`` in meta so
        that it does not walk a year of readings (gateway/daemon.py).
        """
        wanted = set(names)
        below = before if before is not None else 2**62
        while True:
            async with _mapped("looking for an event"):
                rows = await self._rows(
                    "SELECT idx, data FROM entries WHERE kind = 'event' AND idx < ? "
                    "ORDER BY idx DESC LIMIT ?",
                    (below, _ROWS_PER_READ),
                )
            for idx, data in rows:
                if not data:
                    return None  # pruned by retention, and everything before it
                rec = _rec(data)
                if rec.get("event") in wanted:
                    return int(idx), rec
            if len(rows) < _ROWS_PER_READ:
                return None
            below = int(rows[-1][0])

    async def root_at(self, size: int) -> bytes:
        """The tree root of the first ``size`` entries (StoreError if the log is smaller)."""
        wanted = Frontier.nodes_for(size)
        found = await self.nodes(wanted)
        return Frontier(size, [found[n] for n in wanted]).root()

    async def largest_anchored(self) -> int | None:
        """The largest checkpoint size any anchor row names, None if there is none."""
        async with _mapped("reading anchors"):
            row = await self._row("SELECT MAX(checkpoint) FROM anchors")
        return None if row is None or row[0] is None else int(row[0])

    # --- checkpoints and anchors ----------------------------------------------

    async def checkpoints(
        self, min_size: int = 0, max_size: int | None = None
    ) -> list[CheckpointRow]:
        async with _mapped("reading checkpoints"):
            found = await self._rows(
                "SELECT size, root, note, time_ns FROM checkpoints WHERE size >= ? AND size <= ? "
                "ORDER BY size",
                (min_size, max_size if max_size is not None else 2**62),
            )
            rows = [CheckpointRow(int(s), bytes(r), n, int(t)) for s, r, n, t in found]
        return await self._cosigned(rows)

    async def checkpoint_sizes_around(self, index: int) -> tuple[int | None, int | None]:
        """(largest checkpoint size ≤ ``index``, smallest ≥ ``index``), each None if none."""
        async with _mapped("reading checkpoints"):
            row = await self._row(
                "SELECT (SELECT MAX(size) FROM checkpoints WHERE size <= ?1),"
                "       (SELECT MIN(size) FROM checkpoints WHERE size >= ?1)",
                (index,),
            )
        assert row is not None
        return (None if row[0] is None else int(row[0]), None if row[1] is None else int(row[1]))

    async def anchored_checkpoints(
        self, low: int, high: int, *, at_most: int, always: Iterable[int] = ()
    ) -> tuple[list[CheckpointRow], list[AnchorRow]]:
        """The checkpoints a manifest carries for sizes ``low``–``high``, and their receipts.

        Every checkpoint with an included or final anchor, plus ``always``; but a
        box signs a checkpoint a minute and anchors it locally as often, so when
        more than ``at_most`` are anchored, time is cut into spans (an hour, or
        longer so that at most ``at_most`` spans remain) and each span keeps its
        smallest checkpoint with an independent (non-local) anchor, else its
        smallest with any anchor.
        """
        keep = sorted({s for s in always if low <= s <= high})
        marks = ",".join("?" * len(keep)) or "NULL"
        anchored = (
            "SELECT c.size, c.time_ns, a.indep FROM checkpoints c JOIN "
            "(SELECT checkpoint, MAX(backend != 'local') AS indep FROM anchors "
            " WHERE state != 'pending' AND checkpoint BETWEEN ?1 AND ?2 GROUP BY checkpoint) a "
            "ON a.checkpoint = c.size"
        )
        async with _mapped("choosing checkpoints"):
            row = await self._row(
                f"SELECT COUNT(*), MIN(time_ns), MAX(time_ns) FROM ({anchored})", (low, high)
            )
            assert row is not None
            count, first_ns, last_ns = int(row[0]), row[1], row[2]
            span_ns = 1
            if count > at_most:
                hour = 3600 * 10**9
                span_ns = max(hour, -(-(int(last_ns) - int(first_ns) + 1) // at_most))
            found = await self._rows(
                f"WITH b AS (SELECT size, time_ns / ?3 AS span, indep FROM ({anchored})), "
                " pick AS (SELECT COALESCE(MIN(CASE WHEN indep THEN size END), MIN(size)) "
                "          AS size FROM b GROUP BY span) "
                "SELECT size, root, note, time_ns FROM checkpoints "
                f"WHERE size IN (SELECT size FROM pick) OR size IN ({marks}) ORDER BY size",
                (low, high, span_ns, *keep),
            )
            cps = [CheckpointRow(int(s), bytes(r), n, int(t)) for s, r, n, t in found]
            sizes = [c.size for c in cps]
            anchors: list[AnchorRow] = []
            for start in range(0, len(sizes), 500):
                chunk = sizes[start : start + 500]
                found = await self._rows(
                    f"SELECT {_ANCHOR_COLS} FROM anchors WHERE state != 'pending' AND "
                    f"checkpoint IN ({','.join('?' * len(chunk))}) ORDER BY checkpoint, backend",
                    chunk,
                )
                anchors.extend(_anchor_row(r) for r in found)
        return await self._cosigned(cps), anchors

    async def add_cosignature(self, checkpoint: int, witness: str, line: str) -> None:
        """Keep a witness's cosignature line for a checkpoint (``witness``: its vkey)."""
        async with _mapped("writing a cosignature"):
            await self.db.execute(
                "INSERT OR REPLACE INTO cosignatures VALUES (?, ?, ?)", (checkpoint, witness, line)
            )

    async def cosigned_size(self, witness: str) -> int | None:
        """The largest checkpoint ``witness`` (a vkey) has cosigned, None if none."""
        async with _mapped("reading cosignatures"):
            row = await self._row(
                "SELECT MAX(checkpoint) FROM cosignatures WHERE witness = ?", (witness,)
            )
        return None if row is None or row[0] is None else int(row[0])

    async def _cosigned(self, rows: list[CheckpointRow]) -> list[CheckpointRow]:
        """The rows with their witnesses' cosignature lines appended to the note
        (signed-note: cosignatures are extra signature lines)."""
        if not rows:
            return rows
        async with _mapped("reading cosignatures"):
            if not await self._has_table("cosignatures"):  # a read-only open of an older file
                return rows
            found = await self._rows(
                "SELECT checkpoint, line FROM cosignatures WHERE checkpoint BETWEEN ? AND ? "
                "ORDER BY checkpoint, witness",
                (rows[0].size, rows[-1].size),
            )
            lines: dict[int, str] = {}
            for size, line in found:
                lines[int(size)] = lines.get(int(size), "") + str(line)
        return [
            dataclasses.replace(r, note=r.note + lines[r.size]) if r.size in lines else r
            for r in rows
        ]

    async def latest_checkpoint(self) -> CheckpointRow | None:
        async with _mapped("reading checkpoints"):
            row = await self._row(
                "SELECT size, root, note, time_ns FROM checkpoints ORDER BY size DESC LIMIT 1"
            )
        if row is None:
            return None
        [cp] = await self._cosigned(
            [CheckpointRow(int(row[0]), bytes(row[1]), row[2], int(row[3]))]
        )
        return cp

    async def anchors(self, backend: str | None = None) -> list[AnchorRow]:
        async with _mapped("reading anchors"):
            if backend is None:
                found = await self._rows(f"SELECT {_ANCHOR_COLS} FROM anchors ORDER BY checkpoint")
            else:
                found = await self._rows(
                    f"SELECT {_ANCHOR_COLS} FROM anchors WHERE backend = ? ORDER BY checkpoint",
                    (backend,),
                )
            return [_anchor_row(r) for r in found]

    async def open_anchors(self, backend: str) -> list[AnchorRow]:
        """Anchors of ``backend`` not yet final: the few the anchorer must poll."""
        async with _mapped("reading anchors"):
            found = await self._rows(
                f"SELECT {_ANCHOR_COLS} FROM anchors WHERE backend = ? AND state != 'final' "
                "ORDER BY checkpoint",
                (backend,),
            )
            return [_anchor_row(r) for r in found]

    async def anchor_counts(self) -> tuple[int, int]:
        """(anchor rows, of them not final): both change when an anchor is added or
        becomes final, and both are counted on an index."""
        async with _mapped("reading anchors"):
            rows = await self._rows(
                "SELECT (SELECT COUNT(*) FROM anchors),"
                "       (SELECT COUNT(*) FROM anchors WHERE state != 'final')"
            )
        ((total, open_),) = rows
        return int(total), int(open_)

    async def anchor_marks(self, backend: str) -> tuple[int | None, int | None]:
        """(newest final, newest of any state) anchored checkpoint size of ``backend``."""
        async with _mapped("reading anchors"):
            row = await self._row(
                "SELECT (SELECT MAX(checkpoint) FROM anchors "
                "        WHERE backend = ?1 AND state = 'final'),"
                "       (SELECT MAX(checkpoint) FROM anchors WHERE backend = ?1)",
                (backend,),
            )
        assert row is not None
        return (None if row[0] is None else int(row[0]), None if row[1] is None else int(row[1]))

    async def last_final_anchor(self, backend: str) -> AnchorRow | None:
        """The final anchor of ``backend`` with the largest checkpoint, if any."""
        async with _mapped("reading anchors"):
            row = await self._row(
                f"SELECT {_ANCHOR_COLS} FROM anchors WHERE backend = ? AND state = 'final' "
                "ORDER BY checkpoint DESC LIMIT 1",
                (backend,),
            )
        return None if row is None else _anchor_row(row)

    async def anchor_backends(self) -> list[str]:
        """Every backend label that has an anchor row."""
        async with _mapped("reading anchors"):
            found = await self._rows("SELECT DISTINCT backend FROM anchors ORDER BY backend")
            return [str(b) for (b,) in found]

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
        async with _mapped("writing an anchor", self.path):
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ANCHOR_COLS = (
    "checkpoint, backend, digest, state, receipt, attempts, last_error, created_ns, updated_ns"
)


_INSERT_CHECKPOINT = "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?)"


def _checkpoint_values(cp: CheckpointRow) -> tuple[int, bytes, str, int]:
    return (cp.size, cp.root, cp.note, cp.time_ns)


def _run_transaction(
    conn: sqlite3.Connection, statements: list[tuple[str, list[tuple[Any, ...]]]]
) -> None:
    """On the connection's thread: the statements between BEGIN IMMEDIATE and COMMIT,
    rolled back whole if any fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in statements:
            if rows:
                conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _sensor_rows(entries: Iterable[EntryRow]) -> list[tuple[str, int, int, int | None]]:
    """The ``sensors`` upserts for a batch: per sensor, its newest seq and index and the
    latest reading ``time`` or gap ``to`` among its records (``covered_until``)."""
    rows: dict[str, tuple[int, int, int | None]] = {}
    for e in entries:
        if e.sensor is None or e.seq is None:
            continue
        covered = None
        if e.kind in ("reading", "gap"):
            instant = _rec(e.data).get("time" if e.kind == "reading" else "to")
            covered = _time_ns(instant) if isinstance(instant, str) else None
        seq, idx, best = rows.get(e.sensor, (e.seq, e.index, covered))
        if best is None or (covered is not None and covered > best):
            best = covered
        rows[e.sensor] = (max(seq, e.seq), max(idx, e.index), best)
    return [(s, q, i, c) for s, (q, i, c) in rows.items()]


def _rec(data: Any) -> dict[str, Any]:
    """The ``rec`` of stored entry bytes (StoreError if they are not an entry)."""
    try:
        rec = json.loads(decode_data(data))["rec"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"log database holds an entry that is not a record: {exc}") from exc
    if not isinstance(rec, dict):
        raise StoreError("log database holds an entry whose rec is not an object")
    return rec


def _time_ns(text: str) -> int:
    """An entry's RFC 3339 time as ns since the epoch (microsecond precision, as written)."""
    try:
        dt = parse_time(text)
    except LedgerClientError as exc:
        raise StoreError(f"log database holds a record with a bad time: {exc}") from exc
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _pruned(index: int) -> str:
    return (
        f"the record body of entry {index} was pruned by retention (docs/operations.md, "
        "Retention): it is in the published mirror and the exports made before"
    )


def _anchor_row(r: Any) -> AnchorRow:
    return AnchorRow(
        int(r[0]), r[1], bytes(r[2]), r[3], r[4], int(r[5]), r[6], int(r[7]), int(r[8])
    )


# --- tile-level folding (pure) and the checked copy of a version 1 database ---------


def _tile_level_ranges(wanted: Iterable[Node]) -> dict[int, list[tuple[int, int]]]:
    """Per stored tree level, the merged inclusive index ranges that hold ``wanted``."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for n in wanted:
        r = n.level % TILE_HEIGHT
        first = n.index << r
        spans.setdefault(n.level - r, []).append((first, first + (1 << r) - 1))
    merged: dict[int, list[tuple[int, int]]] = {}
    for level, ranges in spans.items():
        ranges.sort()
        out = [ranges[0]]
        for lo, hi in ranges[1:]:
            if lo <= out[-1][1] + 1:
                if hi > out[-1][1]:
                    out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        merged[level] = out
    return merged


def _range_queries(
    ranges: dict[int, list[tuple[int, int]]], *, leaves: bool
) -> Iterator[tuple[str, list[int]]]:
    """SELECT level, idx, hash for the ranges: each range one primary-key range search
    (level 0 in ``leaves`` when the store has that table)."""
    flat = [(level, lo, hi) for level, rs in ranges.items() for lo, hi in rs]
    if leaves:
        level0 = [(lo, hi) for level, lo, hi in flat if level == 0]
        flat = [r for r in flat if r[0] != 0]
        for start in range(0, len(level0), _RANGES_PER_QUERY):
            part = level0[start : start + _RANGES_PER_QUERY]
            yield (
                f"WITH w (a, b) AS (VALUES {','.join(['(?, ?)'] * len(part))}) "
                "SELECT 0, n.idx, n.hash FROM w JOIN leaves AS n ON n.idx BETWEEN w.a AND w.b",
                [v for r in part for v in r],
            )
    for start in range(0, len(flat), _RANGES_PER_QUERY):
        chunk = flat[start : start + _RANGES_PER_QUERY]
        values = ",".join(["(?, ?, ?)"] * len(chunk))
        yield (
            f"WITH w (l, a, b) AS (VALUES {values}) "
            "SELECT n.level, n.idx, n.hash FROM w JOIN nodes AS n "
            "ON n.level = w.l AND n.idx BETWEEN w.a AND w.b",
            [v for r in chunk for v in r],
        )


def _fold_from_tile_levels(
    wanted: Iterable[Node],
    ranges: dict[int, list[tuple[int, int]]],
    rows: dict[int, dict[int, bytes]],
) -> dict[Node, bytes]:
    """Each wanted node's hash from the stored tile-level hashes below it.

    ``ranges`` are ``_tile_level_ranges(wanted)`` and ``rows`` what the store
    holds of them. A node at tree level 8·l + r is the perfect root of its
    2**r level-8·l hashes: each merged range is folded once, level by level,
    so nodes that share hashes (an export's consecutive proofs) share the work.
    """
    by_base: dict[int, list[Node]] = {}
    for n in wanted:
        by_base.setdefault(n.level - n.level % TILE_HEIGHT, []).append(n)
    out: dict[Node, bytes] = {}
    for base, nodes in by_base.items():
        spans, got = ranges[base], rows[base]
        starts = [lo for lo, _ in spans]
        top = max(n.level for n in nodes) - base
        pyramids: dict[int, list[tuple[int, list[bytes]]]] = {}
        for n in nodes:
            r = n.level - base
            k = bisect.bisect_right(starts, n.index << r) - 1
            pyramid = pyramids.get(k)
            if pyramid is None:
                lo, hi = spans[k]
                try:
                    hashes = [got[i] for i in range(lo, hi + 1)]
                except KeyError as exc:
                    raise StoreError(
                        f"log database is missing subtree hashes, e.g. {Node(base, exc.args[0])}"
                    ) from None
                pyramid = pyramids[k] = _pyramid(lo, hashes, top)
            at, level_hashes = pyramid[r]
            out[n] = level_hashes[n.index - at]
    return out


def _pyramid(first: int, hashes: list[bytes], height: int) -> list[tuple[int, list[bytes]]]:
    """Every perfect subtree over a run of same-level hashes, ``height`` levels up.

    Element r is (index of its first subtree, the hashes of the subtrees
    2**r runs wide that lie wholly inside the run).
    """
    out = [(first, hashes)]
    sha256 = hashlib.sha256
    for _ in range(height):
        at, below = out[-1]
        lo, end = (at + 1) // 2, (at + len(below)) // 2
        skip = 2 * lo - at
        out.append(
            (
                lo,
                [
                    sha256(b"\x01" + below[j] + below[j + 1]).digest()
                    for j in range(skip, skip + 2 * (end - lo), 2)
                ],
            )
        )
    return out


def _backup_and_check(live: Path, backup: Path) -> str:
    """Copy ``live`` to ``backup`` with SQLite's online backup, check the copy; say what held.

    The copy is written to a temporary name, checked, fsynced and only then
    renamed over ``backup``; StoreError if any check fails (``backup`` is
    then left as it was).
    """
    tmp = backup.with_name(backup.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"{live.absolute().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                checked = _check_v1_copy(dst, tmp)
            finally:
                dst.close()
        finally:
            src.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(backup)
        fd = os.open(backup.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error | OSError):
            raise StoreError(f"backing up {live} to {backup} failed: {exc}") from exc
        raise
    return checked


def _check_v1_copy(db: sqlite3.Connection, name: Path) -> str:
    """Raise StoreError unless ``db`` is a sound version 1 log whose tile levels are right.

    Beyond ``PRAGMA integrity_check``, the whole tree is recomputed from the
    copy's leaf hashes: the root at its latest checkpoint must be that
    checkpoint's root, and every stored hash of tree level 8, 16, … (all the
    migrated store keeps above the leaves) must be what the leaves give.
    """
    problems = [str(r[0]) for r in db.execute("PRAGMA integrity_check").fetchall()]
    if problems != ["ok"]:
        raise StoreError(f"the copy {name} fails PRAGMA integrity_check: {'; '.join(problems[:5])}")
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or str(row[0]) != "1":
        raise StoreError(f"the copy {name} is not a schema version 1 log database")
    row = db.execute("SELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    cp_size, cp_root = (0, EMPTY_ROOT) if row is None else (int(row[0]), bytes(row[1]))
    builder = TileBuilder()
    root = EMPTY_ROOT if cp_size == 0 else None
    computed: dict[int, list[bytes]] = {}  # tile level ≥ 1 → its hashes, left to right
    cur = db.execute("SELECT idx, hash FROM nodes WHERE level = 0 ORDER BY idx")
    while chunk := cur.fetchmany(TILE_WIDTH):
        start = builder.size
        if int(chunk[-1][0]) != start + len(chunk) - 1:
            raise StoreError(f"the copy {name} lacks leaf hashes from {start} to {chunk[-1][0]}")
        leaves = [bytes(h) for _, h in chunk]
        if len(chunk) == TILE_WIDTH and not start < cp_size < start + TILE_WIDTH:
            builder.append_tile(leaves)
        else:
            for leaf in leaves:
                builder.append(leaf)
                if builder.size == cp_size:
                    root = builder.root()
        if builder.size == cp_size:
            root = builder.root()
        for level, _, tile in builder.take_full_tiles():
            if level:
                computed.setdefault(level, []).append(tile)
    if root is None:
        raise StoreError(
            f"the copy {name} has {builder.size} leaf hashes, fewer than its checkpoint {cp_size}"
        )
    if root != cp_root:
        raise StoreError(
            f"the copy {name}: the root of checkpoint {cp_size} recomputed from its leaf hashes "
            f"is {root.hex()}, the checkpoint says {cp_root.hex()}"
        )
    for ref, tile in builder.partials():
        if ref.level:
            computed.setdefault(ref.level, []).append(tile)
    above = db.execute(
        "SELECT 1 FROM nodes WHERE level = ? LIMIT 1",
        ((max(computed, default=0) + 1) * TILE_HEIGHT,),
    ).fetchone()
    if above is not None:
        raise StoreError(f"the copy {name} has subtree hashes above what its leaf hashes give")
    for level, tiles in sorted(computed.items()):
        stored = db.execute(
            "SELECT hash FROM nodes WHERE level = ? ORDER BY idx", (level * TILE_HEIGHT,)
        )
        if b"".join(bytes(h) for (h,) in stored) != b"".join(tiles):
            raise StoreError(
                f"the copy {name}: the stored hashes of tree level {level * TILE_HEIGHT} are not "
                "what its leaf hashes give"
            )
    return (
        f"integrity ok, {builder.size:,} leaf hashes give the root of checkpoint {cp_size} and "
        "every stored tile-level hash"
    )

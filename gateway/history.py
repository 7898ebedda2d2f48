"""One history per device key: the high-water file, the guard at start, and a deliberate reset.

A key signs one log. A box whose ``log.sqlite`` was deleted, or restored from
an older copy, must not quietly start a second history under the same key:
a regulator holding checkpoints of the first would see two logs that do not
extend each other, and could not tell an accident from a rewrite.

- **The high-water file** ``<key_file>.history`` sits beside the device key
  (a database restored from a backup does not bring it back in time). It
  holds the largest checkpoint the daemon has signed: ``{"origin", "size",
  "root" (base64), "time", "note" (the signed checkpoint)}``, written
  atomically (temporary file, fsync, rename; mode 0600).
- **The guard** (``check_history``), before ``gateway run`` writes anything,
  compares the log with every trace of the key's earlier history: the
  high-water file, the local anchor journal (its largest journalled
  checkpoint), and the log's own checkpoints and anchors. A checkpoint larger
  than the log, or a root the log's tree does not have at that size, stops
  the daemon with ``HistoryConflict``, which says what was found and how to
  recover.
- **The reset** (``reset_history``, ``gateway reset-history --reason TEXT``)
  is the deliberate way out: the old database is moved aside (never deleted),
  and a new log starts with a signed ``history-reset`` event naming the
  largest checkpoint of the history it replaces.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger_client.checkpoint import Checkpoint
from ledger_client.records import format_time

from .config import GatewayConfig
from .errors import GatewayError, StoreError
from .keys import DeviceKey
from .lock import hold_data_dir
from .log import Log
from .pipeline import Event
from .store import CheckpointRow, Store

__all__ = [
    "HIGH_WATER_EVERY_S",
    "HighWater",
    "HighWaterMark",
    "HistoryConflict",
    "ResetSummary",
    "check_history",
    "high_water_path",
    "read_high_water",
    "reset_history",
    "write_high_water",
]

logger = logging.getLogger(__name__)

HIGH_WATER_EVERY_S = 600.0
"""The daemon rewrites the high-water file at most this often (and always at a clean stop):
a box signs a checkpoint a minute, and every rewrite wears the SD card that usually holds
the key. A database lost within these ten minutes is still caught by the local anchor
journal, which journals every checkpoint."""


class HistoryConflict(GatewayError):
    """The log does not extend the history this device key has already signed."""

    def __init__(self, problem: str, config_path: Path | None = None) -> None:
        super().__init__(problem)
        config = f" --config {config_path}" if config_path is not None else ""
        self.hint = (
            "restore the latest copy of log.sqlite (with its -wal file, if there is one) and "
            "start the gateway again; or, to start a new history deliberately, run "
            f"`gateway reset-history{config} --reason TEXT`: the old database is kept, and "
            "regulators will see the signed reset (see docs/operations.md, 'The log's history')"
        )


# --- the high-water file ------------------------------------------------------------------


def high_water_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".history")


@dataclass(frozen=True)
class HighWaterMark:
    origin: str
    size: int
    root: bytes
    time: str
    note: str | None = None
    """The signed checkpoint note of ``size``."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "time": self.time,
        }
        if self.note is not None:
            doc["note"] = self.note
        return doc

    @classmethod
    def of(cls, origin: str, cp: CheckpointRow) -> HighWaterMark:
        return cls(origin, cp.size, cp.root, format_time(cp.time_ns), cp.note)


def read_high_water(path: Path) -> HighWaterMark | None:
    """The mark in ``path``; None if there is no such file. HistoryConflict if it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryConflict(f"cannot read the high-water file {path}: {exc}") from exc
    try:
        mark = _parse_mark(json.loads(text))
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        mark = None
        problem = repr(exc)
    else:
        problem = "a member is missing or has the wrong type"
    if mark is None:
        raise HistoryConflict(
            f"the high-water file {path} is not what the gateway writes: {problem}"
        )
    return mark


def _parse_mark(doc: Any) -> HighWaterMark | None:
    origin, size, root, when = doc["origin"], doc["size"], doc["root"], doc["time"]
    note = doc.get("note")
    if not (
        isinstance(origin, str)
        and isinstance(size, int)
        and not isinstance(size, bool)
        and size >= 0
        and isinstance(root, str)
        and isinstance(when, str)
        and (note is None or isinstance(note, str))
    ):
        return None
    raw = base64.b64decode(root, validate=True)
    return HighWaterMark(origin, size, raw, when, note) if len(raw) == 32 else None


def write_high_water(path: Path, mark: HighWaterMark) -> None:
    """Replace ``path`` with ``mark`` atomically: temporary file, fsync, rename, fsync folder."""
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(mark.to_json(), indent=1) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a stale tmp file may have had another mode
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class HighWater:
    """The daemon's writer of the high-water file: at most every ``every_s``, and at stop."""

    def __init__(
        self,
        path: Path,
        origin: str,
        *,
        every_s: float = HIGH_WATER_EVERY_S,
        monotonic: Any = time.monotonic,
    ) -> None:
        self.path = path
        self.origin = origin
        self.every_s = every_s
        self._monotonic = monotonic
        self._written_at: float | None = None
        self._written_size = -1
        self._failing = False

    def checkpoint_signed(self, cp: CheckpointRow) -> None:
        """A checkpoint was signed: write it if the last write is ``every_s`` old."""
        if self._written_at is None or self._monotonic() - self._written_at >= self.every_s:
            self.write(cp)

    def write(self, cp: CheckpointRow) -> None:
        """Write ``cp`` now (a failure is logged, not raised: the log matters more)."""
        if cp.size <= self._written_size:
            return
        try:
            write_high_water(self.path, HighWaterMark.of(self.origin, cp))
        except OSError as exc:
            if not self._failing:
                logger.error(
                    "cannot write the high-water file %s: %s (a lost log.sqlite could then "
                    "go unnoticed)",
                    self.path,
                    exc,
                )
            self._failing = True
            return
        self._failing = False
        self._written_at = self._monotonic()
        self._written_size = cp.size


# --- the guard ----------------------------------------------------------------------------


def _b64(root: bytes) -> str:
    return base64.b64encode(root).decode()


def _journal_top(path: Path) -> tuple[int, bytes] | None:
    """(largest checkpoint size, its digest) in the local anchor journal at ``path``."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            has = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'"
            ).fetchone()
            if has is None:
                return None
            # The anchorer journals ever newer checkpoints: the largest is among the last
            # rows (a primary-key search, where MAX(checkpoint) would read a year of rows).
            row = db.execute(
                "SELECT checkpoint, digest FROM "
                "(SELECT checkpoint, digest FROM journal ORDER BY seq DESC LIMIT 64) "
                "ORDER BY checkpoint DESC LIMIT 1"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the local anchor journal {path}: {exc}") from exc
    return None if row is None else (int(row[0]), bytes(row[1]))


def _database(config: GatewayConfig) -> str:
    return config.db_path.name


async def check_history(store: Store, config: GatewayConfig, key: DeviceKey) -> None:
    """Raise HistoryConflict unless the log extends every trace of the key's earlier history."""
    size = await store.size()
    db = _database(config)
    holds = f"{db} holds only {size} entries" if size else f"{db} holds no entries"
    lost = ": the database was deleted or restored from an older copy"

    async def differs(at: int, root: bytes) -> bool:
        return at > 0 and await store.root_at(at) != root

    hw_path = high_water_path(config.key_file)
    mark = read_high_water(hw_path)
    if mark is not None:
        if mark.origin != key.origin:
            raise HistoryConflict(
                f"the high-water file {hw_path} is for log {mark.origin!r}, but the key beside "
                f"it signs {key.origin!r}: it belongs to another key",
                config.path,
            )
        signed = f"this key already signed checkpoint {mark.size} (root {_b64(mark.root)}, at "
        signed += f"{mark.time}) per {hw_path}"
        if mark.size > size:
            raise HistoryConflict(f"{signed}, but {holds}{lost}", config.path)
        if await differs(mark.size, mark.root):
            raise HistoryConflict(
                f"{signed}, but the first {mark.size} entries of {db} have root "
                f"{_b64(await store.root_at(mark.size))}: the database holds another history",
                config.path,
            )

    journal = await asyncio.to_thread(_journal_top, config.anchor_journal_path)
    if journal is not None:
        j_size, digest = journal
        signed = f"the local anchor journal {config.anchor_journal_path} holds checkpoint {j_size}"
        if j_size > size:
            raise HistoryConflict(f"{signed}, but {holds}{lost}", config.path)
        if j_size > 0:
            ours = Checkpoint(key.origin, j_size, await store.root_at(j_size)).digest()
            if ours != digest:
                raise HistoryConflict(
                    f"{signed} with digest {digest.hex()}, but the checkpoint of the first "
                    f"{j_size} entries of {db} has digest {ours.hex()}: the database holds "
                    "another history",
                    config.path,
                )

    latest = await store.latest_checkpoint()
    if latest is not None:
        signed = f"{db} has checkpoint {latest.size} (root {_b64(latest.root)})"
        if latest.size > size:
            raise HistoryConflict(f"{signed}, but {holds}: its entries were lost", config.path)
        if await differs(latest.size, latest.root):
            raise HistoryConflict(
                f"{signed}, but its first {latest.size} entries have root "
                f"{_b64(await store.root_at(latest.size))}: the database is inconsistent",
                config.path,
            )
    anchored = await store.largest_anchored()
    if anchored is not None and anchored > size:
        raise HistoryConflict(
            f"{db} has an anchor of checkpoint {anchored}, but {holds}: its entries were lost",
            config.path,
        )


# --- the deliberate reset -----------------------------------------------------------------


@dataclass(frozen=True)
class ResetSummary:
    moved: tuple[tuple[Path, Path], ...]
    """(from, to) of every file moved aside."""
    previous: dict[str, Any] | None
    """The ``previous`` member of the history-reset event."""
    checkpoint: CheckpointRow
    """The new log's first checkpoint."""
    high_water: Path


async def _previous(config: GatewayConfig, key: DeviceKey) -> dict[str, Any] | None:
    """The largest checkpoint of the history being replaced, as the reset event names it."""
    best: dict[str, Any] | None = None

    def offer(size: int, root: bytes, note: str | None, source: str) -> None:
        nonlocal best
        if size > 0 and (best is None or size > best["size"]):
            best = {"size": size, "root": _b64(root), "checkpoint": note, "source": source}

    db = config.db_path
    if db.exists():
        async with Store(db) as store:
            origin = await store.get_meta("origin")
            if origin in (None, key.origin):
                cp = await store.latest_checkpoint()
                if cp is not None:
                    offer(cp.size, cp.root, cp.note, f"{db} (its latest checkpoint)")
                size = await store.size()
                if best is None and size > 0:
                    # No checkpoint was ever signed: the entries themselves are the history.
                    offer(size, await store.root_at(size), None, f"{db} (its {size} entries)")
    try:
        mark = read_high_water(high_water_path(config.key_file))
    except HistoryConflict as exc:
        logger.warning("%s; the reset does not name it", exc)
        mark = None
    if mark is not None and mark.origin == key.origin:
        offer(mark.size, mark.root, mark.note, str(high_water_path(config.key_file)))
    return best


def _move_aside(path: Path, stamp: str) -> list[tuple[Path, Path]]:
    """Rename an SQLite database and its -wal/-shm files to ``<name>.superseded-<stamp>``."""
    moved: list[tuple[Path, Path]] = []
    target = path.with_name(f"{path.name}.superseded-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            dst = target.with_name(target.name + suffix)
            if dst.exists():
                raise GatewayError(f"{dst} exists already; not overwriting it")
            os.replace(src, dst)
            moved.append((src, dst))
    return moved


async def reset_history(
    config: GatewayConfig, key: DeviceKey, reason: str, *, now: Any = time.time_ns
) -> ResetSummary:
    """Move the log (and the local anchor journal) aside and start a new log with a signed
    ``history-reset`` event. The daemon must not be running: the data directory's lock
    (gateway/lock.py) is held throughout, refused if a daemon holds it."""
    if not reason.strip():
        raise GatewayError("--reason must say why the history is reset")
    with hold_data_dir(config.data_dir, "gateway reset-history", config.path):
        return await _reset(config, key, reason, now)


async def _reset(config: GatewayConfig, key: DeviceKey, reason: str, now: Any) -> ResetSummary:
    previous = await _previous(config, key)
    stamp = datetime.fromtimestamp(now() / 1e9, UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = _move_aside(config.db_path, stamp)
    # The journal's checkpoints are of the old history: kept beside it, not mixed in.
    moved += _move_aside(config.anchor_journal_path, stamp)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    detail = {"reason": reason, "previous": previous}
    async with Store(config.db_path) as store:
        log_ = Log(store, key, clock=now)
        await log_.open()
        at = now()
        # The stop makes the next boot's "previous" say "clean": nothing ran after the reset.
        await log_.append(
            [Event("history-reset", at, detail), Event("stop", at, {"cause": "clean"})],
            checkpoint=True,
        )
        cp = log_.last_checkpoint
    assert cp is not None
    path = high_water_path(config.key_file)
    write_high_water(path, HighWaterMark.of(key.origin, cp))
    return ResetSummary(tuple(moved), previous, cp, path)

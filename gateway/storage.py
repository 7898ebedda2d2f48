"""How full the data directory is, and whether the log may write: quota, warnings, back-pressure.

The data directory may use at most its *limit*: ``[storage] quota_mb`` when
set, else what it uses now plus the file system's free space minus
``reserve_mb`` (so the box's other writers, the journal above all, keep
room). Its *use* is the size of the regular files in it: the log database,
its WAL and journal, the local anchor journal and the status file.

States, for status and ``STATUS=``: ``ok``; ``warning`` from 80 % of the
limit; ``critical`` from 95 %; ``full`` at the limit or once SQLite reports
the disk full; ``io-error`` once the disk reports an I/O error. In ``full``
and ``io-error`` the ingest writer refuses every batch without writing
(readings are not acknowledged: MQTT messages stay with the broker, a serial
source is restarted and its refusals counted as ``storage-full``) and tries
again after a capped, jittered back-off. The quota is checked before each
commit, so the log never meets a full disk because of its own growth; a disk
filled by something else is met by SQLite's rollback, which leaves the log as
it was. The first write that succeeds afterwards is a ``storage-full`` gap per
sensor concerned, from the instant its records last covered to the resumption
(docs/operations.md, "Disk space").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger_client.records import format_time

from .backoff import Backoff
from .config import StorageConfig
from .errors import StorageRefused

__all__ = [
    "CRITICAL_PERCENT",
    "STORAGE_FULL",
    "WARNING_PERCENT",
    "StorageGuard",
    "level",
    "limit_bytes",
]

logger = logging.getLogger(__name__)

WARNING_PERCENT = 80
CRITICAL_PERCENT = 95
STORAGE_FULL = "storage-full"
"""The reason of the gaps and refusals that storage back-pressure leaves."""
_MB = 1024 * 1024
_LIST_EVERY_S = 1.0  # the data directory's other files are listed at most this often
_LOG_FILES = ("log.sqlite", "log.sqlite-wal", "log.sqlite-journal")


def level(used: int, limit: int) -> str:
    """``ok``, ``warning``, ``critical`` or ``full`` for ``used`` bytes against ``limit``."""
    if used >= limit:
        return "full"
    percent = 100 * used / limit if limit else 100.0
    if percent >= CRITICAL_PERCENT:
        return "critical"
    return "warning" if percent >= WARNING_PERCENT else "ok"


def limit_bytes(config: StorageConfig, used: int, free: int) -> int:
    """The most the data directory may hold, given its use and the file system's free bytes."""
    if config.quota_mb:
        return config.quota_mb * _MB
    return used + max(0, free - config.reserve_mb * _MB)


def usage(data_dir: Path) -> tuple[int, int]:
    """(bytes of the regular files in ``data_dir``, free bytes of its file system)."""
    used = 0
    with os.scandir(data_dir) as it:
        for e in it:
            try:
                if e.is_file(follow_symlinks=False):
                    used += e.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # a temporary file renamed away meanwhile
    st = os.statvfs(data_dir)
    return used, st.f_bavail * st.f_frsize


class StorageGuard:
    """The data directory's state; the ingest writer asks it before each commit."""

    def __init__(
        self,
        config: StorageConfig,
        data_dir: Path,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self._monotonic = monotonic
        self._clock = clock
        self._backoff = Backoff(base_s=0.5, cap_s=config.retry_max_seconds)
        self.state = "ok"
        self.used = 0
        self.limit = 0
        self.since_ns: int | None = None
        """When writes were first refused in this episode."""
        self.last_error: str | None = None
        self.refused = 0
        """Batches refused since the daemon started."""
        self.refused_sensors: set[str] = set()
        """Sensors whose readings were refused in this episode: they get a gap at resumption."""
        self.watched: set[str] = set()
        """Sensors the silence watcher watches: they get a gap at resumption too."""
        self.gaps_owed = False
        self.accepting = asyncio.Event()
        """Set while writes are taken: sources paused by a refusal wait for it."""
        self.accepting.set()
        self._next_try = 0.0
        self._listed_at = -_LIST_EVERY_S
        self._others = 0
        self._level = "ok"

    @property
    def refusing(self) -> bool:
        return self.state in ("full", "io-error")

    def measure(self) -> None:
        """Look at the data directory again; log crossing 80 %, 95 % and the limit.

        The log's own files (database, WAL, journal) and the free space are looked at
        every time (three stats and a statvfs: a few microseconds a commit); the rest of
        the directory, which grows slowly, at most once a second."""
        now = self._monotonic()
        try:
            if now - self._listed_at >= _LIST_EVERY_S:
                self._others = usage(self.data_dir)[0] - self._log_bytes()
                self._listed_at = now
            st = os.statvfs(self.data_dir)
            used, free = self._others + self._log_bytes(), st.f_bavail * st.f_frsize
        except OSError as exc:
            logger.warning("storage: cannot measure %s: %s", self.data_dir, exc)
            return
        self.used, self.limit = used, limit_bytes(self.config, used, free)
        new = level(used, self.limit)
        if new != self._level:
            percent = 100 * used / self.limit if self.limit else 100.0
            say = logger.info if new == "ok" else logger.warning
            say(
                "storage: %s is at %.0f %% of its limit (%s of %s bytes): %s",
                self.data_dir,
                percent,
                f"{used:,}",
                f"{self.limit:,}",
                new,
            )
            self._level = new
        if not self.refusing:
            self.state = "critical" if new == "full" else new  # "full" once a write is refused

    def before_commit(self) -> None:
        """Raise StorageRefused if the log must not write now (nothing is written then)."""
        if self.refusing and self._monotonic() < self._next_try:
            raise StorageRefused(self.state, f"storage {self.state}: {self.last_error}")
        self.measure()
        if self.limit and self.used >= self.limit:
            what = (
                f"[storage] quota_mb = {self.config.quota_mb}"
                if self.config.quota_mb
                else f"the free space less [storage] reserve_mb = {self.config.reserve_mb}"
            )
            raise StorageRefused(
                "full",
                f"the data directory {self.data_dir} holds {self.used:,} bytes, its limit "
                f"({what}) is {self.limit:,}",
            )

    def _log_bytes(self) -> int:
        total = 0
        for name in _LOG_FILES:
            with contextlib.suppress(FileNotFoundError):
                total += (self.data_dir / name).stat().st_size
        return total

    def wal_bytes(self) -> int:
        """The size of the log database's WAL file (0 if it has none)."""
        try:
            return (self.data_dir / "log.sqlite-wal").stat().st_size
        except OSError:
            return 0

    def failed(self, exc: StorageRefused) -> None:
        """A write was refused (by the quota or the disk): refuse until the back-off passes."""
        if self.refusing and self._monotonic() < self._next_try:
            self.refused += 1  # refused unwritten while waiting: no new attempt failed
            return
        delay = self._backoff.next_delay()
        self._next_try = self._monotonic() + delay
        self.refused += 1
        first = not self.refusing
        self.state, self.last_error = exc.state, str(exc)
        if first:
            self.accepting.clear()
            self.since_ns = self._clock()
            self.gaps_owed = True
            logger.error(
                "storage %s: %s; readings are refused (not acknowledged) until it clears",
                exc.state,
                exc,
            )
        else:
            logger.debug("storage still %s: %s (next try in %.1f s)", exc.state, exc, delay)

    def refused_reading(self, sensor: str) -> None:
        self.refused_sensors.add(sensor)

    def resumed(self) -> None:
        """The storage-full gaps are written: writes go on as before."""
        if self.since_ns is not None:
            logger.warning(
                "storage: writes resume; refused since %s (%d batches)",
                format_time(self.since_ns),
                self.refused,
            )
        self.gaps_owed = False
        self.accepting.set()
        self.refused_sensors.clear()
        self.since_ns = None
        self._backoff.reset()
        self.state = "ok"
        self.last_error = None
        self.measure()

    def retry_in(self) -> float | None:
        """Seconds until the next write may be tried, while refusing (else None)."""
        if not self.refusing and not self.gaps_owed:
            return None
        return max(0.0, self._next_try - self._monotonic())

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "used_bytes": self.used,
            "limit_bytes": self.limit,
            "percent": round(100 * self.used / self.limit, 1) if self.limit else None,
            "quota_mb": self.config.quota_mb or None,
            "reserve_mb": self.config.reserve_mb,
            "since": format_time(self.since_ns) if self.since_ns is not None else None,
            "last_error": self.last_error,
            "refused_batches": self.refused,
        }

    def summary(self) -> str | None:
        """A part of the one-line status, or None when there is nothing to say."""
        if self.refusing:
            return f"storage {self.state}: readings refused"
        if self.state in ("warning", "critical"):
            return f"storage {self.state} ({100 * self.used / max(self.limit, 1):.0f} %)"
        return None

"""One gateway per data directory: an exclusive lock on ``<data_dir>/gateway.lock``.

``gateway run`` takes the lock before it opens the log or writes anything, and
holds it for its whole life; the offline commands that write the data
directory (``rotate-key``, ``reset-history``) take it for as long as they run.
A second process finds it held and is refused at once, with the pid, command
and start time the holder wrote into the file.

The lock is ``flock(2)`` on an open file: the kernel drops it when the holder's
last descriptor closes, however the process ends (``kill -9``, a power cut
ends everything anyway), so there is never a stale lock to clean up. The file
itself stays (deleting it would let two processes lock two different files).

Within one process the lock is re-entrant: ``gateway run`` takes it in the CLI
before it settles an interrupted key rotation, and ``Gateway.run`` takes it
again for embedders that start the daemon without the CLI.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ledger_client.records import format_time

from .errors import GatewayError, StoreError

__all__ = [
    "LOCK_NAME",
    "DataDirInUse",
    "LockHolder",
    "hold_data_dir",
    "lock_holder",
]

LOCK_NAME = "gateway.lock"
_UNIT = "riverseal-gateway"
_READ_RETRY_S = 0.5  # a holder writes its pid just after it locks: wait that long for it


@dataclass(frozen=True)
class LockHolder:
    """Who holds a data directory's lock, as it wrote itself into the lock file."""

    pid: int | None
    command: str | None = None
    started: str | None = None
    config: str | None = None

    def describe(self) -> str:
        parts = [f"pid {self.pid}" if self.pid is not None else "pid unknown"]
        if self.command:
            parts.append(self.command)
        if self.started:
            parts.append(f"started {self.started}")
        return ", ".join(parts)


class DataDirInUse(GatewayError):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: Path, holder: LockHolder) -> None:
        data_dir = data_dir.absolute()
        self.data_dir = data_dir
        self.holder = holder
        if holder.command in (None, "gateway run"):
            what = f"another gateway ({holder.describe()}) is running on {data_dir}"
            todo = f"stop it first (systemctl stop {_UNIT})"
            self.hint = (
                "one gateway per data directory: a second daemon on the same log would fight "
                "the first over it; give each station its own data_dir"
            )
        else:
            what = f"another gateway process ({holder.describe()}) is working on {data_dir}"
            todo = "wait for it to finish, then try again"
        super().__init__(f"{what}: {todo}")


@dataclass
class _Held:
    fd: int
    count: int


_held: dict[str, _Held] = {}
"""The locks this process holds, by the real path of their lock file."""


def _lock_path(data_dir: Path) -> Path:
    return data_dir / LOCK_NAME


def _parse(text: str) -> LockHolder | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    pid = doc.get("pid")

    def field(key: str) -> str | None:
        value = doc.get(key)
        return value if isinstance(value, str) else None

    return LockHolder(
        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        field("command"),
        field("started"),
        field("config"),
    )


def _read_holder(path: Path) -> LockHolder:
    deadline = time.monotonic() + _READ_RETRY_S
    while True:
        try:
            holder = _parse(path.read_text(encoding="utf-8"))
        except OSError:
            holder = None
        if holder is not None or time.monotonic() >= deadline:
            return holder if holder is not None else LockHolder(None)
        time.sleep(0.02)


def _open(data_dir: Path) -> int:
    path = _lock_path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"data directory {data_dir}: cannot open its lock file: {exc}") from exc


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def hold_data_dir(data_dir: Path, command: str, config: Path | None = None) -> Iterator[None]:
    """Hold ``data_dir``'s lock for the block; DataDirInUse at once if another has it.

    The pid, ``command`` (e.g. ``"gateway run"``), start time and ``config``
    are written into the lock file for whoever is refused.
    """
    key = os.path.realpath(_lock_path(data_dir))
    held = _held.get(key)
    if held is not None:
        held.count += 1
    else:
        fd = _open(data_dir)
        if not _try_lock(fd):
            os.close(fd)
            raise DataDirInUse(data_dir, _read_holder(_lock_path(data_dir)))
        me = {
            "pid": os.getpid(),
            "command": command,
            "started": format_time(time.time_ns()),
            "config": str(config) if config is not None else None,
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError:
            pass  # the lock holds without its label; a refused process says "pid unknown"
        held = _held[key] = _Held(fd, 1)
    try:
        yield
    finally:
        held.count -= 1
        if held.count == 0:
            del _held[key]
            os.close(held.fd)  # the kernel drops the lock with the last descriptor


def lock_holder(data_dir: Path) -> LockHolder | None:
    """Who holds ``data_dir``'s lock (this process included), None if nobody does.

    A non-blocking try: a free lock is taken and let go at once. A missing data
    directory or lock file means nobody holds it; nothing is created.
    """
    path = _lock_path(data_dir)
    if os.path.realpath(path) in _held:
        return _read_holder(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            return None
    finally:
        os.close(fd)
    return _read_holder(path)

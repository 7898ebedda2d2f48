"""``gateway rotate-key``: hand the device's signing over to a new Ed25519 key.

Offline (the daemon stopped), in three steps, each durable before the next:

1. a new key with the same name (so the same origin ``riverseal/<device>`` and
   the same device id, which stays the one derived from the first key) is
   written to ``<key_file>.next``, mode 0600, never over an existing file;
2. in one transaction the log gets a ``key-rotation`` event and a checkpoint
   over it, both signed by the old key, and the store's key history names the
   new key (``Log.rotate_key``): the old key's window ends at the event's
   time, the new key's starts one microsecond later;
3. the old key file becomes ``<key_file>.retired-<old key ID>`` (still mode
   0600; destroy it once the regulator has the new trust lines) and
   ``.next`` becomes the key file.

If the box dies in between, the next ``gateway run`` or ``gateway rotate-key``
settles it (``finish_interrupted_rotation``): a ``.next`` whose key the store's
history names finishes step 3; one it does not name never signed anything and
is deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ledger_client.errors import LedgerClientError
from ledger_client.records import parse_time

from .clock import ClockState, clock_state
from .errors import GatewayError, KeyFileError
from .keys import (
    KeyWindow,
    create_next_device_key,
    load_device_key,
    next_key_path,
    parse_key_history,
    peek_vkey,
    retired_key_path,
)
from .lock import hold_data_dir, lock_holder
from .log import Log
from .store import Store

__all__ = [
    "RotationError",
    "RotationResult",
    "finish_interrupted_rotation",
    "install_next_key",
    "print_rotation",
    "record_rotation",
    "refuse_if_running",
    "rotate_device_key",
    "running_daemon",
]

logger = logging.getLogger(__name__)


class RotationError(GatewayError):
    """A key rotation cannot start or cannot be finished."""

    hint = "see docs/operations.md, 'Rotating the device key'"


@dataclass(frozen=True)
class RotationResult:
    """What ``rotate_device_key`` did, and the key history it leaves."""

    device_id: str
    history: tuple[KeyWindow, ...]
    retired: Path | None
    """Where the old key now is (None if an earlier run had already moved it)."""
    resumed: bool
    """True: this run finished a rotation a crash had interrupted, and rotated no further."""
    index: int | None = None
    """The log index of the ``key-rotation`` event this run wrote (None when ``resumed``)."""

    def trust_lines(self) -> list[str]:
        """The trust-file lines for every key of the device, oldest first."""
        return [k.trust_line() for k in self.history]


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _boot_time() -> float | None:
    """When this machine booted (Unix seconds), if /proc/stat says."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def running_daemon(data_dir: Path) -> int | None:
    """The pid of a gateway daemon that appears to run on ``data_dir``, else None.

    First the data directory's lock (gateway/lock.py): whoever holds it is running.
    Failing that (a daemon older than the lock), the pid ``status.json`` names is
    taken to be running if a process of that pid exists, unless the status was
    written before this machine booted (the pid is then someone else's).
    """
    holder = lock_holder(data_dir)
    if holder is not None and holder.pid is not None:
        return holder.pid
    try:
        doc = json.loads((data_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = doc.get("pid") if isinstance(doc, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, run by another user
    except OSError:
        return None
    booted = _boot_time()
    written = doc.get("time")
    if booted is not None and isinstance(written, str):
        try:
            if parse_time(written).timestamp() < booted:
                return None
        except LedgerClientError:
            pass
    return pid


def refuse_if_running(data_dir: Path) -> None:
    """RotationError if a daemon appears to be running on ``data_dir``."""
    holder = lock_holder(data_dir)
    if holder is not None:
        raise RotationError(
            f"another gateway ({holder.describe()}) is running on {data_dir}: stop the "
            "service first (systemctl stop riverseal-gateway), then rotate the key"
        )
    pid = running_daemon(data_dir)
    if pid is not None:
        raise RotationError(
            f"the gateway appears to be running (pid {pid}, named in "
            f"{data_dir / 'status.json'}): stop the service first "
            "(systemctl stop riverseal-gateway), then rotate the key; if that process is "
            "not the gateway, delete status.json"
        )


async def _stored_history(db_path: Path) -> tuple[KeyWindow, ...] | None:
    """The key history the log database holds, None if it holds none (never rotated)."""
    if not await asyncio.to_thread(db_path.exists):
        return None
    async with Store(db_path, readonly=True) as store:
        text = await store.get_meta("keys")
    return None if text is None else parse_key_history(text)


def install_next_key(key_file: Path, history: tuple[KeyWindow, ...]) -> Path | None:
    """Step 3: retire the key file's key and put ``<key_file>.next`` in its place.

    ``history`` is the store's key history; its last key must be the one in
    ``.next``, and the key file (if there still is one: a crash may have come
    between the two renames) must hold a key the history names as retired.
    Returns where the old key went, None if the key file was gone already.
    """
    nxt = next_key_path(key_file)
    new_vkey = peek_vkey(nxt)
    if new_vkey is None or new_vkey != history[-1].vkey:
        raise RotationError(
            f"{nxt} does not hold the log's current key; refusing to install it as {key_file}"
        )
    retired: Path | None = None
    old_vkey = peek_vkey(key_file)
    if old_vkey == new_vkey:  # the key file is already the new key: .next is a spare copy
        nxt.unlink()
        _sync_dir(key_file.parent)
        return None
    if old_vkey is not None:
        window = next((k for k in history if k.vkey == old_vkey), None)
        if window is None or window.valid_until is None:
            raise RotationError(
                f"{key_file} holds a key the log does not name as retired; refusing to "
                f"replace it with {nxt}"
            )
        retired = retired_key_path(key_file, window.key_id_hex)
        if retired.exists():
            raise RotationError(f"{retired} already exists; refusing to overwrite a retired key")
        os.rename(key_file, retired)
    os.rename(nxt, key_file)
    _sync_dir(key_file.parent)
    return retired


async def finish_interrupted_rotation(key_file: Path, db_path: Path) -> RotationResult | None:
    """Settle a rotation a crash interrupted; None if there was none.

    A ``<key_file>.next`` whose key the store's history names as its current
    key is installed (step 3). One it does not name never signed anything: it
    is deleted, and None returned.
    """
    nxt = next_key_path(key_file)
    if not nxt.exists():
        return None
    history = await _stored_history(db_path)
    try:
        pending = peek_vkey(nxt)
    except KeyFileError:
        pending = None  # written only in part: the store cannot name it
    if history is None or pending is None or history[-1].vkey != pending:
        if history is not None and pending is not None and any(k.vkey == pending for k in history):
            raise RotationError(
                f"{nxt} holds key {pending.split('+')[1]}, which the log names as retired; "
                "it must not sign again: delete it"
            )
        nxt.unlink()
        _sync_dir(nxt.parent)
        logger.warning("removed %s: an interrupted key rotation that never reached the log", nxt)
        return None
    retired = install_next_key(key_file, history)
    key = load_device_key(key_file)
    logger.warning(
        "finished an interrupted key rotation: %s now holds key %s%s",
        key_file,
        key.key_id_hex,
        f", the old key is {retired}" if retired is not None else "",
    )
    return RotationResult(key.device_id, history, retired, resumed=True)


async def record_rotation(
    key_file: Path,
    db_path: Path,
    *,
    clock: Callable[[], int] = time.time_ns,
    clock_state: Callable[[], ClockState] = clock_state,
) -> RotationResult:
    """Steps 1 and 2: the new key in ``<key_file>.next``, the rotation in the log.

    The key file is not touched (``install_next_key`` is step 3); ``retired``
    is None. If step 2 fails, ``.next`` is removed unless the log names it.
    """
    if not await asyncio.to_thread(db_path.exists):
        raise RotationError(
            f"no log database at {db_path}: the gateway has never run here, so there is no "
            "log to record a rotation in"
        )
    old = load_device_key(key_file)
    async with Store(db_path) as store:
        log = Log(store, old, clock=clock, clock_state=clock_state)
        await log.open()  # refuses a key that is not the log's current one
        new = create_next_device_key(key_file, old)
        try:
            rotation = await log.rotate_key(new)
        except BaseException:
            if all(k.vkey != new.vkey for k in await log.key_history()):
                next_key_path(key_file).unlink()
            raise
    return RotationResult(old.device_id, rotation.history, None, False, rotation.index)


async def rotate_device_key(
    key_file: Path,
    db_path: Path,
    *,
    clock: Callable[[], int] = time.time_ns,
    clock_state: Callable[[], ClockState] = clock_state,
) -> RotationResult:
    """Rotate the device key (module docstring); the daemon must not be running.

    A rotation a crash interrupted is finished instead, and no new one begun.
    The data directory (the database's folder) is locked throughout: no daemon
    starts while the key changes hands.
    """
    with hold_data_dir(db_path.parent, "gateway rotate-key"):
        resumed = await finish_interrupted_rotation(key_file, db_path)
        if resumed is not None:
            return resumed
        result = await record_rotation(key_file, db_path, clock=clock, clock_state=clock_state)
        retired = install_next_key(key_file, result.history)
        return RotationResult(result.device_id, result.history, retired, False, result.index)


def print_rotation(result: RotationResult, key_file: Path, out: TextIO) -> None:
    """What a technician reads after ``gateway rotate-key``."""
    old, new = result.history[-2], result.history[-1]
    lines = [
        f"finished an interrupted rotation of the device key of {result.device_id}"
        if result.resumed
        else f"rotated the device key of {result.device_id}: key-rotation event at log index "
        f"{result.index}, signed by the old key",
        f"old key {old.key_id_hex}: signs record times up to {old.valid_until}",
        f"new key {new.key_id_hex}: signs record times from {new.valid_from} ({key_file})",
    ]
    if result.retired is not None:
        lines.append(
            f"the old key is kept as {result.retired} (mode 0600): destroy it once the "
            "regulator has the new trust lines; it must never sign again"
        )
    lines.append("Send the regulator these trust-file lines (they replace the device's key line):")
    lines += result.trust_lines()
    out.write("\n".join(lines) + "\n")

"""The signed Merkle log: turns readings, gaps and events into signed entries.

``Log`` owns the in-memory right edge of the tree and the per-sensor sequence
counters, builds and signs each record, and hands whole batches to the store
in one transaction. If a commit fails, the in-memory state is rolled back with
it, so memory and disk never disagree about the tree.

Every value of every reading passes through edge quality control (gateway/qc.py)
here, before it is signed, whatever driver produced it: its QARTOD flags go
into the signed record. A value that is NaN or infinite has no JSON form; it
is written as ``"v": null`` with flag 9 (missing), never dropped.

A log signs with the current key of its key history (``rotate_key``): on open
it refuses any other key, a retired one above all.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.merkle import Frontier, leaf_hash
from ledger_client.records import RECORD_VERSION, format_time, make_entry
from ledger_client.tiles import TILE_HEIGHT

from .clock import ClockState, clock_state
from .errors import KeyFileError, StoreError
from .keys import KEY_HISTORY_META, DeviceKey, KeyWindow, dump_key_history, parse_key_history
from .pipeline import Event, Gap, Reading
from .qc import MISSING_RESULT, QcEngine
from .store import CheckpointRow, EntryRow, Store

__all__ = ["Event", "KeyRotation", "Log", "LogItem"]


LogItem = Reading | Gap | Event


@dataclass(frozen=True)
class KeyRotation:
    """What ``Log.rotate_key`` committed."""

    index: int
    """The log index of the ``key-rotation`` event (signed by the old key)."""
    checkpoint: int
    """The size of the checkpoint the old key signed over it."""
    history: tuple[KeyWindow, ...]
    """The key history now stored, oldest first; the last is the new key."""


class Log:
    def __init__(
        self,
        store: Store,
        key: DeviceKey,
        *,
        clock: Callable[[], int] = time.time_ns,
        clock_state: Callable[[], ClockState] = clock_state,
        qc: QcEngine | None = None,
    ) -> None:
        self.store = store
        self.qc = qc if qc is not None else QcEngine()
        """Quality control of reading values (default: the built-in QARTOD limits)."""
        self.key = key
        self._clock = clock
        self._clock_state = clock_state
        self._frontier = Frontier()
        self._seqs: dict[str, int] = {}
        self._last_checkpoint: CheckpointRow | None = None
        self._base: dict[str, Any] = {
            "v": RECORD_VERSION,
            "device": key.device_id,
            "key": key.key_id_hex,
        }

    async def open(self) -> None:
        """Load the tree edge and counters; bind a new database to this device."""
        device = await self.store.get_meta("device_id")
        if device is None:
            await self.store.set_meta("device_id", self.key.device_id)
            await self.store.set_meta("origin", self.key.origin)
            await self.store.set_meta("vkey", self.key.vkey)
            await self.store.set_meta("created", format_time(self._clock()))
        elif device != self.key.device_id:
            raise StoreError(
                f"log database {self.store.path} belongs to device {device}, "
                f"but the key is for {self.key.device_id}"
            )
        else:
            await self._check_key()
        size = await self.store.size()
        wanted = Frontier.nodes_for(size)
        found = await self.store.nodes(wanted)
        self._frontier = Frontier(size, [found[n] for n in wanted])
        self._seqs = await self.store.last_seqs()
        self._last_checkpoint = await self.store.latest_checkpoint()

    async def key_history(self) -> tuple[KeyWindow, ...]:
        """The device's keys, oldest first, with the record times each may sign.

        A log that never rotated has one key, its ``vkey``, with an open window.
        """
        text = await self.store.get_meta(KEY_HISTORY_META)
        if text is not None:
            return parse_key_history(text)
        return (KeyWindow(await self.store.get_meta("vkey") or self.key.vkey),)

    async def _check_key(self) -> None:
        """Refuse to sign with anything but the current key of the log's key history."""
        history = await self.key_history()
        current = history[-1]
        if self.key.vkey == current.vkey:
            return
        mine = next((k for k in history if k.vkey == self.key.vkey), None)
        if mine is None:
            raise KeyFileError(
                f"the device key {self.key.key_id_hex} is not a key of log database "
                f"{self.store.path} (its current key is {current.key_id_hex})"
            )
        raise KeyFileError(
            f"the device key {self.key.key_id_hex} was retired at {mine.valid_until} (the "
            f"log's current key is {current.key_id_hex}): a retired key must not sign. "
            "If a rotation was interrupted, `gateway rotate-key` finishes it"
        )

    async def rotate_key(self, new: DeviceKey) -> KeyRotation:
        """Hand signing over to ``new`` (same name, so same origin and device id).

        In one transaction: a ``key-rotation`` event signed by the current key,
        a checkpoint over it signed by the current key, and the key history
        (meta ``keys``) and ``vkey`` updated. The current key's window ends at
        the event's time; the new key's starts one microsecond later. From
        then on this log signs with ``new``.
        """
        old = self.key
        if new.origin != old.origin or new.device_id != old.device_id:
            raise KeyFileError(
                f"the new key is named {new.origin!r} for device {new.device_id}; it must be "
                f"named {old.origin!r} for device {old.device_id}"
            )
        history = list(await self.key_history())
        if any(k.vkey == new.vkey for k in history):
            raise KeyFileError(f"key {new.key_id_hex} is already in the log's key history")
        at_us = self._clock() // 1000
        newest = await self.store.newest_entry_time()
        if newest is not None and newest // 1000 > at_us:
            raise KeyFileError(
                f"the clock ({format_time(at_us * 1000)}) is behind the newest entry "
                f"({format_time(newest)}): the old key's window would not cover it; "
                "set the clock first"
            )
        until, valid_from = format_time(at_us * 1000), format_time((at_us + 1) * 1000)
        history[-1] = dataclasses.replace(history[-1], valid_until=until)
        history.append(KeyWindow(new.vkey, valid_from, None))
        event = Event(
            "key-rotation",
            at_us * 1000,
            {"old_key": old.vkey, "new_key": new.vkey, "valid_from": valid_from},
        )
        meta = {KEY_HISTORY_META: dump_key_history(history), "vkey": new.vkey}
        [index] = await self.append([event], checkpoint=True, meta=meta)
        assert index is not None  # an event has no dedup key
        self.key = new
        self._base["key"] = new.key_id_hex
        return KeyRotation(index, self.checkpointed_size, tuple(history))

    @property
    def size(self) -> int:
        return self._frontier.size

    @property
    def last_checkpoint(self) -> CheckpointRow | None:
        return self._last_checkpoint

    def root(self) -> bytes:
        return self._frontier.root()

    async def append(
        self,
        items: Sequence[LogItem],
        *,
        checkpoint: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> list[int | None]:
        """Sign and commit ``items``; each result is its log index, or None for a duplicate.

        With ``checkpoint``, a checkpoint of the new size is signed in the
        same transaction; so are the ``meta`` values set (a key rotation).
        """
        keys = {
            (it.sensor, it.dedup_key)
            for it in items
            if isinstance(it, Reading) and it.dedup_key is not None
        }
        seen = await self.store.existing_dedup(keys) if keys else set()
        saved_frontier, saved_seqs = self._frontier.copy(), dict(self._seqs)
        clock = self._clock_state()
        rows: list[EntryRow] = []
        nodes: list[tuple[int, int, bytes]] = []
        results: list[int | None] = []
        flags: list[tuple[str, int]] = []
        try:
            for it in items:
                if isinstance(it, Reading) and it.dedup_key is not None:
                    k = (it.sensor, it.dedup_key)
                    if k in seen:
                        results.append(None)
                        continue
                    seen.add(k)
                index = self._frontier.size
                rec, row_meta = self._record(it, index, clock, flags)
                data = make_entry(rec, self.key.signing_key)
                # The store keeps the tile levels only (tree levels 0, 8, 16, …).
                nodes.extend(
                    n for n in self._frontier.append(leaf_hash(data)) if n[0] % TILE_HEIGHT == 0
                )
                rows.append(EntryRow(index, rec["kind"], *row_meta, data))
                results.append(index)
            cp_row = None
            if checkpoint and self._frontier.size > self.checkpointed_size:
                cp_row = self._sign_checkpoint()
            if meta:
                await self.store.commit_batch_with_meta(rows, nodes, cp_row, meta)
            elif rows or cp_row is not None:
                await self.store.commit_batch(rows, nodes, cp_row)
        except BaseException:
            # Nothing of this batch is on disk (an item that cannot be encoded, or
            # a failed commit): memory goes back to where the disk is.
            self._frontier, self._seqs = saved_frontier, saved_seqs
            # The QC history may hold values that are not in the log: start it afresh.
            self.qc.forget({it.sensor for it in items if isinstance(it, Reading)})
            raise
        for (sensor, flag), n in Counter(flags).items():
            self.qc.count(sensor, flag, n)
        if cp_row is not None:
            self._last_checkpoint = cp_row
        return results

    @property
    def checkpointed_size(self) -> int:
        return self._last_checkpoint.size if self._last_checkpoint else 0

    async def checkpoint(self) -> CheckpointRow | None:
        """Sign a checkpoint of everything committed, if anything is new."""
        if self._frontier.size <= self.checkpointed_size:
            return None
        cp = self._sign_checkpoint()
        await self.store.add_checkpoint(cp)
        self._last_checkpoint = cp
        return cp

    def _sign_checkpoint(self) -> CheckpointRow:
        cp = Checkpoint(self.key.origin, self._frontier.size, self._frontier.root())
        note = sign_checkpoint(cp, self.key.signer)
        return CheckpointRow(cp.size, cp.root, note, self._clock())

    def _next_seq(self, sensor: str) -> int:
        seq = self._seqs.get(sensor, -1) + 1
        self._seqs[sensor] = seq
        return seq

    def _values(self, it: Reading, flags: list[tuple[str, int]]) -> list[dict[str, Any]]:
        qc = self.qc
        out: list[dict[str, Any]] = []
        for v in it.values:
            x = v.value
            if not math.isfinite(x):
                out.append({"q": v.quantity, "v": None, "u": v.unit, "qc": MISSING_RESULT.record})
                flags.append((it.sensor, MISSING_RESULT.flag))
            elif qc.enabled:
                r = qc.check(it.sensor, v.quantity, v.unit, it.received_ns, x)
                out.append({"q": v.quantity, "v": x, "u": v.unit, "qc": r.record})
                flags.append((it.sensor, r.flag))
            else:
                out.append({"q": v.quantity, "v": x, "u": v.unit})
        return out

    def _record(
        self, it: LogItem, index: int, clock: ClockState, flags: list[tuple[str, int]]
    ) -> tuple[dict[str, Any], tuple[str | None, int | None, int, str | None]]:
        rec = dict(self._base)
        rec["index"] = index
        rec["clock"] = clock
        if isinstance(it, Reading):
            seq = self._next_seq(it.sensor)
            rec.update(
                kind="reading",
                time=format_time(it.received_ns),
                sensor=it.sensor,
                seq=seq,
                values=self._values(it, flags),
            )
            if it.sensor_time is not None:
                rec["sensor_time"] = it.sensor_time
            if it.src_seq is not None:
                rec["src_seq"] = it.src_seq
            if it.raw is not None:
                rec["raw"] = it.raw
            return rec, (it.sensor, seq, it.received_ns, it.dedup_key)
        if isinstance(it, Gap):
            seq = self._next_seq(it.sensor)
            now = self._clock()
            rec.update(
                kind="gap",
                time=format_time(now),
                sensor=it.sensor,
                seq=seq,
                reason=it.reason,
                **{"from": format_time(it.from_ns), "to": format_time(it.to_ns)},
            )
            if it.src_seq_from is not None and it.src_seq_to is not None:
                rec["src_seq_from"] = it.src_seq_from
                rec["src_seq_to"] = it.src_seq_to
            return rec, (it.sensor, seq, now, None)
        rec.update(kind="event", time=format_time(it.time_ns), event=it.name)
        if it.detail:
            rec["detail"] = dict(it.detail)
        return rec, (None, None, it.time_ns, None)

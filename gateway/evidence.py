"""One reading as evidence: ``gateway export --proof`` (docs/bundle-format.md §16.2).

The evidence is a C2SP tlog-proof@v1 file for one entry (ledger_client.evidence
writes and reads it): the entry's inclusion hashes up to a checkpoint, that
checkpoint's signed note, and in ``extra`` the entry, every key of the device's
history (each with its window) and the checkpoint's anchor receipts. The
checkpoint is the smallest one covering the entry that has an included or final
anchor, else the smallest covering it, so the evidence carries an anchor
whenever the log has one for that entry.
"""

from __future__ import annotations

import json
import sqlite3

from ledger_client import merkle
from ledger_client.bundle import AnchorReceipt
from ledger_client.evidence import Evidence

from .errors import GatewayError, StoreError
from .export import ExportEmpty, device_keys
from .log import Log
from .store import Store

__all__ = ["NoSuchEntry", "build_evidence", "reading_at"]


class NoSuchEntry(GatewayError):
    """The entry asked for is not in the log."""

    hint = "check the index (gateway status shows the log size) or the sensor id and time"


async def reading_at(store: Store, sensor: str, at_ns: int) -> int:
    """The index of ``sensor``'s reading received at or just before ``at_ns``."""
    try:
        cur = await store.db.execute(
            "SELECT idx FROM entries WHERE sensor = ? AND kind = 'reading' AND time_ns <= ? "
            "ORDER BY time_ns DESC, idx DESC LIMIT 1",
            (sensor, at_ns),
        )
        row = await cur.fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"log database: finding a reading of {sensor} failed: {exc}") from exc
    if row is None:
        raise NoSuchEntry(f"sensor {sensor} has no reading received at or before that time")
    return int(row[0])


async def build_evidence(log: Log, index: int, *, seal: bool = True) -> Evidence:
    """The evidence for entry ``index``; with ``seal``, a checkpoint is signed if none covers it."""
    store = log.store
    size = await store.size()
    if not 0 <= index < size:
        raise NoSuchEntry(f"entry {index} is not in the log (it holds entries 0–{size - 1})")
    if seal and index >= log.checkpointed_size:
        await log.checkpoint()
    covering = await store.checkpoints(min_size=index + 1)
    if not covering:
        raise ExportEmpty(f"no checkpoint covers entry {index} yet")
    receipts = [a for a in await store.anchors() if a.state != "pending" and a.checkpoint > index]
    anchored = {a.checkpoint for a in receipts}
    cp = next((c for c in covering if c.size in anchored), covering[0])

    plan = merkle.inclusion_plan(index, cp.size)
    found = await store.nodes({n for element in plan for n in element})
    proof = tuple(merkle.fold([found[n] for n in element]) for element in plan)
    rows = [row async for row in store.entries(index, index)]
    if len(rows) != 1:
        raise StoreError(f"log database has no entry {index}")
    keys = await device_keys(log)
    return Evidence(
        index=index,
        hashes=proof,
        checkpoint=cp.note,
        device=log.key.device_id,
        keys=keys,
        entry=rows[0].data,
        anchors=tuple(
            AnchorReceipt(a.checkpoint, a.backend, a.digest, a.state, json.loads(a.receipt))
            for a in receipts
            if a.checkpoint == cp.size
        ),
    )

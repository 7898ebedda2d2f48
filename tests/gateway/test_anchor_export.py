"""Local anchoring state machine and bundle export windows, over real SQLite files."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.local import LocalJournal
from gateway.export import ExportEmpty, export_bundle
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from ledger_client import merkle
from ledger_client.checkpoint import Checkpoint, open_checkpoint


def reading(sensor: str, t_ns: int) -> Reading:
    return Reading(sensor, (Value("temperature", 12.5, "Cel"),), t_ns)


async def test_local_anchors_reach_final_once_per_checkpoint(tmp_path: Path) -> None:
    key = create_device_key(tmp_path / "device.key")
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        journal = LocalJournal(tmp_path / "anchors.sqlite")
        anchorer = Anchorer(store, [journal])
        await log.append([reading("a", time.time_ns())], checkpoint=True)
        for _ in range(3):  # repeated passes never anchor a final checkpoint again
            await anchorer.step()
        await log.append([reading("a", time.time_ns()) for _ in range(3)], checkpoint=True)
        await log.append([reading("a", time.time_ns())], checkpoint=True)
        await anchorer.step()  # only the newest checkpoint is anchored: it covers the one before
        await anchorer.step()
        rows = await store.anchors()
        await journal.aclose()
    assert [(r.checkpoint, r.state) for r in rows] == [(1, "final"), (5, "final")]
    with sqlite3.connect(tmp_path / "anchors.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 2
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM journal")
    assert anchorer.status["local"].last_final == 5


async def test_anchor_digest_is_the_checkpoint_body_hash(tmp_path: Path) -> None:
    key = create_device_key(tmp_path / "device.key")
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        await log.append([reading("a", time.time_ns())], checkpoint=True)
        journal = LocalJournal(tmp_path / "anchors.sqlite")
        await Anchorer(store, [journal]).step()
        await journal.aclose()
        (row,) = await store.anchors()
        cp = await store.latest_checkpoint()
    assert cp is not None
    body = open_checkpoint(cp.note, [key.signer.verifier()])
    assert row.digest == body.digest() == Checkpoint.parse(body.body()).digest()


async def test_export_windows_are_contiguous_and_linked(tmp_path: Path) -> None:
    key = create_device_key(tmp_path / "device.key")
    t = 1_700_000_000 * 10**9
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        for hour in range(6):  # 6 hours, 10 readings each, a checkpoint per hour
            await log.append(
                [reading(f"s{i % 2}", t + hour * 3600 * 10**9 + i) for i in range(10)],
                checkpoint=True,
            )
        b = await export_bundle(log, since_ns=t + 2 * 3600 * 10**9, until_ns=t + 4 * 3600 * 10**9)
        with pytest.raises(ExportEmpty):
            await export_bundle(log, since_ns=t + 99 * 3600 * 10**9)
    assert [e.index for e in b.entries] == list(
        range(20, 41)
    )  # contiguous, hours 2..4 (first of hour 4)
    cps = [open_checkpoint(n, [key.signer.verifier()]) for n in b.checkpoints]
    assert [c.size for c in cps] == [20, 30, 40, 50]  # the one before the window links it
    for e in b.entries:
        assert e.checkpoint == min(c.size for c in cps if c.size > e.index)
        root = next(c.root for c in cps if c.size == e.checkpoint)
        merkle.verify_inclusion(e.index, e.checkpoint, merkle.leaf_hash(e.entry), e.inclusion, root)
    roots = {c.size: c.root for c in cps}
    assert [(c.size1, c.size2) for c in b.consistency] == [(20, 30), (30, 40), (40, 50)]
    for c in b.consistency:
        merkle.verify_consistency(c.size1, c.size2, roots[c.size1], roots[c.size2], c.proof)


async def test_export_seals_an_uncovered_tail(tmp_path: Path) -> None:
    key = create_device_key(tmp_path / "device.key")
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        await log.append([reading("a", time.time_ns()) for _ in range(5)], checkpoint=True)
        await log.append([reading("a", time.time_ns()) for _ in range(3)])
        b = await export_bundle(log)
    assert len(b.entries) == 8
    assert max(open_checkpoint(n, [key.signer.verifier()]).size for n in b.checkpoints) == 8


async def test_an_anchor_that_never_reached_its_ledger_gives_way_to_the_newest(
    tmp_path: Path,
) -> None:
    key = create_device_key(tmp_path / "device.key")
    journal_dir = tmp_path / "not-yet"  # the journal's folder is missing: sqlite cannot open it
    now = [0.0]
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        journal = LocalJournal(journal_dir / "anchors.sqlite")
        anchorer = Anchorer(store, [journal], monotonic=lambda: now[0])
        await log.append([reading("a", time.time_ns())], checkpoint=True)
        await anchorer.step()
        st = anchorer.status["local"]
        assert st.failures == 1
        assert st.last_error is not None and "local journal" in st.last_error
        assert [(r.checkpoint, r.state, r.receipt) for r in await store.anchors()] == [
            (1, "pending", "{}")
        ]
        assert st.pending == [1]
        await log.append([reading("a", time.time_ns()) for _ in range(2)], checkpoint=True)
        journal_dir.mkdir()
        now[0] = st.next_try  # the back-off is over
        await anchorer.step()
        rows = await store.anchors()
        await journal.aclose()
    # The unsent anchor of checkpoint 1 was dropped: checkpoint 3 covers it.
    assert [(r.checkpoint, r.state) for r in rows] == [(3, "final")]
    assert (st.failures, st.last_final, st.pending, st.last_error) == (0, 3, [], None)

"""The signed log over a real SQLite file: append, dedup, proofs, reopen, rollback."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.config import LogConfig
from gateway.errors import StoreError
from gateway.export import export_bundle
from gateway.ingest import Ingest
from gateway.keys import DeviceKey, create_device_key
from gateway.log import Event, Log
from gateway.pipeline import Gap, Reading, Value
from gateway.store import Store
from ledger_client import merkle
from ledger_client.checkpoint import open_checkpoint
from ledger_client.records import parse_entry


def reading(sensor: str, v: float, key: str | None = None) -> Reading:
    return Reading(sensor, (Value("ph", v, "pH"),), time.time_ns(), raw=f"{v:.3f}", dedup_key=key)


@pytest.fixture
def key(tmp_path: Path) -> DeviceKey:
    return create_device_key(tmp_path / "device.key")


async def test_entries_are_signed_records_with_sequence_numbers(
    tmp_path: Path, key: DeviceKey
) -> None:
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        res = await log.append([reading("a", 7.1), reading("b", 7.2), reading("a", 7.3)])
        assert res == [0, 1, 2]
        rows = [r async for r in store.entries(0, 2)]
    verifier = key.signer.verifier()
    recs = [parse_entry(r.data) for r in rows]
    assert all(e.verify_signature(verifier) for e in recs)
    assert [(e.sensor, e.seq, e.index) for e in recs] == [("a", 0, 0), ("b", 0, 1), ("a", 1, 2)]
    # Edge QC flags are signed with each value: the second pH of "a" has one
    # value before it, so spike and rate of change cannot be evaluated yet.
    assert recs[2].rec["values"] == [
        {
            "q": "ph",
            "u": "pH",
            "v": 7.3,
            # gross_range, spike, rate_of_change, flat_line
            "qc": {"flag": 1, "tests": "1221"},
        }
    ]
    assert recs[0].rec["device"] == key.device_id


async def test_stored_proofs_match_an_independent_tree(tmp_path: Path, key: DeviceKey) -> None:
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        for batch in range(7):  # uneven batches and checkpoints in between
            await log.append(
                [reading(f"s{i % 3}", i) for i in range(batch * 5 + 1)], checkpoint=batch % 2 == 0
            )
        await log.checkpoint()
        bundle = await export_bundle(log)
    tree = merkle.MerkleTree(e.entry for e in bundle.entries)
    roots = {
        cp.size: cp.root
        for cp in (open_checkpoint(n, [key.signer.verifier()]) for n in bundle.checkpoints)
    }
    for size, root in roots.items():
        assert tree.root(size) == root
    for e in bundle.entries:
        assert list(e.inclusion) == tree.inclusion_proof(e.index, e.checkpoint)
    for c in bundle.consistency:
        assert list(c.proof) == tree.consistency_proof(c.size1, c.size2)
        merkle.verify_consistency(c.size1, c.size2, roots[c.size1], roots[c.size2], c.proof)


async def test_duplicates_are_not_logged_twice_even_after_reopen(
    tmp_path: Path, key: DeviceKey
) -> None:
    db = tmp_path / "log.sqlite"
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        assert await log.append([reading("n", 1, "src_seq:1"), reading("n", 1, "src_seq:1")]) == [
            0,
            None,
        ]
        assert await log.append([reading("other", 1, "src_seq:1")]) == [1]  # keys are per sensor
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        assert await log.append([reading("n", 1, "src_seq:1"), reading("n", 2, "src_seq:2")]) == [
            None,
            2,
        ]
        rows = [r async for r in store.entries(0, 10)]
    assert [parse_entry(r.data).seq for r in rows] == [0, 0, 1]


async def test_reopen_restores_the_tree_and_counters(tmp_path: Path, key: DeviceKey) -> None:
    db = tmp_path / "log.sqlite"
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        await log.append([reading("a", i) for i in range(37)])
        root, size = log.root(), log.size
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        assert (log.root(), log.size) == (root, size)
        await log.append([reading("a", 99)])
        (last,) = [r async for r in store.entries(37, 37)]
    assert parse_entry(last.data).seq == 37


async def test_a_failed_commit_leaves_memory_and_disk_in_step(
    tmp_path: Path, key: DeviceKey
) -> None:
    db = tmp_path / "log.sqlite"
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        await log.append([reading("a", 1), reading("a", 2)])
        root = log.root()
        # Another writer takes index 2 behind our back: our next commit must fail whole.
        with sqlite3.connect(db) as other:
            other.execute(
                "INSERT INTO entries (idx, kind, sensor, seq, time_ns, dedup, data) "
                "VALUES (2, 'reading', 'x', 0, 0, NULL, x'00')"
            )
        with pytest.raises(StoreError, match="committing entries"):
            await log.append([reading("a", 3), reading("b", 4)], checkpoint=True)
        assert (log.size, log.root()) == (2, root)
        assert log.last_checkpoint is None
        with sqlite3.connect(db) as other:
            other.execute("DELETE FROM entries WHERE idx = 2")
        assert await log.append([reading("a", 3)]) == [2]
        rows = [r async for r in store.entries(0, 2)]
    assert [parse_entry(r.data).seq for r in rows] == [0, 1, 2]
    assert merkle.MerkleTree(r.data for r in rows).root() == log.root()


async def test_a_log_refuses_another_devices_key(tmp_path: Path, key: DeviceKey) -> None:
    async with Store(tmp_path / "log.sqlite") as store:
        await Log(store, key).open()
        other = create_device_key(tmp_path / "other.key")
        with pytest.raises(StoreError, match="belongs to device"):
            await Log(store, other).open()


async def test_gap_and_event_records(tmp_path: Path, key: DeviceKey) -> None:
    now = time.time_ns()
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        await log.append(
            [
                Event("boot", now, {"version": "x"}),
                reading("a", 1),
                Gap("a", "sensor silent", now, now + 10**9, 4, 6),
            ]
        )
        rows = [parse_entry(r.data) async for r in store.entries(0, 2)]
    assert [e.kind for e in rows] == ["event", "reading", "gap"]
    assert rows[0].rec["event"] == "boot"
    assert rows[0].sensor is None
    assert (rows[2].seq, rows[2].rec["src_seq_from"], rows[2].rec["src_seq_to"]) == (1, 4, 6)


async def test_ingest_group_commits_and_checkpoints_by_count_and_time(
    tmp_path: Path, key: DeviceKey
) -> None:
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        seen = []
        ingest = Ingest(
            log,
            LogConfig(checkpoint_every_entries=100, checkpoint_every_seconds=0.3, max_batch=50),
            on_checkpoint=seen.append,
        )
        writer = asyncio.create_task(ingest.run())
        results = await asyncio.gather(
            *(ingest.submit(reading(f"s{i % 4}", i)) for i in range(250))
        )
        assert all(results)
        assert ingest.stats.batches < 250  # readings shared transactions
        sizes = [cp.size for cp in seen]
        assert len(sizes) >= 2
        assert sizes[0] >= 100
        assert sizes == sorted(set(sizes))
        await ingest.submit(reading("late", 1.0))
        await asyncio.sleep(0.6)  # the time trigger signs the tail without new readings
        assert log.checkpointed_size == 251
        await ingest.close()
        await writer
        assert (await store.latest_checkpoint()).size == 251  # type: ignore[union-attr]

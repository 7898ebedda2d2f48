"""Retention (gateway/retention.py): which record bodies may go, and that proofs survive pruning.

The rule is tried on its own (every bound, and the entry bundle rounding), then on a real
log: 1,000 signed readings, the first 600 received 40 days ago, checkpoints at 512 and
1,000, the last anchored final in the local journal and exported. With ``retain_days =
30`` entries 0–511 lose their bodies; every checkpoint's root, every hash tile and an
inclusion proof of entries on both sides of the line are what they were before.

Then the daemon's retention task (its own connection, an injected clock) prunes while
entries are committed; exports start at the first retained entry and verify, a pruned
range is refused; and a published mirror is extended after pruning and verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.local import LocalJournal
from gateway.errors import StoreError
from gateway.evidence import build_evidence
from gateway.export import ExportPruned, export_bundle_v1
from gateway.export_v2 import export_bundle_v2
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.publish import open_target, publish
from gateway.retention import (
    EXPORTED_META,
    PRUNED_META,
    PUBLISHED_META,
    Decision,
    Retention,
    plan,
    prunable_below,
    prune,
    record_copy,
)
from gateway.store import AnchorRow, Store
from ledger_client import merkle
from ledger_client.cli import main as ledger_verify

DAY_NS = 86_400 * 10**9


def rule(**changes: object) -> Decision:
    args: dict[str, object] = {
        "size": 5000,
        "first_young": 3000,
        "ledgers": ["local", "evm:a"],
        "final": {"local": 4000, "evm:a": 3500},
        "published": 2000,
        "exported": 2600,
    }
    args.update(changes)
    return prunable_below(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "decision"),
    [
        ({}, Decision(2560, "copies")),  # max(published, exported) = 2600, to a bundle
        ({"exported": None, "published": 4500}, Decision(2816, "age")),
        ({"exported": 9000, "first_young": None}, Decision(3328, "anchor:evm:a")),
        ({"exported": 9000, "final": {"local": 4000}}, Decision(0, "anchor:evm:a")),
        ({"exported": 9000, "final": {"local": 4000, "evm:a": 9000}}, Decision(2816, "age")),
        ({"published": None, "exported": None}, Decision(0, "copies")),
        ({"ledgers": []}, Decision(0, "nothing configured")),
        # The newest entry's bundle is always kept.
        ({"size": 600, "first_young": None, "exported": 600}, Decision(512, "newest")),
        ({"size": 512, "first_young": None, "exported": 512}, Decision(256, "newest")),
        ({"size": 0, "first_young": None}, Decision(0, "age")),
    ],
)
def test_the_rule(changes: dict[str, object], decision: Decision) -> None:
    got = rule(**changes)
    assert (got.below, got.limit) == (decision.below, decision.limit)


async def test_pruning_keeps_every_root_tile_and_proof(tmp_path: Path) -> None:
    key = create_device_key(tmp_path / "device.key")
    now = time.time_ns()
    async with Store(tmp_path / "log.sqlite") as store:
        log_ = Log(store, key)
        await log_.open()

        def readings(first: int, n: int, at: int) -> list[Reading]:
            return [
                Reading("ph-1", (Value("ph", 7.0, "pH"),), at + i * 10**6, raw=f"r{first + i}")
                for i in range(n)
            ]

        await log_.append(readings(0, 512, now - 40 * DAY_NS), checkpoint=True)
        await log_.append(readings(512, 88, now - 40 * DAY_NS + DAY_NS), checkpoint=False)
        await log_.append(readings(600, 400, now - DAY_NS), checkpoint=True)
        assert [c.size for c in await store.checkpoints(0, 1000)] == [512, 1000]

        # Not anchored, not exported: nothing may go.
        assert (await plan(store, ["local"], 30, now)).below == 0
        await store.put_anchor(AnchorRow(1000, "local", b"d" * 32, "final", "{}", 1, None, 1, 1))
        assert (await plan(store, ["local"], 30, now)) == Decision(0, "copies")
        await record_copy(store, EXPORTED_META, 1000)
        await record_copy(store, EXPORTED_META, 10)  # never lowered
        assert (await plan(store, ["local"], 0, now)) == Decision(0, "nothing configured")
        decision = await plan(store, ["local"], 30, now)
        assert decision == Decision(512, "age")  # entry 600 is the first young one

        before_roots = {s: await store.root_at(s) for s in (256, 512, 777, 1000)}
        before_tiles = [await store.tile(0, i, 256) for i in range(3)] + [await store.tile(1, 0, 3)]
        old_entry = await store.record(100)
        assert old_entry is not None

        assert await prune(store, decision) == 512
        assert await prune(store, decision) == 0  # done already
        assert await store.get_meta(PRUNED_META) == "512"

        assert await store.record(100) is None  # its body is gone...
        assert await store.record(511) is None
        assert await store.record(512) is not None  # ...the rest is kept
        assert {s: await store.root_at(s) for s in before_roots} == before_roots
        tiles = [await store.tile(0, i, 256) for i in range(3)] + [await store.tile(1, 0, 3)]
        assert tiles == before_tiles
        # Inclusion proofs on both sides of the line, against both checkpoints.
        leaves = await store.nodes({merkle.Node(0, 100), merkle.Node(0, 700)})
        for index in (100, 700):
            for size in (512, 1000):
                if index >= size:
                    continue
                plan_ = merkle.inclusion_plan(index, size)
                found = await store.nodes({n for element in plan_ for n in element})
                proof = [merkle.fold([found[n] for n in element]) for element in plan_]
                merkle.verify_inclusion(
                    index, size, leaves[merkle.Node(0, index)], proof, before_roots[size]
                )
        # An export cannot carry a pruned body; it says so rather than write a bad bundle.
        with pytest.raises(StoreError, match="entry 0 was pruned by retention"):
            await store.entry_bundle(0)
        assert len(await store.entry_bundle(2)) > 256 * 100
        # The sensor's newest records and a restart's reading of the log still work.
        assert await store.covered_until("ph-1") is not None
        assert await store.last_seqs() == {"ph-1": 999}


async def test_daemon_task_prunes_and_exports_start_at_the_first_retained_entry(
    tmp_path: Path,
) -> None:
    """The daemon's task (its own connection, an injected clock) prunes while entries are
    committed on the main connection; then exports of the retained part verify, a request
    for a pruned range is refused naming entry 512, and evidence of a retained entry
    verifies while a pruned one's is refused."""
    key = create_device_key(tmp_path / "device.key")
    (tmp_path / "trust.txt").write_text(f"key {key.vkey}\n")
    trust = str(tmp_path / "trust.txt")
    db = tmp_path / "log.sqlite"
    now = time.time_ns()
    async with Store(db) as store:
        log_ = Log(store, key)
        await log_.open()

        def readings(first: int, n: int, at: int) -> list[Reading]:
            return [
                Reading("ph-1", (Value("ph", 7.0, "pH"),), at + i * 10**6, raw=f"r{first + i}")
                for i in range(n)
            ]

        old = now - 40 * DAY_NS
        await log_.append(readings(0, 300, old), checkpoint=True)
        await log_.append(readings(300, 300, old + 300 * 10**6), checkpoint=True)
        await log_.append(readings(600, 400, now - DAY_NS), checkpoint=True)
        journal = LocalJournal(tmp_path / "anchors.sqlite")
        try:
            await Anchorer(store, [journal]).step()  # final at once in the local journal
        finally:
            await journal.aclose()
        assert (await store.anchor_marks("local"))[0] == 1000
        whole = await export_bundle_v2(log_, tmp_path / "whole.tar")
        await record_copy(store, EXPORTED_META, whole.window.size)
        assert whole.window.start == 0

        retention = Retention(db, ["local"], 30, clock=lambda: now, pause_s=0.0)
        task = asyncio.create_task(retention.run(), name="test.retention")
        try:
            # Ingest goes on during the pass, on the other connection.
            for first in range(1000, 1100, 10):
                await log_.append(readings(first, 10, now), checkpoint=False)
            async with asyncio.timeout(20):
                while retention.passes < 1:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        status = retention.to_json()
        assert status["retained_from"] == 512, status
        assert (status["prunable_below"], status["limit"]) == (512, "age")
        assert status["last_pruned"] == 512 and status["last_error"] is None
        assert status["next_run"] is not None and status["longest_step_ms"] > 0
        assert await store.get_meta(PRUNED_META) == "512"
        assert await store.record(511) is None and await store.record(512) is not None
        assert await store.size() == 1100

        # A default export starts at the first retained entry; it verifies.
        v2 = await export_bundle_v2(log_, tmp_path / "retained.tar")
        assert (v2.window.start, v2.window.first) == (512, 512)
        assert v2.window.previous is None  # checkpoint 300 is below the line
        assert v2.entries == v2.window.size - 512
        assert ledger_verify([str(tmp_path / "retained.tar"), "--trust", trust, "--jobs", "1"]) == 3
        v1 = await export_bundle_v1(log_, tmp_path / "retained.json")
        assert (v1.first, v1.entries) == (512, v1.last - 511)
        assert ledger_verify([str(tmp_path / "retained.json"), "--trust", trust]) == 3
        # The whole-log bundle exported before pruning still verifies, and agrees.
        assert ledger_verify([str(tmp_path / "whole.tar"), "--trust", trust, "--jobs", "1"]) == 3

        # An explicit request reaching below the line is refused, naming entry 512.
        for since in (old, old + 100 * 10**6):
            with pytest.raises(ExportPruned, match="the first retained entry is 512, received"):
                await export_bundle_v2(log_, tmp_path / "no.tar", since_ns=since)
            with pytest.raises(ExportPruned, match="the first retained entry is 512"):
                await export_bundle_v1(log_, tmp_path / "no.json", since_ns=since)
        assert not (tmp_path / "no.tar").exists()
        chosen = await export_bundle_v2(log_, tmp_path / "ph-1.tar", sensors=["ph-1"])
        assert (chosen.window.start, chosen.window.first) == (512, 512)
        assert ledger_verify([str(tmp_path / "ph-1.tar"), "--trust", trust, "--jobs", "1"]) == 3
        ranged = await export_bundle_v2(log_, tmp_path / "range.tar", since_ns=old + 550 * 10**6)
        assert ranged.window.first == 550 and ranged.window.previous is None
        assert ledger_verify([str(tmp_path / "range.tar"), "--trust", trust, "--jobs", "1"]) == 3

        # Evidence: a retained entry's verifies; a pruned one's cannot be made.
        proof = tmp_path / "entry-700.tlog-proof"
        proof.write_bytes((await build_evidence(log_, 700)).dumps())
        assert ledger_verify([str(proof), "--trust", trust]) == 3
        with pytest.raises(StoreError, match="entry 100 was pruned by retention"):
            await build_evidence(log_, 100)


async def test_publishing_continues_after_pruning(tmp_path: Path) -> None:
    """A mirror published before pruning is extended after it (its position is above the
    line) and verifies whole; a new, empty target cannot be given the pruned part. With an
    uplink (``mirror``) an export alone lets nothing go."""
    key = create_device_key(tmp_path / "device.key")
    (tmp_path / "trust.txt").write_text(f"key {key.vkey}\n")
    now = time.time_ns()
    async with Store(tmp_path / "log.sqlite") as store:
        log_ = Log(store, key)
        await log_.open()

        def readings(first: int, n: int, at: int) -> list[Reading]:
            return [
                Reading("ph-1", (Value("ph", 7.0, "pH"),), at + i * 10**6, raw=f"r{first + i}")
                for i in range(n)
            ]

        await log_.append(readings(0, 600, now - 40 * DAY_NS), checkpoint=True)
        await log_.append(readings(600, 400, now - DAY_NS), checkpoint=True)
        journal = LocalJournal(tmp_path / "anchors.sqlite")
        try:
            await Anchorer(store, [journal]).step()
        finally:
            await journal.aclose()
        await record_copy(store, EXPORTED_META, 1000)
        # An uplink's mirror holds nothing yet: the export alone lets nothing go.
        assert await plan(store, ["local"], 30, now, mirror=True) == Decision(0, "copies")
        mirror = tmp_path / "mirror"
        async with open_target(str(mirror)) as target:
            assert (await publish(log_, target)).size == 1000
        assert await store.get_meta(PUBLISHED_META) == "1000"
        decision = await plan(store, ["local"], 30, now, mirror=True)
        assert decision == Decision(512, "age")
        assert await prune(store, decision) == 512

        await log_.append(readings(1000, 300, now), checkpoint=True)
        async with open_target(str(mirror)) as target:
            stats = await publish(log_, target)
        assert (stats.previous, stats.size) == (1000, 1300)
        trust = str(tmp_path / "trust.txt")
        assert ledger_verify([str(mirror), "--trust", trust, "--jobs", "1"]) == 3
        async with open_target(str(tmp_path / "new")) as target:
            with pytest.raises(StoreError, match="entry 0 was pruned by retention"):
                await publish(log_, target)

"""Retention (gateway/retention.py): which record bodies may go, and that proofs survive pruning.

The rule is tried on its own (every bound, and the entry bundle rounding), then on a real
log: 1,000 signed readings, the first 600 received 40 days ago, checkpoints at 512 and
1,000, the last anchored final in the local journal and exported. With ``retain_days =
30`` entries 0–511 lose their bodies; every checkpoint's root, every hash tile and an
inclusion proof of entries on both sides of the line are what they were before.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.retention import (
    EXPORTED_META,
    PRUNED_META,
    Decision,
    plan,
    prunable_below,
    prune,
    record_copy,
)
from gateway.store import AnchorRow, Store
from ledger_client import merkle

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

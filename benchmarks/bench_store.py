"""The log store, schema version 1 behaviour (every subtree level) against version 2 (tile levels).

  .venv/bin/python benchmarks/bench_store.py [--readings 100000] [--big 1000000]

Prints, for both behaviours: readings/s appended through ``Log.append``
(signed, RFC 8785, committed with synchronous=FULL, in batches of 256 like a
busy ingest) and database bytes per entry; then, for a tree of ``--big``
entries (synthetic 280-byte entries committed straight through
``Store.commit_batch``, no signing), bytes per entry, the time to produce one
inclusion proof (plan, fetch, fold), one hash tile and one entry bundle.

Version 1 behaviour is reproduced by keeping every level Frontier.append
returns (``gateway.log.TILE_HEIGHT`` patched to 1), and its proof reads by
the version 1 point lookups; everything else is the code as it is. The
process is pinned to one CPU; the machine is shared, so compare ratios
within one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import gateway.log
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import EntryRow, Store
from ledger_client import merkle
from ledger_client.merkle import Node
from ledger_client.tiles import TILE_HEIGHT, TILE_WIDTH

BATCH = 256


def db_bytes(path: Path) -> int:
    """The database's size with its WAL folded in."""
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def remove(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()


async def bench_append(d: Path, n: int, behaviour: str) -> None:
    gateway.log.TILE_HEIGHT = 1 if behaviour == "v1" else TILE_HEIGHT
    key = create_device_key(d / f"{behaviour}.key")
    db = d / f"append-{behaviour}.sqlite"
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        t = time.perf_counter()
        for start in range(0, n, BATCH):
            items = [
                Reading(
                    f"probe-{i % 20}",
                    (Value("ph", round(7 + random.random(), 3), "pH"),),
                    time.time_ns(),
                    raw="7.000",
                )
                for i in range(start, min(start + BATCH, n))
            ]
            await log.append(items, checkpoint=start % 10_000 == 0)
        elapsed = time.perf_counter() - t
        cur = await store.db.execute(  # level 0 has its own table since schema 4
            "SELECT (SELECT COUNT(*) FROM nodes) + (SELECT COUNT(*) FROM leaves)"
        )
        (rows,) = await cur.fetchone() or (0,)
    gateway.log.TILE_HEIGHT = TILE_HEIGHT
    size = db_bytes(db)
    print(
        f"{behaviour} append       {n / elapsed:>10,.0f} readings/s ({n:,} in {elapsed:.1f} s)   "
        f"{size / n:6.1f} bytes/entry   {rows / n:.3f} node rows/entry"
    )


async def build_big(db: Path, n: int, behaviour: str) -> None:
    keep = 1 if behaviour == "v1" else TILE_HEIGHT
    frontier = merkle.Frontier()
    rng = random.Random(1)
    t = time.perf_counter()
    async with Store(db) as store:
        for start in range(0, n, 4_096):
            rows, nodes = [], []
            for i in range(start, min(start + 4_096, n)):
                data = b"{" + rng.randbytes(279)  # never a deflate marker first
                rows.append(EntryRow(i, "reading", None, None, i, None, data))  # not parsed
                nodes.extend(x for x in frontier.append(merkle.leaf_hash(data)) if x[0] % keep == 0)
            await store.commit_batch(rows, nodes)
    elapsed = time.perf_counter() - t
    print(
        f"{behaviour} {n:,} entries  built in {elapsed:.1f} s (no signing)   "
        f"{db_bytes(db) / n:6.1f} bytes/entry"
    )


async def v1_nodes(store: Store, wanted: set[Node]) -> dict[Node, bytes]:
    """Version 1 reads: every node is a row, point lookups OR-ed in one query."""
    where = " OR ".join(["(level = ? AND idx = ?)"] * len(wanted))
    cur = await store.db.execute(  # level 0 has its own table since schema 4
        f"SELECT level, idx, hash FROM (SELECT level, idx, hash FROM nodes "
        f"UNION ALL SELECT 0, idx, hash FROM leaves) WHERE {where}",
        [v for n in wanted for v in n],
    )
    return {Node(int(lv), int(i)): bytes(h) for lv, i, h in await cur.fetchall()}


async def timed(what: str, n: int, op: Callable[[], Awaitable[object]]) -> None:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await op()
        times.append(time.perf_counter() - t)
    times.sort()
    print(
        f"  {what:<34} median {statistics.median(times) * 1e6:8.0f} µs   "
        f"p99 {times[int(len(times) * 0.99)] * 1e6:8.0f} µs   ({n:,} runs)"
    )


async def bench_big(db: Path, n: int, behaviour: str) -> None:
    async with Store(db, readonly=True) as store:
        read = v1_nodes if behaviour == "v1" else Store.nodes

        async def proof() -> None:
            i = random.randrange(n)
            plan = merkle.inclusion_plan(i, n)
            got = await read(store, {x for el in plan for x in el})
            [merkle.fold([got[x] for x in el]) for el in plan]

        async def consistency() -> None:
            m = random.randrange(1, n)
            plan = merkle.consistency_plan(m, n)
            got = await read(store, {x for el in plan for x in el})
            [merkle.fold([got[x] for x in el]) for el in plan]

        await timed(f"{behaviour} inclusion proof at {n:,}", 2_000, proof)
        await timed(f"{behaviour} consistency proof to {n:,}", 2_000, consistency)
        if behaviour == "v1":
            return
        full0 = n // TILE_WIDTH
        await timed(
            "v2 hash tile, level 0 (8 KiB)", 2_000, lambda: store.tile(0, random.randrange(full0))
        )
        if n >= TILE_WIDTH**2:
            full1 = n // TILE_WIDTH**2
            await timed(
                "v2 hash tile, level 1", 2_000, lambda: store.tile(1, random.randrange(full1))
            )
        await timed(
            "v2 entry bundle (256 entries)",
            2_000,
            lambda: store.entry_bundle(random.randrange(full0)),
        )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"riverseal store benchmark, pinned to CPU {sorted(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for behaviour in ("v1", "v2"):
            await bench_append(d, args.readings, behaviour)
        for behaviour in ("v1", "v2"):
            db = d / f"big-{behaviour}.sqlite"
            await build_big(db, args.big, behaviour)
            await bench_big(db, args.big, behaviour)
            remove(db)


if __name__ == "__main__":
    asyncio.run(main())

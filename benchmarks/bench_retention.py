"""How long retention's prune steps hold the log's write lock, and what ingest feels of it.

  .venv/bin/python benchmarks/bench_retention.py [--entries 100000] [--rate 100]

Builds a log database of ``--entries`` synthetic entries (480-byte records, the real
columns, indexes and subtree hash rows; ``Store.commit_batch`` in batches of 4,096),
all old enough to prune. Then a writer commits one entry per transaction at ``--rate``
a second on one connection (as the ingest writer does at field rates, fsync included)
for 3 s alone, then while ``gateway.retention.prune`` empties every entry bundle below
the newest on a second connection, as the daemon's retention task does (one bundle per
transaction, ``STEP_PAUSE_S`` between). Prints the prune steps' durations (waiting for
the lock included), the pruning rate, and the writer's commit latency alone and during
pruning (p50, p99, max).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from gateway.retention import STEP_PAUSE_S, Decision, prune
from gateway.store import EntryRow, Store
from ledger_client.tiles import TILE_WIDTH


def row(i: int) -> tuple[EntryRow, list[tuple[int, int, bytes]]]:
    data = os.urandom(240).hex().encode()  # 480 bytes, like a signed record
    nodes = [(0, i, hashlib.sha256(data).digest())]
    if (i + 1) % TILE_WIDTH == 0:
        nodes.append((8, i // TILE_WIDTH, hashlib.sha256(data + b"t").digest()))
    return EntryRow(i, "reading", f"ph-{i % 20}", i // 20, i * 10**6, None, data), nodes


async def build(store: Store, n: int) -> None:
    for start in range(0, n, 4096):
        rows, nodes = [], []
        for i in range(start, min(start + 4096, n)):
            r, ns = row(i)
            rows.append(r)
            nodes += ns
        await store.commit_batch(rows, nodes)


def figures(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return (
        f"p50 {statistics.median(xs) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {xs[-1] * 1000:.2f} ms ({len(xs)})"
    )


async def main(entries: int, rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "log.sqlite"
        async with Store(db) as writer_store:
            t0 = time.perf_counter()
            await build(writer_store, entries)
            print(f"built {entries:,} entries in {time.perf_counter() - t0:.1f} s")
            next_index = entries
            pruning = asyncio.Event()
            done = asyncio.Event()

            async def writer() -> tuple[list[float], list[float]]:
                nonlocal next_index
                alone: list[float] = []
                during: list[float] = []
                while not done.is_set():
                    r, nodes = row(next_index)
                    t = time.perf_counter()
                    await writer_store.commit_batch([r], nodes)
                    (during if pruning.is_set() else alone).append(time.perf_counter() - t)
                    next_index += 1
                    await asyncio.sleep(1 / rate)
                return alone, during

            task = asyncio.create_task(writer(), name="bench.writer")
            await asyncio.sleep(3.0)
            steps: list[float] = []
            async with Store(db) as pruner_store:
                below = (entries - 1) // TILE_WIDTH * TILE_WIDTH
                pruning.set()
                t0 = time.perf_counter()
                n = await prune(
                    pruner_store,
                    Decision(below, "bench"),
                    pause_s=STEP_PAUSE_S,
                    on_step=lambda _, s: steps.append(s),
                )
                took = time.perf_counter() - t0
            done.set()
            alone, during = await task
        print(
            f"pruned {n:,} record bodies in {len(steps)} steps, {took:.1f} s "
            f"({n / took:,.0f} entries/s with {STEP_PAUSE_S * 1000:.0f} ms pauses)"
        )
        print(f"prune step (one entry bundle, one transaction): {figures(steps)}")
        print(f"commit at {rate:g}/s alone:          {figures(alone)}")
        print(f"commit at {rate:g}/s during pruning: {figures(during)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    asyncio.run(main(args.entries, args.rate))

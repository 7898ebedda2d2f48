"""How long the log database's integrity checks take on a big store.

  .venv/bin/python benchmarks/bench_store_check.py [--entries 1000000] [--db PATH]

Builds (once; ``--db`` keeps it between runs) a log database of ``--entries``
synthetic entries through ``Store.commit_batch`` — 480-byte records with the real
columns and indexes, a level-0 and tile-level subtree hash per entry, batches of
4,096 — then times, each on a cold connection:

- ``Store`` open: header check, ``PRAGMA quick_check`` and the schema check, what
  ``gateway run``, ``export`` and ``status`` do at every start;
- ``store_problems(full=False)`` (quick_check) and ``store_problems()``
  (``PRAGMA integrity_check``, what ``gateway check`` runs).

The page cache is not dropped between runs (that needs root and a quiet machine):
the first timing after building is warm, so it also prints a read of the whole
file for scale. On an SD card, reading the file dominates: figure the file size
over the card's read rate (about 20–40 MB/s on a Raspberry Pi 4).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from pathlib import Path

from gateway.store import EntryRow, Store, store_problems

_TILE = 256


async def build(db: Path, n: int) -> None:
    async with Store(db) as store:
        have = await store.size()
        t0 = time.perf_counter()
        batch = 4096
        for start in range(have, n, batch):
            rows, nodes = [], []
            for i in range(start, min(start + batch, n)):
                data = os.urandom(240).hex().encode()  # 480 bytes, like a signed record
                rows.append(EntryRow(i, "reading", f"ph-{i % 20}", i // 20, i * 10**9, None, data))
                nodes.append((0, i, hashlib.sha256(data).digest()))
                if (i + 1) % _TILE == 0:
                    nodes.append((8, i // _TILE, hashlib.sha256(data + b"t").digest()))
            await store.commit_batch(rows, nodes)
        if n > have:
            print(f"built {n - have:,} entries in {time.perf_counter() - t0:.1f} s")


async def open_store(db: Path) -> None:
    async with Store(db, readonly=True) as store:
        await store.size()


def timed(what: str, fn: object) -> None:
    t0 = time.perf_counter()
    result = fn()  # type: ignore[operator]
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    elif result:
        raise SystemExit(f"{what}: {result}")
    print(f"  {what:<40} {time.perf_counter() - t0:7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "log.sqlite"
        asyncio.run(build(db, args.entries))
        size = db.stat().st_size
        print(f"{db}: {args.entries:,} entries, {size / 1e6:,.0f} MB")
        for _ in range(2):
            timed("read the whole file", lambda: db.read_bytes() and None)
            timed("Store open (header, quick_check, schema)", lambda: open_store(db))
            timed("store_problems(full=False): quick_check", lambda: store_problems(db, full=False))
            timed("store_problems(): integrity_check", lambda: store_problems(db))


if __name__ == "__main__":
    main()

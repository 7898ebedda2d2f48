"""Core throughput, measured in one run on one core (figures printed, never asserted).

  .venv/bin/python benchmarks/bench_core.py [--readings 50000] [--producers 200]

Prints: raw Ed25519 sign and verify rates (the floor everything else sits on),
readings/s appended through the real ingest path (signed, RFC 8785, committed
to SQLite with synchronous=FULL, leaf and subtree hashes stored), inclusion
proofs/s generated from the store, and entries/s verified by the bundle
verifier (the same code as ``ledger-verify``). The process is pinned to one
CPU so the figures are per core; the machine is shared, so compare ratios
within one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nacl.signing

from gateway.config import LogConfig
from gateway.export import export_bundle
from gateway.ingest import Ingest
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from ledger_client import merkle
from ledger_client.bundle import Bundle
from ledger_client.verify import verify_bundle


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f}/s  ({n:,} in {seconds:.2f} s)"


def bench_ed25519(n: int) -> None:
    sk = nacl.signing.SigningKey.generate()
    msg = os.urandom(280)  # about one canonical record
    t = time.perf_counter()
    for _ in range(n):
        sig = sk.sign(msg).signature
    sign_s = time.perf_counter() - t
    vk = sk.verify_key
    t = time.perf_counter()
    for _ in range(n):
        vk.verify(msg, sig)
    verify_s = time.perf_counter() - t
    print(f"ed25519 sign (raw)            {rate(n, sign_s)}")
    print(f"ed25519 verify (raw)          {rate(n, verify_s)}")


async def bench_append(db: Path, key_path: Path, n: int, producers: int) -> Log:
    key = create_device_key(key_path)
    store = Store(db)
    await store.__aenter__()
    log = Log(store, key)
    await log.open()
    ingest = Ingest(log, LogConfig(checkpoint_every_entries=10_000, checkpoint_every_seconds=3600))
    writer = asyncio.create_task(ingest.run())
    per = n // producers

    async def producer(p: int) -> None:
        for _i in range(per):
            v = 7.0 + random.random()
            await ingest.submit(
                Reading(
                    f"probe-{p % 20}",
                    (Value("ph", round(v, 3), "pH"),),
                    time.time_ns(),
                    raw=f"{v:.3f}",
                )
            )

    t = time.perf_counter()
    await asyncio.gather(*(producer(p) for p in range(producers)))
    elapsed = time.perf_counter() - t
    await ingest.close()
    await writer
    s = ingest.stats
    print(
        f"append (sign+commit+hashes)   {rate(per * producers, elapsed)}  "
        f"[{s.batches} transactions, {per * producers / s.batches:.0f} readings each]"
    )
    return log


async def bench_proofs(log: Log, n: int) -> None:
    size = log.size
    idx = [random.randrange(size) for _ in range(n)]
    t = time.perf_counter()
    for i in idx:
        plan = merkle.inclusion_plan(i, size)
        nodes = await log.store.nodes({x for el in plan for x in el})
        [merkle.fold([nodes[x] for x in el]) for el in plan]
    elapsed = time.perf_counter() - t
    print(f"inclusion proof from store    {rate(n, elapsed)}  [one at a time, tree of {size:,}]")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=50_000)
    ap.add_argument("--producers", type=int, default=200)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"riverseal core benchmark, pinned to CPU {sorted(os.sched_getaffinity(0))}")
    bench_ed25519(20_000)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        log = await bench_append(d / "log.sqlite", d / "device.key", args.readings, args.producers)
        await bench_proofs(log, 5_000)
        t = time.perf_counter()
        bundle = await export_bundle(log)
        export_s = time.perf_counter() - t
        print(f"export (all proofs)           {rate(len(bundle.entries), export_s)}")
        text = bundle.dumps()
        await log.store.__aexit__(None, None, None)
    t = time.perf_counter()
    parsed = Bundle.loads(text)
    report = verify_bundle(parsed, [log.key.signer.verifier()], now=datetime.now(UTC))
    elapsed = time.perf_counter() - t
    assert report.ok, report.failures[:3]
    print(f"verify bundle (ledger-verify) {rate(report.entries, elapsed)}  [parse + all 8 checks]")


if __name__ == "__main__":
    asyncio.run(main())

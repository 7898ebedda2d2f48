"""Witness figures: add-checkpoint requests a riverseal-witness answers, over real HTTP.

    .venv/bin/python benchmarks/bench_witness.py [--logs N] [--rounds R] [--size S]

A witness (riverseal_monitor.witness, SQLite state with synchronous=FULL) follows
``--logs`` boxes. Each round, every box signs a checkpoint 1,000 entries larger and
asks for a cosignature with the consistency proof from its previous one, all boxes
at once over keep-alive connections (httpx). Printed: cosignatures per second, the
latency p50/p99 of one request, and the request body size; then the cost of the pure
decision alone (``ledger_client.witness.decide``: parse, verify the box's Ed25519
signature, verify the proof, cosign) per request.

At one checkpoint per box per minute (the default ``checkpoint_every_seconds``),
cosignatures per second × 60 is the number of boxes one witness keeps up with.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer
from ledger_client.witness import AddCheckpoint, WitnessSigner, WitnessState, decide
from riverseal_monitor.witness import Witness, WitnessConfig

STEP = 1_000


def _box(i: int, size: int) -> tuple[Signer, MerkleTree]:
    origin = f"riverseal.example/bench/{i:05d}"
    tree = MerkleTree(b"%d-%d" % (i, n) for n in range(size))
    return Signer.from_seed(origin, i.to_bytes(32, "big")), tree


def _request(key: Signer, tree: MerkleTree, old: int, new: int) -> bytes:
    note = sign_checkpoint(Checkpoint(key.name, new, tree.root(new)), key)
    proof = tuple(tree.consistency_proof(old, new)) if old else ()
    return AddCheckpoint(old, proof, note).encode()


async def _run(logs: int, rounds: int, size: int) -> None:
    boxes = [_box(i, size) for i in range(logs)]
    sizes = [size - STEP * rounds + STEP * r for r in range(rounds + 1)]
    # Requests made ahead: the figures are the witness's, not the boxes' signing.
    plan = [
        [_request(k, t, 0 if r == 0 else sizes[r - 1], sizes[r]) for k, t in boxes]
        for r in range(rounds + 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        signer = WitnessSigner.generate("witness.bench/w1")
        key = Path(tmp) / "w.key"
        key.write_text(signer.to_skey())
        os.chmod(key, 0o600)
        config = WitnessConfig(key, Path(tmp) / "logs.txt", Path(tmp) / "s.sqlite", port=0)
        logs_map = {k.name: [k.verifier()] for k, _ in boxes}
        stop = asyncio.Event()
        async with Witness(config, logs=logs_map, signer=signer) as witness:
            serving = asyncio.create_task(witness.serve(stop), name="bench.witness")
            limits = httpx.Limits(max_connections=min(logs, 60))
            async with httpx.AsyncClient(base_url=witness.url, limits=limits) as http:
                latencies: list[float] = []

                async def one(body: bytes) -> None:
                    t0 = time.perf_counter()
                    r = await http.post("/add-checkpoint", content=body)
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise SystemExit(f"unexpected {r.status_code}: {r.text}")

                await asyncio.gather(*(one(b) for b in plan[0]))  # first sight of each log
                latencies.clear()
                t0 = time.perf_counter()
                for r in range(1, rounds + 1):
                    await asyncio.gather(*(one(b) for b in plan[r]))
                elapsed = time.perf_counter() - t0
            stop.set()
            await serving
    n = logs * rounds
    q = statistics.quantiles(latencies, n=100)
    print(f"witness over HTTP: {logs} logs x {rounds} rounds, checkpoints {STEP} entries apart")
    print(f"  cosignatures/s   {n / elapsed:,.0f}")
    print(f"  latency p50/p99  {q[49] * 1000:.1f} / {q[98] * 1000:.1f} ms (all logs at once)")
    print(f"  request body     {len(plan[1][0]):,} bytes (old size, proof, note)")
    print(f"  boxes kept up with at 1 checkpoint/min: {n / elapsed * 60:,.0f}")

    # The pure decision alone, per request.
    k, t = boxes[0]
    body = plan[1][0]
    state = WitnessState(k.name, sizes[0], t.root(sizes[0]))
    m = 2_000
    t0 = time.perf_counter()
    for _ in range(m):
        decide(body, logs={k.name: [k.verifier()]}, stored=state, signer=signer, now=1)
    per = (time.perf_counter() - t0) / m
    print(f"  decide() alone   {per * 1e6:.0f} µs per request ({1 / per:,.0f}/s on one core)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--logs", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=20_000, help="tree size after the last round")
    a = p.parse_args()
    asyncio.run(_run(a.logs, a.rounds, a.size))


if __name__ == "__main__":
    main()

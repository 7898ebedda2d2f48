"""EVM anchoring figures: anchors per hour a station needs, gas per anchor, and the time
from a checkpoint to a final anchor, on a real anvil node.

    .venv/bin/python benchmarks/bench_anchor.py [--anchors N] [--block-time S] [--seconds T]

1. Computed from the config defaults: at 10 000 readings/s, how many checkpoints an
   hour the log signs (LogConfig.checkpoint_every_entries / _seconds), and how many
   anchors that asks for. The anchorer anchors only the newest checkpoint per ledger
   with one anchor in flight, so the anchor rate is bounded by 3600 / (checkpoint →
   final time), whatever the reading rate.
2. Measured on anvil (``--block-time S``, ``--slots-in-an-epoch 1``, so the finalized
   block is the head − 2): gasUsed per anchor (self-send; sink address; legacy), and
   checkpoint → final time per anchor, by the ``finalized`` tag and by 3 confirmations,
   with the ledger polled once a block (``poll_seconds`` = block time).
3. Measured: anchors final in ``--seconds T`` while checkpoints arrive every 0.1 s
   (10 000 readings/s at 1 000 entries per checkpoint), i.e. the sustained anchors/hour.

Needs anvil (scripts/setup --dev installs it in .tools/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers.anvil_node

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.evm import EvmBackend
from gateway.config import LogConfig
from gateway.config.anchor_evm import EvmAnchorConfig
from gateway.keys import create_anchor_key, create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from tests.servers.anvil_node import AnvilNode, running_anvil

RATE = 10_000  # readings per second
DEAD = "0x000000000000000000000000000000000000dEaD"


def computed() -> None:
    d = LogConfig()
    by_entries = RATE / d.checkpoint_every_entries  # checkpoints per second
    per_s = max(by_entries, 1 / d.checkpoint_every_seconds)
    print("== computed from the defaults")
    print(
        f"checkpoint every {d.checkpoint_every_entries} entries or "
        f"{d.checkpoint_every_seconds:g} s, whichever first"
    )
    print(f"at {RATE} readings/s: {per_s:g} checkpoints/s = {per_s * 3600:,.0f} checkpoints/hour")
    print(
        "anchoring every checkpoint would need that many anchors/hour; the anchorer anchors "
        "only the newest, one in flight per ledger:"
    )
    print("  anchors/hour = 3600 / (checkpoint → final seconds), independent of the reading rate")
    for name, cycle in (
        ("QBFT/IBFT 2.0, 2 s blocks, final in its block, polled every 2 s", 4.0),
        ("Ethereum mainnet, finalized after ~2 epochs (~13 min)", 13 * 60.0),
        ("an L2 posting every ~2 s, 'finalized' by L1 after ~15-20 min", 18 * 60.0),
    ):
        print(f"  {name}: cycle ~{cycle:g} s (assumed) → ~{3600 / cycle:,.0f} anchors/hour")


async def _station(stack: contextlib.AsyncExitStack, tmp: Path) -> tuple[Store, Log]:
    store = await stack.enter_async_context(Store(tmp / "log.sqlite"))
    log = Log(store, create_device_key(tmp / "device.key"))
    await log.open()
    return store, log


async def _checkpoint(log: Log) -> int:
    now = time.time_ns()
    await log.append([Reading("b-1", (Value("temperature", 11.0, "Cel"),), now)], checkpoint=True)
    assert log.last_checkpoint is not None
    return log.last_checkpoint.size


async def latency(node: AnvilNode, tmp: Path, n: int, block_s: float, **settings: Any) -> None:
    """Checkpoint → final for ``n`` anchors one after the other; gasUsed of each."""
    key = create_anchor_key(tmp / "anchor.key")
    node.fund(key.address)
    cfg = EvmAnchorConfig(
        name="bench",
        chain_id=node.chain_id,
        rpc=(node.url,),
        poll_seconds=block_s,
        **settings,
    )
    backend = EvmBackend(cfg, key)
    seconds, gas = [], []
    async with contextlib.AsyncExitStack() as stack:
        store, log = await _station(stack, tmp)
        anchorer = Anchorer(store, [backend], poll_seconds=block_s)
        runner = asyncio.create_task(anchorer.run(), name="bench.anchorer")
        stack.push_async_callback(backend.aclose)
        stack.push_async_callback(_cancel, runner)
        for _ in range(n):
            size = await _checkpoint(log)
            (cp,) = await store.checkpoints(size, size)
            anchorer.notify()
            while True:
                rows = [r for r in await store.anchors("evm:bench") if r.checkpoint == size]
                if rows and rows[0].state == "final":
                    break
                await asyncio.sleep(0.02)
            seconds.append((rows[0].updated_ns - cp.time_ns) / 1e9)
            receipt = node.rpc("eth_getTransactionReceipt", json.loads(rows[0].receipt)["tx"])
            gas.append(int(receipt["gasUsed"], 16))
    label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults (eip1559, self-send)"
    print(
        f"{label}: gasUsed {sorted(set(gas))}; checkpoint → final "
        f"median {statistics.median(seconds):.2f} s, min {min(seconds):.2f}, "
        f"max {max(seconds):.2f} ({n} anchors)"
    )


async def sustained(node: AnvilNode, tmp: Path, seconds: float, block_s: float) -> None:
    key = create_anchor_key(tmp / "anchor.key")
    node.fund(key.address)
    cfg = EvmAnchorConfig(
        name="bench", chain_id=node.chain_id, rpc=(node.url,), poll_seconds=block_s
    )
    backend = EvmBackend(cfg, key)
    checkpoints = 0
    async with contextlib.AsyncExitStack() as stack:
        store, log = await _station(stack, tmp)
        anchorer = Anchorer(store, [backend], poll_seconds=block_s)
        runner = asyncio.create_task(anchorer.run(), name="bench.anchorer")
        stack.push_async_callback(backend.aclose)
        stack.push_async_callback(_cancel, runner)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            await _checkpoint(log)
            checkpoints += 1
            anchorer.notify()
            await asyncio.sleep(0.1)
        rows = await store.anchors("evm:bench")
    final = sum(1 for r in rows if r.state == "final")
    elapsed = time.monotonic() - t0
    print(
        f"{checkpoints} checkpoints in {elapsed:.0f} s (10/s); {final} anchors final, "
        f"{len(rows) - final} in flight → {final / elapsed * 3600:,.0f} anchors/hour, "
        f"{checkpoints / max(final, 1):.0f} checkpoints covered per anchor"
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--anchors", type=int, default=5, help="anchors per latency run")
    p.add_argument("--block-time", type=float, default=1.0, help="anvil block time, s")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the sustained run")
    args = p.parse_args()
    computed()
    bt = args.block_time
    print(f"\n== measured on anvil, {bt:g} s blocks, finalized = head - 2")
    runs: list[dict[str, Any]] = [
        {},
        {"to": DEAD},
        {"fees": "legacy", "gas_price_gwei": 2.0, "max_fee_gwei": 2.0},
        {"finality": "confirmations", "confirmations": 3},
    ]
    for settings in runs:
        with tempfile.TemporaryDirectory() as d, running_anvil(Path(d), block_time=bt) as node:
            asyncio.run(latency(node, Path(d), args.anchors, bt, **settings))
    print(f"\n== sustained, checkpoints every 0.1 s for {args.seconds:g} s")
    with tempfile.TemporaryDirectory() as d, running_anvil(Path(d), block_time=bt) as node:
        asyncio.run(sustained(node, Path(d), args.seconds, bt))


if __name__ == "__main__":
    main()

"""The monitor's pure core alone: entries verified per second of one core, per step size.

    .venv/bin/python benchmarks/bench_monitor_core.py [--entries 20000] [--steps 10 256]

A box's log of ``--entries`` signed readings (one sensor per 10 entries, QC
flagged, a boot event declaring them) is published as tiles into a temporary
directory with a checkpoint every S entries; ``riverseal_monitor.follow.Follower``
then verifies it checkpoint by checkpoint through a fetcher reading that
directory (no network: this is the CPU the verification costs; the HTTP and
database costs are in bench_monitor.py). Printed per step size S: entries
verified per second, and the time of one step (p50, p99).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer
from ledger_client.records import make_entry
from ledger_client.tiles import ENTRIES, TILE_WIDTH, encode_entry_bundle, tile_path
from ledger_client.trust import TrustedKey
from riverseal_monitor.follow import BoxSpec, Follower

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def records(n: int, signer: Signer) -> list[bytes]:
    device = signer.name.split("/")[1]
    key = signer.key_id.hex()
    sensors = [f"s-{k}" for k in range(10)]
    declared = {s: {"allowance_s": 15, "interval_s": 10, "repeat_s": 60} for s in sensors}
    out = []
    for i in range(n):
        when = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        base = {"v": 1, "device": device, "key": key, "index": i, "clock": "synced", "time": when}
        if i == 0:
            rec = {**base, "kind": "event", "event": "boot", "detail": {"sensors": declared}}
        else:
            qc = {"flag": 1, "tests": "1111"}
            values = [{"q": "pH", "u": "[pH]", "v": 7.0 + i % 7 / 10, "qc": qc}]
            rec = {
                **base,
                "kind": "reading",
                "sensor": sensors[i % 10],
                "seq": (i - 1) // 10,
                "values": values,
            }
        out.append(make_entry(rec, signer.signing_key))
    return out


def publish(root: Path, entries: list[bytes], step: int, signer: Signer) -> list[str]:
    """Tiles as an uplink leaves them; the checkpoint note of every ``step`` entries."""
    tree = MerkleTree()
    notes = []
    for i, e in enumerate(entries):
        tree.append(e)
        size = i + 1
        if size % step and size != len(entries):
            continue
        t = (size - 1) // TILE_WIDTH
        width = size - t * TILE_WIDTH
        for lo in range(max(0, (size - step) // TILE_WIDTH), t + 1):
            w = width if lo == t else TILE_WIDTH
            chunk = entries[lo * TILE_WIDTH : lo * TILE_WIDTH + w]
            hashes = b"".join(tree.leaf(lo * TILE_WIDTH + k) for k in range(w))
            for path, data in (
                (tile_path(ENTRIES, lo, w), encode_entry_bundle(chunk)),
                (tile_path(0, lo, w), hashes),
            ):
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_bytes(data)
        notes.append(sign_checkpoint(Checkpoint(signer.name, size, tree.root()), signer))
    return notes


class DirFetcher:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def get(self, path: str) -> bytes | None:
        p = self.root / path
        return p.read_bytes() if p.exists() else None


async def follow(notes: list[str], spec: BoxSpec, root: Path) -> tuple[float, list[float], int]:
    f = Follower(spec, None, now=0.0)
    fetch = DirFetcher(root)
    steps = []
    alerts = 0
    t0 = time.process_time()
    for note in notes:
        s0 = time.perf_counter()
        res = await f.step(note, fetch, now=0.0)
        steps.append(time.perf_counter() - s0)
        alerts += len(res.alerts)
        assert res.advanced, res.alerts
    return time.process_time() - t0, steps, alerts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 256])
    args = ap.parse_args()
    signer = Signer.generate("riverseal/rs-0a1b2c3d4e5f")
    spec = BoxSpec(signer.name, (TrustedKey(signer.verifier()),), "http://unused")
    entries = records(args.entries, signer)
    print(f"Follower.step over a {args.entries}-entry log (10 sensors), files on local disk")
    for step in args.steps:
        with tempfile.TemporaryDirectory(prefix="bench-monitor-core-") as tmp:
            notes = publish(Path(tmp), entries, step, signer)
            cpu, steps, alerts = asyncio.run(follow(notes, spec, Path(tmp)))
        steps.sort()
        p50, p99 = steps[len(steps) // 2], steps[min(len(steps) - 1, int(0.99 * len(steps)))]
        print(
            f"  checkpoint every {step:>4} entries: {args.entries / cpu:>8.0f} entries/s "
            f"(one core), step p50 {p50 * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms, "
            f"{len(steps)} steps, {alerts} alerts",
            flush=True,
        )


if __name__ == "__main__":
    main()

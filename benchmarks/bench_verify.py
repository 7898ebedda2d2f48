"""Measure verify_bundle throughput on a synthetic bundle.

    .venv/bin/python benchmarks/bench_verify.py [ENTRIES] [--profile]

Builds a bundle of ENTRIES (default 100 000) readings from 4 sensors, with a
checkpoint every 1 000 entries, writes it to a temporary file, then times on
one core: Bundle.loads (parsing the JSON), verify_bundle (the checklist), and
the whole CLI (read + parse + verify + report). Building is not timed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import sys
import tempfile
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

from ledger_client.bundle import Bundle, BundleEntry, ConsistencyProof, DeviceKey
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.cli import main as cli_main
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer
from ledger_client.records import format_time, make_entry
from ledger_client.verify import verify_bundle

ORIGIN = "riverseal.example/gw/bench"
T0_NS = 1_772_323_200 * 10**9
NOW = datetime(2027, 1, 1, tzinfo=UTC)
SENSORS = (
    ("ph-1", "pH", "pH"),
    ("do-1", "DO", "mg/L"),
    ("ec-1", "EC", "uS/cm"),
    ("t-1", "T", "Cel"),
)


def build(n: int, every: int = 1000) -> Bundle:
    signer = Signer.from_seed(ORIGIN, bytes(32))
    kid = signer.key_id.hex()
    raws = []
    for i in range(n):
        sensor, q, unit = SENSORS[i % len(SENSORS)]
        seq = i // len(SENSORS)
        t = format_time(T0_NS + i * 250_000_000)
        rec = {
            "v": 1,
            "kind": "reading",
            "device": "rs-bench",
            "key": kid,
            "index": i,
            "time": t,
            "clock": "synced",
            "sensor": sensor,
            "seq": seq,
            "src_seq": seq + 1000,
            "sensor_time": t,
            "values": [{"q": q, "v": round(7.0 + (i % 97) / 31, 3), "u": unit}],
            "qc": {"range": 1, "spike": 1},
        }
        raws.append(make_entry(rec, signer.signing_key))
    tree = MerkleTree(raws)
    sizes = sorted({*range(every, n, every), n})
    notes = tuple(sign_checkpoint(Checkpoint(ORIGIN, s, tree.root(s)), signer) for s in sizes)
    entries = []
    for i in range(n):
        size = sizes[i // every]
        entries.append(BundleEntry(i, raws[i], size, tuple(tree.inclusion_proof(i, size))))
    consistency = tuple(
        ConsistencyProof(a, b, tuple(tree.consistency_proof(a, b)))
        for a, b in itertools.pairwise(sizes)
    )
    return Bundle(
        origin=ORIGIN,
        device="rs-bench",
        keys=(DeviceKey(signer.verifier().to_vkey()),),
        entries=tuple(entries),
        checkpoints=notes,
        consistency=consistency,
        anchors=(),
        exported=format_time(T0_NS),
    )


def measure(n: int, *, profile: bool = False) -> dict[str, float]:
    bundle = build(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.json"
        path.write_text(bundle.dumps(), encoding="utf-8")
        data = path.read_bytes()
        t0 = time.perf_counter()
        loaded = Bundle.loads(data)
        t1 = time.perf_counter()
        if profile:
            prof = cProfile.Profile()
            prof.enable()
        report = verify_bundle(loaded, now=NOW)
        t2 = time.perf_counter()
        if profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        assert report.ok, report.failures[:5]
        with redirect_stdout(io.StringIO()):
            rc = cli_main([str(path)])
        t3 = time.perf_counter()
        assert rc == 4  # nothing failed; no trust file given here: UNTRUSTED KEY
    return {
        "entries": n,
        "bytes": len(data),
        "load_s": t1 - t0,
        "verify_s": t2 - t1,
        "cli_s": t3 - t2,
        "verify_per_s": n / (t2 - t1),
        "cli_per_s": n / (t3 - t2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("entries", type=int, nargs="?", default=100_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    r = measure(args.entries, profile=args.profile)
    print(
        f"{r['entries']} entries, {r['bytes'] / 1e6:.1f} MB: "
        f"load {r['load_s']:.2f} s, verify {r['verify_s']:.2f} s "
        f"({r['verify_per_s']:,.0f} entries/s), "
        f"CLI end to end {r['cli_s']:.2f} s ({r['cli_per_s']:,.0f} entries/s)",
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()

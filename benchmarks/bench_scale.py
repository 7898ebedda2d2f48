"""A year of one box: export and verify 1,000,000 and 10,000,000 entries (issue 8).

    .venv/bin/python benchmarks/bench_scale.py [--entries 1000000 10000000] [--workdir DIR]

For each size, in one run:

1. builds a box with ``gateway init`` and fills its log through the gateway's own
   ``Log.append`` (signing, RFC 8785, QARTOD flags, SQLite commits, a checkpoint
   every 1,000 entries) with the record shapes of a simulated 20-probe station:
   EZO pH/ORP/DO/EC (EC with four values)/RTD, Modbus turbidity and DO, SDI-12
   sonde readings, MQTT nodes, with a gap record now and then. Building is not timed;
2. times ``gateway export`` in v2 (and v1 where it fits on disk: up to 2,000,000
   entries) and prints bytes per entry and the ratio to the entries' own bytes;
3. measures the raw Ed25519 verify rate (PyNaCl, the verifier's library) on this
   log's own signatures, in this process, before and after the verifier runs;
4. times ``ledger-verify --trust`` at ``--jobs 1`` and ``--jobs 2`` on the v2 bundle
   (and ``--jobs 2`` on the v1 one), each a fresh process: entries/s and the peak
   RSS of the largest process of its tree.

The machine is shared and noisy: compare the ratios printed within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import load_config
from gateway.keys import load_device_key
from gateway.log import Log
from gateway.pipeline import Gap, Reading, Value
from gateway.store import Store, decode_data
from ledger_client.note import Verifier
from ledger_client.records import parse_entry

VENV = Path(sys.executable).parent
T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z

# (sensor, [(quantity, unit, base value, swing)]): what the station's drivers produce.
STATION: list[tuple[str, list[tuple[str, str, float, float]]]] = [
    ("ph-1", [("ph", "pH", 7.6, 0.4)]),
    ("ph-2", [("ph", "pH", 7.4, 0.3)]),
    ("orp-1", [("orp", "mV", 210.0, 40.0)]),
    ("do-1", [("do", "mg/L", 9.1, 1.5)]),
    ("do-2", [("do", "mg/L", 8.7, 1.2), ("do_sat", "%", 92.0, 10.0)]),
    (
        "ec-1",
        [
            ("ec", "uS/cm", 412.0, 60.0),
            ("tds", "mg/L", 222.0, 30.0),
            ("salinity", "PSU", 0.2, 0.05),
            ("sg", "1", 1.0, 0.001),
        ],
    ),
    ("ec-2", [("ec", "uS/cm", 398.0, 50.0)]),
    ("rtd-1", [("temp", "Cel", 11.5, 3.0)]),
    ("rtd-2", [("temp", "Cel", 11.8, 3.0)]),
    ("turb-1", [("turbidity", "NTU", 6.0, 5.0)]),
    ("turb-2", [("turbidity", "NTU", 7.5, 6.0)]),
    ("odo-1", [("do", "mg/L", 9.0, 1.4), ("temp", "Cel", 11.6, 3.0)]),
    ("sonde-1", [("ph", "pH", 7.5, 0.3), ("ec", "uS/cm", 405.0, 40.0), ("temp", "Cel", 11.4, 3.0)]),
    ("sonde-2", [("do", "mg/L", 8.9, 1.3), ("turbidity", "NTU", 5.5, 4.0)]),
    ("sonde-3", [("orp", "mV", 190.0, 35.0)]),
    ("node-1", [("temp", "Cel", 12.0, 3.0), ("ph", "pH", 7.7, 0.3)]),
    ("node-2", [("ec", "uS/cm", 420.0, 55.0)]),
    ("node-3", [("turbidity", "NTU", 4.0, 3.0)]),
    ("node-4", [("do", "mg/L", 9.3, 1.1)]),
    ("node-5", [("temp", "Cel", 11.0, 2.5)]),
]
READ_EVERY_NS = 60 * 10**9 // len(STATION)  # 20 probes, each once a minute
BATCH = 1000  # entries per Log.append: one commit and one checkpoint each


class Station:
    """The readings of the simulated station, in order, batch after batch."""

    def __init__(self, seed: int = 8) -> None:
        self.rng = random.Random(seed)
        self.i = 0
        self.src: dict[str, int] = {}

    def items(self, n: int) -> list[Reading | Gap]:
        out: list[Reading | Gap] = []
        rng = self.rng
        for _ in range(n):
            i = self.i
            self.i += 1
            sensor, quantities = STATION[i % len(STATION)]
            t = T0_NS + i * READ_EVERY_NS
            if rng.random() < 0.0005:  # now and then a lost message: a gap record
                out.append(Gap(sensor, "timeout", t - READ_EVERY_NS, t))
                continue
            values = tuple(
                Value(q, round(base + swing * rng.uniform(-1, 1), 3), unit)
                for q, unit, base, swing in quantities
            )
            seq = self.src.get(sensor, 0) + 1
            self.src[sensor] = seq
            mqtt = sensor.startswith("node")
            out.append(
                Reading(
                    sensor,
                    values,
                    t,
                    raw=None if mqtt else ",".join(f"{v.value}" for v in values),
                    src_seq=seq if mqtt else None,
                )
            )
        return out


async def build(box: Path, n: int) -> None:
    cfg = load_config(box / "gateway.toml")
    key = load_device_key(cfg.key_file)
    station = Station()
    clock = [T0_NS]
    async with Store(cfg.db_path) as store:
        log = Log(store, key, clock=lambda: clock[0])
        await log.open()
        done = 0
        started = time.monotonic()
        while done < n:
            batch = station.items(min(BATCH, n - done))
            clock[0] = T0_NS + (done + len(batch)) * READ_EVERY_NS
            await log.append(batch, checkpoint=True)
            done += len(batch)
            if done % 200_000 == 0:
                rate = done / (time.monotonic() - started)
                print(f"  built {done:,} entries ({rate:,.0f}/s)", file=sys.stderr)


LAST_CPU = [0.0]


def run(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) of the largest process of its tree, stdout.

    The CPU seconds of the whole tree are kept in ``LAST_CPU`` (on a shared machine
    they are steadier than wall time for a one-core figure)."""
    probe = (
        "import resource, subprocess, sys;"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "sys.stderr.write(p.stderr);"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(p.returncode, u.ru_maxrss, u.ru_utime + u.ru_stime);"
        "print(p.stdout, end='')"
    )
    t = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-c", probe, *cmd], cwd=cwd, capture_output=True, text=True, check=True
    )
    wall = time.monotonic() - t
    head, _, out = p.stdout.partition("\n")
    rc_text, rss_text, cpu_text = head.split()
    rc, rss = int(rc_text), int(rss_text)
    LAST_CPU[0] = float(cpu_text)
    if rc not in (0, 3):  # 3: verified under the trust file, local anchors only
        raise SystemExit(f"{' '.join(cmd)} exited {rc}:\n{p.stderr}{out[-2000:]}")
    return wall, rss, out


def raw_verify_rate(db: Path, sample: int = 20_000) -> float:
    """Ed25519 verifies/s over this log's own record signatures, one core."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data FROM entries WHERE idx % 37 = 0 LIMIT ?", (sample,))
        entries = [parse_entry(decode_data(r[0])) for r in rows]
    key = load_device_key_from_db(db)
    t = time.process_time()
    for e in entries:
        key.verify(e.signed, e.signature)
    return len(entries) / (time.process_time() - t)


def load_device_key_from_db(db: Path) -> Verifier:
    with sqlite3.connect(db) as conn:
        (vkey,) = conn.execute("SELECT value FROM meta WHERE key = 'vkey'").fetchone()
    return Verifier.from_vkey(vkey)


def measure(work: Path, n: int) -> dict[str, float]:
    box = work / f"box-{n}"
    if not (box / "gateway.toml").exists():
        shutil.rmtree(box, ignore_errors=True)
        subprocess.run([VENV / "gateway", "init", str(box)], check=True, capture_output=True)
        t = time.monotonic()
        asyncio.run(build(box, n))
        print(f"  built {n:,} entries in {time.monotonic() - t:.0f} s", file=sys.stderr)
    cfg = load_config(box / "gateway.toml")
    with sqlite3.connect(cfg.db_path) as conn:
        size, entry_bytes = conn.execute(
            "SELECT COUNT(*), SUM(LENGTH(data)) FROM entries"
        ).fetchone()
    r: dict[str, float] = {"entries": size, "entry_bytes": entry_bytes / size}
    gw = [str(VENV / "gateway"), "export", "--config", "gateway.toml"]
    r["v2_export_s"], r["v2_export_rss"], _ = run([*gw, "--out", "b.tar"], box)
    r["v2_bytes"] = (box / "b.tar").stat().st_size / size
    if size <= 2_000_000:
        r["v1_export_s"], r["v1_export_rss"], _ = run(
            [*gw, "--format", "v1", "--out", "b.json"], box
        )
        r["v1_bytes"] = (box / "b.json").stat().st_size / size
    rate_before = raw_verify_rate(cfg.db_path)
    lv = [str(VENV / "ledger-verify"), "--trust", "trust.txt", "--json"]
    for jobs in (1, 2):
        wall, rss, out = run([*lv, "--jobs", str(jobs), "b.tar"], box)
        doc = json.loads(out)
        if not doc["verified"] and doc.get("failure_count", 1):
            bad = [s for s in doc["steps"] if not s["ok"]]
            raise SystemExit(f"the v2 bundle did not verify: {bad} {doc['failures'][:3]}")
        r[f"v2_verify_j{jobs}_s"], r[f"v2_verify_j{jobs}_rss"] = wall, rss
        r[f"v2_verify_j{jobs}_cpu"] = LAST_CPU[0]
    if "v1_bytes" in r:
        r["v1_verify_j2_s"], r["v1_verify_j2_rss"], _ = run([*lv, "--jobs", "2", "b.json"], box)
    rate_after = raw_verify_rate(cfg.db_path)
    r["raw_verify_per_s"] = (rate_before + rate_after) / 2
    r["raw_before"], r["raw_after"] = rate_before, rate_after
    return r


def report(r: dict[str, float]) -> None:
    n = r["entries"]
    mib = 1024.0
    print(f"\n== {n:,.0f} entries ({r['entry_bytes']:.0f} bytes per entry on average)")
    print(
        f"export v2   {r['v2_export_s']:7.1f} s  {r['v2_bytes']:7.1f} B/entry  "
        f"({r['v2_bytes'] / r['entry_bytes']:.3f} x the entries' bytes)  "
        f"peak RSS {r['v2_export_rss'] / mib:.0f} MiB"
    )
    if "v1_bytes" in r:
        print(
            f"export v1   {r['v1_export_s']:7.1f} s  {r['v1_bytes']:7.1f} B/entry  "
            f"({r['v1_bytes'] / r['entry_bytes']:.3f} x)  "
            f"peak RSS {r['v1_export_rss'] / mib:.0f} MiB"
        )
    raw = r["raw_verify_per_s"]
    print(
        f"raw Ed25519 verify  {raw:,.0f}/s (before {r['raw_before']:,.0f}, "
        f"after {r['raw_after']:,.0f}; PyNaCl, one core, this log's signatures)"
    )
    j1 = n / r["v2_verify_j1_s"]
    j2 = n / r["v2_verify_j2_s"]
    j1_cpu = n / r["v2_verify_j1_cpu"]
    print(
        f"verify v2 --jobs 1  {r['v2_verify_j1_s']:7.1f} s  {j1:,.0f} entries/s  "
        f"= {j1 / raw:.2f} x raw  peak RSS {r['v2_verify_j1_rss'] / mib:.0f} MiB"
    )
    print(
        f"                    {r['v2_verify_j1_cpu']:7.1f} s CPU  {j1_cpu:,.0f} entries/s "
        f"of CPU time = {j1_cpu / raw:.2f} x raw (the raw rate is CPU time too)"
    )
    print(
        f"verify v2 --jobs 2  {r['v2_verify_j2_s']:7.1f} s  {j2:,.0f} entries/s  "
        f"= {j2 / j1:.2f} x --jobs 1  peak RSS {r['v2_verify_j2_rss'] / mib:.0f} MiB"
    )
    if "v1_verify_j2_s" in r:
        print(
            f"verify v1 --jobs 2  {r['v1_verify_j2_s']:7.1f} s  "
            f"{n / r['v1_verify_j2_s']:,.0f} entries/s  "
            f"peak RSS {r['v1_verify_j2_rss'] / mib:.0f} MiB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--workdir", type=Path, help="keep boxes here (reused when present)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="riverseal-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}, workdir {work}", file=sys.stderr)
    for n in args.entries:
        report(measure(work, n))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

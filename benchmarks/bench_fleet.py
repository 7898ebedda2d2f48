"""Resource use of ``sensor-sim fleet``: N simulated boxes in one process, real nginx and Mosquitto.

    .venv/bin/python benchmarks/bench_fleet.py [--boxes 100 1000] [--seconds 60] [--rate 1]

For each N, ``sensor-sim fleet --boxes N --rate R`` runs as its own process for
``--seconds``, each box signing its readings into its own SQLite log, committing once a
second, signing a checkpoint every 10 s, publishing to a real nginx (WebDAV PUT) and
announcing each checkpoint on a real Mosquitto. Sampled from /proc once a second, of
the fleet process alone: its CPU (% of one core, over the second half of the run, the
steady state; and the start-up, creating N stores), its RSS (the last half's largest
and mean), its threads (one per SQLite connection); and from its report: readings
committed per second, entries published, boxes whose target holds their newest
checkpoint at the end. Figures are printed, never asserted.

Needs nginx and mosquitto (scripts/setup --dev).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers

from tests.servers.broker import Broker
from tests.servers.web_server import running_web_server

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def sample(pid: int) -> tuple[float, int, int] | None:
    """(CPU seconds so far, RSS bytes, threads) of ``pid``; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return cpu, int(statm[1]) * _PAGE, int(fields[17])


def run(boxes: int, seconds: float, rate: float, work: Path) -> dict[str, Any]:
    broker_dir = work / f"broker-{boxes}"
    broker_dir.mkdir()
    broker = Broker(broker_dir)
    broker.start()
    try:
        with running_web_server(work / f"nginx-{boxes}") as web:
            cmd = [
                *(sys.executable, "-m", "simulators.cli", "fleet", "--boxes", str(boxes)),
                *("--to", f"{web.url}/fleet", "--data", str(work / f"fleet-{boxes}")),
                *("--broker", f"{broker.host}:{broker.port}", "--seconds", str(seconds)),
                *("--rate", str(rate)),
            ]
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            samples: list[tuple[float, float, int, int]] = []
            while proc.poll() is None:
                s = sample(proc.pid)
                if s is not None:
                    samples.append((time.monotonic() - t0, *s))
                time.sleep(1.0)
            out, _ = proc.communicate()
    finally:
        broker.stop()
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the fleet failed ({proc.returncode}): {out[-2000:]}")
    report = json.loads(lines[-1])
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    first, last = half[0], half[-1]
    steady = (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
    return {
        "boxes": boxes,
        "rate": rate,
        "cpu_steady_pct": round(100 * steady, 1),
        "cpu_total_s": round(samples[-1][1], 1),
        "rss_max_mib": round(max(s[2] for s in half) / 2**20, 1),
        "rss_mean_mib": round(sum(s[2] for s in half) / len(half) / 2**20, 1),
        "threads": max(s[3] for s in samples),
        "entries": report["entries"],
        "entries_per_s": round(report["entries"] / seconds, 1),
        "published": report["published"],
        "caught_up": report["caught_up"],
        "announced": report["announced"],
        "wall_s": round(samples[-1][0], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--boxes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=1.0, help="readings per box per second")
    args = ap.parse_args()
    print(
        f"sensor-sim fleet, {args.rate:g} reading/box/s for {args.seconds:g} s, "
        "commit every 1 s, checkpoint every 10 s, to nginx + Mosquitto"
    )
    print(
        f"{'boxes':>6} {'CPU %':>7} {'RSS max':>9} {'RSS/box':>8} {'threads':>8} "
        f"{'entries/s':>10} {'published':>10} {'caught up':>10} {'announced':>10}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for n in args.boxes:
            r = run(n, args.seconds, args.rate, Path(tmp))
            print(
                f"{r['boxes']:>6} {r['cpu_steady_pct']:>7} {r['rss_max_mib']:>7} Mi "
                f"{r['rss_max_mib'] * 1024 / n:>5.0f} Ki {r['threads']:>8} "
                f"{r['entries_per_s']:>10} {r['published']:>10} "
                f"{r['caught_up']:>5}/{n:<4} {r['announced']:>10}",
                flush=True,
            )
            print("  " + json.dumps(r, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()

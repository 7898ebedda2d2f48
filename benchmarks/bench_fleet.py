"""Resource use of ``sensor-sim fleet``: N simulated boxes in one process, real nginx and Mosquitto.

    .venv/bin/python benchmarks/bench_fleet.py [--boxes 100 1000] [--seconds 60] [--rate 1]

For each N, ``sensor-sim fleet --boxes N --rate R`` runs as its own process for
``--seconds``, each box signing its readings into its own SQLite log, committing once a
second, signing a checkpoint every 10 s, publishing to a real nginx (WebDAV PUT) and
announcing each checkpoint on a real Mosquitto. Sampled from /proc once a second, of
the fleet process alone: its CPU (% of one core, over the second half of the run, the
steady state; the start-up, creating N stores, is left out and its time printed), its
RSS (that half's largest and mean), its threads (one per SQLite connection); and from
its report: readings
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
import threading
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


def run(boxes: int, seconds: float, rate: float, commit_every: float, work: Path) -> dict[str, Any]:
    work = work / f"{boxes}-{commit_every:g}"
    work.mkdir()
    broker_dir = work / "broker"
    broker_dir.mkdir()
    broker = Broker(broker_dir)
    broker.start()
    try:
        with running_web_server(work / "nginx") as web:
            cmd = [
                *(sys.executable, "-m", "simulators.cli", "fleet", "--boxes", str(boxes)),
                *("--to", f"{web.url}/fleet", "--data", str(work / "fleet")),
                *("--broker", f"{broker.host}:{broker.port}", "--seconds", str(seconds)),
                *("--rate", str(rate), "--commit-every", str(commit_every)),
            ]
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            lines: list[tuple[float, str]] = []

            def read() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append((time.monotonic() - t0, line.strip()))

            reader = threading.Thread(target=read, name="bench-fleet-stdout")
            reader.start()
            samples: list[tuple[float, float, int, int]] = []
            while proc.poll() is None:
                s = sample(proc.pid)
                if s is not None:
                    samples.append((time.monotonic() - t0, *s))
                time.sleep(1.0)
            reader.join()
    finally:
        broker.stop()
    if proc.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"the fleet failed ({proc.returncode}): {lines[-5:]}")
    report = json.loads(lines[-1][1])
    running = next(t for t, line in lines if line.startswith("fleet:"))
    # The steady state: the second half of the time every box was running.
    steady_from = running + seconds / 2
    half = [s for s in samples if steady_from <= s[0] <= running + seconds]
    first, last = half[0], half[-1]
    steady = (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
    return {
        "boxes": boxes,
        "rate": rate,
        "commit_every_s": commit_every,
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
        "startup_s": round(running, 1),
        "wall_s": round(samples[-1][0], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--boxes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=1.0, help="readings per box per second")
    ap.add_argument(
        "--commit-every",
        type=float,
        nargs="+",
        default=[1.0, 5.0],
        metavar="S",
        help="each box commits once per S seconds (each value a run per --boxes)",
    )
    args = ap.parse_args()
    print(
        f"sensor-sim fleet, {args.rate:g} reading/box/s for {args.seconds:g} s, "
        "checkpoint every 10 s, to nginx + Mosquitto"
    )
    print(
        f"{'boxes':>6} {'commit':>7} {'CPU %':>7} {'RSS max':>9} {'RSS/box':>8} {'threads':>8} "
        f"{'entries/s':>10} {'published':>10} {'caught up':>10} {'announced':>10}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for n in args.boxes:
            for every in args.commit_every:
                r = run(n, args.seconds, args.rate, every, Path(tmp))
                print(
                    f"{r['boxes']:>6} {every:>5g} s {r['cpu_steady_pct']:>7} "
                    f"{r['rss_max_mib']:>7} Mi "
                    f"{r['rss_max_mib'] * 1024 / n:>5.0f} Ki {r['threads']:>8} "
                    f"{r['entries_per_s']:>10} {r['published']:>10} "
                    f"{r['caught_up']:>5}/{n:<4} {r['announced']:>10}",
                    flush=True,
                )
                print("  " + json.dumps(r, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()

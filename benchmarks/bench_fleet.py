"""Resource use of ``sensor-sim fleet``: N simulated boxes, real nginx and Mosquitto.

    .venv/bin/python benchmarks/bench_fleet.py [--boxes 100 1000] [--seconds 60] [--rate 1]
        [--commit-every 2] [--checkpoint-every 30] [--procs K ...] [--publish http|dir]

For each N, commit interval and ``--procs`` value, ``sensor-sim fleet --boxes N
--rate R`` runs for ``--seconds``, each box signing its readings into its own
SQLite log, committing every ``--commit-every`` s, signing a checkpoint every
``--checkpoint-every`` s, publishing to a real nginx (WebDAV PUT, or with
``--publish dir`` writing into its document root) and announcing each checkpoint
on a real Mosquitto. Sampled from /proc once a second, of the fleet's processes
(the parent and its workers): their CPU (% of one core, over the second half of
the run, the steady state; the start-up, creating N stores, is left out and its
time printed), their RSS together (that half's largest and mean), their threads
(one per SQLite connection); and from its report: readings committed per
second, how late commits ran against their schedule (p99, max), entries
published, boxes whose target holds their newest checkpoint at the end. Figures
are printed, never asserted.

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


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a fleet's worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(k) for k in kids)
    return out


def sample_tree(pid: int) -> tuple[float, int, int] | None:
    """``sample`` summed over ``pid`` and its descendants; None once ``pid`` is gone."""
    got = [s for s in map(sample, tree(pid)) if s is not None]
    if not got:
        return None
    return sum(s[0] for s in got), sum(s[1] for s in got), sum(s[2] for s in got)


def run(
    boxes: int,
    seconds: float,
    rate: float,
    commit_every: float,
    work: Path,
    *,
    checkpoint_every: float,
    procs: int | None,
    publish: str,
) -> dict[str, Any]:
    work = work / f"{boxes}-{commit_every:g}-{procs}"
    work.mkdir()
    broker_dir = work / "broker"
    broker_dir.mkdir()
    broker = Broker(broker_dir)
    broker.start()
    try:
        with running_web_server(work / "nginx") as web:
            to = f"{web.url}/fleet" if publish == "http" else str(web.root / "fleet")
            cmd = [
                *(sys.executable, "-m", "simulators.cli", "fleet", "--boxes", str(boxes)),
                *("--to", to, "--data", str(work / "fleet")),
                *("--broker", f"{broker.host}:{broker.port}", "--seconds", str(seconds)),
                *("--rate", str(rate), "--commit-every", str(commit_every)),
                *("--checkpoint-every", str(checkpoint_every)),
                *(("--procs", str(procs)) if procs is not None else ()),
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
                s = sample_tree(proc.pid)
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
        "checkpoint_every_s": checkpoint_every,
        "procs": report.get("procs", 1),
        "commit_late_p99_s": report["commit_late_p99_s"],
        "commit_late_max_s": report["commit_late_max_s"],
        "cpu_steady_pct": round(100 * steady, 1),
        "cpu_total_s": round(max(s[1] for s in samples), 1),  # workers gone at the end
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
        default=[2.0],
        metavar="S",
        help="each box commits once per S seconds (each value a run per --boxes)",
    )
    ap.add_argument("--checkpoint-every", type=float, default=30.0, metavar="S")
    ap.add_argument(
        "--procs",
        type=int,
        nargs="+",
        default=[None],
        metavar="K",
        help="the fleet's worker processes (each value a run; default: the fleet's own)",
    )
    ap.add_argument("--publish", choices=["http", "dir"], default="http")
    args = ap.parse_args()
    print(
        f"sensor-sim fleet, {args.rate:g} reading/box/s for {args.seconds:g} s, "
        f"checkpoint every {args.checkpoint_every:g} s, published by {args.publish} to nginx, "
        f"announced on Mosquitto; {os.cpu_count()} cores"
    )
    print(
        f"{'boxes':>6} {'commit':>7} {'procs':>5} {'CPU %':>7} {'RSS max':>9} {'RSS/box':>8} "
        f"{'threads':>8} {'entries/s':>10} {'late p99':>9} {'late max':>9} {'published':>10} "
        f"{'caught up':>10} {'announced':>10}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for n in args.boxes:
            for every in args.commit_every:
                for procs in args.procs:
                    r = run(
                        n,
                        args.seconds,
                        args.rate,
                        every,
                        Path(tmp),
                        checkpoint_every=args.checkpoint_every,
                        procs=procs,
                        publish=args.publish,
                    )
                    print(
                        f"{r['boxes']:>6} {every:>5g} s {r['procs']:>5} {r['cpu_steady_pct']:>7} "
                        f"{r['rss_max_mib']:>7} Mi "
                        f"{r['rss_max_mib'] * 1024 / n:>5.0f} Ki {r['threads']:>8} "
                        f"{r['entries_per_s']:>10} {r['commit_late_p99_s']:>7} s "
                        f"{r['commit_late_max_s']:>7} s {r['published']:>10} "
                        f"{r['caught_up']:>5}/{n:<4} {r['announced']:>10}",
                        flush=True,
                    )
                    print("  " + json.dumps(r, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()

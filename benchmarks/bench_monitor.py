"""riverseal-monitor following a simulated fleet: throughput, lag, CPU and RSS, 1 and 2 instances.

    .venv/bin/python benchmarks/bench_monitor.py [--boxes 100] [--seconds 60] [--instances 1 2]

For each instance count, a real Mosquitto and a real nginx are started, then
``riverseal-monitor run`` (that many processes, one shared-subscription group,
each with its own SQLite state) and ``sensor-sim fleet --boxes N --rate 1`` (the
gateway's own log and uplink code: a commit a second, a checkpoint every 10 s,
published to nginx and announced on Mosquitto) for ``--seconds``. Then the
monitors get 20 s to verify the last checkpoints, and are stopped. Printed, per
run: readings verified per second (over the fleet's run), lag from a reading's
time on the box to the monitor's verifying it (p50, p99; it includes the box's
commit window and checkpoint interval), each monitor's CPU (% of one core,
over the fleet's run) and largest RSS, the boxes each instance verified and the
readings verified by more than one (the shared subscription's split: both poll
every box once at start). Figures are printed, never asserted.

Needs nginx and mosquitto (scripts/setup --dev).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers

from simulators.fleet import box_key
from tests.servers.broker import Broker
from tests.servers.web_server import running_web_server

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SETTLE_S = 20.0
MONITOR = [sys.executable, "-m", "riverseal_monitor.monitor_cli"]


def sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds so far, RSS bytes) of ``pid``; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK, int(statm[1]) * _PAGE


def config(path: Path, boxes: int, url: str, broker: Broker) -> None:
    lines = [
        "[monitor]",
        'state = "monitor.sqlite"',
        "checkpoint_interval_s = 10",
        "box_silent_intervals = 6",
        "poll_interval_s = 3600",  # the start-up poll only: announcements carry the run
        "fetch_concurrency = 32",
        "[broker]",
        f'host = "{broker.host}"',
        f"port = {broker.port}",
        'group = "bench"',
    ]
    for i in range(boxes):
        key = box_key(0, i)
        lines += [
            "[[box]]",
            f'origin = "{key.origin}"',
            f'vkey = "{key.vkey}"',
            f'url = "{url}/{key.device_id}"',
        ]
    path.write_text("\n".join(lines) + "\n")


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def run(boxes: int, instances: int, seconds: float, work: Path) -> dict[str, Any]:
    work.mkdir()
    broker = Broker(work / "broker")
    (work / "broker").mkdir()
    broker.start()
    monitors: list[subprocess.Popen[bytes]] = []
    try:
        with running_web_server(work / "nginx") as web:
            dirs = []
            for n in range(instances):
                d = work / f"monitor-{n}"
                d.mkdir()
                config(d / "monitor.toml", boxes, f"{web.url}/fleet", broker)
                with (d / "alerts.jsonl").open("wb") as out, (d / "log").open("wb") as err:
                    monitors.append(
                        subprocess.Popen(
                            [*MONITOR, "run", "--config", str(d / "monitor.toml")],
                            stdout=out,
                            stderr=err,
                        )
                    )
                dirs.append(d)
            time.sleep(2)  # subscribed before the first announcement
            fleet = subprocess.Popen(
                [
                    *(sys.executable, "-m", "simulators.cli", "fleet", "--boxes", str(boxes)),
                    *("--to", f"{web.url}/fleet", "--data", str(work / "fleet")),
                    *("--broker", f"{broker.host}:{broker.port}", "--seconds", str(seconds)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            first = [sample(m.pid) for m in monitors]
            t0 = time.monotonic()
            rss = [0] * instances
            while fleet.poll() is None:
                for k, m in enumerate(monitors):
                    s = sample(m.pid)
                    if s is not None:
                        rss[k] = max(rss[k], s[1])
                time.sleep(1.0)
            run_s = time.monotonic() - t0
            last = [sample(m.pid) for m in monitors]
            assert fleet.stdout is not None
            report = json.loads(fleet.stdout.read().strip().splitlines()[-1])
            time.sleep(_SETTLE_S)
            for m in monitors:
                m.send_signal(signal.SIGTERM)
                m.wait(timeout=30)
    finally:
        for m in monitors:
            if m.poll() is None:
                m.kill()
        broker.stop()
    lags: list[float] = []
    seen: dict[tuple[str, int], int] = {}
    per_instance = []
    for d in dirs:
        with contextlib.closing(sqlite3.connect(d / "monitor.sqlite")) as db:
            rows = db.execute("SELECT origin, idx, verified_s - time_s FROM readings").fetchall()
            (followed,) = db.execute("SELECT COUNT(*) FROM boxes WHERE size > 0").fetchone()
            (alerts,) = db.execute("SELECT COUNT(*) FROM alerts").fetchone()
        per_instance.append({"boxes": followed, "readings": len(rows), "alerts": alerts})
        for origin, idx, lag in rows:
            seen[(origin, idx)] = seen.get((origin, idx), 0) + 1
            lags.append(lag)
    lags.sort()
    cpu = [
        round(100 * (b[0] - a[0]) / run_s, 1) if a and b else None
        for a, b in zip(first, last, strict=True)
    ]
    return {
        "boxes": boxes,
        "instances": instances,
        "fleet_entries": report["entries"],
        "verified_readings": len(seen),
        "verified_per_s": round(len(seen) / run_s, 1),
        "verified_twice": sum(1 for n in seen.values() if n > 1),
        "lag_p50_s": round(pct(lags, 0.5), 2),
        "lag_p99_s": round(pct(lags, 0.99), 2),
        "cpu_pct": cpu,
        "rss_max_mib": [round(r / 2**20, 1) for r in rss],
        "per_instance": per_instance,
        "run_s": round(run_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--boxes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    print(
        f"riverseal-monitor following sensor-sim fleet --boxes {args.boxes} (1 reading/box/s, "
        f"checkpoint every 10 s) for {args.seconds:g} s, nginx + Mosquitto"
    )
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        for n in args.instances:
            r = run(args.boxes, n, args.seconds, Path(tmp) / f"run-{n}")
            print(
                f"{n} instance(s): {r['verified_per_s']} readings verified/s, lag p50 "
                f"{r['lag_p50_s']} s p99 {r['lag_p99_s']} s, CPU {r['cpu_pct']} %, "
                f"RSS {r['rss_max_mib']} MiB, boxes per instance "
                f"{[p['boxes'] for p in r['per_instance']]}, verified twice {r['verified_twice']}",
                flush=True,
            )
            print("  " + json.dumps(r, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()

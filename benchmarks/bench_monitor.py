"""riverseal-monitor following a simulated fleet: throughput, lag, CPU and RSS, 1 and 2 instances.

    .venv/bin/python benchmarks/bench_monitor.py [--boxes 1000] [--seconds 60]
        [--commit-every 2] [--checkpoint-every 30] [--procs K]
        [--runs sqlite:1 postgres:1 postgres:2] [--publish dir|http] [--catch-up]

For each run, ``sensor-sim fleet --boxes N`` (one reading per box per second,
committed every ``--commit-every`` s, a checkpoint every ``--checkpoint-every``
s, the boxes in ``--procs`` worker processes, by default the fleet's choice)
publishes for ``--seconds`` into the document root of a real nginx (``--publish dir``, the
default: the uplink's directory target, so the fleet's CPU goes to the boxes'
logs rather than to a thousand HTTP uploads; ``--publish http``: WebDAV PUT)
and announces each checkpoint on a real Mosquitto; ``riverseal-monitor
run`` processes follow every box: one on SQLite (``sqlite:1``), or K sharing a
throw-away PostgreSQL cluster (``postgres:K``, one shared-subscription group,
leases splitting the boxes). Each run has a fresh fleet (its own seed) and state.

Figures, over the steady state: from half the fleet's run to ``--checkpoint-every``
+ 10 s before its end (when the fleet stops, every box commits and signs a final
checkpoint in the same second: a burst of a thousand checkpoints that belongs to
the shutdown, not to the steady state; runs shorter than that use the whole
second half):

- fleet e/s: readings the fleet committed per second over its whole run, and
  how late its commits ran against their schedule (p99): it shares the cores
  with the monitors, and keeps up while that stays well under a commit interval;
- verified entries/s: entries the monitors verified (from their ``-v`` log lines
  "verified checkpoint N (k new entries)"), per second;
- lag p50/p99: for each reading the box committed in that half, from its time
  (the fleet stamps a batch when it commits it) to the log line of the first
  checkpoint that covered it on the monitor; readings not verified by the end of
  the run plus ``--checkpoint-every`` + 10 s count as ``unverified``;
- boxes each instance verified, and boxes verified by two (should be none: a
  lease gives each box one follower);
- checkpoint lag p50/p99: from the box signing a checkpoint (its store's time)
  to the monitor verifying it: the uplink, the announcement and the monitor,
  without the wait for the next checkpoint;
- monitor lag p50/p99: the monitor's part of that, from a checkpoint being
  offered (announced or polled) to its being verified (its log line says);
- CPU (% of one core, all instances together) and RSS (the largest instance),
  sampled from /proc once a second; the fleet's CPU (all its processes) beside it.

With ``--catch-up`` the fleet runs first with no monitor, then the monitors
verify its whole backlog: entries/s, CPU and RSS of the monitors alone on the
cores, the capacity a live run leaves unused (a live run's own figures are
bounded by the fleet when both share two cores).

Printed, never asserted. Needs nginx, mosquitto and postgresql (scripts/setup --dev).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers

import psycopg

from simulators.fleet import box_key
from tests.servers.broker import Broker
from tests.servers.postgres import running_postgres
from tests.servers.web_server import WebServer, running_web_server

MONITOR = [sys.executable, "-m", "riverseal_monitor.monitor_cli"]
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_VERIFIED = re.compile(
    r"^(\S+ \S+) INFO riverseal_monitor\.monitor: (\S+): verified checkpoint (\d+) "
    r"\((\d+) new entries\)(?: ([\d.]+) s after it was offered)?",
    re.M,
)


def sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds so far, RSS bytes) of ``pid``; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK, int(statm[1]) * _PAGE


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def monitor_toml(
    path: Path,
    state: str,
    name: str,
    boxes: list[tuple[str, Path, str]],
    broker: Broker,
    every: float,
) -> Path:
    tables = "".join(f'[[box]]\norigin = "{o}"\ntrust = "{t}"\nurl = "{u}"\n' for o, t, u in boxes)
    path.write_text(
        f'[monitor]\nstate = "{state}"\ninstance = "{name}"\npoll_interval_s = 600\n'
        f"tick_s = 1\ncheckpoint_interval_s = {every}\nbox_silent_intervals = 100\n"
        "fetch_concurrency = 32\ncache_tiles = 4096\n"
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\ngroup = "bench"\n{tables}'
    )
    return path


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the fleet's worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            todo.extend(int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split())
    return out


def _sample(
    mons: list[subprocess.Popen[bytes]], fleet: subprocess.Popen[str], every: float
) -> list[tuple[float, float, int, float]]:
    """Sample the monitors until the fleet ended and ``every`` + 10 s passed; stop them."""
    # (wall time, CPU s of all monitors, largest RSS, CPU s of the fleet's processes)
    samples: list[tuple[float, float, int, float]] = []
    grace_until = None
    while True:
        got = [sample(m.pid) for m in mons]
        fleet_cpu = sum(s[0] for s in map(sample, tree(fleet.pid)) if s is not None)
        if all(g is not None for g in got):
            samples.append(
                (
                    time.time(),
                    sum(g[0] for g in got if g),
                    max(g[1] for g in got if g),
                    fleet_cpu,
                )
            )
        if fleet.poll() is not None and grace_until is None:
            grace_until = time.monotonic() + every + 10
        if grace_until is not None and time.monotonic() > grace_until:
            break
        time.sleep(1.0)
    for m in mons:
        m.send_signal(signal.SIGTERM)
    for m in mons:
        with contextlib.suppress(subprocess.TimeoutExpired):
            m.wait(timeout=20)
        if m.poll() is None:
            m.kill()
    return samples


def run(
    work: Path,
    kind: str,
    instances: int,
    *,
    boxes: int,
    seconds: float,
    every: float,
    seed: int,
    broker: Broker,
    web: WebServer,
    publish: str,
    pg_url: str | None,
    commit_every: float = 2.0,
    fleet_procs: int | None = None,
    catch_up: bool = False,
) -> dict[str, Any]:
    work.mkdir()
    url = f"{web.url}/run-{seed}"
    # "dir": the boxes' uplinks write into nginx's document root (the uplink's directory
    # target), the monitor still fetches over HTTP; "http": the uplinks PUT to nginx.
    to = url if publish == "http" else str(web.root / f"run-{seed}")
    trust = work / "trust"
    trust.mkdir()
    specs = []
    for i in range(boxes):
        key = box_key(seed, i)
        t = trust / f"{key.device_id}.txt"
        t.write_text(f"key {key.vkey}\n")
        specs.append((key.origin, t, f"{url}/{key.device_id}"))
    if kind == "postgres":
        assert pg_url is not None
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute(f"CREATE DATABASE bench_{seed}")
        state = pg_url.rsplit("/", 1)[0] + f"/bench_{seed}"
    else:
        state = str(work / "monitor.sqlite")
    fleet_cmd = [
        *(sys.executable, "-m", "simulators.cli", "fleet", "--boxes", str(boxes)),
        *("--to", to, "--data", str(work / "fleet"), "--seed", str(seed)),
        *("--broker", f"{broker.host}:{broker.port}", "--seconds", str(seconds)),
        *("--rate", "1", "--commit-every", str(commit_every), "--checkpoint-every", str(every)),
        *(("--procs", str(fleet_procs)) if fleet_procs is not None else ()),
    ]
    if catch_up:
        # The backlog first, with no monitor running: then the monitor alone on the cores.
        done = subprocess.run(fleet_cmd, capture_output=True, text=True, check=True)
        backlog = json.loads(done.stdout.strip().splitlines()[-1])
    mons = []
    for k in range(instances):
        name = f"m{k + 1}"
        cfg = monitor_toml(work / f"{name}.toml", state, name, specs, broker, every)
        with (work / f"{name}.log").open("wb") as e, (work / f"{name}.jsonl").open("wb") as o:
            mons.append(
                subprocess.Popen(
                    [*MONITOR, "run", "-v", "--config", str(cfg)],
                    stdout=o,
                    stderr=e,
                )
            )
    if catch_up:
        return _catch_up(work, mons, state, specs, backlog, kind, instances)
    time.sleep(2)  # the monitors subscribed (and, on PostgreSQL, hold their leases)
    t0 = time.monotonic()
    fleet = subprocess.Popen(fleet_cmd, stdout=subprocess.PIPE, text=True)
    running: list[float] = []
    report: list[dict[str, Any]] = []

    def read() -> None:
        assert fleet.stdout is not None
        for line in fleet.stdout:
            if line.startswith("fleet:"):
                running.append(time.time())
            elif line.startswith("{"):
                report.append(json.loads(line))

    reader = threading.Thread(target=read, name="bench-monitor-fleet", daemon=True)
    reader.start()
    try:
        samples = _sample(mons, fleet, every)
    finally:
        procs: list[subprocess.Popen[Any]] = [fleet, *mons]
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    reader.join()
    if not running:
        raise RuntimeError(f"the fleet did not start ({fleet.returncode})")
    start = running[0]
    end = start + seconds - every - 10  # before the fleet's final checkpoints
    steady = (start + seconds / 2, end if end > start + seconds * 3 / 4 else start + seconds)

    events: dict[str, list[tuple[int, float]]] = {}
    verified_in_window = 0
    own_lags: list[float] = []  # offered to verified, the monitor's own part
    followers: dict[str, set[int]] = {}  # in the steady state, who verified each box
    per_instance = []
    for k in range(instances):
        mine = set()
        log = (work / f"m{k + 1}.log").read_text()
        for stamp, origin, size, new, after in _VERIFIED.findall(log):
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.setdefault(origin, []).append((int(size), at))
            if steady[0] <= at <= steady[1]:
                verified_in_window += int(new)
                if after:
                    own_lags.append(float(after))
                followers.setdefault(origin, set()).add(k)
                mine.add(origin)
        per_instance.append(len(mine))
    readings = _readings(state)
    lags, unverified = [], 0
    for origin, idx, time_s in readings:
        if not steady[0] <= time_s <= steady[1]:
            continue
        ev = sorted(events.get(origin, []))
        j = bisect.bisect_right([s for s, _ in ev], idx)
        if j == len(ev):
            unverified += 1
        else:
            lags.append(ev[j][1] - time_s)
    # From the box signing a checkpoint to the monitor verifying it: the uplink, the
    # announcement and the monitor, without the wait for the checkpoint interval.
    signed = _signed(work / "fleet", specs)
    cp_lags = [
        at - signed[(origin, size)]
        for origin, ev in events.items()
        for size, at in ev
        if (origin, size) in signed and steady[0] <= signed[(origin, size)] <= steady[1]
    ]
    window = [s for s in samples if steady[0] <= s[0] <= steady[1]]
    span = max(window[-1][0] - window[0][0], 1e-9)
    cpu = (window[-1][1] - window[0][1]) / span
    fleet_cpu = (window[-1][3] - window[0][3]) / span
    return {
        "state": kind,
        "instances": instances,
        "boxes": boxes,
        "checkpoint_every_s": every,
        "verified_entries_per_s": round(verified_in_window / (steady[1] - steady[0]), 1),
        "lag_p50_s": round(percentile(lags, 50), 2),
        "lag_p99_s": round(percentile(lags, 99), 2),
        "checkpoint_lag_p50_s": round(percentile(cp_lags, 50), 2),
        "checkpoint_lag_p99_s": round(percentile(cp_lags, 99), 2),
        "monitor_lag_p50_s": round(percentile(own_lags, 50), 2),
        "monitor_lag_p99_s": round(percentile(own_lags, 99), 2),
        "readings_in_window": len(lags) + unverified,
        "boxes_per_instance": per_instance,
        "boxes_verified_by_two": sum(len(v) > 1 for v in followers.values()),
        "unverified": unverified,
        "cpu_pct": round(100 * cpu, 1),
        "rss_max_mib": round(max(s[2] for s in window) / 2**20, 1),
        # What the fleet managed: with the monitor on the same cores, a thousand boxes
        # may commit fewer than one reading per box per second.
        "fleet_entries_per_s": round(report[0]["entries"] / seconds, 1) if report else None,
        "fleet_commit_late_p99_s": report[0]["commit_late_p99_s"] if report else None,
        "fleet_cpu_pct": round(100 * fleet_cpu, 1),
        "fleet_procs": report[0]["procs"] if report else None,
        "fleet_caught_up": report[0]["caught_up"] if report else None,
        "fleet_startup_s": round(start - (time.time() - (time.monotonic() - t0)), 1),
    }


def _catch_up(
    work: Path,
    mons: list[subprocess.Popen[bytes]],
    state: str,
    specs: list[tuple[str, Path, str]],
    report: dict[str, Any],
    kind: str,
    instances: int,
) -> dict[str, Any]:
    """Sample the monitors until every box is verified to its last checkpoint."""
    signed = _signed(work / "fleet", specs)
    final: dict[str, int] = {}
    for origin, size in signed:
        final[origin] = max(final.get(origin, 0), size)
    total = sum(final.values())
    t0 = time.time()
    samples: list[tuple[float, float, int]] = []
    try:
        while time.time() - t0 < 900:
            got = [sample(m.pid) for m in mons]
            if all(g is not None for g in got):
                samples.append(
                    (time.time(), sum(g[0] for g in got if g), max(g[1] for g in got if g))
                )
            sizes = dict(_boxes(state))
            if all(sizes.get(o, 0) >= n for o, n in final.items()):
                break
            time.sleep(1.0)
    finally:
        for m in mons:
            m.send_signal(signal.SIGTERM)
        for m in mons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                m.wait(timeout=20)
            if m.poll() is None:
                m.kill()
    took = samples[-1][0] - t0
    per_instance = [
        len(set(re.findall(r": (\S+): verified checkpoint", (work / f"m{k + 1}.log").read_text())))
        for k in range(instances)
    ]
    return {
        "mode": "catch-up",
        "state": kind,
        "instances": instances,
        "boxes": len(specs),
        "entries": total,
        "seconds": round(took, 1),
        "verified_entries_per_s": round(total / took, 1),
        "all_verified": all(dict(_boxes(state)).get(o, 0) >= n for o, n in final.items()),
        "cpu_pct": round(100 * (samples[-1][1] - samples[0][1]) / max(took, 1e-9), 1),
        "rss_max_mib": round(max(s[2] for s in samples) / 2**20, 1),
        "boxes_per_instance": per_instance,
        "fleet_entries_per_s": round(report["entries"] / max(report["seconds"], 1e-9), 1),
    }


def _boxes(state: str) -> list[tuple[str, int]]:
    """Each box's verified size in the monitors' state (none before the schema exists)."""
    sql = "SELECT origin, size FROM boxes"
    if state.startswith("postgresql://"):
        try:
            with psycopg.connect(state) as c:
                return [(str(o), int(n)) for o, n in c.execute(sql).fetchall()]
        except psycopg.errors.UndefinedTable:
            return []
    if not Path(state).exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        try:
            return [(str(o), int(n)) for o, n in db.execute(sql).fetchall()]
        except sqlite3.OperationalError:
            return []


def _signed(data: Path, specs: list[tuple[str, Path, str]]) -> dict[tuple[str, int], float]:
    """(origin, size) → when the box signed that checkpoint (its store's time_ns)."""
    out = {}
    for origin, _, url in specs:
        store = data / url.rsplit("/", 1)[1] / "log.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            for size, ns in db.execute("SELECT size, time_ns FROM checkpoints"):
                out[(origin, int(size))] = ns / 1e9
    return out


def _readings(state: str) -> list[tuple[str, int, float]]:
    sql = "SELECT origin, idx, time_s FROM readings"
    if state.startswith("postgresql://"):
        with psycopg.connect(state) as c:
            return [(str(o), int(i), float(t)) for o, i, t in c.execute(sql).fetchall()]
    with contextlib.closing(sqlite3.connect(state)) as db:
        return [(str(o), int(i), float(t)) for o, i, t in db.execute(sql).fetchall()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--boxes", type=int, nargs="+", default=[1000])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--checkpoint-every", type=float, default=30.0, metavar="S")
    ap.add_argument("--commit-every", type=float, default=2.0, metavar="S")
    ap.add_argument("--procs", type=int, metavar="K", help="the fleet's worker processes")
    ap.add_argument(
        "--runs",
        nargs="+",
        default=["sqlite:1", "postgres:1", "postgres:2"],
        help="STATE:INSTANCES for each run (sqlite:1, postgres:K)",
    )
    ap.add_argument(
        "--publish",
        choices=["dir", "http"],
        default="dir",
        help="boxes write into nginx's root (dir) or PUT to nginx (http); the monitor GETs",
    )
    ap.add_argument(
        "--catch-up",
        action="store_true",
        help="run the fleet first, then time the monitors verifying its whole backlog",
    )
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C: the runs' processes, nginx, Mosquitto and PostgreSQL stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(
        f"riverseal-monitor following sensor-sim fleet: 1 reading/box/s, commit every "
        f"{args.commit_every:g} s, checkpoint every {args.checkpoint_every:g} s, published by "
        f"{args.publish}, {args.seconds:g} s per run (figures from its half to "
        f"{args.checkpoint_every + 10:g} s before its end); "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"
    )
    if not args.catch_up:
        print(
            f"{'boxes':>6} {'state':>9} {'inst':>4} {'fleet e/s':>9} {'late p99':>8} "
            f"{'fleet CPU':>9} {'entries/s':>10} {'lag p50':>8} {'lag p99':>8} {'cp p50':>7} "
            f"{'cp p99':>7} {'mon p50':>7} {'mon p99':>7} {'unverif.':>8} {'CPU %':>7} "
            f"{'RSS max':>9} {'boxes/inst':>12}"
        )
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker = Broker(work / "broker")
        broker.start()
        try:
            with (
                running_web_server(work / "nginx") as web,
                running_postgres() as pg,
            ):
                seed = 1000
                for n in args.boxes:
                    for spec in args.runs:
                        kind, _, k = spec.partition(":")
                        seed += 1
                        r = run(
                            work / f"run-{seed}",
                            kind,
                            int(k or 1),
                            boxes=n,
                            seconds=args.seconds,
                            every=args.checkpoint_every,
                            seed=seed,
                            broker=broker,
                            web=web,
                            publish=args.publish,
                            pg_url=pg.url,
                            commit_every=args.commit_every,
                            fleet_procs=args.procs,
                            catch_up=args.catch_up,
                        )
                        if args.catch_up:
                            print(
                                f"{n:>6} {kind:>9} {r['instances']:>4} catch-up: "
                                f"{r['entries']} entries in {r['seconds']} s = "
                                f"{r['verified_entries_per_s']} entries/s, CPU {r['cpu_pct']} %, "
                                f"RSS {r['rss_max_mib']} Mi, boxes/inst "
                                f"{'/'.join(map(str, r['boxes_per_instance']))}",
                                flush=True,
                            )
                            print("  " + json.dumps(r, sort_keys=True), flush=True)
                            continue
                        print(
                            f"{n:>6} {kind:>9} {r['instances']:>4} {r['fleet_entries_per_s']!s:>9} "
                            f"{r['fleet_commit_late_p99_s']!s:>6} s {r['fleet_cpu_pct']:>7} % "
                            f"{r['verified_entries_per_s']:>10} {r['lag_p50_s']:>6} s "
                            f"{r['lag_p99_s']:>6} s {r['checkpoint_lag_p50_s']:>5} s "
                            f"{r['checkpoint_lag_p99_s']:>5} s {r['monitor_lag_p50_s']:>5} s "
                            f"{r['monitor_lag_p99_s']:>5} s {r['unverified']:>8} "
                            f"{r['cpu_pct']:>7} "
                            f"{r['rss_max_mib']:>6} Mi "
                            f"{'/'.join(map(str, r['boxes_per_instance'])):>12}",
                            flush=True,
                        )
                        print("  " + json.dumps(r, sort_keys=True), flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()

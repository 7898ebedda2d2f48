"""Disk writes, CPU and publish→commit latency of a real ``gateway run`` at field rates.

  .venv/bin/python benchmarks/bench_field_rates.py [--rates 1,10,100,1000]
        [--seconds 20] [--flood 20000] [--nodes 20] [--broker-inflight 1000]
        [--commit-window S] [--runtime-dir DIR | --no-runtime-dir]

For each paced rate (and a flood), a fresh station (``gateway init``, one
templated MQTT sensor ``n{id}`` on ``bench/{id}``, ``--nodes`` nodes, the
default ``[log]`` settings) runs as its own ``gateway run`` process pinned to
CPU 0; a local Mosquitto, the publisher (a separate process, ``--nodes`` QoS 1
clients, each payload's ``time`` its publish time) and this script run on the
other CPU. Per rate it prints, from the gateway process alone:

- bytes written per reading: ``/proc/<pid>/io`` ``write_bytes`` minus
  ``cancelled_write_bytes`` (the kernel counts a 4 KiB page each time a clean
  page is dirtied: what the SD card's controller gets), from just before the
  first message to the moment the last reading is seen committed, plus the
  bytes of one WAL checkpoint this script then runs (the copy into the
  database file that SQLite would make later; one run just before the span
  copies what the boot left in the WAL, so only the span's pages are counted),
  divided by the readings committed;
  ``of it ck``: the part of it that checkpoint wrote;
- CPU ms per reading: ``utime + stime`` of ``/proc/<pid>/stat`` over the same span;
- commits: the ``ingest.batches`` counter of ``status.json`` over the span;
- publish→commit latency p50/p99: the publisher's clock at publish (the
  payload's ``time``) against the moment this script first sees the reading in
  the log (a read-only connection polling every ``--poll-ms``; the figure is
  late by up to that). The publisher's own PUBACK comes from the broker, not
  from the gateway, so it says nothing of the commit.

The gateway runs as the systemd unit runs it (deploy/riverseal-gateway.service,
``RuntimeDirectory=``): ``RUNTIME_DIRECTORY`` is a fresh directory under
``--runtime-dir`` (default /dev/shm, a tmpfs), so status.json is rewritten
there, off the disk; ``--no-runtime-dir`` keeps it in the data directory, as a
``gateway run`` outside systemd does.

The broker is configured as docs/operations.md asks (``max_inflight_messages
1000``, ``max_queued_messages 0``); ``--broker-inflight 20`` shows Mosquitto's
default. Figures are printed, never asserted; the targets are printed beside
them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.store import decode_data

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TASKSET = shutil.which("taskset")
TICK = os.sysconf("SC_CLK_TCK")


def spawn(
    cmd: list[str], out: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child process, its output appended to ``out`` (or inherited)."""
    if out is None:
        return subprocess.Popen(cmd, env=env)
    with out.open("ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=f, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stamp(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> int:
    t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(t.timestamp() * 1e6) * 1000


# -- the publisher process ------------------------------------------------------------------


async def publish(port: int, clients: int, total: int, rate: float) -> None:
    """``total`` QoS 1 messages over ``clients`` nodes, paced at ``rate``/s (0: a flood)."""
    import aiomqtt

    start = time.monotonic() + 0.2

    async def one(i: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-node-{i}") as c:
            for seq, n in enumerate(range(i, total, clients)):
                if rate > 0:
                    await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                body = {
                    "seq": seq,
                    "time": stamp(time.time_ns()),
                    "values": [{"q": "ph", "v": 7.0 + seq % 100 / 100, "u": "pH"}],
                }
                await c.publish(f"bench/{i}", json.dumps(body).encode(), qos=1)

    await asyncio.gather(*(one(i) for i in range(clients)))


# -- the gateway process ----------------------------------------------------------------------


def proc_counters(pid: int) -> tuple[int, float]:
    """(bytes written net of cancelled writes, CPU seconds) of process ``pid``."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    written = int(io["write_bytes"]) - int(io["cancelled_write_bytes"])
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15)
    return written, cpu


def checkpoint_bytes(db: Path) -> int:
    """Copy the WAL into the database file, as the gateway will later; the bytes that took.

    A short run may end before SQLite's automatic checkpoint: without this its
    share of the writes (each page once more, into the database file) would be missed.
    """
    before, _ = proc_counters(os.getpid())
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as c:
        c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    after, _ = proc_counters(os.getpid())
    return after - before


def ingest_stats(data_dir: Path) -> dict[str, int]:
    try:
        status = json.loads((data_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(status.get("ingest") or {})


@dataclass
class Result:
    name: str
    offered: float
    readings: int = 0
    seconds: float = 0.0
    bytes_written: int = 0
    checkpoint_bytes: int = 0
    cpu_s: float = 0.0
    commits: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def row(self) -> str:
        n = max(self.readings, 1)
        lat = self.latencies_ms
        p50 = f"{statistics.median(lat):7.1f}" if lat else "      —"
        p99 = f"{statistics.quantiles(lat, n=100)[98]:7.1f}" if len(lat) > 1 else "      —"
        return (
            f"{self.name:>8} {self.readings:>9,} {self.readings / self.seconds:>9,.0f} "
            f"{self.bytes_written / n:>10,.0f} {self.checkpoint_bytes / n:>8,.0f} "
            f"{1000 * self.cpu_s / n:>8.3f} "
            f"{self.commits:>8,} {self.readings / max(self.commits, 1):>8.1f} {p50} {p99}"
        )


HEADER = (
    f"{'rate/s':>8} {'readings':>9} {'rdg/s':>9} {'bytes/rdg':>10} {'of it ck':>8} "
    f"{'CPU ms':>8} "
    f"{'commits':>8} {'rdg/cmt':>8} {'p50 ms':>7} {'p99 ms':>7}"
)


def write_station(d: Path, port: int, name: str, window: float | None) -> Path:
    subprocess.run(
        [sys.executable, "-m", "gateway", "init", str(d)], check=True, capture_output=True
    )
    cfg = d / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        + ("" if window is None else f"[log]\ncommit_window_s = {window}\n")
        + f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "bench-gw-{name}"\n'
        '[[sensor]]\nid = "n{id}"\ndriver = "mqtt"\ntopic = "bench/{id}"\ninterval_s = 3600\n'
    )
    return cfg


def poll_new(db: sqlite3.Connection, after: int, seen_ns: int, out: list[float]) -> int:
    """Latency of every reading committed since index ``after``; the new last index."""
    for idx, data in db.execute("SELECT idx, data FROM entries WHERE idx > ?", (after,)):
        after = idx
        rec = json.loads(decode_data(data))["rec"]
        if rec.get("kind") == "reading" and "sensor_time" in rec:
            out.append((seen_ns - parse_stamp(rec["sensor_time"])) / 1e6)
    return after


async def run_rate(
    base: Path, port: int, name: str, rate: float, total: int, args: argparse.Namespace
) -> Result:
    d = base / name
    d.mkdir()
    cfg = write_station(d, port, name, args.commit_window)
    data_dir = d / "data"
    cpus = sorted(os.sched_getaffinity(0))
    pin_gw = [TASKSET, "-c", str(cpus[0])] if TASKSET else []
    pin_other = [TASKSET, "-c", str(cpus[-1])] if TASKSET else []
    env = dict(os.environ)
    env.pop("RUNTIME_DIRECTORY", None)
    if args.runtime_dir is not None:
        env["RUNTIME_DIRECTORY"] = tempfile.mkdtemp(prefix=f"{name}-", dir=args.runtime_dir)
    gw = spawn(
        [*pin_gw, sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        d / "gateway.log",
        env,
    )
    result = Result(name, rate)
    try:
        deadline = time.monotonic() + 30
        # Connected, the boot event committed and reported: the gateway is idle.
        while b"mqtt: connected" not in (d / "gateway.log").read_bytes() or not ingest_stats(
            data_dir
        ):
            if gw.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((d / "gateway.log").read_text())
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        before = ingest_stats(data_dir)
        # The boot's pages (schema, boot event) still owed to the database file are
        # copied now, outside the span: the span's checkpoint then copies its own pages.
        checkpoint_bytes(data_dir / "log.sqlite")
        db = sqlite3.connect(f"file:{data_dir / 'log.sqlite'}?mode=ro", uri=True)
        last = db.execute("SELECT COALESCE(MAX(idx), -1) FROM entries").fetchone()[0]
        w0, c0 = proc_counters(gw.pid)
        t0 = time.monotonic()
        pub = await asyncio.create_subprocess_exec(
            *pin_other, sys.executable, __file__, "--publish", str(port),
            str(args.nodes), str(total), str(rate),
        )  # fmt: skip
        lat: list[float] = []
        limit = time.monotonic() + (total / rate if rate else 0) + args.timeout
        while len(lat) < total:
            await asyncio.sleep(args.poll_ms / 1000)
            last = poll_new(db, last, time.time_ns(), lat)
            if time.monotonic() > limit:
                print(f"  {name}: only {len(lat):,} of {total:,} committed in time")
                break
        w1, c1 = proc_counters(gw.pid)
        result.seconds = time.monotonic() - t0
        await pub.wait()
        db.close()
        result.readings = len(lat)
        result.bytes_written, result.cpu_s = w1 - w0, c1 - c0
        result.checkpoint_bytes = checkpoint_bytes(data_dir / "log.sqlite")
        result.bytes_written += result.checkpoint_bytes
        result.latencies_ms = lat if rate else []
        # status.json is rewritten every 5 s; the counters stand still once the readings are in.
        deadline = time.monotonic() + 15
        while ingest_stats(data_dir).get("committed", 0) < before.get("committed", 0) + total:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        result.commits = ingest_stats(data_dir).get("batches", 0) - before.get("batches", 0)
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
        if "RUNTIME_DIRECTORY" in env:
            shutil.rmtree(env["RUNTIME_DIRECTORY"], ignore_errors=True)
    return result


def targets(results: list[Result]) -> list[str]:
    by = {r.name: r for r in results}
    lines = []
    if "10" in by:
        r = by["10"]
        got = r.bytes_written / max(r.readings, 1)
        lines.append(f"  10/s: {got:,.0f} bytes/reading (target ≤ 2,048)")
    if "1000" in by and "flood" in by:
        paced, flood = by["1000"], by["flood"]
        ratio = (paced.cpu_s / max(paced.readings, 1)) / (flood.cpu_s / max(flood.readings, 1))
        lines.append(f"  1000/s: CPU per reading {ratio:.2f} × the flood's (target ≤ 1.5)")
        if len(paced.latencies_ms) > 1:
            p99 = statistics.quantiles(paced.latencies_ms, n=100)[98]
            lines.append(f"  1000/s: p99 publish→commit {p99:.1f} ms (target < 50)")
    return lines


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="1,10,100,1000", help="paced rates, readings/s")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each paced run")
    ap.add_argument("--flood", type=int, default=20_000, help="readings in the flood (0: none)")
    ap.add_argument("--nodes", type=int, default=20, help="MQTT nodes (sensors) publishing")
    ap.add_argument("--broker-inflight", type=int, default=1000)
    ap.add_argument(
        "--commit-window", type=float, help="[log] commit_window_s (default: the gateway's)"
    )
    ap.add_argument("--poll-ms", type=float, default=2.0)
    ap.add_argument(
        "--runtime-dir",
        default="/dev/shm",
        help="where each gateway's RUNTIME_DIRECTORY is made (the unit's is a tmpfs)",
    )
    ap.add_argument(
        "--no-runtime-dir",
        dest="runtime_dir",
        action="store_const",
        const=None,
        help="no RUNTIME_DIRECTORY: status.json in the data directory",
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="grace after the last publish")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:  # a real disk, not tmpfs
        base = Path(tmp)
        port = free_port()
        conf = base / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_inflight_messages {args.broker_inflight}\nmax_queued_messages 0\n"
            "log_dest none\n"
        )
        broker = spawn([MOSQUITTO, "-c", str(conf)])
        try:
            await asyncio.sleep(0.5)
            print(
                f"riverseal field rates: gateway run on its own CPU, {args.nodes} MQTT nodes, "
                f"broker max_inflight_messages {args.broker_inflight}, "
                f"{args.seconds:g} s per paced rate, "
                + (
                    f"status.json in RUNTIME_DIRECTORY under {args.runtime_dir} (as the unit)"
                    if args.runtime_dir is not None
                    else "status.json in the data directory (no RUNTIME_DIRECTORY)"
                )
            )
            print(HEADER)
            results = []
            for rate in (float(r) for r in args.rates.split(",") if r):
                total = max(1, round(rate * args.seconds))
                r = await run_rate(base, port, f"{rate:g}", rate, total, args)
                print(r.row(), flush=True)
                results.append(r)
            if args.flood:
                r = await run_rate(base, port, "flood", 0.0, args.flood, args)
                print(r.row(), flush=True)
                results.append(r)
            print("targets:")
            print("\n".join(targets(results)))
        finally:
            broker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker.wait(timeout=5)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        port, clients, total, rate = sys.argv[2:6]
        asyncio.run(publish(int(port), int(clients), int(total), float(rate)))
    else:
        asyncio.run(main())

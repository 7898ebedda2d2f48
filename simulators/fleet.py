"""``sensor-sim fleet``: N lightweight simulated boxes in one process.

Each box is the gateway's own code, not a model of it: a device key, a log
(gateway/log.py: every reading signed, appended to the Merkle log, checkpoints
signed) in its own SQLite store (gateway/store.py) under ``--data``, and an
uplink (gateway/uplink.py) publishing it to ``<--to>/<device id>`` and
announcing each checkpoint on ``--broker``. Only the sensors are simulated: a
pH value a box reads ``--rate`` times a second.

What keeps a thousand boxes on two cores bounded, and why each choice:

- ``--procs K`` worker processes, box ``i`` in worker ``i mod K`` (default: one
  per 250 boxes, at most one per core). Each store is an aiosqlite connection
  with its own thread, and every statement is a round trip between that thread
  and the event loop: a thousand such threads in one interpreter spend the
  time fighting for its one GIL (profiled: signing and deflating a reading
  took ten times as long as alone, half the CPU was the kernel's futex work)
  and commit 370–950 of the 1,000 readings/s asked for. K processes each have
  their own GIL and a K-th of the threads. The parent only starts the workers,
  prints the banner once every worker runs, forwards SIGINT/SIGTERM and sums
  their reports; a worker stops when its parent dies (Linux's parent-death
  signal), so killing the fleet kills its boxes.
- a box commits what its sensor read once per ``--commit-every`` seconds
  (default 2: a gateway's commit window gathers up to 2 s), on a fixed
  schedule: a commit that runs late does not delay the sensor, whose readings
  wait for the next commit (how late commits ran is in the report).
- a checkpoint every ``--checkpoint-every`` seconds (default 30): the uplink
  publishes and a monitor verifies per checkpoint, so at 5 s per-checkpoint
  work (reading and re-sending the partial tiles, the monitor's fetches and
  signature checks) outweighs the readings'.
- the boxes of a process share one HTTP client (a pool of 64 connections) and
  one broker connection (each box still announces on its own retained topic);
  each store keeps a small page cache and commits without an fsync each time
  (its store is throwaway; a real box's is not).

The trust file of each box is written to ``<--data>/trust/<device id>.txt``
for ``ledger-verify``.

Unlike the rest of this package, this module imports the gateway (lazily,
from ``sensor-sim fleet`` only): the point is to run its real code paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nacl.signing

from gateway.config.uplink import AnnounceConfig, UplinkConfig
from gateway.drivers.mqtt.config import MqttConfig
from gateway.keys import DeviceKey, device_id_for
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.publish import Target
from gateway.store import CheckpointRow, Store
from gateway.uplink import Announcer, Uplink, open_uplink_target
from ledger_client.note import Signer

__all__ = ["FleetConfig", "FleetReport", "fleet_main", "run_fleet"]

logger = logging.getLogger(__name__)

_CACHE_KIB = 256
"""SQLite page cache per box (the default, 2 MiB, times a thousand boxes is too much)."""

BOXES_PER_PROC = 250
"""``default_procs``: boxes per worker process before another is started."""

_PR_SET_PDEATHSIG = 1
_PARENT_ENV = "RIVERSEAL_FLEET_PARENT"
"""Set in a worker's environment to its parent's pid."""


def default_procs(boxes: int) -> int:
    """One worker process per ``BOXES_PER_PROC`` boxes, at most one per core."""
    return max(1, min(os.cpu_count() or 1, math.ceil(boxes / BOXES_PER_PROC)))


@dataclass(frozen=True)
class FleetConfig:
    boxes: int
    to: str
    """A URL prefix or a directory; box ``d`` publishes to ``<to>/<d>``."""
    data: Path
    """Where each box keeps its store (``<data>/<device id>/log.sqlite``)."""
    broker: tuple[str, int] | None = None
    seconds: float | None = None
    """Run this long (None: until cancelled)."""
    rate: float = 1.0
    """Readings per box per second."""
    commit_every_s: float = 2.0
    """Each box commits what it read since its last commit this often (a gateway's
    commit window gathers up to 2 s)."""
    checkpoint_every_s: float = 30.0
    """Each box signs a checkpoint this often (and its uplink publishes it)."""
    max_bytes_per_s: int = 262_144
    """Each box's uplink pace."""
    connections: int = 64
    """HTTP connections the boxes share."""
    seed: int = 0
    """Box keys are derived from it: the same seed gives the same devices."""
    procs: int = 1
    """Worker processes the boxes are split across (1: the boxes run in this process)."""
    worker: int | None = None
    """In a worker process: its number; it runs the boxes ``i`` with ``i % procs == worker``."""

    def indices(self) -> range:
        """The box numbers this process runs."""
        if self.worker is None:
            return range(self.boxes)
        return range(self.worker, self.boxes, self.procs)


@dataclass
class FleetReport:
    boxes: int
    seconds: float
    entries: int = 0
    published: int = 0
    """Entries on the targets (sum over boxes of the size their target holds)."""
    caught_up: int = 0
    """Boxes whose target holds their newest checkpoint."""
    announced: int = 0
    commits: int = 0
    commit_late_p99_s: float = 0.0
    """How late a box's commits ran against their schedule (99th percentile; with
    worker processes, the worst worker's): the fleet keeps up while this stays small."""
    commit_late_max_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_mib: float = 0.0
    """The process's largest RSS; with worker processes, the sum of theirs."""
    procs: int = 1
    devices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "devices"}

    def add(self, worker: dict[str, Any]) -> None:
        """Sum a worker's report (its ``to_json``) into this one."""
        for k in ("entries", "published", "caught_up", "announced", "commits"):
            setattr(self, k, getattr(self, k) + int(worker[k]))
        for k in ("commit_late_p99_s", "commit_late_max_s"):
            setattr(self, k, max(getattr(self, k), float(worker[k])))
        self.cpu_s = round(self.cpu_s + float(worker["cpu_s"]), 1)
        self.max_rss_mib = round(self.max_rss_mib + float(worker["max_rss_mib"]), 1)


def box_key(seed: int, index: int) -> DeviceKey:
    raw = hashlib.sha256(f"riverseal-fleet/{seed}/{index}".encode()).digest()
    device = device_id_for(bytes(nacl.signing.SigningKey(raw).verify_key))
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", raw))


class Lateness:
    """How late commits ran against their schedule: counts per 10 ms, bounded however
    long the fleet runs."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max_s = 0.0

    def add(self, late_s: float) -> None:
        bucket = max(0, math.ceil(late_s * 100))
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.n += 1
        self.max_s = max(self.max_s, late_s)

    def percentile(self, p: float) -> float:
        """The upper edge of the bucket holding the ``p``-th percentile (0 with none)."""
        rank, seen = p / 100 * self.n, 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return bucket / 100
        return 0.0


class _Gated:
    """A box's HTTP target, its requests let through a gate the fleet shares: the shared
    pool then has few requests waiting (httpcore's pool looks at every waiting request
    whenever a connection frees up, which a thousand boxes' queue makes quadratic)."""

    def __init__(self, target: Target, gate: asyncio.Semaphore) -> None:
        self.target = target
        self.name = target.name
        self._gate = gate

    async def get(self, path: str) -> bytes | None:
        async with self._gate:
            return await self.target.get(path)

    async def put(self, path: str, data: bytes, content_type: str) -> None:
        async with self._gate:
            await self.target.put(path, data, content_type)


class Box:
    """One simulated box: the real log and uplink, a simulated pH probe."""

    def __init__(
        self,
        key: DeviceKey,
        store: Store,
        config: FleetConfig,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        announcer: Announcer | None,
    ) -> None:
        self.key = key
        self.config = config
        self.log = Log(store, key)
        to = f"{config.to.rstrip('/')}/{key.device_id}"
        announce = announcer.config if announcer is not None else None
        uplink = UplinkConfig(
            to=to, max_bytes_per_s=config.max_bytes_per_s, concurrency=1, announce=announce
        )
        target = None
        if uplink.is_http:
            target = _Gated(open_uplink_target(uplink, client=client), gate)
        self.uplink = Uplink(self.log, uplink, target=target, announcer=announcer)
        self._phase = (int(key.device_id[3:11], 16) % 1000) / 1000 * math.tau

    async def sense(self, stop: asyncio.Event, late: Lateness) -> None:
        """Read, commit every ``commit_every_s``, sign a checkpoint every ``checkpoint_every_s``.

        Commits keep to a fixed schedule: one that runs late commits what the sensor
        read meanwhile (``rate`` readings a second whatever the commits do) and the
        next is not pushed back; how late each ran is counted in ``late``. On ``stop``
        what was read since the last commit is committed, as a gateway's shutdown does.
        """
        cfg = self.config
        loop = asyncio.get_running_loop()
        owed = 0.0
        read_at = loop.time()
        # Boxes commit and sign checkpoints out of step, as a real fleet's would (in step,
        # a thousand uplinks would publish in the same second).
        due_at = read_at + cfg.commit_every_s * (self._phase / math.tau - 1)
        last_cp = time.monotonic() - cfg.checkpoint_every_s * (1 - self._phase / math.tau)
        stopping = False
        while not stopping:
            due_at += cfg.commit_every_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due_at):
                    await stop.wait()
            stopping = stop.is_set()
            now_m = loop.time()
            owed += cfg.rate * (now_m - read_at)
            read_at = now_m
            n, owed = int(owed), owed - int(owed)
            now = time.time_ns()
            batch = [
                Reading("ph-1", (Value("ph", self._ph(now), "pH"),), now - i * 10**6)
                for i in reversed(range(n))
            ]
            due = time.monotonic() - last_cp >= cfg.checkpoint_every_s
            if batch or due:
                await self.log.append(batch, checkpoint=due)
            if not stopping:
                late.add(loop.time() - due_at)
            if due:
                last_cp = time.monotonic()
                self._signed(self.log.last_checkpoint)

    def _ph(self, now_ns: int) -> float:
        return round(7.4 + 0.3 * math.sin(now_ns / 3.6e12 * math.tau + self._phase), 3)

    def _signed(self, cp: CheckpointRow | None) -> None:
        if cp is not None:
            self.uplink.notify(cp)

    async def close(self) -> None:
        """A final checkpoint and a bounded last upload."""
        cp = await self.log.checkpoint()
        self._signed(cp)
        await self.uplink.finish(timeout_s=10.0)


async def run_fleet(
    config: FleetConfig,
    *,
    started: asyncio.Event | None = None,
    stop_requested: asyncio.Event | None = None,
) -> FleetReport:
    """Run the fleet for ``config.seconds`` or until ``stop_requested``; what it did."""
    t0, cpu0 = time.monotonic(), time.process_time()
    report = FleetReport(boxes=len(config.indices()), seconds=0.0)
    late = Lateness()
    trust = config.data / "trust"
    trust.mkdir(parents=True, exist_ok=True)
    limits = httpx.Limits(
        max_connections=config.connections, max_keepalive_connections=config.connections
    )
    announcer = None
    if config.broker is not None:
        announcer = Announcer(
            AnnounceConfig(
                broker=MqttConfig(host=config.broker[0], port=config.broker[1]),
                retry_max_seconds=5.0,
            ),
            identifier=f"riverseal-fleet-{config.seed}"
            + ("" if config.worker is None else f"-{config.worker}"),
        )
    stop = asyncio.Event()
    async with (
        httpx.AsyncClient(
            limits=limits,
            timeout=httpx.Timeout(30.0, pool=None),  # boxes queue for a connection
        ) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        boxes: list[Box] = []
        gate = asyncio.Semaphore(config.connections)
        opening = asyncio.Semaphore(32)  # stores are made a few at a time, not one by one

        async def open_box(i: int) -> Box:
            key = box_key(config.seed, i)
            async with opening:
                store = await stack.enter_async_context(
                    Store(config.data / key.device_id / "log.sqlite")
                )
                await store.db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
                # A throwaway store: no fsync per commit (WAL's NORMAL), or a thousand
                # boxes measure the disk's fsync rate instead of the gateway's code.
                await store.db.execute("PRAGMA synchronous=NORMAL")
                box = Box(key, store, config, client, gate, announcer)
                await box.log.open()
                await stack.enter_async_context(box.uplink)
            (trust / f"{key.device_id}.txt").write_text(f"key {key.vkey}\n")
            return box

        boxes = list(await asyncio.gather(*(open_box(i) for i in config.indices())))
        report.devices.extend(b.key.device_id for b in boxes)
        try:
            async with asyncio.TaskGroup() as tg:
                if announcer is not None:
                    announcing = tg.create_task(announcer.run(), name="fleet.announce")
                uplinks = [
                    tg.create_task(b.uplink.run(), name=f"fleet.uplink[{b.key.device_id}]")
                    for b in boxes
                ]
                sensing = [
                    tg.create_task(b.sense(stop, late), name=f"fleet.sense[{b.key.device_id}]")
                    for b in boxes
                ]
                if started is not None:
                    started.set()
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(config.seconds):
                            await (stop_requested or asyncio.Event()).wait()
                finally:
                    stop.set()
                    await asyncio.gather(*sensing, return_exceptions=True)
                    for t in uplinks:
                        t.cancel()
                    await asyncio.gather(*uplinks, return_exceptions=True)
                    # The final checkpoints, a few boxes at a time.
                    gate = asyncio.Semaphore(32)

                    async def close(b: Box) -> None:
                        async with gate:
                            await b.close()

                    await asyncio.gather(*(close(b) for b in boxes))
                    if announcer is not None:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(10.0):
                                await announcer.drained.wait()
                        announcing.cancel()
        finally:
            report.seconds = round(time.monotonic() - t0, 1)
            report.cpu_s = round(time.process_time() - cpu0, 1)
            report.max_rss_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            for b in boxes:
                report.entries += b.log.size
                report.published += b.uplink.published or 0
                cp = b.log.last_checkpoint
                report.caught_up += cp is not None and b.uplink.published == cp.size
            report.announced = announcer.announced if announcer is not None else 0
            report.commits = late.n
            report.commit_late_p99_s = late.percentile(99)
            report.commit_late_max_s = round(late.max_s, 2)
    return report


async def fleet_main(config: FleetConfig) -> int:
    """``sensor-sim fleet``: run until ``--seconds`` or SIGINT/SIGTERM, then print the
    report as one JSON line (after a banner line once every box runs). With
    ``config.procs`` > 1 the boxes run in that many worker processes (``_workers``)."""
    if config.worker is not None:
        _die_with_parent()
    loop = asyncio.get_running_loop()
    stop, started = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def banner() -> None:
        await started.wait()
        print(f"fleet: {config.boxes} boxes running, publishing to {config.to}", flush=True)

    shown = asyncio.create_task(banner(), name="fleet.banner")
    try:
        if config.procs > 1 and config.worker is None:
            report = await _workers(config, started=started, stop_requested=stop)
        else:
            report = await run_fleet(config, started=started, stop_requested=stop)
    finally:
        shown.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    try:
        print(json.dumps(report.to_json(), sort_keys=True), flush=True)
    except BrokenPipeError:
        if config.worker is None:
            raise
        # A worker whose parent died has no one to report to; its boxes stopped cleanly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _die_with_parent() -> None:
    """A worker gets SIGTERM (a clean stop: final checkpoints, its report) when the
    parent dies, however it dies; if it already has, the worker stops now."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get(_PARENT_ENV):
        raise SystemExit("sensor-sim fleet: the parent process is gone")


def worker_argv(config: FleetConfig, worker: int) -> list[str]:
    """The command line of worker ``worker``: this fleet's options and its number."""
    argv = [sys.executable, "-m", "simulators.cli", "fleet", "--boxes", str(config.boxes)]
    argv += ["--to", config.to, "--data", str(config.data), "--seed", str(config.seed)]
    argv += ["--rate", repr(config.rate), "--commit-every", repr(config.commit_every_s)]
    argv += ["--checkpoint-every", repr(config.checkpoint_every_s)]
    argv += ["--max-bytes-per-s", str(config.max_bytes_per_s)]
    argv += ["--procs", str(config.procs), "--worker", str(worker)]
    if config.broker is not None:
        argv += ["--broker", f"{config.broker[0]}:{config.broker[1]}"]
    if config.seconds is not None:
        argv += ["--seconds", repr(config.seconds)]
    return argv


async def _workers(
    config: FleetConfig, *, started: asyncio.Event, stop_requested: asyncio.Event
) -> FleetReport:
    """Run the boxes in ``config.procs`` worker processes; their reports summed.

    ``started`` is set once every worker says its boxes run; ``stop_requested`` is
    passed on to the workers as SIGTERM (each then stops as a one-process fleet does).
    """
    t0 = time.monotonic()
    env = {**os.environ, _PARENT_ENV: str(os.getpid())}
    procs = [
        await asyncio.create_subprocess_exec(
            *worker_argv(config, w), stdout=asyncio.subprocess.PIPE, env=env
        )
        for w in range(config.procs)
    ]
    running = 0
    reports: list[dict[str, Any]] = []

    async def follow(p: asyncio.subprocess.Process) -> None:
        nonlocal running
        assert p.stdout is not None
        async for line in p.stdout:
            if line.startswith(b"fleet:"):
                running += 1
                if running == len(procs):
                    started.set()
            elif line.startswith(b"{"):
                reports.append(json.loads(line))
        await p.wait()

    async def forward_stop() -> None:
        await stop_requested.wait()
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)

    forwarding = asyncio.create_task(forward_stop(), name="fleet.forward-stop")
    try:
        await asyncio.gather(*(follow(p) for p in procs))
    finally:
        forwarding.cancel()
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    failed = [p.returncode for p in procs if p.returncode != 0]
    if failed or len(reports) != len(procs):
        raise SystemExit(f"sensor-sim fleet: a worker failed (exit {failed})")
    report = FleetReport(boxes=config.boxes, seconds=round(time.monotonic() - t0, 1))
    report.procs = config.procs
    for r in reports:
        report.add(r)
    return report

"""``sensor-sim fleet``: N lightweight simulated boxes in one process.

Each box is the gateway's own code, not a model of it: a device key, a log
(gateway/log.py: every reading signed, appended to the Merkle log, checkpoints
signed) in its own SQLite store (gateway/store.py) under ``--data``, and an
uplink (gateway/uplink.py) publishing it to ``<--to>/<device id>`` and
announcing each checkpoint on ``--broker``. Only the sensors are simulated: a
pH value a box reads ``--rate`` times a second.

What keeps a thousand boxes in one process bounded: the boxes share one HTTP
client (a pool of 64 connections) and one broker connection (each box still
announces on its own retained topic); each store keeps a small page cache and
commits without an fsync each time (its store is throwaway; a real box's is
not); a box commits its readings once per ``--commit-every`` seconds (as a
gateway's commit window does) with a checkpoint every ``--checkpoint-every``.
The trust file of each box is written to ``<--data>/trust/<device id>.txt``
for ``ledger-verify``.

Unlike the rest of this package, this module imports the gateway (lazily,
from ``sensor-sim fleet`` only): the point is to run its real code paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import resource
import signal
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
    commit_every_s: float = 1.0
    checkpoint_every_s: float = 10.0
    max_bytes_per_s: int = 262_144
    """Each box's uplink pace."""
    connections: int = 64
    """HTTP connections the boxes share."""
    seed: int = 0
    """Box keys are derived from it: the same seed gives the same devices."""


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
    cpu_s: float = 0.0
    max_rss_mib: float = 0.0
    devices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "devices"}


def box_key(seed: int, index: int) -> DeviceKey:
    raw = hashlib.sha256(f"riverseal-fleet/{seed}/{index}".encode()).digest()
    device = device_id_for(bytes(nacl.signing.SigningKey(raw).verify_key))
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", raw))


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

    async def sense(self, stop: asyncio.Event) -> None:
        """Read, commit every ``commit_every_s``, sign a checkpoint every ``checkpoint_every_s``."""
        cfg = self.config
        owed = 0.0
        last_cp = time.monotonic()
        # Boxes start out of step, as a real fleet's would.
        await asyncio.sleep(cfg.commit_every_s * (self._phase / math.tau))
        while not stop.is_set():
            await asyncio.sleep(cfg.commit_every_s)
            owed += cfg.rate * cfg.commit_every_s
            n, owed = int(owed), owed - int(owed)
            now = time.time_ns()
            batch = [
                Reading("ph-1", (Value("ph", self._ph(now), "pH"),), now - i * 10**6)
                for i in reversed(range(n))
            ]
            due = time.monotonic() - last_cp >= cfg.checkpoint_every_s
            if batch or due:
                await self.log.append(batch, checkpoint=due)
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
    report = FleetReport(boxes=config.boxes, seconds=0.0)
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
            identifier=f"riverseal-fleet-{config.seed}",
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

        boxes = list(await asyncio.gather(*(open_box(i) for i in range(config.boxes))))
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
                    tg.create_task(b.sense(stop), name=f"fleet.sense[{b.key.device_id}]")
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
    return report


async def fleet_main(config: FleetConfig) -> int:
    """``sensor-sim fleet``: run until ``--seconds`` or SIGINT/SIGTERM, then print the
    report as one JSON line (after a banner line once every box runs)."""
    loop = asyncio.get_running_loop()
    stop, started = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def banner() -> None:
        await started.wait()
        print(f"fleet: {config.boxes} boxes running, publishing to {config.to}", flush=True)

    shown = asyncio.create_task(banner(), name="fleet.banner")
    try:
        report = await run_fleet(config, started=started, stop_requested=stop)
    finally:
        shown.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(json.dumps(report.to_json(), sort_keys=True), flush=True)
    return 0

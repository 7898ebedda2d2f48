"""MQTT ingest through a real local Mosquitto into the real log (figures printed, never asserted).

  .venv/bin/python benchmarks/bench_mqtt.py [--flood 30000] [--publishers 50]
                                            [--rate 1000] [--seconds 10]

The gateway side is the daemon's own wiring, in this process pinned to CPU 0:
``MqttSource`` → ``Ingest`` → ``Log`` → ``Store`` (signed, RFC 8785,
SQLite WAL with synchronous=FULL, one PUBACK per message after its commit).
Mosquitto and the publishers (a separate process) run on the other CPU.

(a) flood: ``--publishers`` clients publish ``--flood`` QoS 1 messages as fast
    as the broker acknowledges them, one sensor per client; prints readings/s
    committed, from the first commit to the last.
(b) paced: ``--rate`` messages/s for ``--seconds`` s spread over 20 clients;
    each payload's ``time`` is its publish time, and the latency is taken when
    ``Sink.submit`` returns (committed); prints p50/p99/max.

The broker is configured as a gateway's broker should be (docs/operations.md):
``max_inflight_messages 1000`` (Mosquitto's default of 20 unacknowledged
messages per client would cap how many commits share one fsync) and
``max_queued_messages 0`` (the default of 1000 drops QoS 1 messages for a
session that falls behind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import LogConfig, MqttConfig, MqttSensorConfig
from gateway.drivers.mqtt.source import MqttSource
from gateway.ingest import Ingest
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Event, Gap, Reading
from gateway.store import Store

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stamp(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def payload(seq: int, t_ns: int) -> bytes:
    body = {"seq": seq, "time": stamp(t_ns), "values": [{"q": "ph", "v": 7.0, "u": "pH"}]}
    return json.dumps(body, separators=(",", ":")).encode()


# -- the publisher process ------------------------------------------------------------------


async def publish(port: int, prefix: str, clients: int, total: int, rate: float) -> None:
    import aiomqtt

    per = total // clients
    start = time.monotonic() + 0.5

    async def one(i: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-pub-{prefix}-{i}") as c:
            for seq in range(per):
                if rate > 0:
                    due = start + (seq * clients + i) / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                await c.publish(f"{prefix}/{i}", payload(seq, time.time_ns()), qos=1)

    await asyncio.gather(*(one(i) for i in range(clients)))


# -- the gateway side -------------------------------------------------------------------------


class TimedSink:
    """The real Ingest, plus the publish-to-commit latency of every reading."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self._stamps: list[tuple[str, int]] = []
        self.first_commit: float | None = None
        self.last_commit = 0.0
        self.first_cpu = self.last_cpu = 0.0

    async def submit(self, reading: Reading) -> bool:
        ok = await self.ingest.submit(reading)
        self._stamps.append((reading.sensor_time or "", time.time_ns()))  # parsed afterwards
        t = time.perf_counter()
        if self.first_commit is None:
            self.first_commit, self.first_cpu = t, time.process_time()
        self.last_commit, self.last_cpu = t, time.process_time()
        return ok

    def latencies_ms(self) -> list[float]:
        out = []
        for sent, committed_ns in self._stamps:
            t = datetime.strptime(sent, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            out.append((committed_ns - int(t.timestamp() * 1e6) * 1000) / 1e6)
        return out

    async def submit_gap(self, gap: Gap) -> None:
        await self.ingest.submit_gap(gap)

    async def submit_event(self, event: Event) -> None:
        await self.ingest.submit_event(event)

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        self.ingest.reject(sensor, reason, detail)


async def run_case(
    workdir: Path, port: int, name: str, clients: int, total: int, rate: float, other_cpu: int
) -> TimedSink:
    key = create_device_key(workdir / f"{name}.key")
    async with Store(workdir / f"{name}.sqlite") as store:
        log = Log(store, key)
        await log.open()
        ingest = Ingest(
            log, LogConfig(checkpoint_every_entries=10_000, checkpoint_every_seconds=60)
        )
        sink = TimedSink(ingest)
        source = MqttSource(
            MqttConfig(port=port, client_id=f"bench-gw-{name}", max_inflight=2000),
            [MqttSensorConfig(id="n{id}", topic=f"{name}/{{id}}")],
            device_id=key.device_id,
        )
        writer = asyncio.create_task(ingest.run(), name="ingest")
        reader = asyncio.create_task(source.run(sink), name="mqtt")
        while not source.connected:  # noqa: ASYNC110  # a flag the source sets, polled
            await asyncio.sleep(0.01)
        cmd = [sys.executable, __file__, "--publish", str(port), name, str(clients), str(total)]
        pin = ["taskset", "-c", str(other_cpu)] if shutil.which("taskset") else []
        pub = await asyncio.create_subprocess_exec(*pin, *cmd, str(rate))
        while ingest.stats.committed < total:
            await asyncio.sleep(0.05)
            if pub.returncode not in (None, 0):
                raise RuntimeError("the publisher failed")
        await pub.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ingest.close()
        await writer
        if ingest.rejected:
            print(f"  rejected: {dict(ingest.rejected)}")
    return sink


def percentile(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=1000)[int(p * 10) - 1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flood", type=int, default=30_000)
    ap.add_argument("--publishers", type=int, default=50)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        port = free_port()
        conf = d / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 1000\nmax_queued_messages 0\nlog_dest none\n"
        )
        broker_cpu = ["taskset", "-c", str(cpus[-1])] if shutil.which("taskset") else []
        broker = await asyncio.create_subprocess_exec(*broker_cpu, MOSQUITTO, "-c", str(conf))
        try:
            await asyncio.sleep(0.5)  # mosquitto listens within a few ms
            print(
                f"riverseal MQTT benchmark: gateway on CPU {cpus[0]}, "
                f"Mosquitto and publishers on CPU {cpus[-1]}"
            )
            flood = await run_case(d, port, "flood", args.publishers, args.flood, 0.0, cpus[-1])
            assert flood.first_commit is not None
            span = flood.last_commit - flood.first_commit
            print(
                f"(a) flood, {args.publishers} publishers, QoS 1: "
                f"{args.flood / span:,.0f} readings/s committed ({args.flood:,} in {span:.2f} s; "
                f"gateway CPU {100 * (flood.last_cpu - flood.first_cpu) / span:.0f}% of its core)"
            )
            total = int(args.rate * args.seconds)
            paced = await run_case(d, port, "paced", 20, total, args.rate, cpus[-1])
            lat = paced.latencies_ms()
            print(
                f"(b) paced {args.rate:,.0f}/s for {args.seconds:.0f} s: publish→commit latency "
                f"p50 {statistics.median(lat):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
                f"max {max(lat):.1f} ms ({len(lat):,} readings)"
            )
        finally:
            broker.terminate()
            await broker.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        port, prefix, clients, total, rate = sys.argv[2:7]
        asyncio.run(publish(int(port), prefix, int(clients), int(total), float(rate)))
    else:
        asyncio.run(main())

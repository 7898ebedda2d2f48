"""What the status views cost the daemon: building the document, rendering it as text
and Prometheus metrics, and answering GET /status and /metrics on a real socket.

    .venv/bin/python benchmarks/bench_status.py [--sensors N] [--requests R]

The document is built from synthetic facts of N sensors (default 20, a full station)
with the explicit clock the daemon passes; the server is gateway/health/http.py's, on
127.0.0.1, asked R times in turn by one client (a phone polling, or Prometheus
scraping): each request is a new connection (``Connection: close``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from gateway.config import StatusConfig
from gateway.health.http import StatusServer
from gateway.health.metrics import render_metrics
from gateway.health.model import Facts, SensorFacts, build_status
from gateway.health.text import render_text
from gateway.pipeline import Value
from gateway.silence import Silence

S = 1_000_000_000


def station(n: int, now: int) -> Facts:
    sensors = [
        SensorFacts(
            f"sensor-{i:02d}",
            readings=10_000 + i,
            last_reading_ns=now - (i + 1) * S,
            values=(Value("ph", 7.0 + i / 100, "pH"), Value("temperature", 12.5, "Cel")),
            rejected={"timeout": i, "garbage": 1},
            last_reject=("timeout", "no line within 3.00 s", now - 30 * S),
            silence=Silence(now - 90 * S, "link-lost") if i % 7 == 0 else None,
            qc={"1": 9_990, "3": 10},
        )
        for i in range(n)
    ]
    return Facts(
        now_ns=now,
        pid=1234,
        started_ns=now - 86_400 * S,
        version="0.1.0",
        device="rs-bench",
        data_dir="/var/lib/riverseal",
        log_size=1_000_000,
        checkpoint=(999_000, now - 20 * S),
        anchored_final=998_000,
        first_unanchored_ns=now - 80 * S,
        sensors=sensors,
        sources={s.name: {"running": True, "restarts": 0} for s in sensors},
        ingest={"committed": 1_000_000, "failed_batches": 0},
        anchors={"local": {"last_final": 999_000}, "rfc3161:tsa": {"last_final": 998_000}},
        disk_used_bytes=512 * 2**20,
        disk_limit_bytes=4096 * 2**20,
        disk_quota_bytes=None,
        disk_state="ok",
        clock="synced",
    )


def per_call_us(fn: Callable[[], object], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


async def get(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    body = await reader.read()
    writer.close()
    return len(body)


async def serve_and_ask(facts: Facts, requests: int) -> None:
    server = StatusServer(StatusConfig(listen="127.0.0.1:0"), lambda: build_status(facts))
    task = asyncio.create_task(server.serve())
    await server.bound.wait()
    assert server.listening is not None
    port = int(server.listening.rsplit(":", 1)[1])
    try:
        for path in ("/status", "/metrics"):
            times = []
            size = 0
            for _ in range(requests):
                t0 = time.perf_counter()
                size = await get(port, path)
                times.append((time.perf_counter() - t0) * 1e3)
            times.sort()
            p99 = times[min(len(times) - 1, round(0.99 * len(times)))]
            print(
                f"GET {path:<9} {size:>7,} bytes   median {statistics.median(times):.2f} ms   "
                f"p99 {p99:.2f} ms   ({requests} requests, one connection each)"
            )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sensors", type=int, default=20)
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    facts = station(args.sensors, time.time_ns())
    doc = build_status(facts)
    print(f"a station of {args.sensors} sensors:")
    print(f"build the document      {per_call_us(lambda: build_status(facts), 500):8.0f} µs")
    print(f"render /metrics         {per_call_us(lambda: render_metrics(doc), 500):8.0f} µs")
    print(f"render the text status  {per_call_us(lambda: render_text(doc), 500):8.0f} µs")
    asyncio.run(serve_and_ask(facts, args.requests))


if __name__ == "__main__":
    main()

"""Serial ingest over real ptys into the real log (figures printed, never asserted).

  .venv/bin/python benchmarks/bench_serial.py [--circuits 40] [--seconds 15]

``--circuits`` simulated EZO circuits (pH, DO, EC, ORP, RTD in turn) each sit
on their own pty with processing delays scaled to zero, and the gateway's own
``EzoSource`` polls each as fast as the driver allows (``interval_s`` = 0.1 s,
the configured minimum), through ``Ingest`` → ``Log`` → ``Store`` (signed,
RFC 8785, SQLite WAL with synchronous=FULL). The simulators run in a child
process pinned to the other CPU; the gateway side runs here, pinned to CPU 0.

Prints readings/s committed, and the gateway process's CPU time per reading,
from which the one-core capacity (readings per CPU-second) follows. A real EZO
takes 600-900 ms per ``R``, so on a real box the wire, not the CPU, is the limit:
the figure says how many serial sensors one core could serve.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import EzoSensorConfig, LogConfig
from gateway.drivers.ezo.source import EzoSource
from gateway.ingest import Ingest
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.store import Store

KINDS = ("ph", "do", "ec", "orp", "rtd")

_SIM = """
import asyncio, sys
from pathlib import Path
from simulators.ezo import EzoCircuit
from simulators.ezo_pty import EzoPtyDevice
from simulators.river import RiverModel

async def main(folder, n):
    river = RiverModel(1)
    kinds = {kinds!r}
    devices = [
        EzoPtyDevice(EzoCircuit(kinds[i % len(kinds)], river, seed=i, delay_scale=0.0),
                     Path(folder) / f"ezo-{{i}}")
        for i in range(n)
    ]
    for d in devices:
        await d.__aenter__()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


async def run(circuits: int, seconds: float, folder: Path) -> None:
    sim = subprocess.Popen(  # noqa: ASYNC220  # started once, before any measuring
        [sys.executable, "-c", _SIM.format(kinds=KINDS), str(folder), str(circuits)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _pin(1),  # affinity only, before exec
    )
    try:
        assert sim.stdout is not None
        if sim.stdout.readline().strip() != "ready":
            raise SystemExit("the simulators did not start")
        key = create_device_key(folder / "bench.key")
        async with Store(folder / "bench.sqlite") as store:
            log = Log(store, key)
            await log.open()
            ingest = Ingest(log, LogConfig())
            writer = asyncio.create_task(ingest.run(), name="ingest")
            sources = [
                EzoSource(
                    EzoSensorConfig(
                        id=f"ezo-{i}",
                        port=str(folder / f"ezo-{i}"),
                        circuit=KINDS[i % len(KINDS)],  # type: ignore[arg-type]
                        interval_s=0.1,
                        timeout_s=1.0,
                    )
                )
                for i in range(circuits)
            ]
            tasks = [asyncio.create_task(s.run(ingest), name=s.name) for s in sources]
            await asyncio.sleep(3.0)  # open, identify, settle
            n0, cpu0, t0 = sum(ingest.per_sensor.values()), time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            n1, cpu1, t1 = sum(ingest.per_sensor.values()), time.process_time(), time.monotonic()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ingest.close()
            await writer
        readings = n1 - n0
        cpu = cpu1 - cpu0
        print(f"serial ingest: {circuits} EZO circuits on ptys, polled at 0.1 s, {seconds:.0f} s")
        print(f"  committed        {readings / (t1 - t0):8.0f} readings/s")
        print(f"  gateway CPU      {1e6 * cpu / max(readings, 1):8.0f} µs per reading")
        print(f"  one-core capacity{readings / cpu if cpu else 0:8.0f} readings per CPU-second")
        rejected = sum(ingest.rejected.values())
        print(f"  rejected         {rejected:8d}")
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--circuits", type=int, default=40)
    p.add_argument("--seconds", type=float, default=15.0)
    args = p.parse_args()
    _pin(0)
    with tempfile.TemporaryDirectory(prefix="riverseal-bench-serial-") as tmp:
        asyncio.run(run(args.circuits, args.seconds, Path(tmp)))


if __name__ == "__main__":
    main()

"""``gateway demo``: a simulated station, end to end, in well under a minute.

Five simulated Atlas Scientific EZO probes (pH, DO, EC, ORP, temperature)
answer on real pty serial ports, driven by a seeded river model. The gateway
reads them through the same driver a real probe uses, signs and logs every
reading, checkpoints and anchors (locally), then exports a bundle and runs
the regulator's verifier on it. One probe is made to misbehave on purpose
(a burst of line noise and an ``*ER`` reply) to show that bad input is
rejected, counted, and costs no good reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import time
from pathlib import Path

from ledger_client.cli import main as verify_main
from simulators.ezo import EzoCircuit
from simulators.pty_link import EzoPtyDevice
from simulators.river import RiverModel

from .config import load_config
from .daemon import Gateway
from .errors import GatewayError
from .export import export_bundle
from .keys import create_device_key
from .log import Log
from .store import Store

__all__ = ["run_demo"]

_MARKER = ".riverseal-demo"
_PROBES = (("ph", "ph-1"), ("do", "do-1"), ("ec", "ec-1"), ("orp", "orp-1"), ("rtd", "temp-1"))


def _config(devdir: Path) -> str:
    sensors = "".join(
        f'\n[[sensor]]\nid = "{sid}"\ndriver = "ezo"\ncircuit = "{kind}"\n'
        f'port = "{devdir / f"ezo-{kind}"}"\ninterval_s = 1.0\ntimeout_s = 2.0\n'
        for kind, sid in _PROBES
    )
    return (
        '# written by `gateway demo`\n[device]\nkey_file = "device.key"\ndata_dir = "data"\n\n'
        "[log]\ncheckpoint_every_entries = 40\ncheckpoint_every_seconds = 5\n" + sensors
    )


def _prepare(out: Path) -> Path:
    station = out / "station"
    if station.exists():
        if not (station / _MARKER).exists():
            raise GatewayError(f"{station} exists and was not made by `gateway demo`; choose --out")
        shutil.rmtree(station)
    station.mkdir(parents=True)
    (station / _MARKER).touch()
    return station


async def run_demo(*, seconds: float = 20.0, out: Path = Path("riverseal-demo")) -> int:
    t0 = time.monotonic()
    out = out.resolve()  # noqa: ASYNC240 - once, before anything runs
    station = _prepare(out)
    devdir = station / "dev"
    devdir.mkdir()
    key = create_device_key(station / "device.key")
    trust = station / "trust.txt"
    trust.write_text(f"key {key.vkey}\n")
    config_path = station / "gateway.toml"
    config_path.write_text(_config(devdir))
    cfg = load_config(config_path)
    print(f"riverseal demo: device {key.device_id}, {len(_PROBES)} simulated EZO probes on ptys")

    river = RiverModel(seed=7)
    async with contextlib.AsyncExitStack() as stack:
        probes = {}
        for i, (kind, sid) in enumerate(_PROBES):
            circuit = EzoCircuit(kind, river, seed=i, delay_scale=0.2)  # type: ignore[arg-type]
            dev = await stack.enter_async_context(EzoPtyDevice(circuit, devdir / f"ezo-{kind}"))
            probes[sid] = dev
            print(f"  {sid:<7} {kind.upper():<4} on {dev.device_path}")

        gw = Gateway(cfg, status_every_s=1.0)
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop), name="demo.gateway")
        await asyncio.wait_for(gw.started.wait(), 10)
        print(f"gateway running for {seconds:.0f} s ...")
        fault_at = t0 + seconds / 3
        faulted = False
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 5.0))
            if not faulted and time.monotonic() >= fault_at:
                probes["ph-1"].circuit.inject(garbage_next=1, error_next=1)
                faulted = True
            if gw.ingest is not None and left > 1:
                print(
                    f"  t+{seconds - max(left - 5, 0):4.0f} s: {gw.ingest.stats.committed} entries"
                )
        stop.set()
        await run
    assert gw.ingest is not None
    ingest = gw.ingest

    bundle_path = out / "bundle.json"
    async with Store(cfg.db_path) as store:
        log = Log(store, key)
        await log.open()
        bundle = await export_bundle(log)
        anchors = await store.anchors()
    bundle_path.write_text(bundle.dumps(), encoding="utf-8")

    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        verdict = verify_main([str(bundle_path), "--trust", str(trust)])

    print("\nreadings per sensor (committed, signed, in the Merkle log):")
    for _kind, sid in _PROBES:
        rejected = {r: n for (s, r), n in ingest.rejected.items() if s == sid}
        note = (
            (", rejected: " + ", ".join(f"{n} {r}" for r, n in rejected.items()))
            if rejected
            else ""
        )
        print(f"  {sid:<7} {ingest.per_sensor[sid]:4d}{note}")
    print(f"log entries:  {len(bundle.entries)} (readings, and the boot event)")
    print(f"checkpoints:  {len(bundle.checkpoints)} signed, consistent with each other")
    finals = sum(1 for a in anchors if a.state == "final")
    print(f"anchors:      {finals} final in the local journal (local, not independent evidence)")
    last = report.getvalue().strip().splitlines()
    print(f"verifier:     {last[-1] if last else '(no output)'}")
    print(f"bundle:       {bundle_path}")
    print(f"verify it yourself:  ledger-verify {bundle_path} --trust {trust}")
    print(f"done in {time.monotonic() - t0:.1f} s")
    return 0 if verdict == 0 else 1

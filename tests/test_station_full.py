"""A 20-sensor station of all four families, two minutes, end to end.

Simulated EZO circuits, a Modbus RTU bus, an SDI-12 adapter (all on real ptys
behind stable symlinks) and MQTT nodes on a real Mosquitto broker feed a real
``gateway run`` process. Mid-run a Modbus slave stops answering, an SDI-12
sonde drops out and an EZO circuit is unplugged and replugged. Afterwards:
every sensor read, every stretch without readings is tiled by signed gap
records that name the reason, and ``ledger-verify`` passes on the bundle.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.daemon import sensor_expectations
from ledger_client.bundle_v2 import read_entries
from ledger_client.records import parse_entry, parse_time
from simulators.station import Station, parse_station

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

RUN_S = 120.0
BIN = Path(sys.executable).parent

STATION = """
[station]
seed = 11
links = "links"
mqtt_host = "{host}"
mqtt_port = {port}

[[ezo]]
name = "ph-1"
circuit = "ph"
site = "bank"
[[ezo]]
name = "do-1"
circuit = "do"
site = "bank"
[[ezo]]
name = "ec-1"
circuit = "ec"
site = "bank"
[[ezo]]
name = "orp-1"
circuit = "orp"
[[ezo]]
name = "rtd-1"
circuit = "rtd"
site = "bank"

[[modbus]]
name = "rs485-1"
slaves = [
  {{ id = "odo-1", slave = 1, profile = "ysi-odo-rtu", interval_s = 3.0 }},
  {{ id = "ec-2", slave = 2, profile = "seeed-ectds10", interval_s = 3.0 }},
  {{ id = "ph-2", slave = 3, profile = "boqu-bh-485-nh", interval_s = 3.0 }},
  {{ id = "ldo-1", slave = 4, profile = "hach-ldo-aq", interval_s = 3.0 }},
]

[[sdi12]]
name = "sdi12-1"
sondes = [
  {{ id = "sonde-0", address = "0", model = "multi", interval_s = 10.0 }},
  {{ id = "sonde-1", address = "1", model = "ctd", interval_s = 10.0 }},
  {{ id = "sonde-2", address = "2", model = "turbidity", interval_s = 10.0 }},
  {{ id = "sonde-3", address = "3", model = "do", interval_s = 10.0 }},
]

[[mqtt]]
id = "node-1"
topic = "river/node-1/json"
quantities = ["temperature", "ph"]
[[mqtt]]
id = "node-2"
topic = "river/node-2/senml"
format = "senml"
quantities = ["turbidity", "ec"]
[[mqtt]]
id = "node-3"
topic = "river/node-3/json"
quantities = ["do", "do_sat"]
[[mqtt]]
id = "node-4"
topic = "river/node-4/senml"
format = "senml"
quantities = ["orp"]
[[mqtt]]
id = "node-5"
topic = "river/node-5/json"
quantities = ["temperature"]
[[mqtt]]
id = "node-6"
topic = "river/node-6/senml"
format = "senml"
quantities = ["temperature", "turbidity", "ph"]
[[mqtt]]
id = "node-7"
topic = "river/node-7/json"
quantities = ["ec"]
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def _faults(station: Station) -> None:
    """The field's trouble, on a schedule: each recovers well before the end."""
    await asyncio.sleep(25)
    station.buses["rs485-1"].slave(2).faults.silent = True  # ec-2 stops answering
    station.adapters["sdi12-1"].sonde("3").inject(silent=True)  # sonde-3 drops out
    await station.ezo["orp-1"].link.unplug()  # orp-1's USB adapter pulled
    await asyncio.sleep(30)
    station.buses["rs485-1"].slave(2).faults.silent = False
    station.adapters["sdi12-1"].sonde("3").inject(silent=False)
    await station.ezo["orp-1"].link.replug()


async def _run_station(tmp_path: Path, host: str, port: int) -> None:
    spec = parse_station(STATION.format(host=host, port=port), tmp_path)
    assert len(spec.sensor_ids()) == 20
    gw = tmp_path / "gw"
    async with Station(spec) as station:
        init = _run("gateway", "init", str(gw), cwd=tmp_path)
        assert init.returncode == 0, init.stderr
        with (gw / "gateway.toml").open("a") as f:
            f.write("\n" + station.gateway_sensors())
        check = _run("gateway", "check", "--config", "gateway.toml", cwd=gw)
        assert check.returncode == 0, check.stdout + check.stderr
        log = (tmp_path / "gateway.log").open("w")
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "gateway"),
            "run",
            "--config",
            "gateway.toml",
            cwd=gw,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            faults = asyncio.create_task(_faults(station))
            await asyncio.sleep(RUN_S)
            await faults
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                rc = await proc.wait()
            log.close()
    assert rc == 0, (tmp_path / "gateway.log").read_text()[-3000:]


def _covered(
    entries: Iterable[bytes],
) -> tuple[dict[str, list[tuple[float, float, str]]], dict[str, int]]:
    """Per sensor, the time spans covered: a reading covers its instant, a gap its span."""
    spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    readings: dict[str, int] = defaultdict(int)
    for raw in entries:
        rec = parse_entry(raw).rec
        if rec["kind"] == "reading":
            t = parse_time(rec["time"]).timestamp()
            spans[rec["sensor"]].append((t, t, "reading"))
            readings[rec["sensor"]] += 1
        elif rec["kind"] == "gap":
            a, b = parse_time(rec["from"]).timestamp(), parse_time(rec["to"]).timestamp()
            spans[rec["sensor"]].append((a, b, rec["reason"]))
    for s in spans.values():
        s.sort()
    return spans, readings


def test_twenty_sensor_station_two_minutes(mosquitto: tuple[str, int], tmp_path: Path) -> None:
    host, port = mosquitto
    started = time.time()
    asyncio.run(_run_station(tmp_path, host, port))
    gw = tmp_path / "gw"

    export = _run("gateway", "export", "--config", "gateway.toml", "--out", "bundle.json", cwd=gw)
    assert export.returncode == 0, export.stdout + export.stderr
    verify = _run("ledger-verify", "bundle.json", "--trust", "trust.txt", "--json", cwd=gw)
    report: dict[str, Any] = json.loads(verify.stdout)
    assert verify.returncode == 3, json.dumps(report["failures"][:10], indent=1)
    assert report["level"] == "authentic-undated" and report["keys_trusted"]

    spans, readings = _covered(raw for _, raw in read_entries(gw / "bundle.json"))
    config = load_config(gw / "gateway.toml")
    expected = sensor_expectations(config)
    assert set(expected) == set(
        Station(parse_station(STATION.format(host=host, port=port), tmp_path)).spec.sensor_ids()
    )
    problems = []
    for sensor, exp in sorted(expected.items()):
        if readings[sensor] < 5:
            problems.append(f"{sensor}: only {readings[sensor]} readings")
            continue
        # Every stretch between covered times is within the sensor's allowance.
        reach = spans[sensor][0][1]
        for a, b, _ in spans[sensor][1:]:
            if a - reach > exp.allowance_ns / 1e9 + 0.5:
                problems.append(f"{sensor}: nothing covers {a - reach:.1f} s before {a:.1f}")
            reach = max(reach, b)
    assert not problems, "\n".join(problems)

    # The faults left signed gap records that say why.
    def reasons(sensor: str) -> set[str]:
        return {r for _, _, r in spans[sensor] if r != "reading"}

    assert reasons("ec-2") & {"timeout"}, reasons("ec-2")
    assert reasons("sonde-3"), "sonde-3's dropout left no gap record"
    assert reasons("orp-1"), "orp-1's unplug left no gap record"
    assert time.time() - started < RUN_S + 120

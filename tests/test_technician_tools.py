"""``gateway scan`` and ``gateway probe`` against a simulated station on real ptys.

The technician's view: plug everything in, scan, paste, probe. The scan must
find every simulated device (two EZO circuits, two Modbus slaves on one bus,
two SDI-12 sondes behind one adapter) within its time budget; ``probe`` must
print a reading from each kind of sensor with its raw exchange.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.station import Station, parse_station

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BIN = Path(sys.executable).parent

STATION = """
[station]
seed = 5
links = "links"

[[ezo]]
name = "ph-1"
circuit = "ph"
[[ezo]]
name = "do-1"
circuit = "do"

[[modbus]]
name = "rs485-1"
slaves = [
  { id = "ec-2", slave = 1, profile = "seeed-ectds10" },
  { id = "odo-1", slave = 2, profile = "ysi-odo-rtu" },
]

[[sdi12]]
name = "sdi12-1"
sondes = [
  { id = "sonde-0", address = "0", model = "multi" },
  { id = "sonde-1", address = "1", model = "ctd" },
]
"""


async def _gateway(*args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "gateway"),
        *args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def _scan_and_probe(tmp_path: Path) -> tuple[tuple[int, str], dict[str, tuple[int, str]]]:
    spec = parse_station(STATION, tmp_path)
    async with Station(spec) as station:
        ports = [str(spec.links / n) for n in ("ph-1", "do-1", "rs485-1", "sdi12-1")]
        scan = await _gateway(
            "scan", *(f"--port={p}" for p in ports), "--budget", "40", cwd=tmp_path
        )
        gw = tmp_path / "gw"
        rc, out = await _gateway("init", str(gw), cwd=tmp_path)
        assert rc == 0, out
        with (gw / "gateway.toml").open("a") as f:
            f.write("\n" + station.gateway_sensors())
        probes = {}
        for sensor in ("ph-1", "odo-1", "sonde-1"):
            probes[sensor] = await _gateway(
                "probe", sensor, "--config", str(gw / "gateway.toml"), cwd=gw
            )
    return scan, probes


def test_scan_finds_every_device_and_probe_prints_readings(tmp_path: Path) -> None:
    (rc, out), probes = asyncio.run(_scan_and_probe(tmp_path))
    assert rc == 0, out
    found = [line for line in out.splitlines() if re.match(r"\s+\S+: (ezo|modbus|sdi12) ", line)]
    text = "\n".join(found)
    assert re.search(r"ph-1: ezo .*EZO-PH", text), out
    assert re.search(r"do-1: ezo .*EZO-DO", text), out
    assert re.search(r"rs485-1: modbus .*slave 1\b", text), out
    assert re.search(r"rs485-1: modbus .*slave 2\b", text), out
    assert re.search(r"sdi12-1: sdi12 .*address 0\b", text), out
    assert re.search(r"sdi12-1: sdi12 .*address 1\b", text), out
    assert len(found) == 6, out
    # Each find comes with a [[sensor]] table to paste.
    assert out.count("[[sensor]]") == 6, out

    units = {"ph-1": "pH", "odo-1": "mg/l", "sonde-1": "uS/cm"}
    for sensor, (rc, text) in probes.items():
        assert rc == 0, text
        assert f"sensor {sensor}" in text
        assert "→" in text and "←" in text, text  # the raw exchange is shown
        assert re.search(rf"\s-?\d+(\.\d+)?\s+{re.escape(units[sensor])}\b", text), text

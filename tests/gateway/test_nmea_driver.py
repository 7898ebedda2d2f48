"""The NMEA 0183 family against its simulator on real ptys: the source, probe, scan and
an end-to-end ``gateway check --probe``."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

from gateway.backoff import Backoff
from gateway.cli import main as gateway
from gateway.drivers.nmea.config import NmeaSensorConfig
from gateway.drivers.nmea.source import NmeaSource
from gateway.drivers.nmea.tools import probe_nmea, scan_nmea
from simulators.nmea import NmeaSonde
from tests.gateway.recording_sink import RecordingSink, running

SIM_NOW = 1_767_272_400.0
PERIOD_S = 0.1


def sensors(port: Path) -> list[NmeaSensorConfig]:
    return [
        NmeaSensorConfig("temp-1", str(port), "MTW", talker="YX", interval_s=1.0, timeout_s=0.5),
        NmeaSensorConfig("depth-1", str(port), "DBT", interval_s=1.0, timeout_s=0.5),
    ]


def sonde(
    tmp_path: Path, talks: tuple[str, ...] = ("MTW", "DBT"), baudrate: int = 4800
) -> NmeaSonde:
    return NmeaSonde(
        tmp_path / "sonde", talks=talks, period_s=PERIOD_S, baudrate=baudrate, clock=lambda: SIM_NOW
    )


def count(sink: RecordingSink, sensor: str) -> int:
    return sum(r.sensor == sensor for r in sink.readings)


async def test_readings_arrive_on_the_sensors_cadence_with_the_sentence_as_raw(
    tmp_path: Path,
) -> None:
    sink = RecordingSink()
    async with sonde(tmp_path) as device, running(NmeaSource(sensors(tmp_path / "sonde")), sink):
        await sink.wait_for(lambda: count(sink, "depth-1") >= 3, within=5, what="3 depths")
    temps = [r for r in sink.readings if r.sensor == "temp-1"]
    depths = [r for r in sink.readings if r.sensor == "depth-1"]
    sent = {line.decode().rstrip() for line in device.sent}
    for r in temps + depths:
        assert r.raw in sent  # exactly what the sonde sent
    state = device.water.sample(SIM_NOW)
    assert {r.values[0].value for r in temps} == {round(state.temperature_c, 2)}
    assert {(r.values[0].quantity, r.values[0].unit) for r in temps} == {("temperature", "Cel")}
    assert {(r.values[0].quantity, r.values[0].value) for r in depths} == {
        ("depth", round(state.depth_m, 2))
    }
    # The sonde talks ten times a second; one reading a second is kept.
    gaps = [(b.received_ns - a.received_ns) / 1e9 for a, b in itertools.pairwise(depths)]
    assert all(0.8 < g < 1.3 for g in gaps), gaps
    assert sink.rejects == []


async def test_bad_lines_are_rejected_by_reason_and_reading_goes_on(tmp_path: Path) -> None:
    sink = RecordingSink()
    source = NmeaSource(sensors(tmp_path / "sonde")[:1])
    async with sonde(tmp_path, talks=("MTW",)) as device, running(source, sink):
        await sink.wait_for(lambda: count(sink, "temp-1") >= 1, what="a first reading")
        device.inject(
            garbage_next=1,
            bad_checksum_next=1,
            no_checksum_next=1,
            too_long_next=1,
            null_value_next=1,
        )
        await sink.wait_for(lambda: len(sink.rejects) >= 5, what="five rejects")
        before = count(sink, "temp-1")
        await sink.wait_for(lambda: count(sink, "temp-1") > before, what="a later reading")
    reasons = sink.reject_counts()
    assert reasons == {
        "garbage": 1,
        "bad-checksum": 1,
        "no-checksum": 1,
        "too-long": 1,
        "no-value": 1,
    }, sink.rejects
    assert {sensor for sensor, _, _ in sink.rejects} == {"temp-1"}


async def test_silence_is_a_timeout_and_an_unplug_is_survived(tmp_path: Path) -> None:
    sink = RecordingSink()
    source = NmeaSource(sensors(tmp_path / "sonde")[:1], backoff=Backoff(0.05, 0.2))
    async with sonde(tmp_path, talks=("MTW",)) as device, running(source, sink) as task:
        await sink.wait_for(lambda: count(sink, "temp-1") >= 1, what="a first reading")
        device.inject(silent=True)
        await sink.wait_for(lambda: sink.reject_counts()["timeout"] >= 1, what="a timeout")
        device.inject(silent=False)
        await device.unplug()
        await asyncio.sleep(0.5)
        assert not task.done()
        unplugged = count(sink, "temp-1")
        await device.replug()
        await sink.wait_for(lambda: count(sink, "temp-1") > unplugged, what="reading after replug")
    assert ("temp-1", "timeout", "no MTW sentence within 0.5 s of its slot") in sink.rejects
    # The outage is told once, whatever the number of reopening attempts.
    assert sink.reject_counts()["link-lost"] == 1, sink.rejects
    assert "port-unavailable" not in sink.reject_counts()


async def test_a_port_that_never_opens_is_told_once(tmp_path: Path) -> None:
    sink = RecordingSink()
    source = NmeaSource(sensors(tmp_path / "absent"), backoff=Backoff(0.02, 0.05))
    async with running(source, sink):
        await asyncio.sleep(0.4)
    assert sink.reject_counts() == {"port-unavailable": 2}  # one for each sensor on it
    assert {sensor for sensor, _, _ in sink.rejects} == {"temp-1", "depth-1"}


async def test_probe_shows_every_line_heard_and_the_reading(tmp_path: Path) -> None:
    temp, depth = sensors(tmp_path / "sonde")
    async with sonde(tmp_path) as device:
        device.inject(bad_checksum_next=1)
        result = await probe_nmea(temp)
        assert result.error is None
        assert result.reading is not None
        assert result.reading.raw == result.exchanges[-1].received.removesuffix("\\r\\n")
        assert any(e.note.startswith("bad-checksum: ") for e in result.exchanges)
        assert all(e.sent == "" for e in result.exchanges)  # it only listens
        device.inject(silent=True)
        await asyncio.sleep(2 * PERIOD_S)
        silent = await probe_nmea(depth)
    assert silent.reading is None
    assert silent.error == "no DBT sentence within 0.5 s"


async def test_scan_finds_each_sentence_type_at_the_talkers_speed(tmp_path: Path) -> None:
    async with sonde(tmp_path, baudrate=38400):
        found = await scan_nmea(str(tmp_path / "sonde"), 2.0)
    assert [f.driver for f in found] == ["nmea", "nmea"]
    assert [f.description for f in found] == [
        "NMEA 0183 talker sending $YXMTW (temperature, Cel) at 38400 baud",
        "NMEA 0183 talker sending $SDDBT (depth, m) at 38400 baud",
    ]
    assert 'sentence = "DBT"' in found[1].snippet
    assert "baudrate = 38400" in found[1].snippet
    async with sonde(tmp_path) as device:
        device.inject(silent=True)
        assert await scan_nmea(str(tmp_path / "sonde"), 0.6) == []


async def test_gateway_check_probes_a_config_using_it(tmp_path: Path) -> None:
    assert gateway(["init", str(tmp_path / "gw")]) == 0
    config = tmp_path / "gw" / "gateway.toml"
    with config.open("a") as f:
        f.write(
            "\n[[sensor]]\n"
            'id = "temp-1"\ndriver = "nmea"\nsentence = "MTW"\n'
            f'port = "{tmp_path / "sonde"}"\n'
        )
    async with sonde(tmp_path):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "check",
            "--config",
            str(config),
            "--probe",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert f"temp-1           nmea  {tmp_path / 'sonde'}" in text
    assert f"OK     sensor temp-1            {tmp_path / 'sonde'}: temperature " in text

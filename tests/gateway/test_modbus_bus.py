"""The Modbus driver on a simulated RS-485 bus (simulators.modbus): several slaves,
faults, unplug/replug, and the technician's scan.

Acceptance 3 is ``test_a_silent_slave_does_not_push_the_others_off_their_interval``:
intervals between consecutive readings of the healthy slaves are measured on the
driver's own clock and must stay within one timeout of the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.backoff import Backoff
from gateway.drivers.modbus.config import ModbusSensorConfig
from gateway.drivers.modbus.link import LinkLost, ModbusLink
from gateway.drivers.modbus.profile import load_profile
from gateway.drivers.modbus.source import ModbusSource
from gateway.drivers.modbus.tools import scan_modbus
from simulators.modbus import ModbusSimBus, SimSlave, load_sim_profile
from simulators.river import RiverModel

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

INTERVAL_S = 0.4
TIMEOUT_S = 0.15
SLACK_S = 0.1  # event-loop and pty latency on a busy 2-core box

RIVER = RiverModel(seed=7)


def slave(n: int, profile: str) -> SimSlave:
    return SimSlave(n, load_sim_profile(profile), RIVER)


def cfg(port: Path, n: int, profile: str, **kw: Any) -> ModbusSensorConfig:
    settings: dict[str, Any] = {
        "interval_s": INTERVAL_S,
        "timeout_s": TIMEOUT_S,
        "retries": 1,
    }
    settings.update(kw)
    return ModbusSensorConfig(
        f"s{n}", port=str(port), slave=n, profile=load_profile(profile), **settings
    )


class Running:
    """A ModbusSource running in a task on a monotonic clock (to measure intervals)."""

    def __init__(self, source: ModbusSource, task: asyncio.Task[None]) -> None:
        self.source = source
        self.task = task


@contextlib.asynccontextmanager
async def run(sink: RecordingSink, *configs: ModbusSensorConfig) -> AsyncIterator[Running]:
    source = ModbusSource(configs, clock=time.monotonic_ns, backoff=Backoff(0.05, 0.2))
    task = asyncio.create_task(source.run(sink), name="test.modbus")
    try:
        yield Running(source, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def times(sink: RecordingSink, sensor: str, after_ns: int = 0) -> list[float]:
    return [
        r.received_ns / 1e9
        for r in sink.readings
        if r.sensor == sensor and r.received_ns >= after_ns
    ]


def count(sink: RecordingSink, sensor: str) -> Callable[[], int]:
    return lambda: sum(1 for r in sink.readings if r.sensor == sensor)


async def test_a_silent_slave_does_not_push_the_others_off_their_interval(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "rs485"
    slaves = [
        slave(1, "supmea-sup-ph8001"),
        slave(2, "ysi-odo-rtu"),
        slave(3, "insitu-aqua-troll-400-ph"),
    ]
    configs = [
        cfg(link, 1, "supmea-sup-ph8001"),
        cfg(link, 2, "ysi-odo-rtu", parity="N"),
        cfg(link, 3, "insitu-aqua-troll-400-ph", parity="N"),
    ]
    async with ModbusSimBus(slaves, link) as bus:
        async with run(sink, *configs):
            await sink.wait_for(lambda: min(count(sink, f"s{n}")() for n in (1, 2, 3)) >= 3)
            silent_from = time.monotonic_ns()
            bus.slave(2).faults.silent = True
            await asyncio.sleep(6 * INTERVAL_S)
            bus.slave(2).faults.silent = False
            silent_until = time.monotonic_ns()
            before = count(sink, "s2")()
            await sink.wait_for(lambda: count(sink, "s2")() >= before + 2, within=5)
            await sink.wait_for(lambda: count(sink, "s1")() >= 14 and count(sink, "s3")() >= 14)
        dropped = bus.dropped

    # The healthy slaves kept their cadence throughout, within one (silent
    # slave's) timeout of their interval.
    for sensor in ("s1", "s3"):
        stamps = times(sink, sensor)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) <= INTERVAL_S + TIMEOUT_S + SLACK_S, (sensor, gaps)
        assert min(gaps) >= INTERVAL_S - TIMEOUT_S - SLACK_S, (sensor, gaps)
        assert not [r for r in sink.rejects if r[0] == sensor]

    # The silent one: rejected as "timeout" once per interval while silent (each
    # failed reading costs retries + 1 = 2 requests, all dropped on the bus).
    timeouts = [d for s, r, d in sink.rejects if s == "s2" and r == "timeout"]
    silent_s = (silent_until - silent_from) / 1e9
    assert silent_s / INTERVAL_S - 2 <= len(timeouts) <= silent_s / INTERVAL_S + 1
    assert "no reply from slave 2" in timeouts[0] and "2 attempt(s) of 0.15 s" in timeouts[0]
    # (a reading under way as it recovered may have lost a first attempt)
    assert 2 * len(timeouts) <= dropped <= 2 * len(timeouts) + 1
    assert {r for s, r, _ in sink.rejects if s == "s2"} == {"timeout"}
    # ...and read again after it recovered, with no reading while it was silent.
    s2 = times(sink, "s2")
    assert not [t for t in s2 if silent_from / 1e9 + TIMEOUT_S * 2 < t < silent_until / 1e9]
    assert [t for t in s2 if t > silent_until / 1e9]


async def test_readings_are_the_values_the_simulator_served(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "rs485"
    async with ModbusSimBus([slave(5, "seeed-ectds10"), slave(6, "boqu-bh-485-nh")], link) as bus:
        async with run(sink, cfg(link, 5, "seeed-ectds10"), cfg(link, 6, "boqu-bh-485-nh")):
            await sink.wait_for(lambda: count(sink, "s5")() >= 2 and count(sink, "s6")() >= 2)
        served = {n: dict(bus.slave(n).served[-1][1]) for n in (5, 6)}
    last = {
        r.sensor: {v.quantity: (v.value, v.unit) for v in r.values}
        for r in sink.readings  # the last reading of each sensor wins
    }
    assert {q: u for q, (_, u) in last["s5"].items()} == {
        "temperature": "Cel",
        "ec": "uS/cm",
        "salinity": "mg/l",
        "tds": "mg/l",
    }
    assert last["s5"]["temperature"][0] == pytest.approx(served[5]["temperature"], abs=0.005)
    assert last["s5"]["ec"][0] == round(served[5]["ec"])
    assert {q: u for q, (_, u) in last["s6"].items()} == {
        "temperature": "Cel",
        "ph": "pH",
        "nh4_n": "mg/l",
    }
    for q in ("temperature", "ph", "nh4_n"):
        assert last["s6"][q][0] == pytest.approx(served[6][q], rel=1e-6)


async def test_unplug_and_replug_resume_without_a_restart(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A1-if00-port0"
    link.parent.mkdir(parents=True)
    slaves = [slave(1, "supmea-sup-ph8001"), slave(2, "dfrobot-sen0710")]
    async with ModbusSimBus(slaves, link) as bus:
        configs = [cfg(link, 1, "supmea-sup-ph8001"), cfg(link, 2, "dfrobot-sen0710")]
        async with run(sink, *configs) as running:
            await sink.wait_for(lambda: count(sink, "s1")() >= 2 and count(sink, "s2")() >= 2)
            old_device = bus.device_path
            await bus.unplug()
            await sink.wait_for(lambda: sink.reject_counts()["link-lost"] == 2)
            await asyncio.sleep(3 * INTERVAL_S)  # unplugged for a while: reopening fails
            assert not link.exists()
            before = len(sink.readings)
            await bus.replug()
            assert bus.device_path != old_device or link.exists()
            replugged = time.monotonic_ns()
            await sink.wait_for(
                lambda: (
                    len(times(sink, "s1", replugged)) >= 2
                    and len(times(sink, "s2", replugged)) >= 2
                ),
                within=10,
            )
            assert not running.task.done()
            assert running.source.opened == 2
    assert len(sink.readings) > before
    # one "link-lost" per sensor for the whole outage, not one per reopen attempt
    assert sink.reject_counts()["link-lost"] == 2
    assert {r for _, r, _ in sink.rejects} == {"link-lost"}
    assert [e.detail["sensor"] for e in sink.records].count("s1") == 2  # once per connection


async def test_wire_faults_are_rejected_by_name_and_retried(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "rs485"
    slaves = [slave(1, "hach-ldo-aq"), slave(2, "supmea-sup-ph8001")]
    async with ModbusSimBus(slaves, link) as bus:
        configs = [cfg(link, 1, "hach-ldo-aq"), cfg(link, 2, "supmea-sup-ph8001")]
        async with run(sink, *configs):
            await sink.wait_for(lambda: count(sink, "s1")() >= 1 and count(sink, "s2")() >= 1)

            async def fault(name: str, reason: str, on: Any, off: Any) -> None:
                setattr(bus.slave(1).faults, name, on)
                n = sink.reject_counts()[reason]
                await sink.wait_for(lambda: sink.reject_counts()[reason] >= n + 2, what=reason)
                setattr(bus.slave(1).faults, name, off)

            await fault("bad_crc_every", "crc", 2, 0)  # every 2nd reply: the retry gets through
            await fault("garbage_every", "garbage", 1, 0)
            await fault("exception", "exception-device-busy", 6, None)
            await fault("delay_s", "timeout", TIMEOUT_S + 0.1, 0.0)
            n = count(sink, "s1")()
            await sink.wait_for(lambda: count(sink, "s1")() >= n + 2, what="recovery")
    details = {r: d for s, r, d in sink.rejects if s == "s1"}
    assert "CRC mismatch in reply 01 03 04" in details["crc"]
    assert "exception 6 (device-busy)" in details["exception-device-busy"]
    # The slow slave's replies came after its timeout, on top of the next request's:
    # reported for it, and the other slave never suffered.
    assert "answered after its timeout of 0.15 s: 01 03 04" in details["late-reply"]
    assert not [r for r in sink.rejects if r[0] == "s2"]


async def test_stuck_spiking_and_unavailable_values(tmp_path: Path, sink: RecordingSink) -> None:
    link = tmp_path / "rs485"
    config = cfg(link, 1, "ysi-odo-rtu", parity="N", interval_s=0.2)
    async with ModbusSimBus([slave(1, "ysi-odo-rtu")], link) as bus, run(sink, config):
        await sink.wait_for(lambda: count(sink, "s1")() >= 1)
        bus.slave(1).faults.spike_every = 2
        bus.slave(1).faults.spike_factor = 50.0
        await sink.wait_for(lambda: count(sink, "s1")() >= 5)
        bus.slave(1).faults.spike_every = 0
        bus.slave(1).faults.stuck = True
        n = count(sink, "s1")()
        await sink.wait_for(lambda: count(sink, "s1")() >= n + 3)
        bus.slave(1).faults.stuck = False
        stuck = [r.values for r in sink.readings[n - 1 :]]  # from the last one before
        bus.slave(1).faults.unavailable = True
        await sink.wait_for(lambda: sink.reject_counts()["unavailable"] >= 6)
        n = count(sink, "s1")()
        bus.slave(1).faults.unavailable = False
        await sink.wait_for(lambda: count(sink, "s1")() >= n + 1)
    unavailable = [d for s, r, d in sink.rejects if r == "unavailable"]
    assert {d.split(":")[0] for d in unavailable} == {"do_sat", "do", "temperature"}
    assert "sentinel 0xFFFFFFFF" in unavailable[0]
    do = [next(v.value for v in r.values if v.quantity == "do") for r in sink.readings]
    assert max(do) > 10 * min(do)  # the spikes are in the record: QC is not the driver's job
    assert len(stuck) >= 4 and all(values == stuck[0] for values in stuck)


async def test_setup_writes_go_to_the_slave(tmp_path: Path, sink: RecordingSink) -> None:
    profile = tmp_path / "acme-startmeasure.toml"
    profile.write_text(
        'model = "Acme start-measurement probe"\n'
        '[[value]]\nquantity = "ph"\nunit = "pH"\naddress = 0\ntype = "int16"\nscale = 0.01\n'
        '[[setup]]\naddress = 30\nvalues = [7, 8]\nfunction = 16\nwhen = "connect"\n'
        '[[setup]]\naddress = 40\nvalues = [1]\nwhen = "reading"\nwait_s = 0.05\n'
    )
    link = tmp_path / "rs485"
    async with ModbusSimBus([SimSlave(9, load_sim_profile(profile), RIVER)], link) as bus:
        config = ModbusSensorConfig(
            "acme",
            port=str(link),
            slave=9,
            profile=load_profile(str(profile)),
            interval_s=0.2,
            timeout_s=0.1,
        )
        async with run(sink, config):
            await sink.wait_for(lambda: count(sink, "acme")() >= 3)
        writes = bus.slave(9).writes
    assert writes[0] == (30, [7, 8])
    assert writes[1:4] == [(40, [1])] * 3


async def test_scan_finds_the_slaves_and_names_the_models_it_can(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    slaves = [slave(1, "supmea-sup-ph8001"), slave(4, "insitu-aqua-troll-400-ph")]
    async with ModbusSimBus(slaves, link):
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = await scan_modbus(
            str(link), budget_s=4.0, max_slave=6, probe_timeout_s=0.05, settings=[(9600, "N")]
        )
        took = loop.time() - started
    assert took < 4.0 + 0.5
    assert [(f.driver, f.port) for f in found] == [("modbus", str(link))] * 2
    unknown, troll = found
    assert "slave 1 at 9600 8N1: unknown model" in unknown.description
    assert "FILL-IN.toml" in unknown.snippet and "slave = 1" in unknown.snippet
    assert "Aqua TROLL" in troll.description
    assert 'profile = "insitu-aqua-troll-400-ph"' in troll.snippet and "slave = 4" in troll.snippet


async def test_scan_stops_at_its_budget(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    async with ModbusSimBus([slave(200, "hach-ldo-aq")], link):
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = await scan_modbus(str(link), budget_s=0.6, probe_timeout_s=0.05)
        took = loop.time() - started
    assert took < 0.6 + 0.5
    assert found == []  # slave 200 is past where 0.6 s of probing gets


async def test_a_port_that_refuses_its_settings_is_not_left_locked(tmp_path: Path) -> None:
    # A pty takes parity E when opened, then refuses pymodbus's next change of
    # settings; pymodbus drops the open handle, which holds the port's lock.
    master, slave_fd = os.openpty()
    try:
        path = os.ttyname(slave_fd)
        with pytest.raises(LinkLost, match="cannot open"):
            async with ModbusLink(path, baudrate=9600, parity="E"):
                pass
        async with ModbusLink(path, baudrate=9600, parity="N") as link:
            assert link.settings == "9600 8N1"
    finally:
        os.close(master)
        os.close(slave_fd)

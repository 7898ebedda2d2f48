"""The Modbus RTU bus simulator, checked with pymodbus's own client and raw bytes.

Nothing from the gateway: values are decoded here with ``struct``, frames
checked with pymodbus's CRC, so these tests hold the simulator to the wire
protocol on its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerRTU

from simulators.modbus import (
    ModbusSimBus,
    SimSlave,
    SimValue,
    encode_words,
    load_sim_profile,
    river_value,
)
from simulators.river import RiverModel

REPO = Path(__file__).resolve().parents[2]
T0 = 1_780_000_000.0  # a pinned clock: every read samples the river here
RIVER = RiverModel(seed=3)


def pinned(n: int, profile: str) -> SimSlave:
    return SimSlave(n, load_sim_profile(profile), RIVER, clock=lambda: T0)


def with_crc(body: bytes) -> bytes:
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def crc_ok(frame: bytes) -> bool:
    return FramerRTU.compute_CRC(frame[:-2]) == int.from_bytes(frame[-2:], "big")


async def client(path: Path | str) -> AsyncModbusSerialClient:
    c = AsyncModbusSerialClient(str(path), baudrate=9600, timeout=0.3, retries=0)
    assert await c.connect()
    return c


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[ModbusSimBus]:
    slaves = [
        pinned(1, "supmea-sup-ph8001"),
        pinned(2, "ysi-odo-rtu"),
        pinned(3, "insitu-aqua-troll-400-ph"),
    ]
    async with ModbusSimBus(slaves, tmp_path / "rs485") as b:
        yield b


def test_profiles_are_read_without_the_gateway() -> None:
    code = (
        "import sys\n"
        "from simulators.modbus import load_sim_profile\n"
        "p = load_sim_profile('ysi-odo-rtu')\n"
        "print(p.model, p.parity, len(p.values), 'gateway' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "YSI ODO RTU E 3 False"


def test_encoder_orders_and_scales() -> None:
    f = SimValue("x", 0, 3, "float32")
    assert encode_words(f, 7.25) == [0x40E8, 0x0000]
    assert encode_words(SimValue("x", 0, 3, "float32", word_order="little"), 7.25) == [0, 0x40E8]
    assert encode_words(SimValue("x", 0, 3, "float32", byte_order="little"), 7.25) == [0xE840, 0]
    assert encode_words(SimValue("x", 0, 3, "int16", scale=0.1), -18.1) == [0xFF4B]
    assert encode_words(SimValue("x", 0, 3, "uint16", scale=0.1), -5) == [0]  # clamped
    assert encode_words(SimValue("x", 0, 3, "int16", decimals_register=9), 7.25) == [725]


async def test_registers_carry_the_river_as_each_profile_says(bus: ModbusSimBus) -> None:
    state = RIVER.sample(T0)
    c = await client(bus.link_path or bus.device_path)
    try:
        supmea = await c.read_holding_registers(0, count=3, device_id=1)
        ysi = await c.read_input_registers(0, count=8, device_id=2)
        troll = await c.read_holding_registers(1538, count=21, device_id=3)
    finally:
        c.close()
    t, ph, mv = struct.unpack(">hhh", struct.pack(">HHH", *supmea.registers))
    assert (t, ph) == (round(state.temperature_c * 10), round(state.ph * 100))
    assert mv == round(river_value("ph_mv", state) * 10)

    floats = struct.unpack(">4f", struct.pack(">8H", *ysi.registers))
    assert floats[0] == pytest.approx(state.do_sat_pct, rel=1e-6)
    assert floats[1] == pytest.approx(state.do_mg_l, rel=1e-6)
    assert floats[3] == pytest.approx(state.temperature_c, rel=1e-6)

    regs = troll.registers
    (troll_ph,) = struct.unpack(">f", struct.pack(">HH", *regs[0:2]))
    assert troll_ph == pytest.approx(state.ph, rel=1e-6)
    assert regs[2] == 17 and regs[4] == 0  # parameter id (identify), data quality good
    assert regs[1556 - 1538] == 19
    assert bus.slave(1).served[-1] == (T0, pytest.approx(bus.slave(1).served[-1][1]))


async def test_silent_exception_and_unknown_slaves(bus: ModbusSimBus) -> None:
    c = await client(bus.link_path or bus.device_path)
    try:
        bus.slave(1).faults.silent = True
        with pytest.raises(Exception, match="No response"):
            await c.read_holding_registers(0, count=3, device_id=1)
        bus.slave(1).faults.silent = False
        assert not (await c.read_holding_registers(0, count=3, device_id=1)).isError()

        bus.slave(2).faults.exception = 6
        reply = await c.read_input_registers(0, count=8, device_id=2)
        assert reply.isError() and reply.exception_code == 6
        bus.slave(2).faults.exception = None

        with pytest.raises(Exception, match="No response"):
            await c.read_holding_registers(0, count=1, device_id=99)  # nobody: silence
    finally:
        c.close()
    assert bus.dropped == 2


async def test_unavailable_values_read_as_sentinels(bus: ModbusSimBus) -> None:
    bus.slave(2).faults.unavailable = True
    bus.slave(3).faults.unavailable = True
    c = await client(bus.link_path or bus.device_path)
    try:
        ysi = await c.read_input_registers(0, count=8, device_id=2)
        troll = await c.read_holding_registers(1538, count=21, device_id=3)
    finally:
        c.close()
    assert ysi.registers[0:4] == [0xFFFF] * 4  # the profile's missing = [0xFFFFFFFF]
    assert troll.registers[4] == 3  # data-quality "error"


def raw_exchange(path: str, request: bytes, wait: float = 0.3) -> bytes:
    with serial.Serial(path, 9600, timeout=wait) as port:
        port.reset_input_buffer()
        port.write(request)
        return port.read(256)


async def test_wire_faults_on_the_raw_bytes(bus: ModbusSimBus) -> None:
    path = str(bus.link_path)
    request = with_crc(bytes.fromhex("01 03 00 00 00 03"))
    loop = asyncio.get_running_loop()

    good = await loop.run_in_executor(None, raw_exchange, path, request)
    assert len(good) == 11 and good[:3] == bytes.fromhex("01 03 06") and crc_ok(good)

    bus.slave(1).faults.bad_crc_every = 1
    broken = await loop.run_in_executor(None, raw_exchange, path, request)
    assert broken[:-1] == good[:-1] and not crc_ok(broken)
    bus.slave(1).faults.bad_crc_every = 0

    bus.slave(1).faults.garbage_every = 1
    noise = await loop.run_in_executor(None, raw_exchange, path, request)
    assert len(noise) == 11 and noise != good
    bus.slave(1).faults.garbage_every = 0

    bus.slave(1).faults.delay_s = 0.5
    started = loop.time()
    late = await loop.run_in_executor(None, raw_exchange, path, request, 1.0)
    assert loop.time() - started >= 0.5 and late == good
    assert bus.slave(1).replies == 4


async def test_stuck_and_spikes(bus: ModbusSimBus) -> None:
    s = bus.slave(1)
    s.clock = lambda: T0 + (s.reads * 3600.0)  # the river moves an hour per read
    c = await client(bus.link_path or bus.device_path)
    try:
        first = (await c.read_holding_registers(0, count=3, device_id=1)).registers
        s.faults.stuck = True
        stuck = [(await c.read_holding_registers(0, count=3, device_id=1)).registers for _ in "ab"]
        s.faults.stuck = False
        s.faults.spike_every = 1
        s.faults.spike_factor = 3.0
        spiked = (await c.read_holding_registers(0, count=3, device_id=1)).registers
    finally:
        c.close()
    assert stuck == [first, first]
    assert spiked[1] == pytest.approx(3 * round(RIVER.sample(s.served[-1][0]).ph * 100), abs=3)


async def test_unplug_and_replug_move_the_symlink(bus: ModbusSimBus) -> None:
    link = bus.link_path
    assert link is not None
    before = os.readlink(link)
    await bus.unplug()
    assert not link.exists()
    await bus.replug()
    assert os.readlink(link) == bus.device_path
    c = await client(link)
    try:
        assert not (await c.read_holding_registers(0, count=3, device_id=1)).isError()
    finally:
        c.close()
    assert before  # the old pty is gone; the new one answers


def test_cli_runs_a_bus_until_signalled(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "simulators.cli", "modbus", "--link", str(link)),
            *("--profile", "supmea-sup-ph8001", "--slave", "1"),
            *("--profile", "dfrobot-sen0710", "--slave", "7"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert re.fullmatch(
            rf"Modbus RTU bus on /dev/pts/\d+ \(link {re.escape(str(link))}\) with slaves "
            r"1:supmea-sup-ph8001, 7:dfrobot-sen0710\n",
            banner,
        )
        reply = raw_exchange(str(link), with_crc(bytes.fromhex("07 03 00 00 00 02")))
        assert reply[:3] == bytes.fromhex("07 03 04") and crc_ok(reply)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not link.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_cli_refuses_unpaired_profiles() -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "simulators.cli", "modbus", "--profile", "hach-ldo-aq"),
            *("--slave", "1", "--slave", "2"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2 and "one --profile per --slave" in proc.stderr

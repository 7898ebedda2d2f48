"""Acceptance 2: the Modbus driver against pymodbus's own server, set up by hand.

No simulator code here: the registers are laid out in this file from the
register profiles, with pymodbus's ``SimData``/``SimDevice`` datastore, and
the 16-bit words of each float32 word/byte-order variant are built with
``struct`` and an explicit byte permutation, not with the gateway's codec.
pymodbus's ``ModbusSerialServer`` sits on one pty pair, the gateway on
another, and a few lines below join the two masters (ptys do not enforce
line settings, so parity stays N: a pty refuses some parity changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pty
import struct
import tty
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.backoff import Backoff
from gateway.drivers.modbus.config import ModbusSensorConfig
from gateway.drivers.modbus.profile import load_profile
from gateway.drivers.modbus.source import ModbusSource
from gateway.drivers.modbus.tools import probe_modbus

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

# Byte positions, in register order, of a float32 whose big-endian bytes are A B C D.
PERMUTATION = {
    "ABCD": (0, 1, 2, 3),
    "BADC": (1, 0, 3, 2),
    "CDAB": (2, 3, 0, 1),
    "DCBA": (3, 2, 1, 0),
}

FLOATS_PROFILE = """
model = "Float orders test probe"
[[value]]
quantity = "abcd"
unit = "mg/l"
address = 0
type = "float32"
[[value]]
quantity = "badc"
unit = "Cel"
address = 2
type = "float32"
byte_order = "little"
[[value]]
quantity = "cdab"
unit = "pH"
address = 4
type = "float32"
word_order = "little"
[[value]]
quantity = "dcba"
unit = "mV"
address = 6
type = "float32"
word_order = "little"
byte_order = "little"
[[value]]
quantity = "temperature"
unit = "Cel"
address = 8
type = "int16"
scale = 0.1
[[value]]
quantity = "ec"
unit = "uS/cm"
address = 9
type = "uint16"
"""
SERVED_FLOATS = {"abcd": 8.125, "badc": -3.75, "cdab": 7.0625, "dcba": 245.5}


def float_words(value: float, order: str) -> list[int]:
    data = struct.pack(">f", value)
    ordered = bytes(data[i] for i in PERMUTATION[order])
    return [int.from_bytes(ordered[:2], "big"), int.from_bytes(ordered[2:], "big")]


@contextlib.asynccontextmanager
async def plain_server(devices: Sequence[SimDevice], link: Path) -> AsyncIterator[str]:
    """pymodbus's serial server behind two bridged pty pairs; yields the client's path."""
    loop = asyncio.get_running_loop()
    fds: list[int] = []
    pairs = []
    for _ in range(2):
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        fds += [master, slave]
        pairs.append((master, os.ttyname(slave)))
    (client_master, client_path), (server_master, server_path) = pairs

    def pump(src: int, dst: int) -> None:
        with contextlib.suppress(OSError):
            os.write(dst, os.read(src, 4096))

    loop.add_reader(client_master, pump, client_master, server_master)
    loop.add_reader(server_master, pump, server_master, client_master)
    link.symlink_to(client_path)
    server = ModbusSerialServer(
        list(devices), framer=FramerType.RTU, port=server_path, baudrate=9600
    )
    await server.serve_forever(background=True)
    try:
        yield str(link)
    finally:
        await server.shutdown()
        loop.remove_reader(client_master)
        loop.remove_reader(server_master)
        for fd in fds:
            os.close(fd)


def devices() -> list[SimDevice]:
    floats = [
        SimData(0, values=SERVED_FLOATS["abcd"], datatype=DataType.FLOAT32),  # pymodbus packs ABCD
        SimData(2, values=float_words(SERVED_FLOATS["badc"], "BADC"), datatype=DataType.REGISTERS),
        SimData(4, values=float_words(SERVED_FLOATS["cdab"], "CDAB"), datatype=DataType.REGISTERS),
        SimData(6, values=float_words(SERVED_FLOATS["dcba"], "DCBA"), datatype=DataType.REGISTERS),
        SimData(8, values=-123, datatype=DataType.INT16),
        SimData(9, values=412, datatype=DataType.UINT16),
    ]
    supmea = [SimData(0, values=[0x00FA, 0x02BC, 0x0006], datatype=DataType.REGISTERS)]
    no_bits: list[SimData] = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    ysi_input = [
        SimData(0, values=[0xFFFF, 0xFFFF], datatype=DataType.REGISTERS),  # % sat unavailable
        SimData(2, values=[9.5, 101.25, 12.5], datatype=DataType.FLOAT32),  # mg/L, %, °C
    ]
    ysi_holding = [SimData(0, values=3, datatype=DataType.UINT16)]
    return [
        SimDevice(1, simdata=supmea),
        SimDevice(2, simdata=floats),
        SimDevice(3, simdata=(no_bits, list(no_bits), ysi_holding, ysi_input)),
        SimDevice(4, simdata=[SimData(0, values=1, datatype=DataType.UINT16)]),  # one register
    ]


def configs(port: str, tmp_path: Path) -> list[ModbusSensorConfig]:
    floats = tmp_path / "test-floats.toml"
    floats.write_text(FLOATS_PROFILE)
    common: dict[str, Any] = {"port": port, "interval_s": 0.3, "timeout_s": 0.2, "retries": 1}
    return [
        ModbusSensorConfig("ph1", slave=1, profile=load_profile("supmea-sup-ph8001"), **common),
        ModbusSensorConfig("f2", slave=2, profile=load_profile(str(floats)), **common),
        ModbusSensorConfig("do3", slave=3, profile=load_profile("ysi-odo-rtu"), **common),
        ModbusSensorConfig("ph4", slave=4, profile=load_profile("supmea-sup-ph8001"), **common),
    ]


def values_of(sink: RecordingSink, sensor: str) -> list[dict[str, tuple[float, str]]]:
    return [
        {v.quantity: (v.value, v.unit) for v in r.values}
        for r in sink.readings
        if r.sensor == sensor
    ]


async def test_values_equal_what_a_plain_pymodbus_server_serves(
    tmp_path: Path, sink: RecordingSink
) -> None:
    async with plain_server(devices(), tmp_path / "ttyRS485") as port:
        source = ModbusSource(configs(port, tmp_path), backoff=Backoff(0.05, 0.2))
        task = asyncio.create_task(source.run(sink))
        try:
            await sink.wait_for(
                lambda: (
                    all(len(values_of(sink, s)) >= 2 for s in ("ph1", "f2", "do3"))
                    and sink.reject_counts()["exception-illegal-address"] >= 2
                ),
                within=10,
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    ph = values_of(sink, "ph1")[-1]
    assert ph == {
        "temperature": (pytest.approx(25.0), "Cel"),
        "ph": (pytest.approx(7.0), "pH"),
        "ph_mv": (pytest.approx(0.6), "mV"),
    }
    assert next(r.raw for r in sink.readings if r.sensor == "ph1") == (
        "01 03 06 00 FA 02 BC 00 06 B9 3F"  # the manual's reply, CRC and all
    )

    floats = values_of(sink, "f2")[-1]
    for order, served in SERVED_FLOATS.items():
        assert floats[order][0] == served, order  # exact: these floats are representable
    assert {q: u for q, (_, u) in floats.items()} == {
        "abcd": "mg/l",
        "badc": "Cel",
        "cdab": "pH",
        "dcba": "mV",
        "temperature": "Cel",
        "ec": "uS/cm",
    }
    assert floats["temperature"][0] == pytest.approx(-12.3)
    assert floats["ec"][0] == 412

    do = values_of(sink, "do3")[-1]
    assert do == {"do": (9.5, "mg/l"), "temperature": (12.5, "Cel")}  # 0x0004 is not read out
    unavailable = [d for s, r, d in sink.rejects if s == "do3" and r == "unavailable"]
    assert unavailable and "do_sat" in unavailable[0] and "0xFFFFFFFF" in unavailable[0]
    assert not math.isnan(do["do"][0])

    # Slave 4 has one register where the profile reads three: exception 2, named.
    exceptions = [(r, d) for s, r, d in sink.rejects if s == "ph4"]
    assert exceptions and {r for r, _ in exceptions} == {"exception-illegal-address"}
    assert "exception 2 (illegal-address)" in exceptions[0][1]
    assert not values_of(sink, "ph4")
    # nothing else went wrong on the bus
    assert set(sink.reject_counts()) == {"unavailable", "exception-illegal-address"}
    assert [e.detail["profile"] for e in sink.records] and all(
        e.name == "sensor-info" for e in sink.records
    )


async def test_probe_shows_the_frames_on_the_wire(tmp_path: Path) -> None:
    async with plain_server(devices(), tmp_path / "ttyRS485") as port:
        ph1, f2, _, ph4 = configs(port, tmp_path)
        good = await probe_modbus(ph1)
        failed = await probe_modbus(ph4)
        floats = await probe_modbus(f2)
    assert good.error is None and good.reading is not None
    (exchange,) = good.exchanges
    assert exchange.sent == "01 03 00 00 00 03 05 CB"
    assert exchange.received == "01 03 06 00 FA 02 BC 00 06 B9 3F"
    assert [v.value for v in good.reading.values] == pytest.approx([25.0, 7.0, 0.6])

    assert failed.reading is None
    assert failed.error is not None and "exception 2 (illegal-address)" in failed.error
    (exchange,) = failed.exchanges
    assert exchange.sent.startswith("04 03 00 00 00 03")
    assert exchange.received.startswith("04 83 02")

    assert floats.reading is not None
    assert {v.quantity: v.value for v in floats.reading.values}["dcba"] == 245.5


async def test_probe_of_a_missing_port_says_what_to_check(tmp_path: Path) -> None:
    cfg = ModbusSensorConfig(
        "x", port=str(tmp_path / "absent"), slave=1, profile=load_profile("hach-ldo-aq")
    )
    result = await probe_modbus(cfg)
    assert result.reading is None and result.exchanges == ()
    assert result.error is not None and "cannot open" in result.error and "cable" in result.error

"""Field defects found by running the drivers against fakes of real devices (issue 10).

Each test failed on the code before its fix:

1. Modbus: a reading (every register block of one slave's profile) is one
   turn on the bus, so a dead slave delays a healthy one by at most one of
   its timeouts, not one per block.
2. Serial: a zero-length read from a tty that is still there (the bytes that
   woke the reader were flushed by ``discard_input``) is not an unplug.
3. Modbus scaling: an integer register times a decimal factor keeps the
   decimals the factor implies (``34 × 0.1`` is ``3.4``, not ``3.4000000000000004``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import select
import time
import tty
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.backoff import Backoff
from gateway.config.modbus import ModbusSensorConfig
from gateway.errors import SensorError
from gateway.modbus_profiles import load_profile
from gateway.modbus_profiles.profile import (
    ReadBlock,
    ValueSpec,
    decode_reading,
    decode_value,
    plan_reads,
)
from gateway.sources.modbus import ModbusSource
from gateway.sources.serial_link import SerialLink
from simulators.modbus import ModbusSimBus, SimSlave, load_sim_profile
from simulators.river import RiverModel

if TYPE_CHECKING:
    from conftest import RecordingSink

RIVER = RiverModel(seed=7)


# -- 1. Modbus: one turn on the bus per reading -----------------------------------------

DEAD_TIMEOUT_S = 0.25
"""T: the dead slave's timeout; it asks the bus for T at a time, back to back."""
BUS_INTERVAL_S = 0.5
"""Both slaves' cadence: the dead one's two attempts (2 T) fill its whole interval."""
TRANSFER_S = 0.1
"""The healthy slave's own two request/reply exchanges on a pty, with event-loop
latency on a busy box: what its reading may take beyond waiting for the bus."""


async def test_a_dead_slave_delays_a_two_block_reading_by_at_most_one_timeout(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "rs485"
    two_blocks = load_profile("boqu-bh-485-nh")
    assert len(plan_reads(two_blocks)) == 2
    healthy = ModbusSensorConfig(
        "two-blocks",
        port=str(link),
        slave=10,
        profile=two_blocks,
        interval_s=BUS_INTERVAL_S,
        timeout_s=DEAD_TIMEOUT_S,
        retries=1,
    )
    dead = ModbusSensorConfig(
        "dead",
        port=str(link),
        slave=2,  # configured, but nobody answers at 2
        profile=load_profile("supmea-sup-ph8001"),
        interval_s=BUS_INTERVAL_S,
        timeout_s=DEAD_TIMEOUT_S,
        retries=1,
    )
    slaves = [SimSlave(10, load_sim_profile("boqu-bh-485-nh"), RIVER)]
    source = ModbusSource([dead, healthy], clock=time.monotonic_ns, backoff=Backoff(0.05, 0.2))
    async with ModbusSimBus(slaves, link):
        task = asyncio.create_task(source.run(sink), name="test.modbus")
        try:
            await sink.wait_for(lambda: len(readings(sink, "two-blocks")) >= 8, within=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        stopped = asyncio.get_running_loop().time()

    # The dead slave really held the bus: each of its readings timed out.
    assert sink.reject_counts()["timeout"] >= 3
    assert {s for s, _, _ in sink.rejects} == {"dead"}

    # The healthy slave's slots lie on one grid (source._slots holds its last one);
    # the k-th reading belongs to the k-th slot from its first.
    stamps = readings(sink, "two-blocks")
    grid = source._slots["two-blocks"]
    first = grid - math.ceil((grid - stamps[0]) / BUS_INTERVAL_S) * BUS_INTERVAL_S
    lateness = [t - (first + k * BUS_INTERVAL_S) for k, t in enumerate(stamps)]
    # Every slot that was due long enough before the end has its reading: none missed...
    due = math.floor((stopped - DEAD_TIMEOUT_S - TRANSFER_S - first) / BUS_INTERVAL_S) + 1
    assert len(stamps) >= due, (len(stamps), due, lateness)
    # ...and none later than one of the dead slave's timeouts after its slot.
    assert all(0 <= late <= DEAD_TIMEOUT_S + TRANSFER_S for late in lateness), [
        round(late, 3) for late in lateness
    ]


# -- 2. Serial: a zero-length read is not an unplug ---------------------------------------


async def test_input_flushed_after_it_woke_the_reader_is_no_disconnect() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    loop = asyncio.get_running_loop()
    try:
        async with SerialLink(os.ttyname(slave), 9600, sensor="probe") as link:
            os.write(master, b"stale\r")
            # The bytes are in the tty's input queue: the loop's next poll sees the
            # port readable. Before the reader runs in that iteration, a driver
            # flushes them (as before each command): the reader then reads b"".
            assert select.select([slave], [], [], 2.0)[0]
            loop.call_soon(link.discard_input)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            os.write(master, b"fresh\r")
            assert await link.readline(1.0) == b"fresh"
            # A real hang-up (the other end gone) still fails the link.
            os.close(master)
            master = -1
            with pytest.raises(SensorError, match=r"unplugged|failed"):
                await link.readline(1.0)
    finally:
        if master >= 0:
            os.close(master)
        os.close(slave)


# -- 3. Modbus scaling keeps the factor's decimals --------------------------------------


def test_a_scaled_integer_is_stored_with_the_decimals_of_its_factor() -> None:
    # The shipped Supmea profile: int16 temperature × 0.1, pH × 0.01, pH mV × 0.1.
    profile = load_profile("supmea-sup-ph8001")
    (block,) = plan_reads(profile)
    assert block == ReadBlock(3, 0, 3)
    assert 34 * 0.1 == 3.4000000000000004 and 702 * 0.01 == 7.0200000000000005
    decoded = decode_reading(profile, {block: [34, 702, -1234 & 0xFFFF]})
    values = {spec.quantity: value for spec, value in decoded.values}
    # What the signed record holds is the JSON of these numbers.
    assert json.dumps(values) == '{"temperature": 3.4, "ph": 7.02, "ph_mv": -123.4}'


def test_every_int16_times_a_power_of_ten_is_the_nearest_float_to_the_decimal() -> None:
    for k, scale in ((1, 0.1), (2, 0.01), (3, 0.001)):
        spec = ValueSpec("x", "1", 0, type="int16", scale=scale)
        wrong = [
            raw
            for raw in range(-32768, 32768)
            if decode_value(spec, [raw & 0xFFFF]) != float(f"{raw}e-{k}")
        ]
        assert not wrong, (scale, wrong[:5], len(wrong))


def test_offsets_decimal_registers_and_wide_integers_keep_their_decimals() -> None:
    kelvin = ValueSpec("temperature", "Cel", 0, type="uint16", scale=0.1, offset=-273.15)
    assert 2931 * 0.1 - 273.15 != 19.95
    assert decode_value(kelvin, [2931]) == 19.95
    places = ValueSpec("ph", "pH", 0, type="int16", scale=0.1, decimals_register=1)
    assert 7 / 10 * 0.1 != 0.07
    assert decode_value(places, [7], decimals=1) == 0.07
    assert decode_value(places, [702], decimals=0) == 70.2
    wide = ValueSpec("ec", "uS/cm", 0, type="uint32", scale=0.001)
    raw = 4_000_000_013
    assert raw * 0.001 != 4_000_000.013
    assert decode_value(wide, [raw >> 16, raw & 0xFFFF]) == 4_000_000.013
    quarter = ValueSpec("level", "m", 0, type="int16", scale=0.25, offset=0.1)
    assert decode_value(quarter, [3]) == 0.85


def readings(sink: RecordingSink, sensor: str) -> list[float]:
    """Receive times (monotonic seconds) of a sensor's readings."""
    return [r.received_ns / 1e9 for r in sink.readings if r.sensor == sensor]

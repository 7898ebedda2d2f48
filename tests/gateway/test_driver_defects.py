"""Field defects found by running the drivers against fakes of real devices (issue 10).

Each test failed on the code before its fix:

1. Modbus: a reading (every register block of one slave's profile) is one
   turn on the bus, so a dead slave delays a healthy one by at most one of
   its timeouts, not one per block.
2. Serial: a zero-length read from a tty that is still there (the bytes that
   woke the reader were flushed by ``discard_input``) is not an unplug.
3. Modbus scaling: an integer register times a decimal factor keeps the
   decimals the factor implies (``34 × 0.1`` is ``3.4``, not ``3.4000000000000004``).
4. SDI-12: a service request that comes after ttt, as the recorder's ``aD0!``
   goes out, is recognised for what it is and not taken as the D0 reply: the
   round still gives its reading, and each D reply pairs with its command.
5. SenML + QC: a pack's samples come out in ascending time order, whatever the
   order of its records, so QC judges each sensor's samples in time order.
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
from gateway.drivers.link.serial import SerialLink
from gateway.drivers.modbus.config import ModbusSensorConfig
from gateway.drivers.modbus.profile import (
    ReadBlock,
    ValueSpec,
    decode_reading,
    decode_value,
    load_profile,
    plan_reads,
)
from gateway.drivers.modbus.source import ModbusSource
from gateway.drivers.mqtt.payload import Decoded, decode
from gateway.drivers.sdi12.config import Sdi12SensorConfig
from gateway.drivers.sdi12.source import Sdi12Source
from gateway.drivers.sdi12.tools import probe_sdi12
from gateway.errors import SensorError
from gateway.qc import QcEngine
from simulators.modbus import ModbusSimBus, SimSlave, load_sim_profile
from simulators.river import RiverModel
from simulators.sdi12 import SDI12_QUANTITIES, Sdi12Adapter, Sdi12PtyAdapter, Sonde, SondeModel

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

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


# -- 4. SDI-12: a late service request is not the D0 reply ------------------------------

SONDE = SondeModel("RIVERSIM", "WQ6", "110", ("temperature", "conductivity", "ph"), 1, 0.05)
"""ttt = 1 s; the data are ready after 0.05 s, when a healthy sonde sends its service request."""
NOW = 1_767_272_400.0


def test_the_simulated_sonde_sends_a_late_service_request_ahead_of_the_d0_reply() -> None:
    sonde = Sonde("0", SONDE, RIVER, seed=3, values_per_reply=1)
    sonde.inject(late_service_request_next=1)
    adapter = Sdi12Adapter([sonde])
    assert [r.data for r in adapter.receive(b"0M!", 10.0)] == [b"00013\r\n"]
    assert adapter.next_deadline() is None  # nothing by itself: not at 0.05 s, not at ttt
    first, second = adapter.receive(b"0D0!", 11.05)
    assert first.data == b"0\r\n"  # the service request, on the line read for D0...
    assert second.data.startswith(b"0+") and second.delay_s == 0.0  # ...then the D0 reply
    assert [r.data for r in adapter.receive(b"0D1!", 11.1)] == [
        b"0+" + f"{sonde.served[-1][1]:.1f}".encode() + b"\r\n"
    ]
    sonde.inject(late_service_request_next=1)
    adapter.receive(b"0M!", 20.0)
    assert len(adapter.receive(b"0D0!", 20.01)) == 1  # a break before ready: aborted, no request


def sdi12_config(link: Path) -> Sdi12SensorConfig:
    return Sdi12SensorConfig(
        id="sonde-0",
        port=str(link),
        address="0",
        quantities=tuple((q, SDI12_QUANTITIES[q].unit) for q in SONDE.quantities),
        interval_s=0.4,
        timeout_s=0.25,
        open_delay_s=0.0,
    )


async def test_a_late_service_request_does_not_cost_the_round(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    # One value per D reply: D0, D1 and D2 must each pair with their own reply.
    sonde = Sonde("0", SONDE, RIVER, seed=3, values_per_reply=1)
    sonde.inject(late_service_request_next=2)
    source = Sdi12Source([sdi12_config(link)], backoff=Backoff(0.05, 0.2))
    host = Sdi12PtyAdapter(Sdi12Adapter([sonde]), link, clock=lambda: NOW)
    async with host:
        task = asyncio.create_task(source.run(sink), name="test.sdi12")
        try:
            await sink.wait_for(lambda: len(sink.readings) >= 3, within=8.0, what="3 readings")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert sink.rejects == []
    assert sonde.faults.late_service_request_next == 0  # both late requests were sent
    # Every measurement gave its reading (the last may have been under way), each
    # value from its own D command, in the order the sonde served them.
    measured = [t for t, body in sonde.commands if body == "M"]
    assert len(measured) <= len(sink.readings) + 1
    readings_values = [tuple(v.value for v in r.values) for r in sink.readings]
    assert readings_values == sonde.served[: len(readings_values)]


async def test_a_probe_shows_the_late_service_request_and_the_reply_after_it(
    tmp_path: Path,
) -> None:
    link = tmp_path / "usb-sdi12"
    sonde = Sonde("0", SONDE, RIVER, seed=3)
    sonde.inject(late_service_request_next=1)
    async with Sdi12PtyAdapter(Sdi12Adapter([sonde]), link, clock=lambda: NOW):
        result = await probe_sdi12(sdi12_config(link))
    assert result.error is None, result.exchanges
    assert result.reading is not None
    assert tuple(v.value for v in result.reading.values) == sonde.served[-1]
    d0 = [e for e in result.exchanges if e.sent == "0D0!"]
    assert len(d0) == 1 and d0[0].received == "0" and "service request" in d0[0].note


# -- 5. SenML: a pack's samples in time order, for QC ------------------------------------

PACK_TIME = 1_772_323_200  # 2026-03-01T00:00:00Z
SERIES = [  # (seconds after PACK_TIME, temperature, pH), oldest first; the newest spikes
    (0, 12.0, 7.20),
    (60, 12.1, 7.21),
    (120, 12.2, 7.22),
    (180, 12.2, 7.60),
    (240, 16.0, 7.61),
]


def senml_pack(newest_first: bool) -> bytes:
    """The series as one pack; newest first is how RFC 8428's examples order records."""
    order = sorted(SERIES, reverse=newest_first)
    records: list[dict[str, object]] = [{"bn": "urn:dev:ow:10e2073a01080063:", "bt": PACK_TIME}]
    for t, temp, ph in order:
        records.append({"n": "temp", "u": "Cel", "v": temp, "t": t})
        records.append({"n": "ph", "u": "pH", "v": ph, "t": t})
    return json.dumps(records).encode()


def decode_pack(payload: bytes) -> Decoded:
    received_ns = (PACK_TIME + 300) * 10**9
    return decode("senml", payload, sensor="node", max_bytes=65536, received_ns=received_ns)


def qc_flags(
    samples: list[tuple[str, float, str]],
) -> list[tuple[str, float, int, tuple[int, ...]]]:
    """(quantity, value, aggregate flag, per-test flags) as the log's QC gives them in order."""
    qc = QcEngine()
    out: list[tuple[str, float, int, tuple[int, ...]]] = []
    for quantity, value, unit in samples:
        r = qc.check("node", quantity, unit, 0, value)
        out.append((quantity, value, r.flag, r.tests))
    return out


def test_a_newest_first_senml_pack_gives_its_samples_in_time_order() -> None:
    decoded = decode_pack(senml_pack(newest_first=True))
    times = [s.time for s in decoded.samples]
    assert times == sorted(times) and len(set(times)) == len(SERIES)
    assert times[0] == "2026-03-01T00:00:00.000000Z" and times[-1].startswith("2026-03-01T00:04")
    temps = [
        next(v.value for v in s.values if v.quantity == "temperature") for s in decoded.samples
    ]
    assert temps == [temp for _, temp, _ in SERIES]


def test_qc_judges_a_newest_first_pack_as_the_same_values_in_time_order() -> None:
    decoded = decode_pack(senml_pack(newest_first=True))
    logged = qc_flags([(v.quantity, v.value, v.unit) for s in decoded.samples for v in s.values])
    in_time_order = qc_flags(
        [
            (q, v, u)
            for _, temp, ph in SERIES
            for q, v, u in (("temperature", temp, "Cel"), ("ph", ph, "pH"))
        ]
    )
    assert logged == in_time_order
    # The spike at the newest time is flagged (4: fail), as only time order shows.
    assert in_time_order[-2][:3] == ("temperature", 16.0, 4)
    newest_first = qc_flags(
        [
            (q, v, u)
            for _, temp, ph in reversed(SERIES)
            for q, v, u in (("temperature", temp, "Cel"), ("ph", ph, "pH"))
        ]
    )
    assert sorted(newest_first) != sorted(in_time_order)  # the order does change the flags


def readings(sink: RecordingSink, sensor: str) -> list[float]:
    """Receive times (monotonic seconds) of a sensor's readings."""
    return [r.received_ns / 1e9 for r in sink.readings if r.sensor == sensor]

"""Sdi12Source, probe_sdi12 and scan_sdi12 against the simulated USB SDI-12 adapter.

Every test runs the real driver over a real pty pair: ``simulators.sdi12``
hosts the adapter and its sondes behind a symlink that plays
``/dev/serial/by-id/...``. Readings are compared with the values the
simulated sondes say they served, and with the river model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.backoff import Backoff
from gateway.config import parse_config
from gateway.drivers import build_sources
from gateway.drivers.sdi12.config import Sdi12SensorConfig
from gateway.drivers.sdi12.source import Sdi12Source
from gateway.drivers.sdi12.tools import probe_sdi12, scan_sdi12
from simulators.river import RiverModel
from simulators.sdi12 import SDI12_QUANTITIES, Sdi12Adapter, Sdi12PtyAdapter, Sonde, SondeModel
from tests.gateway.recording_sink import running

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

NOW = 1_767_272_400.0
RIVER = RiverModel(seed=7)
FAST = SondeModel("RIVERSIM", "WQ6", "110", ("temperature", "conductivity", "ph"), 1, 0.05)
NO_WAIT = SondeModel("RIVERSIM", "TB1", "100", ("turbidity", "temperature"), 0, 0.0)


def quantities(model: SondeModel) -> tuple[tuple[str, str], ...]:
    return tuple((q, SDI12_QUANTITIES[q].unit) for q in model.quantities)


def config(
    link: Path, address: str, model: SondeModel = FAST, **changes: object
) -> Sdi12SensorConfig:
    base = Sdi12SensorConfig(
        id=f"sonde-{address}",
        port=str(link),
        address=address,
        quantities=quantities(model),
        interval_s=0.4,
        timeout_s=0.25,
        open_delay_s=0.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def sonde(address: str, model: SondeModel = FAST, **kwargs: object) -> Sonde:
    return Sonde(address, model, RIVER, seed=3, **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def adapter(link: Path, *sondes: Sonde, echo: bool = False) -> AsyncIterator[Sdi12PtyAdapter]:
    async with Sdi12PtyAdapter(Sdi12Adapter(sondes, echo=echo), link, clock=lambda: NOW) as host:
        yield host


def values(sink: RecordingSink, sensor: str) -> list[tuple[float, ...]]:
    return [tuple(v.value for v in r.values) for r in sink.readings if r.sensor == sensor]


def river_now(model: SondeModel) -> tuple[float, ...]:
    state = RIVER.sample(NOW)
    return tuple(
        round(SDI12_QUANTITIES[q].read(state), SDI12_QUANTITIES[q].decimals)
        for q in model.quantities
    )


# -- each command type -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["M", "MC", "C", "CC"])
async def test_each_measurement_command_reads_what_the_sonde_served(
    tmp_path: Path, sink: RecordingSink, command: str
) -> None:
    link = tmp_path / "usb-sdi12"
    s0 = sonde("0", values_per_reply=1)  # one value per D reply: D0, D1, D2 are all needed
    async with (
        adapter(link, s0) as host,
        running(Sdi12Source([config(link, "0", command=command)]), sink),
    ):
        await sink.wait_for(lambda: len(sink.readings) >= 2, what="two readings")
    first = sink.readings[0]
    assert [(v.quantity, v.unit) for v in first.values] == [
        ("temperature", "Cel"),
        ("conductivity", "uS/cm"),
        ("ph", "pH"),
    ]
    assert values(sink, "sonde-0")[:2] == s0.served[:2]
    assert values(sink, "sonde-0")[0] == river_now(FAST)
    sent = [c.decode() for c in host.adapter.commands]
    assert sent[:6] == ["0I!", f"0{command}!", "0D0!", "0D1!", "0D2!", f"0{command}!"]
    assert first.raw is not None and first.raw.count("\n") == 2  # the three D replies
    if command.endswith("C") and len(command) == 2:
        assert first.raw.splitlines()[0].startswith("0+") and len(first.raw.splitlines()[0]) > 4
    assert sink.rejects == []


async def test_identity_is_logged_as_a_sensor_info_event(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    async with (
        adapter(link, sonde("4", serial="AB123")),
        running(Sdi12Source([config(link, "4")]), sink),
    ):
        await sink.wait_for(lambda: bool(sink.readings), what="a reading")
    assert len(sink.records) == 1
    event = sink.records[0]
    assert event.name == "sensor-info"
    assert dict(event.detail) == {
        "sensor": "sonde-4",
        "driver": "sdi12",
        "port": str(link),
        "address": "4",
        "sdi12_version": "1.4",
        "vendor": "RIVERSIM",
        "model": "WQ6",
        "version": "110",
        "serial": "AB123",
        "raw": "414RIVERSIMWQ6   110AB123",
    }


async def test_service_request_ends_the_wait_and_its_absence_costs_the_full_ttt(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    slow = SondeModel("RIVERSIM", "WQ6", "110", ("temperature",), 3, 0.05)
    quiet = sonde("1", slow)
    quiet.inject(no_service_request=True)
    loud = sonde("0", slow)
    cfgs = [config(link, "0", slow, interval_s=30.0), config(link, "1", slow, interval_s=30.0)]
    async with adapter(link, loud, quiet), running(Sdi12Source(cfgs), sink):
        await sink.wait_for(lambda: len(sink.readings) >= 2, within=8.0, what="both readings")
    m0, d0 = (t for t, body in loud.commands if body in ("M", "D0"))
    m1, d1 = (t for t, body in quiet.commands if body in ("M", "D0"))
    assert d0 - m0 < 3  # the service request came after 0.05 s; ttt is 3 s
    assert d1 - m1 >= 3  # no service request: the recorder waits out ttt (spec §4.4.6)
    assert values(sink, "sonde-1") == quiet.served


async def test_concurrent_sondes_are_all_started_before_any_is_read(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    model = SondeModel("RIVERSIM", "CT2", "103", ("temperature", "conductivity"), 1, 0.5)
    sondes = [sonde(a, model) for a in "01A"]
    cfgs = [config(link, a, model, command="CC", interval_s=30.0) for a in "01A"]
    async with adapter(link, *sondes) as host, running(Sdi12Source(cfgs), sink):
        await sink.wait_for(lambda: len(sink.readings) == 3, within=6.0, what="three readings")
    sent = [c.decode() for c in host.adapter.commands]
    starts = [sent.index(f"{a}CC!") for a in "01A"]
    reads = [sent.index(f"{a}D0!") for a in "01A"]
    assert max(starts) < min(reads)
    for a, s in zip("01A", sondes, strict=True):
        assert values(sink, f"sonde-{a}") == s.served
    assert sink.rejects == []


async def test_an_echoing_adapter_and_a_ttt_of_zero(tmp_path: Path, sink: RecordingSink) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("7", NO_WAIT)
    async with (
        adapter(link, s, echo=True),
        running(Sdi12Source([config(link, "7", NO_WAIT)]), sink),
    ):
        await sink.wait_for(lambda: len(sink.readings) >= 1, what="a reading")
    assert values(sink, "sonde-7")[0] == s.served[0] == river_now(NO_WAIT)
    assert sink.rejects == []


# -- faults ----------------------------------------------------------------------------------


async def test_a_wrong_crc_is_rejected_and_the_data_command_retried(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("0")
    s.inject(wrong_crc_next=1)
    async with (
        adapter(link, s) as host,
        running(Sdi12Source([config(link, "0", command="MC")]), sink),
    ):
        await sink.wait_for(lambda: bool(sink.readings), what="a reading")
    assert sink.reject_counts() == {"crc": 1}
    assert "0D0!" in sink.rejects[0][2]
    sent = [c.decode() for c in host.adapter.commands]
    assert sent[:4] == ["0I!", "0MC!", "0D0!", "0D0!"]  # the same data asked again
    assert values(sink, "sonde-0")[0] == s.served[0]


async def test_garbage_and_truncated_replies_are_rejected_never_logged(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("0")
    s.inject(garbage_next=2, truncate_next=1)
    async with adapter(link, s), running(Sdi12Source([config(link, "0", command="CC")]), sink):
        await sink.wait_for(lambda: len(sink.readings) >= 2, what="two readings")
    counts = sink.reject_counts()
    assert counts["malformed"] == 2  # the two lines of noise
    assert counts["crc"] == 1  # the truncated data reply lost its CRC with its tail
    assert set(counts) == {"malformed", "crc"}
    assert values(sink, "sonde-0")[:2] == s.served[:2]


async def test_a_truncated_reply_without_crc_is_caught_by_the_count(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    model = SondeModel(
        "RIVERSIM", "WQ6", "110", ("temperature", "conductivity", "ph", "do"), 1, 0.05
    )
    s = sonde("0", model)
    s.inject(truncate_next=1)
    async with adapter(link, s), running(Sdi12Source([config(link, "0", model)]), sink):
        await sink.wait_for(lambda: len(sink.readings) >= 1, what="a reading")
    assert sink.reject_counts()["aborted"] == 1  # two values, then an empty D1
    assert values(sink, "sonde-0") == s.served[1:2]  # the damaged measurement is not logged


async def test_a_value_count_that_differs_from_the_config_is_refused(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    cfg = config(link, "0", quantities=(("temperature", "Cel"), ("ph", "pH")))
    async with adapter(link, sonde("0")), running(Sdi12Source([cfg]), sink):
        await sink.wait_for(lambda: sink.reject_counts()["count-mismatch"] >= 2, what="rejects")
    assert sink.readings == []
    assert "announced 3 values; the config names 2" in sink.rejects[0][2]


async def test_stuck_and_spiked_values_pass_through_for_qc_to_judge(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("0")
    s.inject(spike_next=1)
    async with adapter(link, s), running(Sdi12Source([config(link, "0")]), sink):
        await sink.wait_for(lambda: len(sink.readings) >= 1, what="a reading")
        s.inject(stuck_next=2)
        await sink.wait_for(lambda: len(sink.readings) >= 3, what="three readings")
    got = values(sink, "sonde-0")
    assert got[0][0] > 100  # a spiked temperature, as served
    assert got[:3] == s.served[:3]
    assert got[1] == got[2] == got[0]  # stuck: the spiked values repeated


async def test_a_dead_address_costs_only_its_own_retries(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    live, dead = sonde("0", NO_WAIT), sonde("5", NO_WAIT)
    dead.inject(silent=True)
    cfgs = [config(link, "5", NO_WAIT, retries=2), config(link, "0", NO_WAIT)]
    async with adapter(link, live, dead) as host, running(Sdi12Source(cfgs), sink):
        await sink.wait_for(lambda: len(sink.readings) >= 3, within=8.0, what="live readings")
    sent = [c.decode() for c in host.adapter.commands]
    # Each round: three tries at the dead sonde's identify, then the live sonde as usual.
    first_round = sent[: sent.index("0D0!") + 1]
    assert first_round == ["5I!", "5I!", "5I!", "0I!", "0M!", "0D0!"]
    second = sent[len(first_round) : len(first_round) + 5]
    assert second == ["5I!", "5I!", "5I!", "0M!", "0D0!"]
    assert {r for s, r, _ in sink.rejects if s == "sonde-5"} == {"timeout"}
    assert not [r for r in sink.rejects if r[0] == "sonde-0"]
    assert values(sink, "sonde-0") == live.served[: len(values(sink, "sonde-0"))]


async def test_a_sonde_that_drops_out_is_identified_again_when_it_returns(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("0", NO_WAIT)
    async with (
        adapter(link, s),
        running(Sdi12Source([config(link, "0", NO_WAIT)], max_silent_rounds=50), sink),
    ):
        await sink.wait_for(lambda: len(sink.readings) >= 1, what="a reading")
        s.inject(silent=True)
        await sink.wait_for(lambda: sink.reject_counts()["timeout"] >= 2, what="timeouts")
        before = len(sink.readings)
        s.inject(silent=False)
        await sink.wait_for(lambda: len(sink.readings) > before, what="readings again")
    assert [e.name for e in sink.records] == ["sensor-info", "sensor-info"]


async def test_unplug_and_replug_resume_without_a_restart(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("0", NO_WAIT)
    source = Sdi12Source([config(link, "0", NO_WAIT)], backoff=Backoff(0.05, 0.2))
    async with adapter(link, s) as host, running(source, sink) as task:
        await sink.wait_for(lambda: len(sink.readings) >= 1, what="a reading")
        await host.unplug()
        await sink.wait_for(lambda: sink.reject_counts()["disconnected"] >= 1, what="disconnect")
        await asyncio.sleep(0.3)  # reopening fails while the port is gone
        before = len(sink.readings)
        await host.replug()
        await sink.wait_for(lambda: len(sink.readings) > before + 1, within=5.0, what="resumed")
        assert not task.done()
    assert [e.name for e in sink.records] == ["sensor-info", "sensor-info"]
    assert values(sink, "sonde-0") == s.served[: len(sink.readings)]


async def test_an_adapter_that_answers_nothing_is_reopened(
    tmp_path: Path, sink: RecordingSink
) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("0", NO_WAIT)
    s.inject(silent=True)
    source = Sdi12Source(
        [config(link, "0", NO_WAIT, retries=0, timeout_s=0.1)],
        max_silent_rounds=2,
        backoff=Backoff(0.05, 0.1),
    )
    async with adapter(link, s), running(source, sink):
        await sink.wait_for(lambda: sink.reject_counts()["disconnected"] >= 2, what="reopens")
        s.inject(silent=False)
        await sink.wait_for(lambda: bool(sink.readings), what="a reading after the reopen")
    assert "answered nothing in 2 rounds" in next(
        detail for _, reason, detail in sink.rejects if reason == "disconnected"
    )


async def test_a_babbling_port_never_kills_the_source(tmp_path: Path, sink: RecordingSink) -> None:
    """Not the simulator: a raw pty that answers every command with hostile bytes."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "babble"
    link.symlink_to(os.ttyname(slave))
    replies = [
        b"\x00\xff\r\n",
        b"0+1+2+3" * 30 + b"\r\n",
        b"0" * 400 + b"\r\n",
        b"0\r\n",
        b"1+1\r\n",
        b"0+1.2.3\r\n",
    ]
    loop = asyncio.get_running_loop()
    count = 0

    def answer() -> None:
        nonlocal count
        if os.read(master, 1024):
            os.write(master, replies[count % len(replies)])
            count += 1

    loop.add_reader(master, answer)
    try:
        async with running(
            Sdi12Source([config(link, "0")], backoff=Backoff(0.05, 0.1)), sink
        ) as task:
            await sink.wait_for(lambda: len(sink.rejects) >= 12, what="many rejects")
            assert not task.done()
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)
    assert sink.readings == []
    assert set(sink.reject_counts()) <= {"malformed", "wrong-address", "timeout", "disconnected"}
    assert sink.reject_counts()["malformed"] >= 6


# -- technician tools -------------------------------------------------------------------------


async def test_probe_shows_every_exchange_and_the_reading(tmp_path: Path) -> None:
    link = tmp_path / "usb-sdi12"
    s = sonde("2")
    s.inject(wrong_crc_next=1)
    async with adapter(link, s):
        result = await probe_sdi12(config(link, "2", command="MC"))
    assert result.error is None and result.reading is not None
    assert tuple(v.value for v in result.reading.values) == s.served[0]
    sent = [e.sent for e in result.exchanges]
    assert sent == ["2I!", "2MC!", "", "2D0!", "2D0!"]
    assert result.exchanges[1].received == "20013"
    assert result.exchanges[2].received == "2"  # the service request
    assert result.exchanges[3].note.startswith("crc:")
    assert result.exchanges[4].received.startswith("2+")


async def test_probe_of_a_silent_address_says_what_to_check(tmp_path: Path) -> None:
    link = tmp_path / "usb-sdi12"
    async with adapter(link, sonde("0")):
        result = await probe_sdi12(config(link, "9", retries=1))
    assert result.reading is None
    assert result.error is not None and "did not answer" in result.error
    assert [e.sent for e in result.exchanges] == ["9I!", "9I!", "9M!", "9M!"]
    assert all(e.note.startswith("no reply") for e in result.exchanges)


async def test_scan_finds_every_sonde_and_writes_a_working_snippet(tmp_path: Path) -> None:
    link = tmp_path / "usb-sdi12"
    sondes = [sonde("0", FAST), sonde("b", NO_WAIT)]
    async with adapter(link, *sondes) as host:
        found = await scan_sdi12(str(link), budget_s=20.0, open_delay_s=0.0, reply_timeout_s=0.06)
    assert [f.description.split(":")[0] for f in found] == ["SDI-12 address 0", "SDI-12 address b"]
    assert "RIVERSIM WQ6 v110" in found[0].description and "3 value(s)" in found[0].description
    sent = [c.decode() for c in host.adapter.commands]
    assert "z!" not in sent  # the adapter's own address is left out
    assert sum(c.endswith("!") and len(c) == 2 and c != "?!" for c in sent) == 61
    text = "[device]\n" + "\n".join(f.snippet for f in found)
    cfg = parse_config(text, tmp_path / "gateway.toml")
    sensors = [s for s in cfg.sensors if isinstance(s, Sdi12SensorConfig)]
    assert [(s.address, s.quantities) for s in sensors] == [
        ("0", quantities(FAST)),
        ("b", quantities(NO_WAIT)),
    ]
    assert len(build_sources(cfg, "dev")) == 1  # one source for the adapter, both addresses


async def test_scan_stops_when_its_budget_is_spent(tmp_path: Path) -> None:
    link = tmp_path / "usb-sdi12"
    async with adapter(link, sonde("0", NO_WAIT), sonde("y", NO_WAIT)) as host:
        found = await scan_sdi12(str(link), budget_s=1.0, open_delay_s=0.0, reply_timeout_s=0.1)
    assert [f.snippet.count('address = "0"') for f in found] == [1]
    assert b"yI!" not in host.adapter.commands

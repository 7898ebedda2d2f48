"""EzoSource against the EZO simulator on real pty pairs: every circuit, both modes,
temperature compensation between circuits of one site, faults, unplug and replug.

Readings are compared with the lines the simulator actually wrote
(``EzoPtyDevice.served``), so the test checks the driver's reading of the wire,
not a second copy of the simulator's formatting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.backoff import Backoff
from gateway.config import EzoSensorConfig
from gateway.drivers.ezo.protocol import parse_line
from gateway.drivers.ezo.sites import SiteTemperatures
from gateway.drivers.ezo.source import EzoSource
from gateway.pipeline import Reading
from simulators.ezo import Reply
from simulators.ezo_pty import EzoPtyDevice
from simulators.river import RiverModel

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

SIM_NOW = 1_767_272_400.0  # 2026-01-01T13:00:00Z
DELAY = 0.02  # simulator processing delays scaled down 50x
UNITS = {
    "ph": [("ph", "pH")],
    "orp": [("orp", "mV")],
    "rtd": [("temperature", "Cel")],
    "do": [("do", "mg/l")],
    "ec": [("ec", "uS/cm")],
}


def config(port: Path, circuit: str, **kwargs: Any) -> EzoSensorConfig:
    fields: dict[str, Any] = {"interval_s": 0.1, "timeout_s": 0.5}
    fields.update(kwargs)
    return EzoSensorConfig(id=f"{circuit}-1", port=str(port), circuit=circuit, **fields)  # type: ignore[arg-type]


def make_source(cfg: EzoSensorConfig, sites: SiteTemperatures | None = None) -> EzoSource:
    return EzoSource(cfg, sites=sites, backoff=Backoff(0.02, 0.1))


@contextlib.asynccontextmanager
async def running(*sources: EzoSource, sink: RecordingSink) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(s.run(sink), name=f"test[{s.name}]") for s in sources]
        try:
            yield
        finally:
            for task in tasks:
                assert not task.done(), f"{task.get_name()} ended: the driver raised"
                task.cancel()


def served_values(device: EzoPtyDevice) -> set[str]:
    """The reading lines the simulator wrote (not status or query lines)."""
    return {
        line.rstrip(b"\r").decode("ascii", "replace")
        for line in device.served
        if line.endswith(b"\r") and line[:1] not in (b"*", b"?")
    }


def check_against_served(reading: Reading, device: EzoPtyDevice, circuit: str) -> None:
    assert reading.raw in served_values(device)
    assert reading.raw is not None
    line = parse_line(reading.raw.encode())
    assert [v.value for v in reading.values] == list(line.values)  # type: ignore[union-attr]
    assert [(v.quantity, v.unit) for v in reading.values] == UNITS[circuit]


@pytest.mark.parametrize("mode", ["poll", "continuous"])
async def test_every_circuit_in_both_modes(tmp_path: Path, sink: RecordingSink, mode: str) -> None:
    river = RiverModel(seed=7)
    circuits = list(UNITS)
    async with contextlib.AsyncExitStack() as stack:
        devices = {
            c: await stack.enter_async_context(
                EzoPtyDevice.for_river(c, tmp_path / f"ezo-{c}", river=river, delay_scale=DELAY)  # type: ignore[arg-type]
            )
            for c in circuits
        }
        interval = 1.0 if mode == "continuous" else 0.1
        sources = [
            make_source(config(tmp_path / f"ezo-{c}", c, mode=mode, interval_s=interval))
            for c in circuits
        ]
        async with running(*sources, sink=sink):
            await sink.wait_for(
                lambda: all(
                    sum(r.sensor == f"{c}-1" for r in sink.readings) >= 2 for c in circuits
                ),
                within=8,
            )
        for device in devices.values():
            if mode == "continuous":
                assert "C,1" in device.commands
                assert device.circuit.continuous_interval == 1.0
            else:
                assert "R" in device.commands
                assert device.circuit.continuous_interval is None
    for reading in sink.readings:
        circuit = reading.sensor.removesuffix("-1")
        check_against_served(reading, devices[circuit], circuit)
    assert sink.rejects == []
    info = {e.detail["sensor"]: e.detail for e in sink.records if e.name == "sensor-info"}
    assert info["ph-1"]["circuit"] == "PH" and info["ph-1"]["firmware"] == "2.16"
    assert info["ec-1"]["outputs"] == ["EC"]
    assert info["do-1"]["mode"] == mode
    assert len(info) == len(circuits)


@pytest.mark.parametrize("mode", ["poll", "continuous"])
async def test_ec_and_do_outputs_selected_from_config(
    tmp_path: Path, sink: RecordingSink, mode: str
) -> None:
    interval = 1.0 if mode == "continuous" else 0.1
    async with (
        EzoPtyDevice.for_river("ec", tmp_path / "ec", seed=3, delay_scale=DELAY) as ec,
        EzoPtyDevice.for_river("do", tmp_path / "do", seed=3, delay_scale=DELAY) as do,
    ):
        sources = [
            make_source(
                config(
                    tmp_path / "ec",
                    "ec",
                    outputs=("EC", "TDS", "S", "SG"),
                    mode=mode,
                    interval_s=interval,
                )
            ),
            make_source(
                config(tmp_path / "do", "do", outputs=("mg", "%"), mode=mode, interval_s=interval)
            ),
        ]
        async with running(*sources, sink=sink):
            await sink.wait_for(
                lambda: {r.sensor for r in sink.readings} == {"ec-1", "do-1"}, within=6
            )
    for reading in sink.readings:
        device = ec if reading.sensor == "ec-1" else do
        assert reading.raw in served_values(device)
    ec_reading = next(r for r in sink.readings if r.sensor == "ec-1")
    assert [(v.quantity, v.unit) for v in ec_reading.values] == [
        ("ec", "uS/cm"),
        ("tds", "ppm"),
        ("salinity", "PSU"),
        ("specific_gravity", "1"),
    ]
    do_reading = next(r for r in sink.readings if r.sensor == "do-1")
    assert [(v.quantity, v.unit) for v in do_reading.values] == [("do", "mg/l"), ("do_sat", "/100")]
    assert sink.rejects == []


async def test_rtd_in_fahrenheit_is_read_with_its_unit_and_compensates_in_celsius(
    tmp_path: Path, sink: RecordingSink
) -> None:
    river = RiverModel(seed=5)
    sites = SiteTemperatures()
    async with (
        EzoPtyDevice.for_river(
            "rtd", tmp_path / "rtd", river=river, delay_scale=DELAY, clock=lambda: SIM_NOW
        ) as rtd,
        EzoPtyDevice.for_river(
            "ph", tmp_path / "ph", river=river, delay_scale=DELAY, clock=lambda: SIM_NOW
        ) as ph,
    ):
        rtd.circuit.receive(b"S,f\r", SIM_NOW)
        sources = [
            make_source(config(tmp_path / "rtd", "rtd", site="weir"), sites),
            make_source(config(tmp_path / "ph", "ph", site="weir"), sites),
        ]
        async with running(*sources, sink=sink):
            await sink.wait_for(lambda: any(c.startswith("T,") for c in ph.commands))
    fahrenheit = next(r for r in sink.readings if r.sensor == "rtd-1").values[0]
    assert fahrenheit.unit == "[degF]"
    celsius = (fahrenheit.value - 32) * 5 / 9
    assert f"T,{celsius:.2f}" in ph.commands
    assert ph.circuit.temperature == pytest.approx(celsius, abs=0.005)


@pytest.mark.parametrize("mode", ["poll", "continuous"])
async def test_rtd_temperature_compensates_ph_ec_and_do_at_its_site(
    tmp_path: Path, sink: RecordingSink, mode: str
) -> None:
    river = RiverModel(seed=11)
    sites = SiteTemperatures()
    interval = 1.0 if mode == "continuous" else 0.1
    kinds = ["rtd", "ph", "ec", "do", "orp"]
    async with contextlib.AsyncExitStack() as stack:
        devices = {
            k: await stack.enter_async_context(
                EzoPtyDevice.for_river(
                    k,  # type: ignore[arg-type]
                    tmp_path / k,
                    river=river,
                    delay_scale=DELAY,
                    clock=lambda: SIM_NOW,
                    model_compensation=True,
                )
            )
            for k in kinds
        }
        # A second pH at another site: it must not be compensated from this RTD.
        other = await stack.enter_async_context(
            EzoPtyDevice.for_river("ph", tmp_path / "other", river=river, delay_scale=DELAY)
        )
        sources = [
            make_source(
                config(tmp_path / k, k, site="bridge", mode=mode, interval_s=interval), sites
            )
            for k in kinds
        ]
        other_cfg = config(tmp_path / "other", "ph", site="mill", mode=mode, interval_s=interval)
        sources.append(
            EzoSource(EzoSensorConfig(**{**other_cfg.__dict__, "id": "ph-2"}), sites=sites)
        )
        compensated = ("ph", "ec", "do")

        def done() -> bool:
            return all(
                any(c.startswith("T,") for c in devices[k].commands)
                and sum(r.sensor == f"{k}-1" for r in sink.readings) >= 3
                for k in compensated
            )

        async with running(*sources, sink=sink):
            await sink.wait_for(done, within=10)
    rtd_values = {f"T,{r.values[0].value:.2f}" for r in sink.readings if r.sensor == "rtd-1"}
    water = f"T,{river.sample(SIM_NOW).temperature_c:.2f}"
    assert rtd_values == {water}  # pinned clock: one true temperature
    for k in compensated:
        sent = [c for c in devices[k].commands if c.startswith("T,")]
        assert sent == [water]  # sent once; unchanged temperature is not resent
        assert devices[k].circuit.temperature == pytest.approx(float(water[2:]))
        # Readings after the T command are what the compensated circuit served.
        for reading in sink.readings:
            if reading.sensor == f"{k}-1":
                check_against_served(reading, devices[k], k)
    assert not any(c.startswith("T,") for c in devices["orp"].commands)
    assert not any(c.startswith("T,") for c in other.commands)
    events = [e.detail for e in sink.records if e.name == "temperature-compensation"]
    assert sorted(e["sensor"] for e in events) == ["do-1", "ec-1", "ph-1"]
    assert all(e["source"] == "rtd-1" and e["site"] == "bridge" for e in events)
    assert sink.rejects == []


async def test_stale_rtd_sets_the_circuit_back_to_its_default(
    tmp_path: Path, sink: RecordingSink
) -> None:
    sites = SiteTemperatures(max_age_s=0.4)
    river = RiverModel(seed=2)
    async with (
        EzoPtyDevice.for_river("rtd", tmp_path / "rtd", river=river, delay_scale=DELAY) as rtd,
        EzoPtyDevice.for_river("do", tmp_path / "do", river=river, delay_scale=DELAY) as do,
    ):
        sources = [
            make_source(config(tmp_path / "rtd", "rtd", site="s"), sites),
            make_source(config(tmp_path / "do", "do", site="s"), sites),
        ]
        async with running(*sources, sink=sink):
            await sink.wait_for(lambda: any(c.startswith("T,") for c in do.commands))
            await rtd.unplug()  # the RTD goes quiet
            await sink.wait_for(lambda: "T,20.00" in do.commands, within=5)
            await rtd.replug()
            await sink.wait_for(
                lambda: (
                    [
                        e.detail["source"]
                        for e in sink.records
                        if e.name == "temperature-compensation"
                    ]
                    == ["rtd-1", "default", "rtd-1"]
                ),
                within=5,
            )
    assert do.circuit.temperature != 20.0


async def test_continuous_mode_resumes_after_unplug_and_records_the_gap(
    tmp_path: Path, sink: RecordingSink
) -> None:
    async with EzoPtyDevice.for_river("ph", tmp_path / "ph", seed=1, delay_scale=DELAY) as device:
        source = make_source(
            config(tmp_path / "ph", "ph", mode="continuous", interval_s=1.0, timeout_s=0.3)
        )
        async with running(source, sink=sink):
            await sink.wait_for(lambda: len(sink.readings) >= 1, within=4)
            await device.unplug()
            await asyncio.sleep(2.5)
            await device.replug()
            n = len(sink.readings)
            await sink.wait_for(lambda: len(sink.readings) >= n + 1, within=6)
    assert sink.reject_counts()["timeout"] >= 1 or sink.gaps
    assert len(sink.gaps) == 1
    gap = sink.gaps[0]
    assert gap.sensor == "ph-1" and gap.to_ns - gap.from_ns > 2.5e9
    for reading in sink.readings:
        assert reading.raw in served_values(device)


async def test_continuous_mode_rejects_faults_and_keeps_reading(
    tmp_path: Path, sink: RecordingSink
) -> None:
    async with EzoPtyDevice.for_river("orp", tmp_path / "orp", seed=4, delay_scale=DELAY) as device:
        source = make_source(config(tmp_path / "orp", "orp", mode="continuous", interval_s=1.0))
        async with running(source, sink=sink):
            await sink.wait_for(lambda: len(sink.readings) >= 1, within=4)
            device.circuit.inject(garbage_next=1, truncate_next=1, undervoltage_next=1)
            await sink.wait_for(lambda: sink.reject_counts()["supply-voltage"] >= 1, within=4)
            n = len(sink.readings)
            await sink.wait_for(lambda: len(sink.readings) >= n + 1, within=4)
    counts = sink.reject_counts()
    # the garbage line, and the truncated line run into the next reading:
    # "25" + "251.3" is 25251.3 mV, which no ORP circuit reports
    assert counts["garbage"] == 1
    assert counts["out-of-range"] == 1
    assert set(counts) == {"garbage", "out-of-range", "supply-voltage"}
    for reading in sink.readings:
        assert reading.raw in served_values(device)


async def test_poll_mode_faults_are_rejected_with_reasons(
    tmp_path: Path, sink: RecordingSink
) -> None:
    async with EzoPtyDevice.for_river(
        "ph", tmp_path / "ph", seed=4, delay_scale=DELAY, clock=lambda: SIM_NOW
    ) as device:
        source = make_source(config(tmp_path / "ph", "ph", timeout_s=0.3))
        async with running(source, sink=sink):
            await sink.wait_for(lambda: len(sink.readings) >= 1)
            device.circuit.inject(truncate_next=1)
            await sink.wait_for(lambda: sink.reject_counts()["timeout"] >= 1)
            device.circuit.inject(slow_next=1, slow_s=0.6)
            await sink.wait_for(lambda: sink.reject_counts()["timeout"] >= 2)
            device.circuit.inject(stuck_next=1, spike_next=1)
            n = len(sink.readings)
            await sink.wait_for(lambda: len(sink.readings) >= n + 3)
    details = [d for _, r, d in sink.rejects if r == "garbage"]
    assert any("*OK" in d and "not a number" in d for d in details)  # "7.6*OK"
    values = [r.values[0].value for r in sink.readings]
    true = round(RiverModel(seed=4).sample(SIM_NOW).ph, 3)
    assert values[0] == true
    assert any(abs(v - true) == pytest.approx(2.5, abs=0.002) for v in values)  # the spike
    for reading in sink.readings:
        assert reading.raw in served_values(device)


async def test_silent_circuit_in_poll_mode_times_out_then_reopens(
    tmp_path: Path, sink: RecordingSink
) -> None:
    clock: Callable[[], float] = time.time
    async with EzoPtyDevice.for_river(
        "rtd", tmp_path / "rtd", seed=4, delay_scale=DELAY, clock=clock
    ) as device:
        source = make_source(config(tmp_path / "rtd", "rtd", timeout_s=0.2))
        async with running(source, sink=sink):
            await sink.wait_for(lambda: len(sink.readings) >= 1)
            device.circuit.drop_out(time.time(), 1.5)
            await sink.wait_for(lambda: sink.reject_counts()["timeout"] >= 3, within=4)
            n = len(sink.readings)
            await sink.wait_for(lambda: len(sink.readings) >= n + 1, within=6)
    assert device.commands.count("i") >= 2  # the start sequence ran again after reopening


async def test_unsolicited_status_lines_and_sleep(tmp_path: Path, sink: RecordingSink) -> None:
    async with EzoPtyDevice.for_river(
        "do",
        tmp_path / "do",
        seed=6,
        delay_scale=DELAY,
        upper_case_replies=True,
        output_query_comma=False,
    ) as device:
        source = make_source(config(tmp_path / "do", "do", mode="continuous", interval_s=1.0))
        async with running(source, sink=sink):
            await sink.wait_for(lambda: len(sink.readings) >= 1, within=4)
            device.link.write([Reply(0.0, b"*DONE\r*WA\r*OV\r")])
            await sink.wait_for(lambda: sink.reject_counts()["supply-voltage"] >= 1)
            # The circuit falls asleep: the driver runs the start sequence, which wakes it.
            device.link.write(device.circuit.receive(b"Sleep\r", time.time()))
            # Once at first start; after *SL the first one is eaten by the wake-up
            # (*WA, then *ER for "OK,1") and sent again.
            await sink.wait_for(lambda: list(device.commands).count("C,1") == 2, within=6)
            n = len(sink.readings)
            await sink.wait_for(lambda: len(sink.readings) >= n + 1, within=4)
    assert list(device.commands).count("*OK,1") == 3
    assert dict(sink.reject_counts()) == {"supply-voltage": 1}
    info = [e.detail for e in sink.records if e.name == "sensor-info"]
    assert info[0]["circuit"] == "DO" and info[0]["outputs"] == ["mg"]
    assert len(info) == 1  # the restart found the same circuit: not recorded twice

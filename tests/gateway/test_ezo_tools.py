"""``probe_ezo`` and ``scan_ezo`` against the EZO simulator on real ptys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import EzoSensorConfig, parse_config
from gateway.drivers.base import Exchange
from gateway.drivers.ezo.tools import SCAN_BAUD_RATES, probe_ezo, scan_ezo
from gateway.errors import SensorError
from simulators.ezo_pty import EzoPtyDevice
from simulators.river import RiverModel

SIM_NOW = 1_767_272_400.0
DELAY = 0.02


def cfg(port: Path, circuit: str = "ph", **kwargs: object) -> EzoSensorConfig:
    return EzoSensorConfig(
        id=f"{circuit}-1",
        port=str(port),
        circuit=circuit,  # type: ignore[arg-type]
        timeout_s=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_probe_takes_one_reading_and_shows_every_exchange(tmp_path: Path) -> None:
    river = RiverModel(seed=8)
    async with EzoPtyDevice.for_river(
        "ph", tmp_path / "ph", river=river, delay_scale=DELAY, clock=lambda: SIM_NOW
    ) as device:
        result = await probe_ezo(cfg(tmp_path / "ph"))
    assert result.error is None
    assert result.reading is not None
    expected = f"{river.sample(SIM_NOW).ph:.3f}"
    assert result.reading.raw == expected
    assert result.reading.values[0].value == float(expected)
    sent = [e.sent for e in result.exchanges]
    assert sent[:3] == ["*OK,1", "C,0", "i"]
    assert sent[-1] == "R"
    assert Exchange("i", "?I,pH,2.16\\r*OK\\r") in result.exchanges
    assert result.exchanges[-1] == Exchange("R", f"{expected}\\r*OK\\r")
    # The commands the simulator saw are exactly the ones reported.
    assert [c for c in device.commands if c] == sent


async def test_probe_shows_garbage_escaped_and_explains_a_failure(tmp_path: Path) -> None:
    async with EzoPtyDevice.for_river(
        "ec", tmp_path / "ec", seed=1, delay_scale=DELAY, clock=lambda: SIM_NOW
    ) as device:
        device.circuit.inject(error_next=1)
        result = await probe_ezo(cfg(tmp_path / "ec", "ec"))
        assert result.reading is None
        assert result.error == "error-reply: R was answered *ER"
        assert result.exchanges[-1] == Exchange("R", "*ER\\r")
        assert Exchange("O,?", "?,O,EC\\r*OK\\r") in result.exchanges

        device.circuit.inject(garbage_next=1)
        result = await probe_ezo(cfg(tmp_path / "ec", "ec"))
        first = result.exchanges[0]
        assert first.sent == "*OK,1" and "\\x" in first.received  # escaped line noise
        assert result.reading is not None  # garbage cost no reading


async def test_probe_of_a_missing_port_or_wrong_circuit(tmp_path: Path) -> None:
    result = await probe_ezo(cfg(tmp_path / "nothing"))
    assert result.reading is None and result.exchanges == ()
    assert result.error is not None and "cannot open" in result.error
    async with EzoPtyDevice.for_river("do", tmp_path / "do", delay_scale=DELAY):
        result = await probe_ezo(cfg(tmp_path / "do", "ph"))
    assert result.error is not None and "answers as an EZO-DO" in result.error


async def test_probe_of_a_silent_circuit_times_out_with_the_exchange(tmp_path: Path) -> None:
    async with EzoPtyDevice.for_river("orp", tmp_path / "orp", delay_scale=DELAY) as device:
        device.circuit.inject(silent_next=10)
        result = await probe_ezo(cfg(tmp_path / "orp", "orp"))
    assert result.reading is None
    assert result.error is not None and "no line" in result.error
    assert result.exchanges[0].sent == "*OK,1"
    assert "no line" in result.exchanges[0].note


@pytest.mark.parametrize("baudrate", [9600, 38400])
async def test_scan_finds_the_circuit_at_its_baud_rate(tmp_path: Path, baudrate: int) -> None:
    port = tmp_path / "usb-FTDI_FT230X_Basic_UART_DM01-if00-port0"
    async with EzoPtyDevice.for_river("ec", port, delay_scale=DELAY, baudrate=baudrate) as dev:
        dev.circuit.receive(b"O,TDS,1\r", SIM_NOW)
        found = await scan_ezo(str(port), budget_s=8.0)
    assert len(found) == 1
    f = found[0]
    assert (f.port, f.driver) == (str(port), "ezo")
    assert f.description == f"Atlas Scientific EZO-EC, firmware 2.16, at {baudrate} baud"
    # The snippet is a complete [[sensor]] table the gateway accepts as is.
    text = '[device]\nkey_file = "k"\n\n' + f.snippet
    sensor = parse_config(text, tmp_path / "gateway.toml").sensors[0]
    assert sensor == EzoSensorConfig(
        id="ec-1",
        port=str(port),
        circuit="ec",
        baudrate=baudrate,
        interval_s=10.0,
        outputs=("EC", "TDS"),
    )
    # Only harmless queries were sent; the wrong rates came first and were not understood.
    assert {c for c in dev.commands if c.isascii() and c.isprintable()} <= {"", "i", "O,?"}
    assert SCAN_BAUD_RATES.index(baudrate) == 0 or dev.commands.count("i") == 1


async def test_scan_within_a_small_budget_or_on_a_quiet_port(tmp_path: Path) -> None:
    port = tmp_path / "ezo"
    async with EzoPtyDevice.for_river("ph", port, delay_scale=DELAY, baudrate=300):
        assert await scan_ezo(str(port), budget_s=0.5) == []  # 300 baud is tried last
    async with EzoPtyDevice.for_river("ph", port, delay_scale=DELAY) as dev:
        dev.circuit.inject(silent_next=100)
        assert await scan_ezo(str(port), budget_s=1.5) == []
    with pytest.raises(SensorError, match="cannot open"):
        await scan_ezo(str(tmp_path / "missing"), budget_s=1.0)

"""``driver = "sdi12"`` sensor tables, the per-adapter checks, and the registry branch."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.drivers import build_sources
from gateway.drivers.sdi12.config import Sdi12SensorConfig, check_sdi12_buses
from gateway.drivers.sdi12.source import Sdi12Source
from gateway.errors import ConfigError

PORT = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"


def sensor(address: str = "0", port: str = PORT, **extra: str) -> str:
    lines = [
        "[[sensor]]",
        f'id = "sonde-{address}-{len(port)}"',
        'driver = "sdi12"',
        f'port = "{port}"',
        f'address = "{address}"',
        'quantities = [["temperature", "Cel"], ["conductivity", "uS/cm"]]',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def parse(*tables: str) -> list[Sdi12SensorConfig]:
    cfg = parse_config("[device]\n" + "".join(tables), Path("/etc/riverseal/gateway.toml"))
    return [s for s in cfg.sensors if isinstance(s, Sdi12SensorConfig)]


def test_a_full_table_and_the_defaults() -> None:
    (full,) = parse(
        sensor(
            "a",
            command='"CC3"',
            interval_s="30",
            timeout_s="0.8",
            retries="3",
            baudrate="19200",
            terminator='"cr"',
            open_delay_s="0",
            site='"bridge"',
        )
    )
    assert full.address == "a" and full.command == "CC3" and full.interval_s == 30.0
    assert (full.timeout_s, full.retries, full.baudrate) == (0.8, 3, 19200)
    assert full.terminator_bytes == b"\r" and full.open_delay_s == 0.0 and full.site == "bridge"
    assert full.quantities == (("temperature", "Cel"), ("conductivity", "uS/cm"))
    (plain,) = parse(sensor("Z"))
    assert (plain.command, plain.interval_s, plain.timeout_s, plain.retries) == ("M", 60.0, 1.0, 2)
    assert (plain.terminator_bytes, plain.open_delay_s) == (b"", 2.5)


@pytest.mark.parametrize(
    ("table", "where", "problem"),
    [
        (sensor("?"), "sensor[0].address", "is not 0-9, A-Z or a-z"),
        (sensor("00"), "sensor[0].address", "is not 0-9"),
        (sensor("0", command='"R0"'), "sensor[0].command", "is not one of"),
        (sensor("0", command='"M0"'), "sensor[0].command", "is not one of"),
        (sensor("0", terminator='"\\r"'), "sensor[0].terminator", "is not one of"),
        (sensor("0", retries="-1"), "sensor[0].retries", "must be 0-10"),
        (sensor("0", interval_s="0.5"), "sensor[0].interval_s", "must be >= 1 s"),
        (sensor("0", timeout_s="0"), "sensor[0].timeout_s", "must be > 0"),
        (sensor("0", crc="true"), "sensor[0].crc", "is not a known setting"),
        (
            sensor("0").replace('[["temperature", "Cel"], ["conductivity", "uS/cm"]]', "[]"),
            "sensor[0].quantities",
            "at least one",
        ),
        (
            sensor("0").replace('["conductivity", "uS/cm"]', '["conductivity"]'),
            "sensor[0].quantities[1]",
            "is not a [quantity, unit] pair",
        ),
        (
            sensor("0").replace('"conductivity"', '"temperature"'),
            "sensor[0].quantities",
            "more than once",
        ),
        (
            sensor("0").replace(
                '[["temperature", "Cel"], ["conductivity", "uS/cm"]]',
                "[" + ", ".join(f'["v{i}", "1"]' for i in range(10)) + "]",
            ),
            "sensor[0].quantities",
            "at most 9 values; use C or CC",
        ),
    ],
)
def test_bad_tables_name_the_key(table: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(table)
    assert where in info.value.where
    assert problem in info.value.problem


def test_ten_values_are_fine_for_a_concurrent_measurement() -> None:
    table = sensor("0", command='"C"').replace(
        '[["temperature", "Cel"], ["conductivity", "uS/cm"]]',
        "[" + ", ".join(f'["v{i}", "1"]' for i in range(12)) + "]",
    )
    (cfg,) = parse(table)
    assert len(cfg.quantities) == 12


def test_buses_group_by_port_and_refuse_shared_addresses_or_settings() -> None:
    sensors = parse(sensor("0"), sensor("1"), sensor("0", port="/dev/ttyUSB1"))
    buses = check_sdi12_buses(sensors)
    assert {port: [s.address for s in members] for port, members in buses.items()} == {
        PORT: ["0", "1"],
        "/dev/ttyUSB1": ["0"],
    }
    # parse_config runs the same check, so a broken file never reaches build_sources.
    with pytest.raises(ConfigError, match="already sensor"):
        parse(sensor("0"), sensor("0").replace('id = "sonde-0', 'id = "twin-0'))
    with pytest.raises(ConfigError, match="baudrate") as info:
        parse(sensor("0"), sensor("1", baudrate="1200"))
    assert "same adapter" in info.value.problem


def test_the_registry_builds_one_source_per_adapter() -> None:
    text = "[device]\n" + sensor("0") + sensor("1") + sensor("2", port="/dev/ttyUSB1")
    cfg = parse_config(text, Path("/etc/riverseal/gateway.toml"))
    sources = build_sources(cfg, "dev")
    assert all(isinstance(s, Sdi12Source) for s in sources)
    by_port = {
        s.port: [c.address for c in s.sensors] for s in sources if isinstance(s, Sdi12Source)
    }
    assert by_port == {PORT: ["0", "1"], "/dev/ttyUSB1": ["2"]}
    with pytest.raises(ValueError, match="one adapter port"):
        Sdi12Source(cfg.sensors)  # type: ignore[arg-type]

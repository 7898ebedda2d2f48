"""``driver = "modbus"`` sensors in the config file, and one source per bus."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.drivers import build_sources
from gateway.drivers.modbus.config import ModbusSensorConfig, check_modbus_buses
from gateway.drivers.modbus.source import ModbusSource
from gateway.errors import ConfigError

BASE = '[device]\nkey_file = "/k"\ndata_dir = "/d"\n'
PATH = Path("/etc/riverseal/gateway.toml")


def sensor(sid: str, **keys: object) -> str:
    lines = ["[[sensor]]", f'id = "{sid}"', 'driver = "modbus"']
    defaults: dict[str, object] = {"port": "/dev/rs485", "slave": 1, "profile": "ysi-odo-rtu"}
    defaults.update(keys)
    for key, value in defaults.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def test_defaults_come_from_the_profile() -> None:
    cfg = parse_config(BASE + sensor("do1", slave=3), PATH)
    (s,) = cfg.sensors
    assert isinstance(s, ModbusSensorConfig)
    assert (s.slave, s.baudrate, s.parity, s.stopbits) == (3, 9600, "E", 1)
    assert s.profile.name == "ysi-odo-rtu" and s.profile_ref == "ysi-odo-rtu"
    assert (s.interval_s, s.timeout_s, s.retries) == (10.0, 1.0, 1)


def test_own_settings_and_a_profile_file(tmp_path: Path) -> None:
    profile = tmp_path / "acme-ph1.toml"
    profile.write_text(
        'model = "Acme"\n[[value]]\nquantity = "ph"\nunit = "pH"\naddress = 0\ntype = "int16"\n'
        "scale = 0.01\n"
    )
    text = BASE + sensor(
        "ph1",
        profile=str(profile),
        slave=12,
        baudrate=19200,
        parity="n",
        stopbits=2,
        interval_s=5,
        timeout_s=0.5,
        retries=3,
    )
    (s,) = parse_config(text, PATH).sensors
    assert isinstance(s, ModbusSensorConfig)
    assert (s.baudrate, s.parity, s.stopbits, s.interval_s, s.timeout_s, s.retries) == (
        19200,
        "N",
        2,
        5.0,
        0.5,
        3,
    )
    assert s.profile.model == "Acme"


@pytest.mark.parametrize(
    ("keys", "where", "problem"),
    [
        ({"slave": 0}, "sensor[0].slave", "1..247"),
        ({"slave": None}, "sensor[0].slave", "required"),
        ({"baudrate": 1234}, "sensor[0].baudrate", "is not one of"),
        ({"parity": "M"}, "sensor[0].parity", "is not one of"),
        ({"stopbits": 3}, "sensor[0].stopbits", "1 or 2"),
        ({"retries": 9}, "sensor[0].retries", "0..5"),
        ({"interval_s": 1, "timeout_s": 0.6, "retries": 1}, "sensor[0].timeout_s", "interval_s"),
        ({"profile": "nope"}, "sensor[0].profile", "not a shipped profile"),
        ({"speed": 9600}, "sensor[0].speed", "not a known setting"),
    ],
)
def test_bad_settings_name_the_key(keys: dict[str, object], where: str, problem: str) -> None:
    extra = {k: v for k, v in keys.items() if v is not None}
    text = BASE + sensor("s", **extra)
    if keys.get("slave", 1) is None:
        text = text.replace("slave = 1\n", "")
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    assert info.value.where == where
    assert problem in info.value.problem


def test_a_broken_profile_file_is_named_with_its_key(tmp_path: Path) -> None:
    profile = tmp_path / "acme-bad.toml"
    profile.write_text('model = "Acme"\n[[value]]\nquantity = "ph"\nunit = "pH"\naddress = 0\n')
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + sensor("s", profile=str(profile)), PATH)
    assert info.value.where == "sensor[0].profile"
    assert info.value.problem == f"{profile}: value[0].type: is required but missing"


def test_one_source_per_bus_and_bus_checks() -> None:
    text = BASE + "".join(
        [
            sensor("a", slave=1),
            sensor("b", slave=2, profile="seeed-ectds10", parity="E"),
            sensor("c", slave=1, port="/dev/rs485-2", profile="supmea-sup-ph8001"),
        ]
    )
    cfg = parse_config(text, PATH)
    sources = build_sources(cfg, "dev1")
    buses = [s for s in sources if isinstance(s, ModbusSource)]
    assert sorted((b.port, [c.id for c in b.sensors]) for b in buses) == [
        ("/dev/rs485", ["a", "b"]),
        ("/dev/rs485-2", ["c"]),
    ]
    # parse_config runs the bus checks, so `gateway check` catches them too.
    with pytest.raises(ConfigError, match="slave id 4 on /dev/rs485 is already sensor 'a'"):
        parse_config(BASE + sensor("a", slave=4) + sensor("b", slave=4), PATH)
    with pytest.raises(ConfigError) as info:  # YSI defaults to 8E1, Supmea to 8N1
        parse_config(BASE + sensor("a") + sensor("b", slave=2, profile="supmea-sup-ph8001"), PATH)
    assert info.value.where == "sensor 'b'.parity"
    assert len(check_modbus_buses(cfg.sensors)) == 2


def test_the_documented_sensor_example_parses() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "modbus-profiles.md").read_text()
    example = next(
        block.split("```", 1)[0]
        for block in doc.split("```toml\n")[1:]
        if block.startswith("[[sensor]]")
    )
    (s,) = parse_config(BASE + example, PATH).sensors
    assert isinstance(s, ModbusSensorConfig)
    assert (s.id, s.slave, s.profile.name, s.parity) == ("do-upstream", 1, "ysi-odo-rtu", "E")


def test_a_relative_profile_path_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "gateway" / "drivers" / "modbus" / "profiles"
    (tmp_path / "profiles").mkdir()
    text = (shipped / "hach-ldo-aq.toml").read_text()
    (tmp_path / "profiles" / "site-ldo.toml").write_text(text)
    cfg = parse_config(
        BASE + sensor("a", profile="profiles/site-ldo.toml"), tmp_path / "gateway.toml"
    )
    (a,) = cfg.sensors
    assert isinstance(a, ModbusSensorConfig)
    assert a.profile_ref == "profiles/site-ldo.toml"
    assert {v.quantity for v in a.profile.values} >= {"do", "temperature"}

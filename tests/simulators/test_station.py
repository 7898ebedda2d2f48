"""The station file: strict parsing, and the gateway config it writes parses back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.drivers.modbus.config import ModbusSensorConfig
from gateway.drivers.sdi12.config import Sdi12SensorConfig
from simulators.station import Station, StationConfigError, load_station, parse_station

GOOD = """
[station]
seed = 2
links = "links"
storms_per_week = 2
[[ezo]]
name = "ph-1"
circuit = "pH"
site = "bank"
[[modbus]]
name = "bus"
slaves = [{ id = "odo-1", slave = 1, profile = "ysi-odo-rtu" },
          { id = "ldo-1", slave = 2, profile = "hach-ldo-aq" }]
[[sdi12]]
name = "sdi"
sondes = [{ id = "s0", address = "0", model = "ctd" }]
[[mqtt]]
id = "n1"
topic = "river/n1"
format = "senml"
quantities = ["orp"]
"""


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("seed = 2", "seed = 2\nsead = 3"), "station.sead is not a known setting"),
        (('circuit = "pH"', 'circuit = "chlorine"'), "ezo[0].circuit 'chlorine'"),
        (('model = "ctd"', 'model = "nope"'), "sdi12[0].sondes[0].model 'nope'"),
        (('id = "s0"', 'id = "ph-1"'), "sensor id(s) used twice: ph-1"),
        (('name = "sdi"', 'name = "bus"'), "device name(s) used twice: bus"),
        (('format = "senml"', 'format = "xml"'), "mqtt[0].format 'xml'"),
        (('quantities = ["orp"]', 'quantities = ["salinity"]'), "mqtt[0].quantities"),
        (("seed = 2", 'seed = "two"'), "station.seed must be int"),
    ],
)
def test_a_broken_station_file_names_the_key(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(StationConfigError, match=re.escape(message)):
        parse_station(GOOD.replace(*edit), Path("/tmp"))


def test_the_gateway_tables_parse_and_name_every_sensor(tmp_path: Path) -> None:
    spec = parse_station(GOOD, tmp_path)
    assert spec.links == tmp_path / "links"
    assert spec.storms_per_week == 2.0
    text = "[device]\n" + Station(spec).gateway_sensors()
    cfg = parse_config(text, tmp_path / "gateway.toml")
    assert (
        [s.id for s in cfg.sensors] == spec.sensor_ids() == ["ph-1", "odo-1", "ldo-1", "s0", "n1"]
    )
    buses = {s.baudrate for s in cfg.sensors if isinstance(s, ModbusSensorConfig)}
    assert len(buses) == 1  # one bus, one speed, though the two profiles' factory speeds differ
    (sonde,) = [s for s in cfg.sensors if isinstance(s, Sdi12SensorConfig)]
    assert [q for q, _ in sonde.quantities] == ["temperature", "conductivity", "depth"]
    assert cfg.mqtt is not None and cfg.mqtt.port == 1883


def test_the_documented_example_station_parses_into_a_gateway_config() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "station.example.toml"
    spec = load_station(path)
    assert len(spec.sensor_ids()) == 11
    cfg = parse_config("[device]\n" + Station(spec).gateway_sensors(), Path("/tmp/gateway.toml"))
    assert [s.id for s in cfg.sensors] == spec.sensor_ids()

"""The NMEA 0183 family's pure parts: sentences, checksums, values, and its config keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.drivers import driver_for
from gateway.drivers.nmea.config import NmeaSensorConfig
from gateway.drivers.nmea.protocol import Bad, Sentence, checksum, parse_sentence, value_of
from gateway.errors import ConfigError
from gateway.pipeline import Value
from simulators.nmea import sentence

# The classic worked examples of NMEA 0183 references, with their published checksums.
GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"


@pytest.mark.parametrize("line", [GGA, RMC])
def test_published_checksums_agree_with_ours(line: bytes) -> None:
    got = parse_sentence(line)
    assert isinstance(got, Sentence)
    assert got.talker == "GP"
    assert got.text == line.decode()
    assert checksum(line[1:-3]) == int(line[-2:], 16)


def test_the_simulator_and_the_driver_agree_on_checksums() -> None:
    line = sentence("YXMTW,12.30,C")
    assert line == b"$YXMTW,12.30,C*22\r\n"
    got = parse_sentence(line.rstrip(b"\r\n"))
    assert got == Sentence("YX", "MTW", ("12.30", "C"), "$YXMTW,12.30,C*22")
    assert value_of(got) == Value("temperature", 12.3, "Cel")


def test_dbt_gives_the_metres_field() -> None:
    got = parse_sentence(b"$SDDBT,40.7,f,12.4,M,6.8,F*0C")
    assert isinstance(got, Sentence)
    assert value_of(got) == Value("depth", 12.4, "m")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$YXMTW,12.3,C*13", "bad-checksum"),
        (b"$YXMTW,12.3,C", "no-checksum"),
        (b"7.02", "garbage"),
        (b"\x8f\x02G\xfe~MTW", "garbage"),
        (b"$YXMTW,12.3,C*1", "garbage"),
        (b"$YXMTW,12.3,C*ZZ", "garbage"),
        (sentence("yxmtw,12.3,C").rstrip(), "garbage"),
        (sentence("YX,12.3,C").rstrip(), "garbage"),
    ],
)
def test_a_bad_line_is_refused_with_its_reason(line: bytes, reason: str) -> None:
    got = parse_sentence(line)
    assert isinstance(got, Bad), got
    assert got.reason == reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("YXMTW,,C", "no-value"),
        ("YXMTW,12.3,F", "bad-field"),
        ("YXMTW,1e3,C", "bad-field"),
        ("YXMTW,nan,C", "bad-field"),
        ("YXMTW,12.3", "bad-field"),
        ("SDDBT,40.7,f,,M,6.8,F", "no-value"),
        ("SDDBT,40.7,f,12.4,f,6.8,F", "bad-field"),
    ],
)
def test_a_sentence_without_a_usable_value_is_refused(body: str, reason: str) -> None:
    got = parse_sentence(sentence(body).rstrip())
    assert isinstance(got, Sentence)
    bad = value_of(got)
    assert isinstance(bad, Bad), bad
    assert bad.reason == reason


BASE = """
[device]
key_file = "device.key"
"""


def nmea(sid: str, **keys: object) -> str:
    lines = [f'id = "{sid}"', 'driver = "nmea"', 'port = "/dev/ttyUSB0"']
    keys.setdefault("sentence", "MTW")
    for k, v in keys.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    return "[[sensor]]\n" + "\n".join(lines) + "\n"


def test_a_config_reads_nmea_sensors_with_documented_defaults(tmp_path: Path) -> None:
    text = BASE + nmea("temp-1") + nmea("depth-1", sentence="DBT", talker="SD", interval_s=30)
    cfg = parse_config(text, tmp_path / "gateway.toml")
    temp, depth = cfg.sensors
    assert isinstance(temp, NmeaSensorConfig)
    assert isinstance(depth, NmeaSensorConfig)
    assert temp == NmeaSensorConfig(id="temp-1", port="/dev/ttyUSB0", sentence="MTW")
    assert (temp.baudrate, temp.interval_s, temp.timeout_s, temp.talker) == (4800, 10.0, 5.0, None)
    assert (depth.sentence, depth.talker, depth.interval_s) == ("DBT", "SD", 30.0)
    assert driver_for(temp).name == "nmea"
    assert driver_for(temp).where(temp) == "/dev/ttyUSB0"
    assert driver_for(temp).grace_s(temp) == 5.0


@pytest.mark.parametrize(
    ("keys", "where", "problem"),
    [
        ({"sentence": "GGA"}, "sensor[0].sentence", "is not one of"),
        ({"talker": "yx"}, "sensor[0].talker", "two upper-case"),
        ({"baudrate": 4801}, "sensor[0].baudrate", "is not one of"),
        ({"timeout_s": 20.0}, "sensor[0].timeout_s", "<= interval_s"),
        ({"interval_s": 0.5}, "sensor[0].interval_s", ">= 1 s"),
        ({"sentense": "MTW"}, "sensor[0].sentense", "a typo"),
    ],
)
def test_each_wrong_key_is_refused_with_its_name(
    tmp_path: Path, keys: dict[str, object], where: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + nmea("t", **keys), tmp_path / "gateway.toml")
    assert info.value.where.endswith(where)
    assert problem in info.value.problem


def test_sensors_sharing_a_port_read_different_sentences_at_one_speed(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    with pytest.raises(ConfigError, match="'MTW' on /dev/ttyUSB0 is already sensor 'a'"):
        parse_config(BASE + nmea("a") + nmea("b"), path)
    with pytest.raises(ConfigError, match="differs from 4800"):
        parse_config(BASE + nmea("a") + nmea("b", sentence="DBT", baudrate=38400), path)

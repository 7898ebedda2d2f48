"""Shared site temperatures, the EZO config keys, and the pure helpers beside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import EzoSensorConfig, GatewayConfig, parse_config
from gateway.drivers import build_sources
from gateway.drivers.ezo.protocol import (
    ReadingLine,
    Rejected,
    StatusLine,
    interpret,
    parse_scale,
    to_celsius,
)
from gateway.drivers.ezo.sites import DEFAULT_MAX_AGE_S, SiteTemperatures
from gateway.drivers.ezo.tools import ezo_snippet
from gateway.errors import ConfigError, ProtocolError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_site_temperature_is_fresh_then_stale() -> None:
    clock = Clock()
    sites = SiteTemperatures(max_age_s=60, clock=clock)
    assert sites.fresh("weir") is None
    assert sites.update("weir", 14.25, "temp-1")
    fresh = sites.fresh("weir")
    assert fresh is not None and (fresh.celsius, fresh.sensor) == (14.25, "temp-1")
    assert sites.fresh("bridge") is None  # other sites are not compensated from it
    clock.now += 60
    assert sites.fresh("weir") == fresh
    clock.now += 0.1
    assert sites.fresh("weir") is None
    assert sites.latest("weir") == fresh
    assert DEFAULT_MAX_AGE_S == 120.0


@pytest.mark.parametrize("bad", [-1023.0, 75.0, float("nan"), float("inf")])
def test_implausible_water_temperatures_are_not_used(bad: float) -> None:
    sites = SiteTemperatures()
    assert sites.update("weir", 12.0, "temp-1")
    assert not sites.update("weir", bad, "temp-1")
    latest = sites.latest("weir")
    assert latest is not None and latest.celsius == 12.0
    with pytest.raises(ValueError, match="max_age_s"):
        SiteTemperatures(max_age_s=0)


def parse(tmp_path: Path, sensor: str) -> GatewayConfig:
    text = '[device]\nkey_file = "k"\n\n[[sensor]]\nid = "s-1"\ndriver = "ezo"\nport = "/dev/x"\n'
    return parse_config(text + sensor, tmp_path / "gateway.toml")


def test_ezo_config_defaults_and_new_keys(tmp_path: Path) -> None:
    plain = parse(tmp_path, 'circuit = "ph"\n').sensors[0]
    assert plain == EzoSensorConfig(id="s-1", port="/dev/x", circuit="ph")
    assert (plain.mode, plain.outputs, plain.temperature_compensation) == ("poll", None, True)
    full = parse(
        tmp_path,
        'circuit = "EC"\nsite = "weir"\nmode = "continuous"\ninterval_s = 5\n'
        'outputs = ["sg", "EC"]\ntemperature_compensation = false\n',
    ).sensors[0]
    assert isinstance(full, EzoSensorConfig)
    assert (full.circuit, full.site, full.mode, full.interval_s) == (
        "ec",
        "weir",
        "continuous",
        5.0,
    )
    assert full.outputs == ("EC", "SG")  # reading order, canonical names
    assert full.temperature_compensation is False


@pytest.mark.parametrize(
    ("sensor", "key", "problem"),
    [
        ('circuit = "ph"\nmode = "stream"\n', "mode", "is not one of"),
        ('circuit = "ph"\nmode = "continuous"\ninterval_s = 2.5\n', "interval_s", "whole seconds"),
        ('circuit = "ph"\nmode = "continuous"\ninterval_s = 100\n', "interval_s", "1-99"),
        ('circuit = "ph"\noutputs = ["EC"]\n', "outputs", "only for circuits"),
        ('circuit = "ec"\noutputs = ["EC", "mg"]\n', "outputs", "must list outputs"),
        ('circuit = "do"\noutputs = "mg"\n', "outputs", "must be list"),
        ('circuit = "do"\ntemperature_compensation = 1\n', "temperature_compensation", "bool"),
    ],
)
def test_bad_ezo_keys_are_named(tmp_path: Path, sensor: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, sensor)
    assert info.value.where.endswith(f"sensor[0].{key}")
    assert problem in info.value.problem


def test_build_sources_shares_one_site_table(tmp_path: Path) -> None:
    text = '[device]\nkey_file = "k"\n'
    for sid, circuit in (("t", "rtd"), ("p", "ph"), ("e", "ec")):
        text += (
            f'\n[[sensor]]\nid = "{sid}"\ndriver = "ezo"\ncircuit = "{circuit}"\n'
            f'port = "/dev/{sid}"\nsite = "weir"\n'
        )
    sources = build_sources(parse_config(text, tmp_path / "g.toml"), "dev")
    tables = {id(s._sites) for s in sources}  # type: ignore[attr-defined]
    assert len(tables) == 1 and None not in {s._sites for s in sources}  # type: ignore[attr-defined]
    assert [s.compensates for s in sources] == [False, True, True]  # type: ignore[attr-defined]


def test_interpret_names_what_is_wrong() -> None:
    assert interpret(b"7.156\r", "ph", (), sensor="p") == ReadingLine(
        interpret(b"7.156", "ph", (), sensor="p").values,
        "7.156",  # type: ignore[union-attr]
    )
    assert interpret(b"*ok", "ph", (), sensor="p") == StatusLine("*OK")
    assert interpret(b"7.1*OK", "ph", (), sensor="p") == Rejected(
        "garbage", "field 1 of '7.1*OK': '7.1*OK' is not a number"
    )
    assert interpret(b"1.0,2.0", "ph", (), sensor="p").reason == "bad-reading"  # type: ignore[union-attr]
    out = interpret(b"25251.3", "orp", (), sensor="o")
    assert isinstance(out, Rejected) and out.reason == "out-of-range"
    assert "outside what an EZO-ORP reports" in out.detail
    kelvin = interpret(b"287.150", "rtd", (), sensor="t", units={"temperature": "K"})
    assert isinstance(kelvin, ReadingLine) and kelvin.values[0].unit == "K"
    assert interpret(b"1600.0", "rtd", (), sensor="t", units={"temperature": "K"}).reason == (  # type: ignore[union-attr]
        "out-of-range"
    )


@pytest.mark.parametrize(("text", "unit"), [("?S,c", "Cel"), ("?S,K", "K"), ("?s,f", "[degF]")])
def test_parse_scale(text: str, unit: str) -> None:
    assert parse_scale(text) == unit


@pytest.mark.parametrize("text", ["?S,x", "?T,20", "?S", "20.0", "?S,c,k"])
def test_parse_scale_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_scale(text)


def test_to_celsius_and_snippet() -> None:
    assert to_celsius(14.0, "Cel") == 14.0
    assert to_celsius(287.15, "K") == pytest.approx(14.0)
    assert to_celsius(57.2, "[degF]") == pytest.approx(14.0)
    assert ezo_snippet('/dev/serial/by-id/a "b"', "do", 9600, ("mg", "%")) == (
        '[[sensor]]\nid = "do-1"\ndriver = "ezo"\ncircuit = "do"\n'
        'port = "/dev/serial/by-id/a \\"b\\""\nbaudrate = 9600\ninterval_s = 10.0\n'
        'outputs = ["mg", "%"]\n'
    )

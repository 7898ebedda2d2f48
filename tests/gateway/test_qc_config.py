"""The ``[qc]`` section: overrides merge key by key, per sensor, and mistakes name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.config.qc import DEFAULT_LIMITS, GENERIC_LIMITS
from gateway.errors import ConfigError

BASE = """
[device]
[[sensor]]
id = "ph-1"
driver = "ezo"
port = "/dev/null"
circuit = "ph"
"""


def parse(extra: str) -> GatewayConfig:
    return parse_config(BASE + extra, Path("/etc/riverseal/gateway.toml"))


def test_without_a_qc_section_the_defaults_apply() -> None:
    cfg = parse("")
    assert cfg.qc.enabled
    assert cfg.qc.limits("ph-1", "ph") == DEFAULT_LIMITS["ph"]
    assert cfg.qc.limits("ph-1", "chlorophyll") == GENERIC_LIMITS


def test_overrides_merge_onto_the_quantity_then_the_sensor() -> None:
    cfg = parse(
        """
[qc]
enabled = true
[qc.ph]
suspect_span = [6.5, 8.5]
spike_suspect = 0.2
[qc.chlorophyll]
units = ["ug/l"]
fail_span = [0, 500]
[qc.sensors."ph-1".ph]
disable = ["flat_line", "spike"]
flat_line_suspect = 10
"""
    )
    ph = cfg.qc.limits("other", "ph")
    assert ph.suspect_span == (6.5, 8.5)
    assert ph.spike_suspect == 0.2
    assert ph.spike_fail == DEFAULT_LIMITS["ph"].spike_fail  # untouched keys keep the default
    own = cfg.qc.limits("ph-1", "ph")
    assert own.suspect_span == (6.5, 8.5)  # the sensor builds on the quantity's table
    assert (own.spike_suspect, own.spike_fail, own.flat_line_tolerance) == (None, None, None)
    chl = cfg.qc.limits("ph-1", "chlorophyll")
    assert (chl.units, chl.fail_span, chl.suspect_span) == (("ug/l",), (0.0, 500.0), None)


@pytest.mark.parametrize(
    ("extra", "where", "problem"),
    [
        ("[qc]\nenabled = 1\n", "qc.enabled", "must be bool"),
        ("[qc.ph]\nsuspect_span = [9, 6]\n", "qc.ph.suspect_span", "low <= high"),
        ("[qc.ph]\nsuspect_span = [6]\n", "qc.ph.suspect_span", "[low, high]"),
        ("[qc.ph]\nsuspect_span = [-1, 9]\n", "qc.ph.suspect_span", "inside fail_span"),
        ("[qc.ph]\nspike_suspect = 0\n", "qc.ph.spike_suspect", "must be > 0"),
        ("[qc.ph]\nspike_suspect = 0.9\n", "qc.ph.spike_suspect", "must not exceed"),
        ("[qc.ph]\nflat_line_fail = 0\n", "qc.ph.flat_line_fail", ">= 1"),
        ("[qc.ph]\nflat_line_suspect = 500\n", "qc.ph.flat_line_suspect", "must not exceed"),
        ("[qc.ph]\nrate_of_change_floor = -1\n", "qc.ph.rate_of_change_floor", ">= 0"),
        ("[qc.ph]\nspike_fail = nan\n", "qc.ph.spike_fail", "finite"),
        ("[qc.ph]\nspike = 0.3\n", "qc.ph.spike", "not a known QC setting"),
        ("[qc.ph]\ndisable = ['range']\n", "qc.ph.disable", "is not one of"),
        ("[qc.ph]\nunits = 'pH'\n", "qc.ph.units", "list of unit names"),
        ("[qc]\nph = 3\n", "qc.ph", "expected a table"),
        ("[qc.sensors.ph-9.ph]\nspike_fail = 1\n", "qc.sensors.ph-9", "no [[sensor]]"),
    ],
)
def test_mistakes_name_the_key(extra: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(extra)
    assert info.value.where == where
    assert problem in info.value.problem

"""The ``[qc]`` section: QARTOD limits per quantity, with per-sensor overrides.

Every setting has a built-in default per quantity (``DEFAULT_LIMITS``); a
``[qc.<quantity>]`` table overrides some of them or defines a new quantity,
and ``[qc.sensors.<sensor id>.<quantity>]`` overrides them again for one
sensor. Overrides merge key by key, so a table names only what it changes::

    [qc]
    enabled = true

    [qc.ph]
    suspect_span = [6.5, 8.5]

    [qc.sensors."ph-1".ph]
    disable = ["flat_line"]

The defaults are starting points drawn from QARTOD practice and typical
temperate rivers (docs: sensor-protocols §8.1, §9); tune them per site.
Spans and thresholds are in the quantity's unit; flat-line limits count
readings, so they scale with the sensor's interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.toml_table import Table

from ..errors import ConfigError

__all__ = [
    "DEFAULT_LIMITS",
    "QC_TESTS",
    "QcConfig",
    "QcLimits",
    "parse_qc",
]

QC_TESTS = ("gross_range", "spike", "rate_of_change", "flat_line")
"""Test names, as they appear in a value's ``qc.tests``."""

Span = tuple[float, float]


@dataclass(frozen=True)
class QcLimits:
    """The QARTOD parameters for one quantity (None: that test is not evaluated)."""

    units: tuple[str, ...] = ()
    """Units the limits are written in, matched case-insensitively; a value in any
    other unit is not evaluated (flag 2). Empty: any unit."""
    fail_span: Span | None = None
    """Gross range: outside this (the sensor's span) fails."""
    suspect_span: Span | None = None
    """Gross range: outside this (what this river plausibly does) is suspect."""
    spike_suspect: float | None = None
    """Spike: |v − mean of the two previous values| above this is suspect..."""
    spike_fail: float | None = None
    """...and above this fails."""
    rate_of_change_sd: float | None = 3.0
    """Rate of change: a step from the previous value larger than this many
    standard deviations of the window is suspect."""
    rate_of_change_window_s: float = 25 * 3600.0
    """Rate of change: the window the standard deviation is taken over (QARTOD's
    25 hours), holding at most ``MAX_WINDOW_SAMPLES`` readings (gateway/qc.py)."""
    rate_of_change_min_samples: int = 10
    """Rate of change: fewer readings in the window than this: not evaluated."""
    rate_of_change_floor: float = 0.0
    """Rate of change: a step no larger than this is never suspect, however quiet
    the window was (a river at rest would otherwise flag every resolution step)."""
    flat_line_suspect: int | None = 60
    """Flat line: this many previous readings all within tolerance of the current
    one is suspect..."""
    flat_line_fail: int | None = 180
    """...and this many fails."""
    flat_line_tolerance: float | None = None
    """Flat line: two readings closer than this are "the same" (strictly less)."""


def _limits(
    units: tuple[str, ...],
    fail: Span,
    suspect: Span,
    spike: tuple[float, float],
    floor: float,
    tolerance: float,
) -> QcLimits:
    return QcLimits(
        units=units,
        fail_span=fail,
        suspect_span=suspect,
        spike_suspect=spike[0],
        spike_fail=spike[1],
        rate_of_change_floor=floor,
        flat_line_tolerance=tolerance,
    )


# Quantity names are the ones the drivers write in Value.quantity.
# fail span: what a field sensor can report; suspect span: what a temperate river
# plausibly does (§8.1); spike: (suspect, fail) in the unit; floor: smallest step the
# rate-of-change test may flag; tolerance: about half the sensor's resolution.
DEFAULT_LIMITS: Mapping[str, QcLimits] = MappingProxyType(
    {
        "temperature": _limits(("Cel",), (-5.0, 50.0), (-0.5, 32.0), (1.0, 3.0), 0.1, 0.0005),
        "ph": _limits(("pH",), (0.0, 14.0), (6.0, 9.5), (0.3, 0.8), 0.05, 0.0005),
        "do": _limits(("mg/l",), (0.0, 25.0), (0.5, 18.0), (1.0, 3.0), 0.2, 0.005),
        "do_sat": _limits(("%", "/100"), (0.0, 300.0), (10.0, 200.0), (10.0, 30.0), 2.0, 0.05),
        "ec": _limits(("uS/cm",), (0.0, 200_000.0), (10.0, 10_000.0), (200.0, 1000.0), 20.0, 0.05),
        "conductivity": _limits(
            ("uS/cm",), (0.0, 200_000.0), (10.0, 10_000.0), (200.0, 1000.0), 20.0, 0.05
        ),
        "orp": _limits(("mV",), (-1020.0, 1020.0), (-300.0, 700.0), (50.0, 150.0), 10.0, 0.05),
        "turbidity": _limits(
            ("NTU", "FNU"), (0.0, 4000.0), (0.0, 1000.0), (50.0, 200.0), 2.0, 0.005
        ),
        "depth": _limits(("m",), (-0.5, 100.0), (0.0, 30.0), (0.3, 1.0), 0.02, 0.0005),
    }
)
GENERIC_LIMITS = QcLimits()
"""A quantity without built-in limits: only the rate-of-change test runs."""


@dataclass(frozen=True)
class QcConfig:
    enabled: bool = True
    """Flag readings at all (off: records carry no ``qc``, except missing values)."""
    quantities: Mapping[str, QcLimits] = field(default_factory=lambda: DEFAULT_LIMITS)
    sensors: Mapping[str, Mapping[str, QcLimits]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Per sensor id, per quantity: complete limits (already merged)."""

    def limits(self, sensor: str, quantity: str) -> QcLimits:
        """The limits for one sensor's quantity: its override, the quantity's, or generic."""
        own = self.sensors.get(sensor)
        if own is not None and quantity in own:
            return own[quantity]
        return self.quantities.get(quantity, GENERIC_LIMITS)


_FIELDS = {f.name for f in dataclasses.fields(QcLimits)}
_RESERVED = ("enabled", "sensors")


def _number(t: Table, name: str) -> float:
    x = t.get(name, float, required=True)
    if not math.isfinite(x):
        raise ConfigError(t._key(name), f"{x!r} is not a finite number")
    return x


def _span(t: Table, name: str) -> Span:
    raw = t.data[name]
    t.used.add(name)
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw)
    ):
        raise ConfigError(t._key(name), f"must be [low, high] numbers, got {raw!r}")
    lo, hi = float(raw[0]), float(raw[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(t._key(name), f"{raw!r} is not a span with low <= high")
    return lo, hi


def _override(base: QcLimits, t: Table) -> QcLimits:
    """``base`` with the keys ``t`` sets; checks each key and the result as a whole."""
    changes: dict[str, Any] = {}
    if "units" in t.data:
        units = t.data["units"]
        t.used.add("units")
        if not isinstance(units, list) or not all(isinstance(u, str) and u for u in units):
            raise ConfigError(t._key("units"), "must be a list of unit names")
        changes["units"] = tuple(units)
    for name in ("fail_span", "suspect_span"):
        if name in t.data:
            changes[name] = _span(t, name)
    for name in (
        "spike_suspect",
        "spike_fail",
        "rate_of_change_sd",
        "rate_of_change_window_s",
        "flat_line_tolerance",
    ):
        if name in t.data:
            changes[name] = t.check(name, _number(t, name), lambda x: x > 0, "must be > 0")
    if "rate_of_change_floor" in t.data:
        floor = _number(t, "rate_of_change_floor")
        changes["rate_of_change_floor"] = t.check(
            "rate_of_change_floor", floor, lambda x: x >= 0, "must be >= 0"
        )
    for name, least in (
        ("rate_of_change_min_samples", 2),
        ("flat_line_suspect", 1),
        ("flat_line_fail", 1),
    ):
        if name in t.data:
            n = t.get(name, int, required=True)
            if n < least:
                raise ConfigError(t._key(name), f"{n!r} must be >= {least}")
            changes[name] = n
    if "disable" in t.data:
        disable = t.get("disable", list, required=True)
        for test in disable:
            if test not in QC_TESTS:
                raise ConfigError(t._key("disable"), f"{test!r} is not one of {QC_TESTS}")
        off = {
            "gross_range": ("fail_span", "suspect_span"),
            "spike": ("spike_suspect", "spike_fail"),
            "rate_of_change": ("rate_of_change_sd",),
            "flat_line": ("flat_line_suspect", "flat_line_fail", "flat_line_tolerance"),
        }
        for test in disable:
            changes.update(dict.fromkeys(off[test]))
    unknown = sorted(set(t.data) - _FIELDS - {"disable"})
    if unknown:
        raise ConfigError(t._key(unknown[0]), "is not a known QC setting (a typo?)")
    limits = dataclasses.replace(base, **changes)
    _check_whole(limits, t.where)
    return limits


def _check_whole(q: QcLimits, where: str) -> None:
    if q.fail_span and q.suspect_span:
        (flo, fhi), (slo, shi) = q.fail_span, q.suspect_span
        if slo < flo or shi > fhi:
            raise ConfigError(
                f"{where}.suspect_span", f"{list(q.suspect_span)} must lie inside fail_span"
            )
    ss, sf = q.spike_suspect, q.spike_fail
    if ss is not None and sf is not None and ss > sf:
        raise ConfigError(f"{where}.spike_suspect", "must not exceed spike_fail")
    fs, ff = q.flat_line_suspect, q.flat_line_fail
    if fs is not None and ff is not None and fs > ff:
        raise ConfigError(f"{where}.flat_line_suspect", "must not exceed flat_line_fail")


def parse_qc(t: Table | None, sensor_ids: frozenset[str] | set[str]) -> QcConfig:
    """Read ``[qc]``; ``sensor_ids`` are the configured sensors overrides may name."""
    if t is None:
        return QcConfig()
    enabled = t.get("enabled", bool, True)
    quantities = dict(DEFAULT_LIMITS)
    for name in list(t.data):
        if name in _RESERVED:
            continue
        sub = t.table(name)
        assert sub is not None
        quantities[name] = _override(quantities.get(name, GENERIC_LIMITS), sub)
    sensors: dict[str, Mapping[str, QcLimits]] = {}
    per_sensor = t.table("sensors")
    if per_sensor is not None:
        for sid in list(per_sensor.data):
            if sid not in sensor_ids:
                raise ConfigError(per_sensor._key(sid), "no [[sensor]] has this id")
            st = per_sensor.table(sid)
            assert st is not None
            own: dict[str, QcLimits] = {}
            for q in list(st.data):
                sub = st.table(q)
                assert sub is not None
                own[q] = _override(quantities.get(q, GENERIC_LIMITS), sub)
            sensors[sid] = MappingProxyType(own)
        per_sensor.done()
    t.done()
    return QcConfig(
        enabled=enabled,
        quantities=MappingProxyType(quantities),
        sensors=MappingProxyType(sensors),
    )

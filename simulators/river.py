"""A seeded, deterministic model of a temperate river's water quality.

`RiverModel.sample(t)` gives the "true" water state at Unix time `t`; `Probe`
gives what one installed probe reads of it (its own calibration drift and
bio-fouling added). Everything is a pure function of (parameters, seed, t):
smooth curves plus noise keyed on (seed, quantity, whole second), and storms
drawn per day from a hash of (seed, day). Any number of simulated sensors can
therefore sample the same river in any order and agree with each other and
with a test oracle.

Shapes follow the reference notes (sensor-protocols §8):

- temperature peaks around 15:00 local solar time (the reference's suggested
  `sin(2π(t - 15 h)/24 h)` would peak at 21:00; we put the crest at 15:00);
- dissolved oxygen is the saturation concentration (APHA equation, §8.2) times
  a photosynthesis/respiration ratio. Light is `max(0, sin(2π(t - 6 h)/24 h))`
  (§8.3); oxygen answers it through a first-order lag, so DO peaks mid-afternoon
  and bottoms out near dawn;
- pH swings in phase with oxygen (photosynthesis removes CO2); ORP moves
  against pH (about -59 mV per pH unit at the electrode);
- storms (§8.4): discharge follows a unit hydrograph; turbidity scales with a
  power of discharge and peaks on the rising limb (clockwise hysteresis);
  conductivity shows a brief solute flush, then a 20-60 % dilution dip and a
  recovery over a day or two; temperature moves toward the rain's; reaeration
  pulls DO toward saturation and organic load sags it later;
- probes (§8.5): linear calibration drift per quantity with a seeded rate, and
  fouling that grows exponentially after a lag (DO and EC read low, turbidity
  and chlorophyll high) and is removed, in one step, by each cleaning.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import KW_ONLY, dataclass, replace
from typing import Protocol

__all__ = ["Probe", "RiverModel", "RiverState", "Storm", "WaterSource", "do_saturation"]

_DAY_S = 86_400.0
_HOUR_S = 3_600.0
_OMEGA = 2 * math.pi / 24.0  # radians per hour of a daily cycle
_STORM_MEMORY_DAYS = 7  # a storm's dilution has recovered to < 0.1 % after this


@dataclass(frozen=True)
class RiverState:
    """Water quality at one instant, in the units the sensors report."""

    temperature_c: float
    do_mg_l: float
    do_sat_pct: float
    ph: float
    ec_us_cm: float
    orp_mv: float
    turbidity_ntu: float
    depth_m: float
    """Water depth at the station (stage)."""
    discharge_m3_s: float
    chlorophyll_ug_l: float
    nh4_mg_l: float
    """Ammonium as nitrogen."""


class WaterSource(Protocol):
    """Anything a simulated sensor reads: a `RiverModel` or a `Probe` in it."""

    def sample(self, t: float) -> RiverState: ...


@dataclass(frozen=True)
class Storm:
    """A rain event: it starts at Unix time `start`; `intensity` scales every effect (0-1)."""

    start: float
    intensity: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.intensity <= 1.0:
            raise ValueError(f"storm intensity must be within 0-1, got {self.intensity}")


def do_saturation(temp_c: float) -> float:
    """Dissolved-oxygen saturation in fresh water at 1 atm, mg/L (APHA equation)."""
    k = temp_c + 273.15
    ln_sat = (
        -139.34410 + 1.575701e5 / k - 6.642308e7 / k**2 + 1.243800e10 / k**3 - 8.621949e11 / k**4
    )
    return math.exp(ln_sat)


def _pulse(tau_h: float, shape: tuple[float, float, float]) -> float:
    """A difference-of-exponentials pulse (two linear reservoirs) of peak 1.

    `shape` is (delay, rise, fall) in hours; the pulse is 0 until the delay is over.
    """
    delay_h, rise_h, fall_h = shape
    tau_h -= delay_h
    if tau_h <= 0.0:
        return 0.0
    peak_h = math.log(fall_h / rise_h) * rise_h * fall_h / (fall_h - rise_h)
    height = math.exp(-peak_h / fall_h) - math.exp(-peak_h / rise_h)
    return (math.exp(-tau_h / fall_h) - math.exp(-tau_h / rise_h)) / height


# Storm response shapes, (delay, rise, fall) in hours. Discharge peaks ~3.4 h
# after the rain starts; sediment peaks earlier and is exhausted sooner
# (hysteresis); the solute flush comes first; dilution lags flow and recovers
# over a day or two; organic-load oxygen sag comes late.
_FLOW = (0.0, 1.5, 10.0)
_SEDIMENT = (0.0, 1.0, 4.0)
_FLUSH = (0.0, 0.2, 0.8)
_DILUTION = (0.75, 2.0, 18.0)
_SAG = (2.0, 8.0, 20.0)

_LIGHT_HARMONICS = 6


@functools.lru_cache(maxsize=16)
def _lagged_light_range(lag_h: float) -> tuple[float, float]:
    """(min, max) over a day of `_lagged_light`, to scale it to 0..1."""
    values = [_lagged_light_raw(h / 10.0, lag_h) for h in range(240)]
    return min(values), max(values)


def _lagged_light_raw(hour: float, lag_h: float) -> float:
    """Daylight `max(0, sin(ω(h - 6)))` through a first-order lag of `lag_h` hours.

    Closed form: the half-wave rectified sine's Fourier series
    `1/π + sin(x)/2 - (2/π) Σ cos(2nx)/(4n² - 1)`, each harmonic attenuated and
    delayed by the lag's response at its frequency (a periodic steady state).
    """
    x = _OMEGA * (hour - 6.0)

    def through_lag(harmonic: int) -> tuple[float, float]:
        w = harmonic * _OMEGA * lag_h
        return 1.0 / math.sqrt(1.0 + w * w), math.atan(w)

    gain, phase = through_lag(1)
    total = 1.0 / math.pi + 0.5 * gain * math.sin(x - phase)
    for n in range(1, _LIGHT_HARMONICS + 1):
        gain, phase = through_lag(2 * n)
        total -= (2.0 / math.pi) * gain * math.cos(2 * n * x - phase) / (4 * n * n - 1)
    return total


def _production(hour: float, lag_h: float) -> float:
    """Photosynthetic oxygen production over the day, 0 (dawn) .. 1 (mid-afternoon)."""
    low, high = _lagged_light_range(lag_h)
    return (_lagged_light_raw(hour, lag_h) - low) / (high - low)


def _uniform(*key: object) -> float:
    """A number in [0, 1) that depends only on `key`."""
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class _StormEffect:
    """Summed storm responses at one instant (each 0 without a storm)."""

    flow: float = 0.0
    sediment: float = 0.0
    flush: float = 0.0
    dilution: float = 0.0
    sag: float = 0.0


@dataclass(frozen=True)
class RiverModel:
    """Diurnal river model with storms; all parameters are plain numbers a config can set.

    `utc_offset_h` shifts the diurnal curves from UTC to local solar time.
    Storms are those listed in `storms` plus, when `storms_per_week > 0`,
    random ones (at most one starting per UTC day, at a seeded time and
    intensity 0.4-1). The defaults give a quiet river without storms.
    """

    seed: int = 0
    _: KW_ONLY
    t_mean: float = 14.0
    t_amp: float = 2.0
    t_noise: float = 0.02
    photosynthesis: float = 0.25
    """Peak oxygen supersaturation from photosynthesis, as a fraction of saturation."""
    respiration: float = 0.10
    """Constant oxygen deficit from respiration, as a fraction of saturation."""
    do_lag_h: float = 2.5
    """How far oxygen lags the light (first-order time constant, hours)."""
    do_noise: float = 0.01
    ph_mean: float = 7.6
    ph_amp: float = 0.3
    ph_noise: float = 0.005
    ec_mean: float = 350.0
    ec_swing: float = 0.03
    ec_noise: float = 1.0
    orp_mean: float = 250.0
    orp_noise: float = 1.0
    turbidity: float = 5.0
    turbidity_noise: float = 0.08
    depth_m: float = 0.8
    discharge_m3_s: float = 2.0
    chlorophyll_ug_l: float = 8.0
    nh4_mg_l: float = 0.05
    utc_offset_h: float = 0.0
    storms: tuple[Storm, ...] = ()
    storms_per_week: float = 0.0
    storm_peak_flow: float = 15.0
    """Discharge at an intensity-1 storm's peak, as a multiple of base flow, minus one."""
    storm_turbidity_exponent: float = 1.3
    """Turbidity ∝ (sediment-limb flow)^b during storms."""
    storm_ec_dilution: float = 0.6
    """Conductivity dip at an intensity-1 storm, as a fraction (0.6: 60 % lower)."""
    storm_ec_flush: float = 0.1
    """The initial solute flush, as a fraction of base conductivity."""
    rain_temperature_c: float = 10.0

    def __post_init__(self) -> None:
        if self.storms_per_week < 0 or self.storms_per_week > 7:
            raise ValueError(f"storms_per_week must be within 0-7, got {self.storms_per_week}")
        if self.do_lag_h <= 0:
            raise ValueError("do_lag_h must be > 0")

    def sample(self, t: float) -> RiverState:
        """Return the river's state at Unix time `t` (seconds)."""
        hour = ((t / _HOUR_S) + self.utc_offset_h) % 24.0
        storm = self._storm_effect(t)
        runoff = min(1.0, storm.flow)  # how much of the water is fresh runoff, roughly

        temp = self.t_mean + self.t_amp * math.sin(_OMEGA * (hour - 9.0))
        temp += (self.rain_temperature_c - temp) * 0.3 * runoff
        temp += self.t_noise * self._noise("temperature", t)

        production = _production(hour, self.do_lag_h)
        # Turbid, fast water shades the algae and reaerates: the daily swing shrinks.
        biology = (self.photosynthesis * production - self.respiration) * (1.0 - 0.7 * runoff)
        ratio = (1.0 + biology - 0.08 * storm.sag) * (1.0 + self.do_noise * self._noise("do", t))
        do_sat = do_saturation(temp)
        do_mg = max(0.0, do_sat * ratio)

        ph = self.ph_mean + self.ph_amp * (2.0 * production - 1.0) * (1.0 - 0.7 * runoff)
        ph -= 0.3 * runoff  # rain water is softer and slightly acidic
        ph += self.ph_noise * self._noise("ph", t)

        # A slow multi-day drift stands in for baseflow changes (EC falls as flow rises).
        ec_phase = 2 * math.pi * t / (3.0 * _DAY_S)
        ec = self.ec_mean * (1.0 + self.ec_swing * math.sin(ec_phase))
        ec *= max(
            0.1, 1.0 + self.storm_ec_flush * storm.flush - self.storm_ec_dilution * storm.dilution
        )
        ec += self.ec_noise * self._noise("ec", t)

        orp = self.orp_mean - 59.0 * (ph - self.ph_mean) + self.orp_noise * self._noise("orp", t)

        sediment_flow = 1.0 + self.storm_peak_flow * storm.sediment
        turbidity = self.turbidity * sediment_flow**self.storm_turbidity_exponent
        turbidity *= math.exp(self.turbidity_noise * self._noise("turbidity", t))

        flow = 1.0 + self.storm_peak_flow * storm.flow
        # Fluorescence dips in bright light (quenching); floods dilute the algae.
        chlorophyll = self.chlorophyll_ug_l * (1.0 - self.photosynthesis * production)
        chlorophyll /= math.sqrt(flow)
        nh4 = self.nh4_mg_l * (1.0 + 4.0 * storm.flow)

        return RiverState(
            temperature_c=temp,
            do_mg_l=do_mg,
            do_sat_pct=100.0 * do_mg / do_sat,
            ph=ph,
            ec_us_cm=max(0.0, ec),
            orp_mv=orp,
            turbidity_ntu=turbidity,
            depth_m=self.depth_m * flow**0.4,  # a power-law rating curve
            discharge_m3_s=self.discharge_m3_s * flow,
            chlorophyll_ug_l=chlorophyll,
            nh4_mg_l=nh4,
        )

    def storms_between(self, start: float, end: float) -> list[Storm]:
        """Every storm (listed and random) starting in `[start, end)`, in time order."""
        found = [s for s in self.storms if start <= s.start < end]
        if self.storms_per_week > 0:
            first = math.floor(start / _DAY_S)
            last = math.floor(end / _DAY_S)
            for day in range(first, last + 1):
                storm = self._random_storm(day)
                if storm is not None and start <= storm.start < end:
                    found.append(storm)
        return sorted(found, key=lambda s: s.start)

    def _random_storm(self, day: int) -> Storm | None:
        if _uniform(self.seed, "storm", day) >= self.storms_per_week / 7.0:
            return None
        start = (day + _uniform(self.seed, "storm-start", day)) * _DAY_S
        return Storm(start, 0.4 + 0.6 * _uniform(self.seed, "storm-intensity", day))

    def _storm_effect(self, t: float) -> _StormEffect:
        storms = self.storms_between(t - _STORM_MEMORY_DAYS * _DAY_S, t + 1.0)
        if not storms:
            return _StormEffect()
        flow = sediment = flush = dilution = sag = 0.0
        for storm in storms:
            tau_h = (t - storm.start) / _HOUR_S
            flow += storm.intensity * _pulse(tau_h, _FLOW)
            sediment += storm.intensity * _pulse(tau_h, _SEDIMENT)
            flush += storm.intensity * _pulse(tau_h, _FLUSH)
            dilution += storm.intensity * _pulse(tau_h, _DILUTION)
            sag += storm.intensity * _pulse(tau_h, _SAG)
        return _StormEffect(flow, sediment, flush, dilution, sag)

    def _noise(self, quantity: str, t: float) -> float:
        """Standard normal noise that depends only on (seed, quantity, whole second)."""
        digest = hashlib.blake2b(
            f"{self.seed}:{quantity}:{round(t)}".encode(), digest_size=16
        ).digest()
        u1 = (int.from_bytes(digest[:8], "big") + 1) / 2.0**64  # (0, 1]: log is safe
        u2 = int.from_bytes(digest[8:], "big") / 2.0**64
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)


# Largest calibration drift per day (a probe's own rate is seeded within ±this).
# Sized so a month between visits stays near the swap-out tolerances of §8.5
# (temperature ±0.3 °C, pH ±0.5, EC ±15 %, DO ±0.5 mg/L).
_DRIFT_PER_DAY = {
    "temperature_c": 0.008,
    "ph": 0.012,
    "ec_rel": 0.004,
    "do_mg_l": 0.012,
    "orp_mv": 1.0,
    "turbidity_ntu": 0.05,
    "depth_m": 0.001,
}


@dataclass(frozen=True)
class Probe:
    """What one installed probe reads of a river: truth plus its own drift and fouling.

    `name` seeds the probe's drift rates and fouling (two probes in one river
    drift differently; the same name always drifts the same way). The probe
    was calibrated and clean at `deployed_at`; calibration drift grows
    linearly from then. Fouling starts after a seeded lag of 5-15 days, then
    grows exponentially (e-folding in 4-8 days) up to `fouling_max`; a
    cleaning every `clean_every_days` (None: never) removes it in one step.
    Before `deployed_at` the probe reads the truth.
    """

    river: RiverModel
    name: str
    _: KW_ONLY
    deployed_at: float = 0.0
    drift_scale: float = 1.0
    """Multiplies every drift rate (0 turns calibration drift off)."""
    fouling_max: float = 0.5
    """Largest fraction by which fouling lowers DO and EC (0 turns fouling off)."""
    clean_every_days: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fouling_max < 1.0:
            raise ValueError(f"fouling_max must be within [0, 1), got {self.fouling_max}")
        if self.clean_every_days is not None and self.clean_every_days <= 0:
            raise ValueError("clean_every_days must be > 0")

    def drift_rate(self, key: str) -> float:
        """This probe's calibration drift per day for `key` (a key of the drift table)."""
        u = _uniform(self.river.seed, "drift", self.name, key)
        return (2.0 * u - 1.0) * _DRIFT_PER_DAY[key] * self.drift_scale

    def fouling(self, t: float) -> float:
        """Fouling at `t`, 0 (clean) .. `fouling_max`."""
        days = (t - self.deployed_at) / _DAY_S
        if days <= 0 or self.fouling_max == 0:
            return 0.0
        if self.clean_every_days is not None:
            days %= self.clean_every_days
        lag = 5.0 + 10.0 * _uniform(self.river.seed, "fouling-lag", self.name)
        growth = 4.0 + 4.0 * _uniform(self.river.seed, "fouling-growth", self.name)
        if days <= lag:
            return 0.0
        # Exponential growth from a 1 % film, saturating smoothly at fouling_max.
        film = 0.01 * math.exp((days - lag) / growth)
        return self.fouling_max * film / (film + self.fouling_max)

    def sample(self, t: float) -> RiverState:
        """The probe's readings of the river at Unix time `t`."""
        true = self.river.sample(t)
        days = max(0.0, (t - self.deployed_at) / _DAY_S)
        foul = self.fouling(t)

        def drift(key: str) -> float:
            return self.drift_rate(key) * days

        temp = true.temperature_c + drift("temperature_c")
        do_mg = max(0.0, true.do_mg_l * (1.0 - foul) + drift("do_mg_l"))
        return replace(
            true,
            temperature_c=temp,
            do_mg_l=do_mg,
            do_sat_pct=100.0 * do_mg / do_saturation(temp),
            ph=true.ph + drift("ph"),
            ec_us_cm=max(0.0, true.ec_us_cm * (1.0 - foul) * (1.0 + drift("ec_rel"))),
            orp_mv=true.orp_mv + drift("orp_mv"),
            turbidity_ntu=max(0.0, true.turbidity_ntu + 40.0 * foul + drift("turbidity_ntu")),
            depth_m=true.depth_m + drift("depth_m"),
            chlorophyll_ug_l=true.chlorophyll_ug_l * (1.0 + 2.0 * foul),
        )

"""A seeded, deterministic model of a temperate river's water quality.

`RiverModel.sample(t)` gives the "true" water state at Unix time `t`. Every
quantity is a smooth diurnal curve plus noise that is a pure function of
(seed, quantity, whole second), so any number of simulated sensors can sample
the same river in any order and agree with each other and with a test oracle.

Shapes follow the reference notes (sensor-protocols §8): temperature peaks
around 15:00 local solar time; photosynthesis lifts dissolved oxygen above
saturation in the afternoon and respiration pulls it below at night; pH
swings in phase with oxygen because photosynthesis removes CO2; ORP moves
against pH (about -59 mV per pH unit at the electrode).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import KW_ONLY, dataclass

__all__ = ["RiverModel", "RiverState", "do_saturation"]

_DAY_S = 86_400.0


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


def do_saturation(temp_c: float) -> float:
    """Dissolved-oxygen saturation in fresh water at 1 atm, mg/L (APHA equation)."""
    k = temp_c + 273.15
    ln_sat = (
        -139.34410 + 1.575701e5 / k - 6.642308e7 / k**2 + 1.243800e10 / k**3 - 8.621949e11 / k**4
    )
    return math.exp(ln_sat)


@dataclass(frozen=True)
class RiverModel:
    """Diurnal river model; all parameters are plain numbers so a config can set them.

    `utc_offset_h` shifts the diurnal curves from UTC to local solar time.
    """

    seed: int = 0
    _: KW_ONLY
    t_mean: float = 14.0
    t_amp: float = 2.0
    t_noise: float = 0.02
    photosynthesis: float = 0.25
    respiration: float = 0.10
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
    utc_offset_h: float = 0.0

    def sample(self, t: float) -> RiverState:
        """Return the river's state at Unix time `t` (seconds)."""
        hour = ((t / 3600.0) + self.utc_offset_h) % 24.0
        temp = self.t_mean + self.t_amp * math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        temp += self.t_noise * self._noise("temperature", t)

        # Daylight photosynthesis: zero before 08:00 and after 20:00, peak at 14:00.
        light = max(0.0, math.sin(2 * math.pi * (hour - 8.0) / 24.0))
        ratio = 1.0 + self.photosynthesis * light - self.respiration
        ratio *= 1.0 + self.do_noise * self._noise("do", t)
        do_sat = do_saturation(temp)
        do_mg = max(0.0, do_sat * ratio)

        ph = self.ph_mean + self.ph_amp * (2.0 * light - 1.0) + self.ph_noise * self._noise("ph", t)

        # Slow multi-day drift stands in for flow changes (EC falls as flow rises).
        ec_phase = 2 * math.pi * t / (3.0 * _DAY_S)
        ec = self.ec_mean * (1.0 + self.ec_swing * math.sin(ec_phase))
        ec += self.ec_noise * self._noise("ec", t)

        orp = self.orp_mean - 59.0 * (ph - self.ph_mean) + self.orp_noise * self._noise("orp", t)
        turbidity = self.turbidity * math.exp(self.turbidity_noise * self._noise("turbidity", t))

        return RiverState(
            temperature_c=temp,
            do_mg_l=do_mg,
            do_sat_pct=100.0 * do_mg / do_sat,
            ph=ph,
            ec_us_cm=max(0.0, ec),
            orp_mv=orp,
            turbidity_ntu=turbidity,
        )

    def _noise(self, quantity: str, t: float) -> float:
        """Standard normal noise that depends only on (seed, quantity, whole second)."""
        digest = hashlib.blake2b(
            f"{self.seed}:{quantity}:{round(t)}".encode(), digest_size=16
        ).digest()
        u1 = (int.from_bytes(digest[:8], "big") + 1) / 2.0**64  # (0, 1]: log is safe
        u2 = int.from_bytes(digest[8:], "big") / 2.0**64
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)

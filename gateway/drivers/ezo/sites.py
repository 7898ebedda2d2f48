"""Water temperature shared between the sensors of one site, for compensation.

pH, conductivity and dissolved-oxygen probes need the water temperature to
compensate their readings. An RTD probe at the same ``site`` (config) measures
it; its source records each reading here and the other sources read the
latest one back. A temperature older than ``max_age_s`` is stale and not
offered: an unplugged or silent RTD must not compensate forever with the last
value it gave.

One ``SiteTemperatures`` per gateway; ``build_sources`` creates it and hands it
to every source that writes or reads it. All of them run on one event loop, so
there is no locking.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_AGE_S", "PLAUSIBLE_WATER_C", "SiteTemperature", "SiteTemperatures"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 120.0
"""A site temperature older than this is stale (2 minutes: a dozen missed polls at
the default 10 s interval, yet short against how fast a river's temperature moves)."""

PLAUSIBLE_WATER_C = (-5.0, 60.0)
"""Temperatures outside this range are not used for compensation: they come from a
disconnected or broken RTD (the EZO-RTD reports -1023 without a probe, unverified),
or from a probe that is not in the water."""


@dataclass(frozen=True, slots=True)
class SiteTemperature:
    """The latest water temperature at a site."""

    celsius: float
    sensor: str
    """The RTD sensor that measured it."""
    at: float
    """When, on the ``SiteTemperatures`` clock (monotonic seconds)."""


class SiteTemperatures:
    """Latest water temperature per site, with its age.

    Args:
        max_age_s: a temperature older than this is stale.
        clock: monotonic seconds (``time.monotonic``); tests pass their own.
    """

    def __init__(
        self,
        *,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be > 0")
        self.max_age_s = max_age_s
        self._clock = clock
        self._latest: dict[str, SiteTemperature] = {}

    def update(self, site: str, celsius: float, sensor: str) -> bool:
        """Record a measurement; False (and nothing recorded) when it is implausible."""
        low, high = PLAUSIBLE_WATER_C
        if not (math.isfinite(celsius) and low <= celsius <= high):
            logger.warning(
                "site %s: %s reads %r °C, outside %s..%s; not used for compensation",
                site,
                sensor,
                celsius,
                low,
                high,
            )
            return False
        self._latest[site] = SiteTemperature(celsius, sensor, self._clock())
        return True

    def fresh(self, site: str) -> SiteTemperature | None:
        """The site's temperature if one was recorded within ``max_age_s``, else None."""
        latest = self._latest.get(site)
        if latest is None or self._clock() - latest.at > self.max_age_s:
            return None
        return latest

    def latest(self, site: str) -> SiteTemperature | None:
        """The site's last recorded temperature, however old."""
        return self._latest.get(site)

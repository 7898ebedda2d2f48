"""A fixed poll cadence: slots ``interval`` apart, a late poll skipping the slots it missed."""

from __future__ import annotations

import logging
import math

__all__ = ["advance", "next_slot"]

logger = logging.getLogger(__name__)

_OVERRUN_FACTOR = 1.5  # a next slot further than this many intervals away skipped one


def next_slot(previous: float, interval: float, now: float) -> float:
    """The poll time after ``previous`` on its fixed cadence, skipping slots already past."""
    slot = previous + interval
    if slot < now:
        slot += math.ceil((now - slot) / interval) * interval
    return slot


def advance(slot: float, interval: float, now: float, *, who: str, what: str) -> float:
    """``next_slot``, warning (``"<who>: a <what> overran its interval"``) when it skips."""
    upcoming = next_slot(slot, interval, now)
    if upcoming - slot > interval * _OVERRUN_FACTOR:
        logger.warning("%s: a %s overran its interval; skipped slot(s)", who, what)
    return upcoming

"""The gateway's clock: is it synchronised, and has it stepped?

Linux keeps the NTP state in ``adjtimex``: STA_UNSYNC set means no time
daemon vouches for the clock. Records carry the answer so a regulator can
tell a reading stamped by a drifting clock from one stamped by a synced one.

Wall time can step (an NTP daemon correcting a box that booted in 1970, an
operator running ``date -s``); monotonic time cannot. ``StepWatch`` (pure: it is
given both readings) notices when wall time has moved by more than
``CLOCK_STEP_S`` against monotonic time since it last looked, and
``GatewayClock`` is the daemon's clock: every wall reading goes through such a
watch and tells its listeners of a step before the stepped time is used, so the
daemon records a signed ``clock-step`` event (docs/bundle-format.md §4.2) and
moves its silence deadlines onto the new scale. Tests give ``GatewayClock`` a
``TimeSource`` of their own and step it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ledger_client.records import format_time

__all__ = [
    "CLOCK_STEP_S",
    "ClockState",
    "ClockStep",
    "GatewayClock",
    "StepWatch",
    "SystemTime",
    "TimeSource",
    "clock_state",
]

CLOCK_STEP_S = 2.0
"""Wall time moving this much more (or less) than monotonic time between two looks is a
step. NTP slews at most 500 ppm, so only a step, never a slew, comes near it."""

ClockState = Literal["synced", "unsynced", "unknown"]

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>, x86_64 and aarch64 layout: the fields
    # we read come first; the tail is padding we never touch.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_long * 32),
    ]


@functools.cache
def _adjtimex() -> Callable[[Any], int] | None:
    # Resolved once: find_library runs ldconfig, far too slow for every commit.
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[[Any], int] = ctypes.CDLL(ctypes.util.find_library("c")).adjtimex
    except (OSError, AttributeError):
        return None
    return fn


def clock_state() -> ClockState:
    adjtimex = _adjtimex()
    if adjtimex is None:
        return "unknown"
    tx = _Timex()
    try:
        rc = adjtimex(ctypes.byref(tx))
    except OSError:
        return "unknown"
    if rc < 0:
        return "unknown"
    if rc == _TIME_ERROR or tx.status & _STA_UNSYNC:
        return "unsynced"
    return "synced"


class TimeSource(Protocol):
    """Where a ``GatewayClock`` reads the time (``SystemTime``; tests step their own)."""

    def time_ns(self) -> int: ...

    def monotonic_ns(self) -> int: ...


class SystemTime:
    """The system's wall and monotonic clocks."""

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


@dataclass(frozen=True, slots=True)
class ClockStep:
    """Wall time jumped from ``from_ns`` (where it would be without the step) to ``to_ns``."""

    from_ns: int
    to_ns: int

    @property
    def step_ns(self) -> int:
        """Positive forward, negative backward."""
        return self.to_ns - self.from_ns

    def detail(self) -> dict[str, Any]:
        """The ``clock-step`` event's ``detail`` (docs/bundle-format.md §4.2)."""
        # step_s is exactly to - from as written (microseconds), not the ns difference.
        step_us = self.to_ns // 1000 - self.from_ns // 1000
        return {
            "from": format_time(self.from_ns),
            "to": format_time(self.to_ns),
            "step_s": step_us / 1e6,
        }


class StepWatch:
    """Pure: notices wall time stepping against monotonic time between two looks."""

    def __init__(self, wall_ns: int, mono_ns: int, threshold_s: float = CLOCK_STEP_S) -> None:
        if threshold_s <= 0:
            raise ValueError("the clock step threshold must be > 0")
        self._wall, self._mono = wall_ns, mono_ns
        self._threshold_ns = round(threshold_s * 1e9)

    def observe(self, wall_ns: int, mono_ns: int) -> ClockStep | None:
        """The step since the last look, if wall time moved more than the threshold off."""
        expected = self._wall + (mono_ns - self._mono)
        self._wall, self._mono = wall_ns, mono_ns
        if abs(wall_ns - expected) > self._threshold_ns:
            return ClockStep(expected, wall_ns)
        return None


class GatewayClock:
    """The daemon's wall clock: each reading is checked for a step first.

    ``on_step`` listeners run synchronously, inside the call that noticed the step,
    before that call returns the stepped time: nothing stamped with it is used
    before they have run. ``last_step`` is the latest step seen.
    """

    def __init__(
        self, source: TimeSource | None = None, *, threshold_s: float = CLOCK_STEP_S
    ) -> None:
        self.source: TimeSource = source if source is not None else SystemTime()
        self._watch = StepWatch(self.source.time_ns(), self.source.monotonic_ns(), threshold_s)
        self.on_step: list[Callable[[ClockStep], None]] = []
        self.last_step: ClockStep | None = None

    def time_ns(self) -> int:
        """Wall time now, in ns since the epoch (``time.time_ns``), steps noticed."""
        wall = self.source.time_ns()
        step = self._watch.observe(wall, self.source.monotonic_ns())
        if step is not None:
            self.last_step = step
            for listener in self.on_step:
                listener(step)
        return wall

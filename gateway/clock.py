"""Is the system clock synchronised? Asked of the kernel, not assumed.

Linux keeps the NTP state in ``adjtimex``: STA_UNSYNC set means no time
daemon vouches for the clock. Records carry the answer so a regulator can
tell a reading stamped by a drifting clock from one stamped by a synced one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["ClockState", "clock_state"]

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

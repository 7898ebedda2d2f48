"""Is the system clock synchronised? Asked of the kernel, not assumed.

Linux keeps the NTP state in ``adjtimex``: STA_UNSYNC set means no time
daemon vouches for the clock. Records carry the answer so a regulator can
tell a reading stamped by a drifting clock from one stamped by a synced one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Literal

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


def clock_state() -> ClockState:
    if not sys.platform.startswith("linux"):
        return "unknown"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        tx = _Timex()
        rc = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return "unknown"
    if rc < 0:
        return "unknown"
    if rc == _TIME_ERROR or tx.status & _STA_UNSYNC:
        return "unsynced"
    return "synced"

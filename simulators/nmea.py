"""An NMEA 0183 sonde on a real pty: `NmeaSonde`, a talker that never listens.

Every `period_s` it sends one sentence per type it talks (NMEA 0183 §5.3):
water temperature `$YXMTW,t.tt,C*hh` and depth below transducer
`$SDDBT,f.f,f,m.mm,M,F.F,F*hh` (feet, metres, fathoms), values from the river
model. The checksum (XOR of the bytes between `$` and `*`, two upper-case hex
digits) is computed here independently of the gateway, which this module does
not import. What the client writes is ignored, as a talker does.

Faults (`NmeaFaults`, via `inject`) spoil the next N sentences: line noise,
a wrong checksum, no checksum, a line longer than NMEA's 82 characters, or a
null value field (the sonde has no value). `silent` stops the talk. A pty
does not enforce line settings; when the client's speed is not the sonde's,
the bytes are garbled as at a wrong baud rate (for baud scanning). `unplug`
and `replug` come from `PtyDevice`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from simulators.pty_device import Loop, PtyDevice, Reply
from simulators.river import RiverModel, WaterSource

__all__ = ["NmeaFaults", "NmeaSonde", "sentence"]

_FEET_PER_M = 3.28084
_FATHOMS_PER_M = 0.546807


def sentence(body: str) -> bytes:
    """`$<body>*hh` and CR LF, with its checksum."""
    total = 0
    for byte in body.encode("ascii"):
        total ^= byte
    return f"${body}*{total:02X}\r\n".encode("ascii")


@dataclass
class NmeaFaults:
    """Each spoils the next N sentences sent; a sentence takes the first pending one."""

    garbage_next: int = 0
    bad_checksum_next: int = 0
    no_checksum_next: int = 0
    too_long_next: int = 0
    null_value_next: int = 0
    silent: bool = False


class NmeaSonde(PtyDevice):
    """A talker sending `talks` (`"MTW"`, `"DBT"`) every `period_s` seconds.

    `clock` gives the Unix time used to sample `water` (tests pin it).
    `sent` keeps every line sent, for tests to compare with what was read.
    """

    def __init__(
        self,
        link_path: Path | None = None,
        *,
        talks: tuple[str, ...] = ("MTW", "DBT"),
        period_s: float = 1.0,
        baudrate: int = 4800,
        water: WaterSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(link_path, baudrate=baudrate)
        unknown = set(talks) - {"MTW", "DBT"}
        if unknown:
            raise ValueError(f"an NmeaSonde talks MTW and DBT, not {sorted(unknown)}")
        self.talks = talks
        self.period_s = period_s
        self.baudrate = baudrate
        self.water = water if water is not None else RiverModel()
        self.clock = clock
        self.faults = NmeaFaults()
        self.sent: list[bytes] = []

    def inject(self, **counts: int | bool) -> None:
        """Add to the pending faults (`garbage_next=2`, `silent=True`, ...)."""
        names = {f.name for f in fields(NmeaFaults)}
        for name, value in counts.items():
            if name not in names:
                raise ValueError(f"no fault {name!r}")
            if isinstance(value, bool):
                setattr(self.faults, name, value)
            else:
                setattr(self.faults, name, getattr(self.faults, name) + value)

    def on_data(self, data: bytes) -> list[Reply]:
        return []  # a talker takes no commands

    def _loops(self) -> Mapping[str, Loop]:
        return {"talk": self._talk}

    async def _talk(self) -> None:
        while True:
            if not self.faults.silent:
                lines = [self._line(kind) for kind in self.talks]
                self.sent += lines
                if self.link.client_baudrate() not in (None, self.baudrate):
                    lines = [bytes(b | 0x80 for b in line) for line in lines]  # framing lost
                self.write(Reply(0.0, line) for line in lines)
            await asyncio.sleep(self.period_s)

    def _line(self, kind: str) -> bytes:
        """The next `kind` sentence, spoilt by the first pending fault (one fault a line)."""
        state = self.water.sample(self.clock())
        m = state.depth_m
        if kind == "MTW":
            body, null = f"YXMTW,{state.temperature_c:.2f},C", "YXMTW,,C"
        else:
            feet, fathoms = m * _FEET_PER_M, m * _FATHOMS_PER_M
            body, null = f"SDDBT,{feet:.1f},f,{m:.2f},M,{fathoms:.1f},F", "SDDBT,,f,,M,,F"
        line = sentence(body)
        if self._take("garbage_next"):
            return b"\x8f\x02G\xfe~" + line[3:9] + b"\r\n"
        if self._take("bad_checksum_next"):
            wrong = (int(line[-4:-2], 16) ^ 0x5A) & 0xFF
            return line[:-4] + f"{wrong:02X}".encode() + b"\r\n"
        if self._take("no_checksum_next"):
            return line[:-5] + b"\r\n"
        if self._take("too_long_next"):
            return line[:-5] + b"," * 90 + line[-5:]
        if self._take("null_value_next"):
            return sentence(null)
        return line

    def _take(self, name: str) -> bool:
        left = getattr(self.faults, name)
        if left:
            setattr(self.faults, name, left - 1)
        return bool(left)

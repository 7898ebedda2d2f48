"""``driver = "nmea"``: a talker sending NMEA 0183 sentences on a serial line.

One ``[[sensor]]`` table reads one sentence type from one port::

    [[sensor]]
    id = "water-temp-1"
    driver = "nmea"
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"
    sentence = "MTW"      # MTW: water temperature (Cel); DBT: depth below transducer (m)
    talker = "YX"         # optional: only this talker's sentences (default: any talker)
    baudrate = 4800       # NMEA 0183's rate; 38400 for NMEA 0183-HS
    interval_s = 10.0     # one reading per interval, on a fixed cadence
    timeout_s = 5.0       # how long after its slot the sentence may come

Sensors on one port share its line: they must agree on ``baudrate`` and read
different sentences (a sonde sending both ``$YXMTW`` and ``$SDDBT`` is two
sensors on one port, read by one source).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from gateway.drivers.link.buses import group_buses
from gateway.toml_table import Table, positive

__all__ = [
    "NMEA_BAUD_RATES",
    "NMEA_DEFAULTS",
    "NMEA_SENTENCES",
    "NmeaSensorConfig",
    "SentenceType",
    "check_nmea_ports",
    "parse_nmea",
]

SentenceType = Literal["MTW", "DBT"]
"""The sentence formatters this driver reads (see ``protocol.QUANTITIES``)."""
NMEA_SENTENCES: tuple[SentenceType, ...] = get_args(SentenceType)
NMEA_BAUD_RATES = (4800, 9600, 19200, 38400)
_TALKER = re.compile(r"[A-Z0-9]{2}")


@dataclass(frozen=True)
class NmeaSensorConfig:
    id: str
    port: str
    sentence: SentenceType
    """Which sentence carries this sensor's value."""
    talker: str | None = None
    """The two-character talker id the sentence must come from (``YX``, ``SD``); None:
    any."""
    baudrate: int = 4800
    interval_s: float = 10.0
    """Time between readings: the first good sentence at or after each slot is kept, the
    talker's others in between are not."""
    timeout_s: float = 5.0
    """How long after its slot the sentence may come before a ``timeout`` is counted."""
    site: str | None = None
    driver: Literal["nmea"] = "nmea"


NMEA_DEFAULTS = NmeaSensorConfig(id="nmea-1", port="", sentence="MTW")
"""The defaults of every optional key, written once (in the dataclass)."""


def parse_nmea(t: Table, sid: str, site: str | None) -> NmeaSensorConfig:
    d = NMEA_DEFAULTS
    sentence = t.one_of("sentence", t.get("sentence", str, required=True), NMEA_SENTENCES)
    talker = t.optional("talker", str)
    if talker is not None:
        t.check(
            "talker",
            talker,
            lambda x: bool(_TALKER.fullmatch(x)),
            "must be two upper-case letters or digits",
        )
    baud = t.get("baudrate", int, d.baudrate)
    interval = t.get("interval_s", float, d.interval_s)
    timeout = t.get("timeout_s", float, d.timeout_s)
    return NmeaSensorConfig(
        id=sid,
        port=t.get("port", str, required=True),
        sentence=sentence,
        talker=talker,
        baudrate=t.check(
            "baudrate", baud, lambda b: b in NMEA_BAUD_RATES, f"is not one of {NMEA_BAUD_RATES}"
        ),
        interval_s=t.check("interval_s", interval, lambda x: x >= 1.0, "must be >= 1 s"),
        timeout_s=t.check(
            "timeout_s",
            timeout,
            lambda x: positive(x) and x <= interval,
            "must be > 0 and <= interval_s",
        ),
        site=site,
    )


def check_nmea_ports(sensors: Iterable[object]) -> dict[str, list[NmeaSensorConfig]]:
    """Group NMEA sensors by port; refuse one sentence read twice on a port, or two
    baud rates."""
    return group_buses(
        sensors, NmeaSensorConfig, address="sentence", shared=("baudrate",), bus="port"
    )

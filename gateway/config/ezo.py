"""``driver = "ezo"``: an Atlas Scientific EZO circuit on a UART."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .table import Table, positive

__all__ = ["EZO_BAUD_RATES", "EZO_CIRCUITS", "EzoSensorConfig", "parse_ezo"]

EZO_BAUD_RATES = (300, 1200, 2400, 9600, 19200, 38400, 57600, 115200)
EZO_CIRCUITS = ("ph", "do", "ec", "orp", "rtd")


@dataclass(frozen=True)
class EzoSensorConfig:
    id: str
    port: str
    circuit: Literal["ph", "do", "ec", "orp", "rtd"]
    baudrate: int = 9600
    interval_s: float = 10.0
    timeout_s: float = 3.0
    site: str | None = None
    """Sensors at one site share temperature compensation."""
    driver: Literal["ezo"] = "ezo"


def parse_ezo(t: Table, sid: str, site: str | None) -> EzoSensorConfig:
    circuit = t.get("circuit", str, required=True).lower()
    t.check("circuit", circuit, lambda c: c in EZO_CIRCUITS, f"is not one of {EZO_CIRCUITS}")
    baud = t.get("baudrate", int, 9600)
    t.check("baudrate", baud, lambda b: b in EZO_BAUD_RATES, f"is not one of {EZO_BAUD_RATES}")
    interval = t.get("interval_s", float, 10.0)
    timeout = t.get("timeout_s", float, 3.0)
    return EzoSensorConfig(
        id=sid,
        port=t.get("port", str, required=True),
        circuit=circuit,  # type: ignore[arg-type]  # checked against EZO_CIRCUITS above
        baudrate=baud,
        interval_s=t.check("interval_s", interval, lambda x: x >= 0.1, "must be >= 0.1 s"),
        timeout_s=t.check("timeout_s", timeout, positive, "must be > 0"),
        site=site,
    )

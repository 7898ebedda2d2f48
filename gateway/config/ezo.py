"""``driver = "ezo"``: an Atlas Scientific EZO circuit on a UART."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from .table import Table, positive

__all__ = [
    "EZO_BAUD_RATES",
    "EZO_CIRCUITS",
    "EZO_MODES",
    "EZO_OUTPUTS",
    "EzoSensorConfig",
    "parse_ezo",
]

EZO_BAUD_RATES = (300, 1200, 2400, 9600, 19200, 38400, 57600, 115200)
EZO_CIRCUITS = ("ph", "do", "ec", "orp", "rtd")
EZO_MODES = ("poll", "continuous")
EZO_OUTPUTS: dict[str, tuple[str, ...]] = {
    "ec": ("EC", "TDS", "S", "SG"),
    "do": ("mg", "%"),
}
"""Selectable outputs per circuit, in the order a reading lists them (sensor-protocols §1.5)."""

CONTINUOUS_MAX_S = 99  # `C,n` takes whole seconds 1-99


@dataclass(frozen=True)
class EzoSensorConfig:
    id: str
    port: str
    circuit: Literal["ph", "do", "ec", "orp", "rtd"]
    baudrate: int = 9600
    interval_s: float = 10.0
    """Poll mode: time between ``R`` polls. Continuous mode: the circuit's ``C,n``
    interval (whole seconds, 1-99), which the driver also checks the stream against."""
    timeout_s: float = 3.0
    """How long a reply may take (poll mode), or how late a streamed line may be."""
    site: str | None = None
    """Sensors at one site share temperature compensation."""
    mode: Literal["poll", "continuous"] = "poll"
    outputs: tuple[str, ...] | None = None
    """EC and DO only: the outputs to switch on at start (others off); None keeps the
    circuit's own selection."""
    temperature_compensation: bool = True
    """pH, EC and DO: send ``T,<°C>`` from an RTD circuit at the same ``site``."""
    driver: Literal["ezo"] = "ezo"


def _outputs(t: Table, circuit: str) -> tuple[str, ...] | None:
    if "outputs" not in t.data:
        t.used.add("outputs")
        return None
    raw = t.get("outputs", list)
    known = EZO_OUTPUTS.get(circuit)
    if known is None:
        raise ConfigError(f"{t.where}.outputs", f"is only for circuits {tuple(EZO_OUTPUTS)}")
    by_upper = {name.upper(): name for name in known}
    t.check(
        "outputs",
        raw,
        lambda xs: all(isinstance(x, str) and x.upper() in by_upper for x in xs),
        f"must list outputs from {known}",
    )
    wanted = {by_upper[x.upper()] for x in raw}
    return tuple(name for name in known if name in wanted)


def parse_ezo(t: Table, sid: str, site: str | None) -> EzoSensorConfig:
    circuit = t.get("circuit", str, required=True).lower()
    t.check("circuit", circuit, lambda c: c in EZO_CIRCUITS, f"is not one of {EZO_CIRCUITS}")
    baud = t.get("baudrate", int, 9600)
    t.check("baudrate", baud, lambda b: b in EZO_BAUD_RATES, f"is not one of {EZO_BAUD_RATES}")
    mode = t.get("mode", str, "poll")
    t.check("mode", mode, lambda m: m in EZO_MODES, f"is not one of {EZO_MODES}")
    interval = t.get("interval_s", float, 10.0)
    if mode == "continuous":
        t.check(
            "interval_s",
            interval,
            lambda x: x.is_integer() and 1 <= x <= CONTINUOUS_MAX_S,
            f"must be whole seconds 1-{CONTINUOUS_MAX_S} in continuous mode (C,n)",
        )
    timeout = t.get("timeout_s", float, 3.0)
    return EzoSensorConfig(
        id=sid,
        port=t.get("port", str, required=True),
        circuit=circuit,  # type: ignore[arg-type]  # checked against EZO_CIRCUITS above
        baudrate=baud,
        interval_s=t.check("interval_s", interval, lambda x: x >= 0.1, "must be >= 0.1 s"),
        timeout_s=t.check("timeout_s", timeout, positive, "must be > 0"),
        site=site,
        mode=mode,  # type: ignore[arg-type]  # checked against EZO_MODES above
        outputs=_outputs(t, circuit),
        temperature_compensation=t.get("temperature_compensation", bool, True),
    )

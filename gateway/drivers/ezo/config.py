"""``driver = "ezo"``: an Atlas Scientific EZO circuit on a UART."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from gateway.toml_table import Table, positive

__all__ = [
    "EZO_BAUD_RATES",
    "EZO_CIRCUITS",
    "EZO_DEFAULTS",
    "EZO_MODES",
    "EZO_OUTPUTS",
    "Circuit",
    "EzoSensorConfig",
    "Mode",
    "parse_ezo",
]

EZO_BAUD_RATES = (300, 1200, 2400, 9600, 19200, 38400, 57600, 115200)
Circuit = Literal["ph", "do", "ec", "orp", "rtd"]
"""The EZO circuits riverseal reads (what ``i`` names them, in lower case)."""
Mode = Literal["poll", "continuous"]
EZO_CIRCUITS: tuple[Circuit, ...] = get_args(Circuit)
EZO_MODES: tuple[Mode, ...] = get_args(Mode)
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
    circuit: Circuit
    baudrate: int = 9600
    interval_s: float = 10.0
    """Poll mode: time between ``R`` polls. Continuous mode: the circuit's ``C,n``
    interval (whole seconds, 1-99), which the driver also checks the stream against."""
    timeout_s: float = 3.0
    """How long a reply may take (poll mode), or how late a streamed line may be."""
    site: str | None = None
    """Sensors at one site share temperature compensation."""
    mode: Mode = "poll"
    outputs: tuple[str, ...] | None = None
    """EC and DO only: the outputs to switch on at start (others off); None keeps the
    circuit's own selection."""
    temperature_compensation: bool = True
    """pH, EC and DO: send ``T,<°C>`` from an RTD circuit at the same ``site``."""
    driver: Literal["ezo"] = "ezo"


EZO_DEFAULTS = EzoSensorConfig(id="ph-1", port="", circuit="ph")
"""The defaults of every optional key, written once (in the dataclass): the parser and
``gateway scan``'s snippet take them from here."""


def _outputs(t: Table, circuit: str) -> tuple[str, ...] | None:
    if "outputs" not in t.data:
        t.used.add("outputs")
        return None
    raw = t.get("outputs", list)
    known = EZO_OUTPUTS.get(circuit)
    if known is None:
        t.problem("outputs", f"is only for circuits {tuple(EZO_OUTPUTS)}")
        return None
    by_upper = {name.upper(): name for name in known}
    t.check(
        "outputs",
        raw,
        lambda xs: all(isinstance(x, str) and x.upper() in by_upper for x in xs),
        f"must list outputs from {known}",
    )
    # A problem is collected, not raised: keep parsing with the outputs that are known.
    wanted = {
        by_upper[x.upper()] for x in raw or () if isinstance(x, str) and x.upper() in by_upper
    }
    return tuple(name for name in known if name in wanted)


def parse_ezo(t: Table, sid: str, site: str | None) -> EzoSensorConfig:
    d = EZO_DEFAULTS
    circuit = t.one_of("circuit", t.get("circuit", str, required=True).lower(), EZO_CIRCUITS)
    baud = t.get("baudrate", int, d.baudrate)
    t.check("baudrate", baud, lambda b: b in EZO_BAUD_RATES, f"is not one of {EZO_BAUD_RATES}")
    mode = t.one_of("mode", t.get("mode", str, d.mode), EZO_MODES)
    interval = t.get("interval_s", float, d.interval_s)
    if mode == "continuous":
        t.check(
            "interval_s",
            interval,
            lambda x: x.is_integer() and 1 <= x <= CONTINUOUS_MAX_S,
            f"must be whole seconds 1-{CONTINUOUS_MAX_S} in continuous mode (C,n)",
        )
    timeout = t.get("timeout_s", float, d.timeout_s)
    return EzoSensorConfig(
        id=sid,
        port=t.get("port", str, required=True),
        circuit=circuit,
        baudrate=baud,
        interval_s=t.check("interval_s", interval, lambda x: x >= 0.1, "must be >= 0.1 s"),
        timeout_s=t.check("timeout_s", timeout, positive, "must be > 0"),
        site=site,
        mode=mode,
        outputs=_outputs(t, circuit),
        temperature_compensation=t.get(
            "temperature_compensation", bool, d.temperature_compensation
        ),
    )

"""Atlas Scientific EZO circuit (pH, DO, EC, ORP, RTD) as a pure state machine.

`EzoCircuit` does no IO and reads no clock: the host feeds it received bytes
with the current Unix time and writes back the `Reply` lines it returns, each
after its `delay_s` (measured from the previous reply, so a host that writes
replies in order, sleeping before each, reproduces the device's timing).

Wire dialect (sensor-protocols §1): commands end in one CR and are matched
case-insensitively; every reply line ends in a single CR, no LF; `*OK` follows
accepted commands while response codes are on; `*ER` answers unknown or
malformed commands and cannot be disabled. Choices where the reference is
silent: a bare CR is ignored; `T` is stored but readings are the river's true
values (perfect compensation); a command longer than 64 bytes is discarded
with `*ER`; the byte that wakes a sleeping circuit is consumed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from simulators.river import RiverState, WaterSource

__all__ = ["EzoCircuit", "EzoKind", "Faults", "Reply"]

EzoKind = Literal["ph", "do", "ec", "orp", "rtd"]

_GENERIC_S = 0.3
_MAX_COMMAND = 64
_VCC = "5.038"


@dataclass(frozen=True)
class Reply:
    """One line to write to the host `delay_s` seconds after the previous one."""

    delay_s: float
    data: bytes


@dataclass(frozen=True)
class Faults:
    """Pending faults. Counts are consumed as they fire.

    error_next: the next N `R`/`RT` commands answer `*ER` instead of a reading.
    silent_next: the next N commands are lost: not executed, not answered.
    The rest fire when the next command that is not lost arrives, before its answer:
    garbage_next: a line of high-bit garbage ending in CR (one per command, N times).
    stale_lines: N old continuous-mode readings, oldest first.
    spontaneous_reset: a reboot (`*RS`, `*RE`; volatile state resets, Status reason W).
    """

    error_next: int = 0
    garbage_next: int = 0
    silent_next: int = 0
    stale_lines: int = 0
    spontaneous_reset: bool = False

    def __post_init__(self) -> None:
        counts = (self.error_next, self.garbage_next, self.silent_next, self.stale_lines)
        if min(counts) < 0:
            raise ValueError(f"fault counts must not be negative: {self}")


@dataclass(frozen=True)
class _Profile:
    type_id: str
    read_s: float
    read_temp_s: float | None  # None: no temperature compensation (no T, RT)
    cal_s: float
    outputs: tuple[str, ...]  # selectable fields, in reading order
    default_temp_c: float


_PROFILES: dict[str, _Profile] = {
    "ph": _Profile("pH", 0.9, 0.9, 0.9, (), 25.0),
    "orp": _Profile("ORP", 1.0, None, 0.9, (), 25.0),
    "ec": _Profile("EC", 0.6, 0.9, 1.2, ("EC", "TDS", "S", "SG"), 25.0),
    "do": _Profile("DO", 0.6, 0.9, 1.3, ("mg", "%"), 20.0),
    "rtd": _Profile("RTD", 1.0, None, 0.6, (), 25.0),
}


@dataclass(frozen=True)
class _Answer:
    """What a command produces before response codes and faults are applied."""

    delay_s: float
    lines: tuple[str, ...] = ()
    ok: bool = True  # append *OK when response codes are on
    after: tuple[str, ...] = ()  # lines that follow the *OK (reboot notices)


_ER = _Answer(_GENERIC_S, ("*ER",), ok=False)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _fmt_short(value: float) -> str:
    """`19.5`, `20.0`, `19.55`, `0.1`: at least one decimal, at most two."""
    text = f"{value:.2f}"
    return text[:-1] if text.endswith("0") else text


def _fmt_ec(value: float) -> str:
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _firmware_tuple(firmware: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in firmware.split("."))
    except ValueError:
        raise ValueError(f"firmware must look like '2.16', got {firmware!r}") from None


@dataclass
class _Settings:
    """The circuit's configurable state; `Factory` restores a fresh instance."""

    continuous_s: int = 1  # 0: off
    response_codes: bool = True
    name: str = ""
    led: bool = True
    temp_c: float = 25.0
    outputs: set[str] = field(default_factory=set)
    cal_points: set[str] = field(default_factory=set)
    probe_k: float = 1.0


class EzoCircuit:
    """One EZO circuit answering from a `RiverModel` (or a drifting `Probe` in one).

    Args:
        kind: which circuit: "ph", "do", "ec", "orp" or "rtd".
        river: source of true values; sampled at the `now` given to `receive`.
        firmware: reported by `i`; EC firmware before 2.10 enables all outputs.
        name: initial `Name`.
        upper_case_replies: emit identifiers upper-case (`?I,PH,...`, `?CAL,2`).
        seed: makes injected garbage deterministic.
        delay_scale: multiplies every processing delay (tests use ~0.02).
        faults: faults pending from the start; add more with `inject`.
    """

    def __init__(
        self,
        kind: EzoKind,
        river: WaterSource,
        *,
        firmware: str = "2.16",
        name: str = "",
        upper_case_replies: bool = False,
        seed: int = 0,
        delay_scale: float = 1.0,
        faults: Faults | None = None,
    ) -> None:
        if kind not in _PROFILES:
            raise ValueError(f"unknown EZO kind {kind!r}")
        if delay_scale < 0:
            raise ValueError("delay_scale must not be negative")
        self._kind: EzoKind = kind
        self._profile = _PROFILES[kind]
        self._river = river
        self._firmware = firmware
        self._firmware_tuple = _firmware_tuple(firmware)
        self._initial_name = name
        self._upper = upper_case_replies
        self._seed = seed
        self._scale = delay_scale
        self._faults = faults or Faults()
        self._buffer = bytearray()
        self._asleep = False
        self._restart_reason = "P"
        self._garbage_count = 0
        self._settings = self._factory_settings()
        self._commands: dict[str, Callable[[list[str], float], _Answer]] = {
            "r": self._cmd_read,
            "rt": self._cmd_read_temp,
            "i": self._cmd_info,
            "status": self._cmd_status,
            "c": self._cmd_continuous,
            "*ok": self._cmd_response_codes,
            "t": self._cmd_temperature,
            "o": self._cmd_output,
            "name": self._cmd_name,
            "l": self._cmd_led,
            "find": self._cmd_find,
            "cal": self._cmd_cal,
            "sleep": self._cmd_sleep,
            "factory": self._cmd_factory,
            "k": self._cmd_probe_k,
        }

    # -- public surface ------------------------------------------------------

    @property
    def kind(self) -> EzoKind:
        return self._kind

    @property
    def continuous_interval(self) -> float | None:
        """Seconds between continuous-mode readings, or None when continuous mode is off."""
        seconds = self._settings.continuous_s
        return float(seconds) if seconds else None

    @property
    def faults(self) -> Faults:
        """Faults still pending."""
        return self._faults

    def inject(
        self,
        *,
        error_next: int = 0,
        garbage_next: int = 0,
        silent_next: int = 0,
        stale_lines: int = 0,
        spontaneous_reset: bool = False,
    ) -> None:
        """Add faults to those already pending."""
        f = self._faults
        self._faults = Faults(
            error_next=f.error_next + error_next,
            garbage_next=f.garbage_next + garbage_next,
            silent_next=f.silent_next + silent_next,
            stale_lines=f.stale_lines + stale_lines,
            spontaneous_reset=f.spontaneous_reset or spontaneous_reset,
        )

    def power_up(self, now: float) -> list[Reply]:
        """Power the circuit on (or cycle it): volatile state resets, `*RE` follows."""
        del now  # boot takes no reading; the parameter keeps the host API uniform
        self._reboot("P")
        return [Reply(0.0, b"*RE\r")]

    def receive(self, data: bytes, now: float) -> list[Reply]:
        """Feed bytes from the host; return the replies to write, in order."""
        replies: list[Reply] = []
        for byte in data:
            if self._asleep:
                self._asleep = False
                replies.append(Reply(0.0, b"*WA\r"))
            elif byte == 0x0D:
                line = bytes(self._buffer)
                self._buffer.clear()
                replies += self._command(line, now)
            elif byte == 0x0A:
                continue  # tolerate CRLF hosts
            else:
                self._buffer.append(byte)
                if len(self._buffer) > _MAX_COMMAND:
                    self._buffer.clear()
                    replies += self._render(_ER)
        return replies

    def continuous_output(self, now: float) -> bytes | None:
        """The line continuous mode would send now, or None when it is off or asleep."""
        if self._asleep or not self._settings.continuous_s:
            return None
        return self._reading_line(now)

    # -- command handling ----------------------------------------------------

    def _command(self, line: bytes, now: float) -> list[Reply]:
        text = line.decode("ascii", errors="replace").strip()
        if not text:
            return []
        if self._faults.silent_next:
            self._faults = replace(self._faults, silent_next=self._faults.silent_next - 1)
            return []
        prefix = self._fault_prefix(now)
        name, *args = text.split(",")
        handler = self._commands.get(name.lower())
        answer = handler(args, now) if handler else _ER
        return prefix + self._render(answer)

    def _fault_prefix(self, now: float) -> list[Reply]:
        """Lines that injected faults put before the next answer."""
        f = self._faults
        lines: list[bytes] = []
        if f.spontaneous_reset:
            self._reboot("W")
            lines += [b"*RS\r", b"*RE\r"]
        interval = self.continuous_interval or 1.0
        lines += [self._reading_line(now - interval * k) for k in range(f.stale_lines, 0, -1)]
        if f.garbage_next:
            lines.append(self._garbage())
        self._faults = replace(
            f,
            spontaneous_reset=False,
            stale_lines=0,
            garbage_next=max(0, f.garbage_next - 1),
        )
        return [Reply(0.0, data) for data in lines]

    def _render(self, answer: _Answer) -> list[Reply]:
        lines = list(answer.lines)
        if answer.ok and self._settings.response_codes:
            lines.append("*OK")
        lines += answer.after
        delay = answer.delay_s * self._scale
        return [
            Reply(delay if i == 0 else 0.0, f"{line}\r".encode("ascii"))
            for i, line in enumerate(lines)
        ]

    def _id(self, identifier: str) -> str:
        return identifier.upper() if self._upper else identifier

    def _query(self, identifier: str, *values: str) -> _Answer:
        return _Answer(_GENERIC_S, (",".join([f"?{self._id(identifier)}", *values]),))

    def _cmd_read(self, args: list[str], now: float) -> _Answer:
        if args:
            return _ER
        return self._reading(now, self._profile.read_s)

    def _cmd_read_temp(self, args: list[str], now: float) -> _Answer:
        delay = self._profile.read_temp_s
        temp = _number(args[0]) if len(args) == 1 else None
        if delay is None or temp is None:
            return _ER
        self._settings.temp_c = temp
        return self._reading(now, delay)

    def _reading(self, now: float, delay_s: float) -> _Answer:
        if self._faults.error_next:
            self._faults = replace(self._faults, error_next=self._faults.error_next - 1)
            return _ER
        return _Answer(delay_s, (self._reading_text(self._river.sample(now)),))

    def _cmd_info(self, args: list[str], now: float) -> _Answer:
        if args:
            return _ER
        return self._query("I", self._id(self._profile.type_id), self._firmware)

    def _cmd_status(self, args: list[str], now: float) -> _Answer:
        if args:
            return _ER
        return self._query("Status", self._restart_reason, _VCC)

    def _cmd_continuous(self, args: list[str], now: float) -> _Answer:
        if args == ["?"]:
            return self._query("C", str(self._settings.continuous_s))
        if len(args) == 1 and args[0].isdigit() and int(args[0]) <= 99:
            self._settings.continuous_s = int(args[0])
            return _Answer(_GENERIC_S)
        return _ER

    def _cmd_response_codes(self, args: list[str], now: float) -> _Answer:
        if args == ["?"]:
            on = "1" if self._settings.response_codes else "0"
            return _Answer(_GENERIC_S, (f"?*OK,{on}",), ok=False)
        if args in (["0"], ["1"]):
            self._settings.response_codes = args == ["1"]
            return _Answer(_GENERIC_S)
        return _ER

    def _cmd_temperature(self, args: list[str], now: float) -> _Answer:
        if self._profile.read_temp_s is None or len(args) != 1:
            return _ER
        if args[0] == "?":
            return self._query("T", _fmt_short(self._settings.temp_c))
        temp = _number(args[0])
        if temp is None:
            return _ER
        self._settings.temp_c = temp
        return _Answer(_GENERIC_S)

    def _cmd_output(self, args: list[str], now: float) -> _Answer:
        fields = self._profile.outputs
        if not fields:
            return _ER
        if args == ["?"]:
            enabled = [self._id(f) for f in fields if f in self._settings.outputs]
            return _Answer(_GENERIC_S, ("?,O," + ",".join(enabled),))
        by_lower = {f.lower(): f for f in fields}
        if len(args) != 2 or args[0].lower() not in by_lower or args[1] not in ("0", "1"):
            return _ER
        chosen = by_lower[args[0].lower()]
        if args[1] == "1":
            self._settings.outputs.add(chosen)
        else:
            self._settings.outputs.discard(chosen)
        return _Answer(_GENERIC_S)

    def _cmd_name(self, args: list[str], now: float) -> _Answer:
        if args == ["?"]:
            return self._query("Name", self._settings.name)
        if len(args) != 1:
            return _ER
        name = args[0]
        if len(name) > 16 or not (name.isascii() and name.isprintable()) or " " in name:
            return _ER
        self._settings.name = name
        return _Answer(_GENERIC_S)

    def _cmd_led(self, args: list[str], now: float) -> _Answer:
        if args == ["?"]:
            return self._query("L", "1" if self._settings.led else "0")
        if args in (["0"], ["1"]):
            self._settings.led = args == ["1"]
            return _Answer(_GENERIC_S)
        return _ER

    def _cmd_find(self, args: list[str], now: float) -> _Answer:
        return _ER if args else _Answer(_GENERIC_S)

    def _cmd_cal(self, args: list[str], now: float) -> _Answer:
        if args == ["?"]:
            return self._query("Cal", str(len(self._settings.cal_points)))
        lowered = [a.lower() for a in args]
        points = self._settings.cal_points
        if lowered == ["clear"]:
            points.clear()
        elif not self._calibrate(points, lowered):
            return _ER
        return _Answer(self._profile.cal_s)

    def _calibrate(self, points: set[str], args: list[str]) -> bool:
        """Apply one calibration step to `points`; False when the command is malformed."""
        if self._kind == "do":  # `Cal` in air, `Cal,0` in zero solution
            if args not in ([], ["0"]):
                return False
            points.add("zero" if args else "atmospheric")
            return True
        if self._kind == "ec" and args == ["dry"]:
            points.clear()
            return True
        if not 1 <= len(args) <= 2 or _number(args[-1]) is None:
            return False
        step = args[0] if len(args) == 2 else "single"
        allowed = {"ph": ("mid", "low", "high"), "ec": ("single", "low", "high")}
        if step not in allowed.get(self._kind, ("single",)):
            return False
        if step in ("mid", "single") or (self._kind == "ec" and step == "low"):
            points.clear()  # a first point restarts the calibration
        points.add(step)
        return True

    def _cmd_sleep(self, args: list[str], now: float) -> _Answer:
        if args:
            return _ER
        self._asleep = True
        return _Answer(_GENERIC_S, ("*SL",), ok=False)

    def _cmd_factory(self, args: list[str], now: float) -> _Answer:
        if args:
            return _ER
        ok = ("*OK",) if self._settings.response_codes else ()
        self._settings = self._factory_settings()
        self._reboot("S")
        return _Answer(_GENERIC_S, ok, ok=False, after=("*RS", "*RE"))

    def _cmd_probe_k(self, args: list[str], now: float) -> _Answer:
        if self._kind != "ec" or len(args) != 1:
            return _ER
        if args[0] == "?":
            return self._query("K", _fmt_short(self._settings.probe_k))
        k = _number(args[0])
        if k is None or not 0.05 <= k <= 20:
            return _ER
        self._settings.probe_k = k
        return _Answer(_GENERIC_S)

    # -- state and values ----------------------------------------------------

    def _factory_settings(self) -> _Settings:
        outputs = {"mg"} if self._kind == "do" else set()
        if self._kind == "ec":
            # Firmware 2.10 changed the EC default to EC only.
            all_fields = set(self._profile.outputs)
            outputs = {"EC"} if self._firmware_tuple >= (2, 10) else all_fields
        return _Settings(
            name=self._initial_name,
            temp_c=self._profile.default_temp_c,
            outputs=outputs,
        )

    def _reboot(self, reason: str) -> None:
        self._buffer.clear()
        self._asleep = False
        self._restart_reason = reason
        if self._kind == "do":
            self._settings.temp_c = self._profile.default_temp_c  # DO does not store T

    def _reading_line(self, now: float) -> bytes:
        return f"{self._reading_text(self._river.sample(now))}\r".encode("ascii")

    def _reading_text(self, state: RiverState) -> str:
        kind = self._kind
        if kind == "ph":
            return f"{min(14.0, max(0.001, state.ph)):.3f}"
        if kind == "orp":
            return f"{state.orp_mv:.1f}"
        if kind == "rtd":
            return f"{state.temperature_c:.3f}"
        if kind == "do":
            values = {"mg": f"{state.do_mg_l:.2f}", "%": f"{state.do_sat_pct:.1f}"}
        else:
            ec = state.ec_us_cm
            salinity = ec / 1000.0 * 0.64
            values = {
                "EC": _fmt_ec(ec),
                "TDS": _fmt_ec(ec * 0.5),
                "S": f"{salinity:.2f}",
                "SG": f"{1.0 + salinity * 0.00075:.3f}",
            }
        enabled = [values[f] for f in self._profile.outputs if f in self._settings.outputs]
        return ",".join(enabled) if enabled else "no output"

    def _garbage(self) -> bytes:
        """A deterministic line of high-bit bytes (never CR), as from line noise."""
        self._garbage_count += 1
        digest = hashlib.blake2b(
            f"{self._seed}:{self._kind}:garbage:{self._garbage_count}".encode(), digest_size=32
        ).digest()
        length = 3 + digest[0] % 12
        return bytes(b | 0x80 for b in digest[1 : 1 + length]) + b"\r"

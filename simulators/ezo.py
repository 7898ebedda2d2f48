"""Atlas Scientific EZO circuit (pH, DO, EC, ORP, RTD) as a pure state machine.

`EzoCircuit` does no IO and reads no clock: the host feeds it received bytes
with the current Unix time and writes back the `Reply` lines it returns, each
after its `delay_s` (measured from the previous reply, so a host that writes
replies in order, sleeping before each, reproduces the device's timing).
`simulators.ezo_pty.EzoPtyDevice` is that host on a real pty.

Wire dialect (sensor-protocols §1): commands end in one CR and are matched
case-insensitively; every reply line ends in a single CR, no LF; `*OK` follows
accepted commands while response codes are on; `*ER` answers unknown or
malformed commands and cannot be disabled. Choices where the reference is
silent: a bare CR is ignored; a command longer than 64 bytes is discarded
with `*ER`; the byte that wakes a sleeping circuit is consumed; the RTD's
`S,c|k|f` scale converts its readings.

Temperature compensation: `T,<°C>` (and `RT,<°C>`) is stored and reported by
`T,?` (DO forgets it on power-up, §1.5). By default readings are the river's
true values (perfect compensation). With `model_compensation=True` the
circuit compensates with the temperature it was given, as the real one does,
so a wrong or missing `T` shows: pH uses the Nernst slope at the set
temperature, EC is referred to 25 °C with a 2 %/°C coefficient, and DO
converts the measured saturation to mg/L at the set temperature (the
simulator's own physics, not from the reference).

Faults (`Faults`, `inject`, `drop_out`) cover sensor-protocols §1.6 and §8.5:
`*ER` instead of a reading, lost commands, line noise, truncated lines,
stale continuous lines, spontaneous reboots, `*UV`, stuck values, spikes,
slow replies and dropouts; the host adds unplug/replug and baud mismatch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from simulators.pty_device import Reply  # re-exported: the type of every line it answers
from simulators.river import RiverState, WaterSource, do_saturation

__all__ = ["EzoCircuit", "EzoKind", "Faults", "Reply"]

EzoKind = Literal["ph", "do", "ec", "orp", "rtd"]

_GENERIC_S = 0.3
_MAX_COMMAND = 64
_VCC = "5.038"


@dataclass(frozen=True)
class Faults:
    """Pending faults. Counts are consumed as they fire.

    error_next: the next N `R`/`RT` commands answer `*ER` instead of a reading.
    silent_next: the next N commands are lost: not executed, not answered.
    These fire before the next answer (or continuous line), one per answer:
    garbage_next: a line of high-bit garbage ending in CR.
    undervoltage_next: a `*UV` line.
    These change the next N readings served (by `R`, `RT` or continuous mode):
    truncate_next: the line is cut short and loses its CR, so it runs into
        whatever follows (`7.1*OK`).
    stuck_next: the previous reading again (a flat line).
    spike_next: a wild value (pH ±2.5, ORP ±300 mV, ±15 °C, DO and EC ×3).
    slow_next: the next N answers come `slow_s` seconds later than normal.
    Once, before the next answer:
    stale_lines: N old continuous-mode readings, oldest first.
    spontaneous_reset: a reboot (`*RS`, `*RE`; volatile state resets, Status reason W).
    """

    error_next: int = 0
    garbage_next: int = 0
    silent_next: int = 0
    stale_lines: int = 0
    spontaneous_reset: bool = False
    undervoltage_next: int = 0
    truncate_next: int = 0
    stuck_next: int = 0
    spike_next: int = 0
    slow_next: int = 0
    slow_s: float = 2.0

    def __post_init__(self) -> None:
        counts = (
            self.error_next,
            self.garbage_next,
            self.silent_next,
            self.stale_lines,
            self.undervoltage_next,
            self.truncate_next,
            self.stuck_next,
            self.spike_next,
            self.slow_next,
            self.slow_s,
        )
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
    cut: bool = False  # the first line lost its CR (a truncated reading)


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
    scale: str = "c"  # RTD: c, k or f


class EzoCircuit:
    """One EZO circuit answering from a `RiverModel` (or a drifting `Probe` in one).

    Args:
        kind: which circuit: "ph", "do", "ec", "orp" or "rtd".
        river: source of true values; sampled at the `now` given to `receive`.
        firmware: reported by `i`; EC firmware before 2.10 enables all outputs.
        name: initial `Name`.
        upper_case_replies: emit identifiers upper-case (`?I,PH,...`, `?CAL,2`).
        seed: makes injected garbage, truncation and spikes deterministic.
        delay_scale: multiplies every processing delay (tests use ~0.02).
        faults: faults pending from the start; add more with `inject`.
        model_compensation: compensate readings with the `T` the circuit was
            given instead of reporting the true values (see the module notes).
        output_query_comma: answer `O,?` as `?,O,...` (True, ezo-driver's
            form) or `?O,...` (some firmware).
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
        model_compensation: bool = False,
        output_query_comma: bool = True,
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
        self._served_count = 0
        self._last_served: str | None = None
        self._dropouts: list[tuple[float, float]] = []
        self._model_compensation = model_compensation
        self._output_prefix = "?,O," if output_query_comma else "?O,"
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
            "s": self._cmd_scale,
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

    @property
    def temperature(self) -> float:
        """The compensation temperature the circuit holds (`T,?`), °C."""
        return self._settings.temp_c

    def inject(
        self,
        *,
        error_next: int = 0,
        garbage_next: int = 0,
        silent_next: int = 0,
        stale_lines: int = 0,
        spontaneous_reset: bool = False,
        undervoltage_next: int = 0,
        truncate_next: int = 0,
        stuck_next: int = 0,
        spike_next: int = 0,
        slow_next: int = 0,
        slow_s: float | None = None,
    ) -> None:
        """Add faults to those already pending (`slow_s` replaces the delay)."""
        f = self._faults
        self._faults = Faults(
            error_next=f.error_next + error_next,
            garbage_next=f.garbage_next + garbage_next,
            silent_next=f.silent_next + silent_next,
            stale_lines=f.stale_lines + stale_lines,
            spontaneous_reset=f.spontaneous_reset or spontaneous_reset,
            undervoltage_next=f.undervoltage_next + undervoltage_next,
            truncate_next=f.truncate_next + truncate_next,
            stuck_next=f.stuck_next + stuck_next,
            spike_next=f.spike_next + spike_next,
            slow_next=f.slow_next + slow_next,
            slow_s=f.slow_s if slow_s is None else slow_s,
        )

    def drop_out(self, start: float, duration_s: float) -> None:
        """Go silent from Unix time `start` for `duration_s`: commands are lost and
        continuous output stops, as when a cable or the supply is intermittent."""
        if duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        self._dropouts.append((start, start + duration_s))

    def silent_at(self, now: float) -> bool:
        """Whether a dropout is in progress at `now`."""
        return any(start <= now < end for start, end in self._dropouts)

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
        """What continuous mode sends now (faults included), or None when it is off,
        asleep or in a dropout."""
        if self._asleep or not self._settings.continuous_s or self.silent_at(now):
            return None
        prefix = b"".join(r.data for r in self._fault_lines())
        text, cut = self._serve(now)
        return prefix + text.encode("ascii") + (b"" if cut else b"\r")

    # -- command handling ----------------------------------------------------

    def _command(self, line: bytes, now: float) -> list[Reply]:
        text = line.decode("ascii", errors="replace").strip()
        if not text or self.silent_at(now):
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
        self._faults = replace(self._faults, spontaneous_reset=False, stale_lines=0)
        return [Reply(0.0, data) for data in lines] + self._fault_lines()

    def _fault_lines(self) -> list[Reply]:
        """Garbage and `*UV` lines due before the next answer or continuous line."""
        f = self._faults
        lines: list[bytes] = []
        if f.undervoltage_next:
            lines.append(b"*UV\r")
        if f.garbage_next:
            lines.append(self._garbage())
        self._faults = replace(
            f,
            garbage_next=max(0, f.garbage_next - 1),
            undervoltage_next=max(0, f.undervoltage_next - 1),
        )
        return [Reply(0.0, data) for data in lines]

    def _render(self, answer: _Answer) -> list[Reply]:
        lines = list(answer.lines)
        if answer.ok and self._settings.response_codes:
            lines.append("*OK")
        lines += answer.after
        delay = answer.delay_s * self._scale
        if self._faults.slow_next:
            delay += self._faults.slow_s
            self._faults = replace(self._faults, slow_next=self._faults.slow_next - 1)
        return [
            Reply(
                delay if i == 0 else 0.0,
                line.encode("ascii") + (b"" if i == 0 and answer.cut else b"\r"),
            )
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
        text, cut = self._serve(now)
        return _Answer(delay_s, (text,), cut=cut)

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
            return _Answer(_GENERIC_S, (self._output_prefix + ",".join(enabled),))
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

    def _cmd_scale(self, args: list[str], now: float) -> _Answer:
        # `S` is the RTD's temperature scale; on other circuits (DO salinity) it is
        # not simulated.
        if self._kind != "rtd" or len(args) != 1:
            return _ER
        if args[0] == "?":
            return self._query("S", self._settings.scale)
        if args[0].lower() not in ("c", "k", "f"):
            return _ER
        self._settings.scale = args[0].lower()
        return _Answer(_GENERIC_S)

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

    def _serve(self, now: float) -> tuple[str, bool]:
        """The reading to send now with the reading faults applied: (text, cut short)."""
        f = self._faults
        self._served_count += 1
        spiked = False
        if f.stuck_next and self._last_served is not None:
            text = self._last_served
        else:
            state = self._river.sample(now)
            if f.spike_next:
                state, spiked = self._spiked(state), True
            text = self._reading_text(state)
        self._last_served = text
        cut = f.truncate_next > 0 and len(text) > 1
        if cut:
            keep = 1 + self._draw("truncate") % (len(text) - 1)
            text = text[:keep]
        self._faults = replace(
            f,
            stuck_next=max(0, f.stuck_next - 1),
            spike_next=f.spike_next - 1 if spiked else f.spike_next,
            truncate_next=max(0, f.truncate_next - 1),
        )
        return text, cut

    def _draw(self, what: str) -> int:
        digest = hashlib.blake2b(
            f"{self._seed}:{self._kind}:{what}:{self._served_count}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big")

    def _spiked(self, state: RiverState) -> RiverState:
        sign = 1.0 if self._draw("spike") % 2 else -1.0
        return replace(
            state,
            ph=state.ph + 2.5 * sign,
            orp_mv=state.orp_mv + 300.0 * sign,
            temperature_c=state.temperature_c + 15.0 * sign,
            do_mg_l=state.do_mg_l * 3.0,
            do_sat_pct=state.do_sat_pct * 3.0,
            ec_us_cm=state.ec_us_cm * 3.0,
        )

    def _reading_text(self, state: RiverState) -> str:
        kind = self._kind
        set_c = self._settings.temp_c
        if kind == "ph":
            ph = state.ph
            if self._model_compensation:  # Nernst slope at the set temperature
                ph = 7.0 + (ph - 7.0) * (state.temperature_c + 273.15) / (set_c + 273.15)
            return f"{min(14.0, max(0.001, ph)):.3f}"
        if kind == "orp":
            return f"{state.orp_mv:.1f}"
        if kind == "rtd":
            temp = state.temperature_c
            temp = {"k": temp + 273.15, "f": temp * 9.0 / 5.0 + 32.0}.get(
                self._settings.scale, temp
            )
            return f"{temp:.3f}"
        if kind == "do":
            mg = state.do_mg_l
            if self._model_compensation:  # saturation measured, mg/L at the set temperature
                mg = state.do_sat_pct / 100.0 * do_saturation(set_c)
            values = {"mg": f"{mg:.2f}", "%": f"{state.do_sat_pct:.1f}"}
        else:
            ec = state.ec_us_cm
            if self._model_compensation:  # referred to 25 °C with 2 %/°C
                ec *= (1.0 + 0.02 * (state.temperature_c - 25.0)) / (1.0 + 0.02 * (set_c - 25.0))
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

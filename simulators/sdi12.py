"""A USB SDI-12 adapter with SDI-12 sondes behind it, on a real pty.

Two layers, as for the EZO simulator:

- ``Sdi12Adapter`` is a pure state machine. The host feeds it the bytes the
  gateway wrote, with the time, and writes back the ``Reply`` lines it
  returns; ``service_requests(now)`` gives the lines sondes send on their own
  (the ``a`` CR LF after an M measurement) once ``next_deadline()`` is reached.
- ``Sdi12PtyAdapter`` hosts one on a ``PtyDevice`` (with a stable symlink, like
  ``/dev/serial/by-id/...``) and delivers the service requests on time; it is
  the async context manager a whole-station launcher uses.

The adapter speaks the ASCII interface of Dr. Liu's SDI-12 USB adapter
(sensor-protocols §5): a command is the bare SDI-12 text up to ``!`` (CR and
LF between commands are ignored, so hosts that add a terminator work too);
the adapter puts a break and the command on the bus and passes back every
line a sonde sends, CR LF terminated; nothing comes back from an address
nobody answers. The adapter itself answers at address ``z``. With
``echo=True`` it repeats the command before the reply, as some do.

Each ``Sonde`` follows SDI-12 v1.4 (§4.4): ``a!``, ``aI!``, ``aAb!``, ``?!``
(several sondes answering at once garble the line, as on a real bus),
``aM!``/``aMC!`` (``atttn``, then a service request when the data are ready,
none when ttt is 000), ``aC!``/``aCC!`` (``atttnn``, no service request),
``aD0!``…``aD9!`` (values packed into at most 35 characters after M, 75
after C, never split, a CRC when asked), ``aIM!``/``aIC!`` and
``aIM_nnn!`` metadata, ``aRn!`` (no continuous mode: ``a``). Every command
comes with a break, which aborts an M measurement still running (§4.4.5.1);
a concurrent measurement is aborted only by a command to its own sonde
(§4.4.7.1). Values are the river's true values (``RiverModel.sample``) at
the time the measurement starts, rounded per quantity.

Faults (``Sonde.inject``): garbage lines before replies, truncated data
replies, wrong CRCs, dropouts (ignored commands, or ``silent`` until
cleared), stuck values, spikes, missing or late service requests, slow replies; and
``Sdi12PtyAdapter.unplug``/``replug`` for a disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from simulators.pty_device import Loop, PtyDevice, Reply
from simulators.river import RiverModel, RiverState, WaterSource

__all__ = [
    "SDI12_QUANTITIES",
    "SONDE_MODELS",
    "Sdi12Adapter",
    "Sdi12PtyAdapter",
    "Sonde",
    "SondeFaults",
    "SondeModel",
    "parse_sonde_spec",
    "sdi12_crc",
]

_ADDRESSES = string.digits + string.ascii_uppercase + string.ascii_lowercase
_MAX_COMMAND = 40  # longer without "!" is noise: the adapter drops it
_CRLF = b"\r\n"


def sdi12_crc(body: bytes) -> bytes:
    """The three CRC characters SDI-12 appends to ``body`` (spec §4.4.12)."""
    crc = 0
    for byte in body:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes((0x40 | (crc >> 12), 0x40 | ((crc >> 6) & 0x3F), 0x40 | (crc & 0x3F)))


@dataclass(frozen=True)
class _Quantity:
    read: Callable[[RiverState], float]
    unit: str
    decimals: int


SDI12_QUANTITIES: dict[str, _Quantity] = {
    "temperature": _Quantity(lambda s: s.temperature_c, "Cel", 2),
    "conductivity": _Quantity(lambda s: s.ec_us_cm, "uS/cm", 1),
    "ph": _Quantity(lambda s: s.ph, "pH", 2),
    "do": _Quantity(lambda s: s.do_mg_l, "mg/l", 2),
    "do_sat": _Quantity(lambda s: s.do_sat_pct, "%", 1),
    "orp": _Quantity(lambda s: s.orp_mv, "mV", 1),
    "turbidity": _Quantity(lambda s: s.turbidity_ntu, "NTU", 2),
    "depth": _Quantity(lambda s: s.depth_m, "m", 3),
}
"""What a sonde can measure: river reading, unit, decimals it reports."""


@dataclass(frozen=True)
class SondeModel:
    """A kind of sonde: what ``aI!`` says and what a measurement returns.

    ``ttt_s`` is announced in the measurement reply; the data are ready (and
    the service request goes out) ``ready_s`` after the command.
    """

    vendor: str
    model: str
    version: str
    quantities: tuple[str, ...]
    ttt_s: int = 1
    ready_s: float = 0.2
    sdi12_version: str = "14"

    def __post_init__(self) -> None:
        if len(self.vendor) > 8 or len(self.model) > 6 or len(self.version) != 3:
            raise ValueError("vendor <= 8, model <= 6 and version exactly 3 characters")
        unknown = [q for q in self.quantities if q not in SDI12_QUANTITIES]
        if unknown or not 1 <= len(self.quantities) <= 9:
            raise ValueError(f"1-9 quantities from {sorted(SDI12_QUANTITIES)}, not {unknown}")
        if not 0 <= self.ttt_s <= 999 or not 0 <= self.ready_s <= max(self.ttt_s, 0.05):
            raise ValueError("need 0 <= ready_s <= ttt_s <= 999")


SONDE_MODELS: dict[str, SondeModel] = {
    "multi": SondeModel(
        "RIVERSIM", "WQ6", "110", ("temperature", "conductivity", "ph", "do", "turbidity", "orp")
    ),
    "ctd": SondeModel("RIVERSIM", "CT2", "103", ("temperature", "conductivity", "depth"), 1, 0.1),
    "do": SondeModel("RIVERSIM", "DO3", "201", ("temperature", "do", "do_sat"), 2, 0.3),
    "turbidity": SondeModel("RIVERSIM", "TB1", "100", ("turbidity", "temperature"), 0, 0.0),
}
"""Models for ``--sonde ADDRESS:MODEL``."""


@dataclass(frozen=True)
class SondeFaults:
    """Pending faults; counts are used up as they fire.

    garbage_next: N replies are preceded by a line of high-bit noise.
    truncate_next: N data replies lose their second half (CR LF still sent).
    wrong_crc_next: N CRC-carrying data replies carry a wrong CRC.
    silent_next: the next N commands to this sonde go unanswered.
    stuck_next: N measurements repeat the previous values.
    spike_next: N measurements have a spike in their first value.
    no_service_request: M measurements never send a service request.
    late_service_request_next: N M measurements send their service request late,
        after ttt: just ahead of the reply to the next command to this sonde (the
        recorder's ``aD0!``), on the line it reads for that reply.
    slow_s: added before every reply (a slow sonde; above the host's timeout, a late one).
    silent: answer nothing at all until cleared (a dropout).
    """

    garbage_next: int = 0
    truncate_next: int = 0
    wrong_crc_next: int = 0
    silent_next: int = 0
    stuck_next: int = 0
    spike_next: int = 0
    no_service_request: bool = False
    late_service_request_next: int = 0
    slow_s: float = 0.0
    silent: bool = False


def _format_value(value: float, decimals: int) -> str:
    """``+12.34``: a sign, at most 7 digits (fewer decimals first, then clamped)."""
    for places in range(decimals, -1, -1):
        text = f"{value:+.{places}f}"
        if sum(ch.isdigit() for ch in text) <= 7:
            return text
    return "+9999999" if value > 0 else "-9999999"


@dataclass
class _Measurement:
    concurrent: bool
    crc: bool
    values: tuple[str, ...]  # formatted; empty when the measurement has no data
    ready_at: float
    service_request_at: float | None
    aborted: bool = False
    late_service_request: bool = False
    """The service request is still to come, ahead of the next reply (a fault)."""


class Sonde:
    """One SDI-12 sonde answering from a ``RiverModel``.

    Args:
        address: its SDI-12 address.
        model: a ``SondeModel`` or the name of one in ``SONDE_MODELS``.
        river: what the sonde measures (a ``RiverModel``, or a ``Probe`` that drifts).
        serial: the optional serial field of ``aI!`` (13 characters at most).
        seed: makes noise and garbage deterministic.
        values_per_reply: at most this many values per D reply (tests use 1
            to force ``aD1!``, ``aD2!``…); by default as many as fit.
        reply_delay_s: time to the first byte of a reply (spec: within 15 ms,
            plus the adapter's USB latency).
    """

    def __init__(
        self,
        address: str,
        model: SondeModel | str,
        river: WaterSource,
        *,
        serial: str = "",
        seed: int = 0,
        values_per_reply: int | None = None,
        reply_delay_s: float = 0.02,
        faults: SondeFaults | None = None,
    ) -> None:
        if len(address) != 1 or address not in _ADDRESSES:
            raise ValueError(f"{address!r} is not an SDI-12 address")
        self.model = SONDE_MODELS[model] if isinstance(model, str) else model
        if len(serial) > 13 or not all(0x20 <= ord(c) < 0x7F for c in serial):
            raise ValueError("serial must be at most 13 printable ASCII characters")
        if values_per_reply is not None and values_per_reply < 1:
            raise ValueError("values_per_reply must be >= 1")
        self.address = address
        self.river = river
        self.serial = serial or f"SN{seed:04d}{address}"
        self._seed = seed
        self._values_per_reply = values_per_reply
        self._reply_delay_s = reply_delay_s
        self.faults = faults or SondeFaults()
        self._measurement: _Measurement | None = None
        self._previous: tuple[float, ...] | None = None
        self._noise = 0
        self.served: list[tuple[float, ...]] = []
        """Every measurement's values as the sonde took them (after stuck/spike faults)."""
        self.commands: list[tuple[float, str]] = []
        """(time, command) for every command addressed to this sonde."""

    # -- faults --------------------------------------------------------------------------

    def inject(self, **changes: int | float | bool) -> None:
        """Add to the pending fault counts; set ``no_service_request``, ``slow_s``, ``silent``."""
        counts = {
            "garbage_next",
            "truncate_next",
            "wrong_crc_next",
            "silent_next",
            "stuck_next",
            "spike_next",
            "late_service_request_next",
        }
        merged: dict[str, int | float | bool] = {}
        for name, value in changes.items():
            if name in counts:
                merged[name] = getattr(self.faults, name) + int(value)
            elif name in ("no_service_request", "slow_s", "silent"):
                merged[name] = value
            else:
                raise TypeError(f"unknown fault {name!r}")
        self.faults = replace(self.faults, **merged)  # type: ignore[arg-type]

    def _take(self, name: str) -> bool:
        count: int = getattr(self.faults, name)
        if count <= 0:
            return False
        self.faults = replace(self.faults, **{name: count - 1})  # type: ignore[arg-type]
        return True

    # -- bus events ------------------------------------------------------------------------

    def on_break(self, now: float) -> None:
        """A break on the bus aborts an M measurement that is not finished (§4.4.5.1)."""
        m = self._measurement
        if m is not None and not m.concurrent and not m.aborted and now < m.ready_at:
            m.aborted = True
            m.service_request_at = None

    def power_cycle(self) -> None:
        self._measurement = None

    def service_request_due(self) -> float | None:
        m = self._measurement
        return None if m is None or m.aborted else m.service_request_at

    def service_request(self, now: float) -> bytes | None:
        m = self._measurement
        if m is None or m.service_request_at is None or now < m.service_request_at:
            return None
        m.service_request_at = None
        return self.address.encode() + _CRLF

    def answers_query(self) -> bool:
        return not self.faults.silent

    def handle(self, body: str, now: float, wall: float) -> list[bytes] | None:
        """Lines (without delays) answering ``<address><body>!``; None when it stays silent."""
        self.commands.append((now, body))
        if self.faults.silent or self._take("silent_next"):
            return None
        m = self._measurement
        a = self.address
        lines: list[bytes] | None
        if body == "":
            lines = [a.encode()]
        elif body == "I":
            lines = [self._identity().encode()]
        elif (match := re.fullmatch(r"([MC])(C?)([1-9]?)", body)) is not None:
            lines = [self._start(match, now, wall)]
        elif (match := re.fullmatch(r"D([0-9])", body)) is not None:
            lines = [self._data(int(match.group(1)), now)]
        elif (match := re.fullmatch(r"I([MC])(C?)([1-9]?)", body)) is not None:
            lines = [self._shape(match.group(1) == "C", 0 if match.group(3) else None)]
        elif (match := re.fullmatch(r"I([MC])(C?)([1-9]?)_([0-9]{3})", body)) is not None:
            lines = [self._parameter(match)]
        elif (match := re.fullmatch(r"R(C?)[0-9]", body)) is not None:
            lines = [self._with_crc(a.encode(), bool(match.group(1)))]
        elif (match := re.fullmatch(r"A(.)", body)) is not None and match.group(1) in _ADDRESSES:
            self.address = match.group(1)
            lines = [self.address.encode()]
        else:
            return None  # an invalid command: a sonde stays silent
        if m is not None and m is self._measurement and m.concurrent and now < m.ready_at:
            m.aborted = True  # a valid command to a sonde aborts its concurrent measurement
        if m is not None and m.late_service_request and not m.aborted:
            m.late_service_request = False  # sent after ttt, as the reply is about to go
            lines.insert(0, a.encode())
        if self._take("garbage_next"):
            lines.insert(0, self._garbage())
        return lines

    @property
    def reply_delay_s(self) -> float:
        return self._reply_delay_s + self.faults.slow_s

    # -- commands ------------------------------------------------------------------------

    def _identity(self) -> str:
        m = self.model
        return f"{self.address}{m.sdi12_version}{m.vendor:<8}{m.model:<6}{m.version}{self.serial}"

    def _shape(self, concurrent: bool, count: int | None) -> bytes:
        n = len(self.model.quantities) if count is None else count
        nn = f"{n:02d}" if concurrent else f"{n:d}"
        return f"{self.address}{self.model.ttt_s:03d}{nn}".encode()

    def _start(self, match: re.Match[str], now: float, wall: float) -> bytes:
        concurrent, crc, index = match.group(1) == "C", bool(match.group(2)), match.group(3)
        model = self.model
        if index:  # no additional measurement sets: zero values, as §4.4.9 asks
            self._measurement = _Measurement(concurrent, crc, (), now, None)
            return self._shape(concurrent, 0)
        values = self._take_values(wall)
        sr_at = None
        late = False
        if not concurrent and model.ttt_s >= 1 and not self.faults.no_service_request:
            late = self._take("late_service_request_next")
            sr_at = None if late else now + model.ready_s
        self._measurement = _Measurement(
            concurrent,
            crc,
            tuple(
                _format_value(v, SDI12_QUANTITIES[q].decimals)
                for v, q in zip(values, model.quantities, strict=True)
            ),
            now + model.ready_s,
            sr_at,
            late_service_request=late,
        )
        return self._shape(concurrent, None)

    def _take_values(self, wall: float) -> tuple[float, ...]:
        if self._take("stuck_next") and self._previous is not None:
            values = self._previous
        else:
            state = self.river.sample(wall)
            values = tuple(
                round(SDI12_QUANTITIES[q].read(state), SDI12_QUANTITIES[q].decimals)
                for q in self.model.quantities
            )
        if self._take("spike_next"):
            first = values[0]
            values = (round(first + 50.0 * max(1.0, abs(first)), 2), *values[1:])
        self._previous = values
        self.served.append(values)
        return values

    def _groups(self, m: _Measurement) -> list[str]:
        limit = 75 if m.concurrent else 35
        per = self._values_per_reply or len(m.values) or 1
        groups: list[str] = []
        current = ""
        count = 0
        for value in m.values:
            if current and (len(current) + len(value) > limit or count >= per):
                groups.append(current)
                current, count = "", 0
            current += value
            count += 1
        if current:
            groups.append(current)
        return groups

    def _data(self, index: int, now: float) -> bytes:
        m = self._measurement
        if m is None:
            return self.address.encode()  # nothing measured: an empty reply
        if m.concurrent and now < m.ready_at:
            m.aborted = True  # asked before the announced time: aborted, nothing to send
        groups = [] if m.aborted else self._groups(m)
        text = groups[index] if index < len(groups) else ""
        line = self._with_crc(f"{self.address}{text}".encode(), m.crc)
        if text and self._take("truncate_next"):
            line = line[: max(1, len(line) // 2)]
        return line

    def _with_crc(self, body: bytes, crc: bool) -> bytes:
        if not crc:
            return body
        chars = sdi12_crc(body)
        if self._take("wrong_crc_next"):
            chars = chars[:2] + bytes([0x40 | ((chars[2] + 1) & 0x3F)])
        return body + chars

    def _parameter(self, match: re.Match[str]) -> bytes:
        crc = bool(match.group(2))
        number = int(match.group(4))
        quantities = () if match.group(3) else self.model.quantities
        if not 1 <= number <= len(quantities):
            return self._with_crc(self.address.encode(), crc)
        name = quantities[number - 1]
        body = f"{self.address},{name},{SDI12_QUANTITIES[name].unit};".encode()
        return self._with_crc(body, crc)

    def _garbage(self) -> bytes:
        self._noise += 1
        digest = hashlib.blake2b(
            f"{self._seed}:{self.address}:noise:{self._noise}".encode(), digest_size=24
        ).digest()
        return bytes(b | 0x80 for b in digest[: 4 + digest[0] % 16])


class Sdi12Adapter:
    """A USB SDI-12 adapter as a pure state machine (see the module docstring).

    Args:
        sondes: the sondes on its bus, at distinct addresses.
        address: the adapter's own SDI-12 address (Dr. Liu's answers at ``z``).
        echo: repeat each command before its reply.
    """

    def __init__(
        self,
        sondes: Iterable[Sonde],
        *,
        address: str = "z",
        echo: bool = False,
        identity: str = "14RIVERSIMSDIUSB100",
    ) -> None:
        self.sondes = list(sondes)
        addresses = [s.address for s in self.sondes] + [address]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"two devices share an address: {addresses}")
        self.address = address
        self.echo = echo
        self._identity = identity
        self._buffer = bytearray()
        self.commands: list[bytes] = []
        """Every command the adapter put on the bus, in order."""

    def sonde(self, address: str) -> Sonde:
        for s in self.sondes:
            if s.address == address:
                return s
        raise KeyError(address)

    def receive(self, data: bytes, now: float, wall: float | None = None) -> list[Reply]:
        """Bytes from the host; ``now`` schedules, ``wall`` (default ``now``) samples the river."""
        replies: list[Reply] = []
        for byte in data:
            if byte in _CRLF:
                continue
            self._buffer.append(byte)
            if byte == ord("!"):
                command = bytes(self._buffer)
                self._buffer.clear()
                replies += self._command(command, now, now if wall is None else wall)
            elif len(self._buffer) > _MAX_COMMAND:
                self._buffer.clear()
        return replies

    def next_deadline(self) -> float | None:
        """When the next service request is due, if any."""
        due = [t for s in self.sondes if (t := s.service_request_due()) is not None]
        return min(due) if due else None

    def service_requests(self, now: float) -> list[Reply]:
        lines = [line for s in self.sondes if (line := s.service_request(now)) is not None]
        return [Reply(0.0, line) for line in lines]

    def power_cycle(self) -> None:
        """Unplugged: the bus loses power, measurements in progress are gone."""
        self._buffer.clear()
        for s in self.sondes:
            s.power_cycle()

    def _command(self, command: bytes, now: float, wall: float) -> list[Reply]:
        self.commands.append(command)
        for s in self.sondes:
            s.on_break(now)
        text = command.decode("ascii", errors="replace")
        target, body = text[0], text[1:-1]
        lines: list[bytes] | None = None
        delay = 0.02
        if text == "?!":
            answering = [s for s in self.sondes if s.answers_query()]
            if len(answering) == 1:
                lines = [answering[0].address.encode()]
                delay = answering[0].reply_delay_s
            elif answering:
                lines = [self._contention(answering)]
        elif target == self.address:
            lines = self._own(body)
        else:
            for s in self.sondes:
                if s.address == target:
                    lines = s.handle(body, now, wall)
                    delay = s.reply_delay_s
                    break
        if not lines:
            return []
        echo = command if self.echo else b""
        out = [Reply(delay, echo + lines[0] + _CRLF)]
        out += [Reply(0.0, line + _CRLF) for line in lines[1:]]
        return out

    def _own(self, body: str) -> list[bytes] | None:
        if body == "":
            return [self.address.encode()]
        if body == "I":
            return [f"{self.address}{self._identity}".encode()]
        return None

    @staticmethod
    def _contention(sondes: Sequence[Sonde]) -> bytes:
        """Several sondes driving the line at once: their bits AND together (marking wins)."""
        merged = 0x7F
        for s in sondes:
            merged &= ord(s.address)
        return bytes([merged | 0x80, 0xFF])


class Sdi12PtyAdapter(PtyDevice):
    """An ``Sdi12Adapter`` on a pty; ``link_path`` plays ``/dev/serial/by-id/...``.

    ``clock`` gives the Unix time used to sample the river (tests pin it);
    scheduling uses the event loop's clock.
    """

    def __init__(
        self,
        adapter: Sdi12Adapter,
        link_path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(link_path)
        self.adapter = adapter
        self._clock = clock
        self._wake = asyncio.Event()

    @classmethod
    def with_sondes(
        cls,
        link_path: Path | None,
        specs: Sequence[str],
        river: RiverModel,
        *,
        seed: int = 0,
        echo: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> Sdi12PtyAdapter:
        """An adapter with one sonde per ``ADDRESS[:MODEL]`` spec (model default ``multi``)."""
        sondes = [
            Sonde(address, model, river, seed=seed)
            for address, model in (parse_sonde_spec(spec) for spec in specs)
        ]
        return cls(Sdi12Adapter(sondes, echo=echo), link_path, clock=clock)

    def sonde(self, address: str) -> Sonde:
        return self.adapter.sonde(address)

    def _loops(self) -> Mapping[str, Loop]:
        return {"service-requests": self._service_request_loop}

    def _unplugged(self) -> None:
        """The USB plug was pulled: the port vanished and the bus lost power."""
        self.adapter.power_cycle()

    def on_data(self, data: bytes) -> list[Reply]:
        replies = self.adapter.receive(data, asyncio.get_running_loop().time(), self._clock())
        self._wake.set()
        return replies

    async def _service_request_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            deadline = self.adapter.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self.write(self.adapter.service_requests(loop.time()))


def parse_sonde_spec(spec: str) -> tuple[str, str]:
    """``"1:ctd"`` → ``("1", "ctd")``; ``"0"`` → ``("0", "multi")``."""
    address, _, model = spec.partition(":")
    model = model or "multi"
    if len(address) != 1 or address not in _ADDRESSES:
        raise ValueError(f"sonde {spec!r}: {address!r} is not an SDI-12 address (0-9, A-Z, a-z)")
    if model not in SONDE_MODELS:
        raise ValueError(f"sonde {spec!r}: model {model!r} is not one of {sorted(SONDE_MODELS)}")
    return address, model

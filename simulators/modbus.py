"""Simulated Modbus RTU probes: several slaves on one RS-485 bus, over real ptys.

Each slave is described by a register profile, the same TOML file the
gateway reads (``gateway/drivers/modbus/profiles/*.toml`` or a technician's own),
read here by a small independent reader and encoder: the simulator never
imports the gateway, so its encoding cross-checks the gateway's codec.
Values come from a river model (``WaterSource.sample(t)``).

How the bus is built (pymodbus 3.16.1): pymodbus's ``ModbusSerialServer``
needs a serial device, so it opens the slave end of one pty pair (the
"server side"), and the gateway opens the slave end of a second pair (the
"bus side", behind a stable symlink; the bus is a ``PtyDevice``). Both pairs
are ``PtyLink`` pairs of ``simulators.pty_device``. An in-process bridge joins
the two masters. It cuts the traffic into RTU frames, which is where
wire-level faults are injected: a request to a silent or unknown slave is
dropped (the server would otherwise answer for unknown ids with exception 4),
and a reply can be delayed, have its CRC broken or be replaced by noise.
Register-level faults (exception codes, stuck values, spikes, sentinels)
live in the ``SimDevice`` action that refreshes a slave's registers from the
river on every read. socat is not needed.

pymodbus (and with it pyserial) is imported only when a bus starts, so
``import simulators`` stays light.
"""

from __future__ import annotations

import importlib.util
import math
import random
import struct
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.pty_device import PtyDevice, PtyLink, Reply
from simulators.river import RiverState, WaterSource

__all__ = [
    "ModbusFaults",
    "ModbusSimBus",
    "SimProfile",
    "SimSlave",
    "SimValue",
    "encode_words",
    "load_sim_profile",
    "river_value",
]

_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_PACK = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
_DECIMALS = 2  # what a simulated decimal-places register holds


# -- profiles, read independently of the gateway ------------------------------------------


@dataclass(frozen=True)
class SimValue:
    """One value of a profile, as far as the simulator needs it."""

    quantity: str
    address: int
    function: int
    type: str
    byte_order: str = "big"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    decimals_register: int | None = None
    missing: tuple[int, ...] = ()
    status_register: int | None = None
    status_bad: tuple[int, ...] = ()


@dataclass(frozen=True)
class SimProfile:
    name: str
    model: str
    values: tuple[SimValue, ...]
    baudrate: int = 9600
    parity: str = "N"
    slave: int = 1
    identify: tuple[tuple[int, int, int], ...] = ()
    """(function, address, value) of identifying registers."""
    writable: tuple[int, ...] = ()
    """Holding registers that setup writes address."""


def _shipped_dir() -> Path | None:
    """The gateway's profile folder, found without importing the gateway."""
    spec = importlib.util.find_spec("gateway")
    if spec is None or not spec.submodule_search_locations:
        return None
    gateway = Path(next(iter(spec.submodule_search_locations)))
    return gateway / "drivers" / "modbus" / "profiles"


def load_sim_profile(ref: str | Path) -> SimProfile:
    """A profile by file path or by the name of a profile shipped with the gateway.

    Raises:
        ValueError: no such profile, or a file the simulator cannot use.
    """
    path = Path(ref)
    if not str(ref).endswith(".toml") and "/" not in str(ref):
        folder = _shipped_dir()
        if folder is None:
            raise ValueError(f"{ref!r}: no gateway installed to take shipped profiles from")
        path = folder / f"{ref}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    try:
        return _profile(data, path.stem)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a usable profile ({exc!r})") from exc


def _profile(data: Mapping[str, Any], name: str) -> SimProfile:
    fc = int(data.get("function", 3))
    byte_order = str(data.get("byte_order", "big"))
    word_order = str(data.get("word_order", "big"))
    values = []
    for v in data["value"]:
        status = v.get("status_register")
        decimals = v.get("decimals_register")
        values.append(
            SimValue(
                quantity=str(v["quantity"]),
                address=int(v["address"]),
                function=int(v.get("function", fc)),
                type=str(v["type"]),
                byte_order=str(v.get("byte_order", byte_order)),
                word_order=str(v.get("word_order", word_order)),
                scale=float(v.get("scale", 1.0)),
                offset=float(v.get("offset", 0.0)),
                decimals_register=None if decimals is None else int(decimals),
                missing=tuple(int(m) for m in v.get("missing", ())),
                status_register=None if status is None else int(status),
                status_bad=tuple(int(b) for b in v.get("status_bad", ())),
            )
        )
    serial = data.get("serial", {})
    identify = tuple(
        (int(i.get("function", fc)), int(i["address"]), int(i["equals"]))
        for i in data.get("identify", ())
    )
    writable = tuple(
        int(s["address"]) + k
        for s in data.get("setup", ())
        for k in range(len(s.get("values", [0])))
    )
    return SimProfile(
        name=name,
        model=str(data["model"]),
        values=tuple(values),
        baudrate=int(serial.get("baudrate", 9600)),
        parity=str(serial.get("parity", "N")),
        slave=int(serial.get("slave", 1)),
        identify=identify,
        writable=writable,
    )


def encode_words(v: SimValue, value: float) -> list[int]:
    """The register words a device stores for ``value`` (scaled, ordered, clamped to the type).

    Written apart from the gateway's codec on purpose: the two must agree.
    """
    number = (value - v.offset) / v.scale
    if v.decimals_register is not None:
        number *= 10**_DECIMALS
    if v.type == "float32":
        data = struct.pack(">f", number)
    else:
        bits = 16 * _WIDTH[v.type]
        signed = v.type.startswith("int")
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        data = struct.pack(_PACK[v.type], min(high, max(low, round(number))))
    return _order(data, v)


def _pattern_words(v: SimValue, pattern: int) -> list[int]:
    """Words for a raw sentinel (a bit pattern for float32, a number otherwise)."""
    if v.type == "float32" or not v.type.startswith("int"):
        data = (pattern & (2 ** (16 * _WIDTH[v.type]) - 1)).to_bytes(2 * _WIDTH[v.type], "big")
    else:
        data = struct.pack(_PACK[v.type], pattern)
    return _order(data, v)


def _order(data: bytes, v: SimValue) -> list[int]:
    pairs = [data[i : i + 2] for i in range(0, len(data), 2)]
    if v.byte_order == "little":
        pairs = [p[::-1] for p in pairs]
    if v.word_order == "little":
        pairs.reverse()
    return [int.from_bytes(p, "big") for p in pairs]


_SOURCES: dict[str, Callable[[RiverState], float]] = {
    "temperature": lambda s: s.temperature_c,
    "ph": lambda s: s.ph,
    "ph_mv": lambda s: (7.0 - s.ph) * 59.16,
    "do": lambda s: s.do_mg_l,
    "do_sat": lambda s: s.do_sat_pct,
    "ec": lambda s: s.ec_us_cm,
    "specific_conductance": lambda s: s.ec_us_cm,
    "tds": lambda s: 0.65 * s.ec_us_cm,
    "salinity": lambda s: 0.55 * s.ec_us_cm,
    "orp": lambda s: s.orp_mv,
    "turbidity": lambda s: s.turbidity_ntu,
    "nh4_n": lambda s: float(getattr(s, "nh4_mg_l", 0.1)),
    "chlorophyll": lambda s: float(getattr(s, "chlorophyll_ug_l", 5.0)),
    "depth": lambda s: float(getattr(s, "depth_m", 1.0)),
}
_UNKNOWN_VALUE = 1.0


def river_value(quantity: str, state: RiverState) -> float:
    """What a probe of ``quantity`` reads in ``state``; unknown quantities read 1.0."""
    source = _SOURCES.get(quantity)
    return source(state) if source is not None else _UNKNOWN_VALUE


# -- one slave --------------------------------------------------------------------------------


@dataclass
class ModbusFaults:
    """Faults of one slave; change them while the bus runs.

    silent: requests to the slave are lost (no reply) until cleared.
    exception: every read is answered with this Modbus exception code.
    bad_crc_every / garbage_every: every Nth reply has its CRC broken /
        is replaced by noise of the same length (0: never).
    delay_s: every reply is sent this late (a slow device).
    stuck: values stop following the river (the last served words stay).
    spike_every: every Nth read serves ``spike_factor`` × the true values.
    unavailable: values read as their profile's sentinel (NaN, status).
    """

    silent: bool = False
    exception: int | None = None
    bad_crc_every: int = 0
    garbage_every: int = 0
    delay_s: float = 0.0
    stuck: bool = False
    spike_every: int = 0
    spike_factor: float = 10.0
    unavailable: bool = False


@dataclass
class SimSlave:
    """One simulated probe on the bus.

    ``served`` lists, per read, (Unix time, quantity → value the registers
    encode), so a test can compare what the gateway logged with what was served.
    """

    slave: int
    profile: SimProfile
    water: WaterSource
    clock: Callable[[], float] = time.time
    faults: ModbusFaults = field(default_factory=ModbusFaults)
    served: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    writes: list[tuple[int, list[int]]] = field(default_factory=list)
    """(address, values) of every register write received."""
    reads: int = 0
    replies: int = 0

    def registers(self, t: float) -> tuple[dict[tuple[int, int], int], dict[str, float]]:
        """(function, address) → word for every value at time ``t``, and the values."""
        state = self.water.sample(t)
        spike = bool(self.faults.spike_every) and (self.reads % self.faults.spike_every == 0)
        words: dict[tuple[int, int], int] = {}
        shown: dict[str, float] = {}
        for v in self.profile.values:
            value = river_value(v.quantity, state)
            if spike:
                value *= self.faults.spike_factor
            encoded = encode_words(v, value)
            if self.faults.unavailable:
                if v.missing:
                    encoded = _pattern_words(v, v.missing[0])
                elif v.type == "float32":
                    encoded = _order(struct.pack(">f", math.nan), v)
            else:
                shown[v.quantity] = value
            for i, w in enumerate(encoded):
                words[(v.function, v.address + i)] = w
            if v.decimals_register is not None:
                words[(v.function, v.decimals_register)] = _DECIMALS
            if v.status_register is not None:
                bad = self.faults.unavailable and v.status_bad
                words[(v.function, v.status_register)] = v.status_bad[0] if bad else 0
        for function, address, equals in self.profile.identify:
            words[(function, address)] = equals
        return words, shown

    def device(self) -> Any:
        """A pymodbus ``SimDevice`` serving this slave's registers, refreshed on each read."""
        from pymodbus.simulator import DataType, SimData, SimDevice

        words, _ = self.registers(self.clock())
        blocks: dict[int, list[Any]] = {3: [], 4: []}
        for function in (3, 4):
            addresses = sorted(a for f, a in words if f == function)
            if function == 3:
                addresses = sorted(set(addresses) | set(self.profile.writable))
            if addresses:
                # One span from the lowest to the highest address, so reads across
                # unused registers (a profile's max_gap) succeed, as on the devices.
                first, last = addresses[0], addresses[-1]
                blocks[function].append(
                    SimData(first, count=last - first + 1, values=0, datatype=DataType.REGISTERS)
                )
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        hr = blocks[3] or [SimData(0, values=0, datatype=DataType.REGISTERS)]
        ir = blocks[4] or [SimData(0, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(self.slave, simdata=(bits, list(bits), hr, ir), action=self._action)

    async def _action(
        self,
        function: int,
        start: int,
        address: int,
        count: int,
        current: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> Any:
        from pymodbus.constants import ExcCodes

        if set_values is not None:
            self.writes.append((address, [int(v) for v in set_values]))
            return None
        self.reads += 1
        if self.faults.exception is not None:
            return ExcCodes(self.faults.exception)
        if self.faults.stuck and self.served:
            return None  # the registers keep their last words
        t = self.clock()
        words, shown = self.registers(t)
        fc = 3 if function in (3, 6, 16) else 4
        for (f, a), w in words.items():
            if f == fc and 0 <= a - start < len(current):
                current[a - start] = w
        self.served.append((t, shown))
        return None


# -- the bus ----------------------------------------------------------------------------------


_REQUEST_SIZE = {1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 8}


def _request_size(buffer: bytes) -> int | None:
    """Length of the request frame at the start of ``buffer``; None if unknown yet."""
    if len(buffer) < 2:
        return None
    fc = buffer[1]
    if fc in _REQUEST_SIZE:
        return _REQUEST_SIZE[fc]
    if fc in (15, 16):
        return 9 + buffer[6] if len(buffer) >= 7 else None
    return len(buffer)  # a function we do not frame: pass it on whole


def _reply_size(buffer: bytes) -> int | None:
    if len(buffer) < 3:
        return None
    fc = buffer[1]
    if fc & 0x80:
        return 5
    if fc in (1, 2, 3, 4):
        return 5 + buffer[2]
    if fc in (5, 6, 15, 16):
        return 8
    return len(buffer)


class ModbusSimBus(PtyDevice):
    """Several simulated slaves on one bus, reachable at ``link_path`` (or ``device_path``).

    ``async with ModbusSimBus(slaves, link_path) as bus:`` starts pymodbus's
    serial server and the bridge; ``bus.unplug()``/``bus.replug()`` pull and
    reinsert the "USB adapter" (the symlink moves to a new pty); faults are
    set per slave with ``bus.slave(n).faults``.
    """

    def __init__(
        self,
        slaves: Iterable[SimSlave],
        link_path: Path | None = None,
        *,
        baudrate: int = 9600,
        parity: str = "N",
        seed: int = 0,
    ) -> None:
        super().__init__(link_path)
        self._slaves = {s.slave: s for s in slaves}
        if not self._slaves:
            raise ValueError("a bus needs at least one slave")
        self._baudrate = baudrate
        self._parity = parity
        self._rng = random.Random(seed)  # noqa: S311  # noise bytes, not secrets
        self._server: Any = None
        self._server_side: PtyLink | None = None
        """The pair whose slave end pymodbus's server opens; the bridge holds its master."""
        self._request = b""
        self._reply = b""
        self._pending: int | None = None  # slave id the server is answering
        self.dropped = 0
        """Requests lost on the bus (to a silent or absent slave)."""

    def slave(self, slave_id: int) -> SimSlave:
        return self._slaves[slave_id]

    @property
    def slaves(self) -> Sequence[SimSlave]:
        return list(self._slaves.values())

    async def _open(self) -> None:
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusSerialServer

        side = PtyLink(self._from_server)
        self._server_side = await side.__aenter__()
        self._server = ModbusSerialServer(
            [s.device() for s in self._slaves.values()],
            framer=FramerType.RTU,
            port=side.device_path,
            baudrate=self._baudrate,
            parity=self._parity,
            ignore_missing_devices=True,
        )
        await self._server.serve_forever(background=True)

    async def _close(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._server_side is not None:
            await self._server_side.__aexit__(None, None, None)
            self._server_side = None

    def _unplugged(self) -> None:
        """The adapter was pulled: the client's port failed, the symlink disappeared."""
        self._request = b""
        self._pending = None

    # -- the bridge ------------------------------------------------------------------------

    def on_data(self, data: bytes) -> list[Reply]:
        self._request += data
        while (size := _request_size(self._request)) is not None and len(self._request) >= size:
            frame, self._request = self._request[:size], self._request[size:]
            self._forward(frame)
        return []  # replies come from the server, asynchronously

    def _forward(self, frame: bytes) -> None:
        slave = self._slaves.get(frame[0])
        if slave is None or slave.faults.silent:
            self.dropped += 1
            return
        self._pending = frame[0]
        assert self._server_side is not None
        self._server_side.write([Reply(0.0, frame)])

    def _from_server(self, data: bytes) -> list[Reply]:
        self._reply += data
        while (size := _reply_size(self._reply)) is not None and len(self._reply) >= size:
            frame, self._reply = self._reply[:size], self._reply[size:]
            self._reply_frame(frame)
        return []  # the server's replies go to the client side, through the bridge

    def _reply_frame(self, frame: bytes) -> None:
        slave = self._slaves.get(frame[0]) if self._pending == frame[0] else None
        self._pending = None
        if slave is None or slave.faults.silent:
            return
        slave.replies += 1
        faults = slave.faults
        if faults.garbage_every and slave.replies % faults.garbage_every == 0:
            frame = bytes(self._rng.randrange(256) for _ in frame)
        elif faults.bad_crc_every and slave.replies % faults.bad_crc_every == 0:
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        self.write([Reply(faults.delay_s, frame)])

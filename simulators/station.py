"""A whole simulated station from one TOML file: EZO circuits, Modbus buses,
SDI-12 adapters and MQTT nodes, all reading one river.

Each serial device gets a stable symlink ``<links>/<name>`` (the part
``/dev/serial/by-id/...`` plays on a real box), so a gateway configuration can
name it before the station starts. ``Station.gateway_sensors()`` writes the
``[[sensor]]`` tables a gateway needs to read exactly this station.

    [station]
    seed = 7                          # river and fault seed
    links = "/tmp/riverseal-station"  # folder for the symlinks
    mqtt_host = "127.0.0.1"           # broker for [[mqtt]] nodes
    mqtt_port = 1883
    storms_per_week = 1.0             # seeded storm events (turbidity spike, EC dip)

    [[ezo]]
    name = "ph-1"                     # symlink name and gateway sensor id
    circuit = "ph"                    # ph, do, ec, orp, rtd
    site = "upstream"                 # optional: EZO temperature compensation group

    [[modbus]]
    name = "rs485-1"                  # one bus, one symlink
    slaves = [{ id = "odo-1", slave = 1, profile = "ysi-odo-rtu" }]

    [[sdi12]]
    name = "sdi12-1"                  # one adapter, one symlink
    sondes = [{ id = "sonde-0", address = "0", model = "multi" }]

    [[mqtt]]
    id = "node-1"
    topic = "river/node-1"
    format = "senml"                  # or "json"
    quantities = ["temperature", "turbidity"]
    interval_s = 1.0

Intervals: ``interval_s`` on any device is what the generated gateway
config polls at (default 2 s for serial, 1 s for MQTT).
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, get_args

from simulators.ezo import EzoKind
from simulators.ezo_pty import EzoPtyDevice
from simulators.modbus import ModbusSimBus, SimSlave, load_sim_profile
from simulators.mqtt_node import QUANTITIES, MqttNode
from simulators.river import RiverModel
from simulators.sdi12 import SDI12_QUANTITIES, SONDE_MODELS, Sdi12Adapter, Sdi12PtyAdapter, Sonde

__all__ = ["Station", "StationConfigError", "StationSpec", "load_station", "parse_station"]

_SERIAL_INTERVAL_S = 2.0
_CIRCUITS = get_args(EzoKind)
_MQTT_INTERVAL_S = 1.0
_PTY_PARITY = "N"
"""Linux ptys refuse PARENB (tcsetattr EINVAL), so simulated buses run 8N1
whatever the profile says; the generated gateway config says so too."""


class StationConfigError(ValueError):
    """The station file is wrong; the message names the key."""


@dataclass(frozen=True)
class EzoSpec:
    name: str
    circuit: str
    site: str | None = None
    interval_s: float = _SERIAL_INTERVAL_S


@dataclass(frozen=True)
class SlaveSpec:
    id: str
    slave: int
    profile: str
    interval_s: float = _SERIAL_INTERVAL_S


@dataclass(frozen=True)
class ModbusSpec:
    name: str
    slaves: tuple[SlaveSpec, ...]


@dataclass(frozen=True)
class SondeSpec:
    id: str
    address: str
    model: str
    interval_s: float = _SERIAL_INTERVAL_S


@dataclass(frozen=True)
class Sdi12Spec:
    name: str
    sondes: tuple[SondeSpec, ...]


@dataclass(frozen=True)
class MqttSpec:
    id: str
    topic: str
    quantities: tuple[str, ...]
    interval_s: float = _MQTT_INTERVAL_S
    format: str = "json"


@dataclass(frozen=True)
class StationSpec:
    links: Path
    seed: int = 0
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    storms_per_week: float = 0.0
    ezo: tuple[EzoSpec, ...] = ()
    modbus: tuple[ModbusSpec, ...] = ()
    sdi12: tuple[Sdi12Spec, ...] = ()
    mqtt: tuple[MqttSpec, ...] = ()

    def sensor_ids(self) -> list[str]:
        ids = [e.name for e in self.ezo]
        ids += [s.id for bus in self.modbus for s in bus.slaves]
        ids += [s.id for a in self.sdi12 for s in a.sondes]
        ids += [m.id for m in self.mqtt]
        return ids


# --- parsing ---------------------------------------------------------------------------


def _get(t: Mapping[str, Any], key: str, typ: type, where: str, default: Any = None) -> Any:
    if key not in t:
        if default is None:
            raise StationConfigError(f"{where}.{key} is required but missing")
        return default
    value = t[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise StationConfigError(f"{where}.{key} must be {typ.__name__}, got {value!r}")
    return value


def _tables(
    t: Mapping[str, Any], key: str, where: str, keys: set[str]
) -> list[tuple[str, Mapping[str, Any]]]:
    """The array of tables ``t[key]`` (empty when absent), each with only ``keys``."""
    raw = t.get(key, [])
    at = f"{where}.{key}" if where else key
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise StationConfigError(f"{at} must be an array of tables")
    out = [(f"{at}[{i}]", item) for i, item in enumerate(raw)]
    for w, item in out:
        _known(item, w, keys)
    return out


def _members(t: Mapping[str, Any], key: str, where: str, keys: set[str]) -> list[tuple[str, Any]]:
    """A device's non-empty list of members (slaves on a bus, sondes on an adapter)."""
    _get(t, key, list, where)
    out = _tables(t, key, where, keys)
    if not out:
        raise StationConfigError(f"{where}.{key} is empty")
    return out


def _choice(
    t: Mapping[str, Any],
    key: str,
    where: str,
    allowed: Any,
    default: Any = None,
    *,
    fold: bool = False,
) -> Any:
    """A string setting that must be one of ``allowed`` (``fold``: in any case)."""
    value = _get(t, key, str, where, default)
    value = value.lower() if fold else value
    if value not in allowed:
        raise StationConfigError(f"{where}.{key} {value!r} is not one of {allowed}")
    return value


def _known(t: Mapping[str, Any], where: str, keys: set[str]) -> None:
    unknown = sorted(set(t) - keys)
    if unknown:
        raise StationConfigError(f"{where}.{unknown[0]} is not a known setting")


def _unique(names: list[str], what: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StationConfigError(f"{what} used twice: {', '.join(dupes)}")


def parse_station(text: str, base: Path) -> StationSpec:
    """Parse a station file; a relative ``links`` folder is taken from ``base``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StationConfigError(f"not valid TOML: {exc}") from exc
    _known(doc, "station file", {"station", "ezo", "modbus", "sdi12", "mqtt"})
    st = doc.get("station", {})
    if not isinstance(st, dict):
        raise StationConfigError("[station] must be a table")
    _known(st, "station", {"seed", "links", "mqtt_host", "mqtt_port", "storms_per_week"})
    serial = _SERIAL_INTERVAL_S
    ezo = tuple(
        EzoSpec(
            _get(t, "name", str, w),
            _choice(t, "circuit", w, _CIRCUITS, fold=True),
            t.get("site"),
            _get(t, "interval_s", float, w, serial),
        )
        for w, t in _tables(doc, "ezo", "", {"name", "circuit", "site", "interval_s"})
    )
    buses = tuple(
        ModbusSpec(
            _get(t, "name", str, w),
            tuple(
                SlaveSpec(
                    _get(s, "id", str, ws),
                    _get(s, "slave", int, ws),
                    _get(s, "profile", str, ws),
                    _get(s, "interval_s", float, ws, serial),
                )
                for ws, s in _members(t, "slaves", w, {"id", "slave", "profile", "interval_s"})
            ),
        )
        for w, t in _tables(doc, "modbus", "", {"name", "slaves"})
    )
    adapters = tuple(
        Sdi12Spec(
            _get(t, "name", str, w),
            tuple(
                SondeSpec(
                    _get(s, "id", str, ws),
                    _get(s, "address", str, ws),
                    _choice(s, "model", ws, sorted(SONDE_MODELS), "multi"),
                    _get(s, "interval_s", float, ws, serial),
                )
                for ws, s in _members(t, "sondes", w, {"id", "address", "model", "interval_s"})
            ),
        )
        for w, t in _tables(doc, "sdi12", "", {"name", "sondes"})
    )
    nodes = []
    for w, t in _tables(doc, "mqtt", "", {"id", "topic", "quantities", "interval_s", "format"}):
        fmt = _choice(t, "format", w, ("json", "senml"), "json")
        quantities = tuple(_get(t, "quantities", list, w, list(QUANTITIES)))
        if not quantities or any(q not in QUANTITIES for q in quantities):
            raise StationConfigError(f"{w}.quantities must be a subset of {sorted(QUANTITIES)}")
        nodes.append(
            MqttSpec(
                _get(t, "id", str, w),
                _get(t, "topic", str, w),
                quantities,
                _get(t, "interval_s", float, w, _MQTT_INTERVAL_S),
                fmt,
            )
        )
    spec = StationSpec(
        links=(base / _get(st, "links", str, "station", "links")).absolute(),
        seed=_get(st, "seed", int, "station", 0),
        mqtt_host=_get(st, "mqtt_host", str, "station", "127.0.0.1"),
        mqtt_port=_get(st, "mqtt_port", int, "station", 1883),
        storms_per_week=_get(st, "storms_per_week", float, "station", 0.0),
        ezo=ezo,
        modbus=buses,
        sdi12=adapters,
        mqtt=tuple(nodes),
    )
    _unique(spec.sensor_ids(), "sensor id(s)")
    names = [e.name for e in spec.ezo] + [b.name for b in spec.modbus]
    _unique(names + [a.name for a in spec.sdi12], "device name(s)")
    return spec


def load_station(path: Path) -> StationSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StationConfigError(f"{path}: {exc.strerror or exc}") from exc
    return parse_station(text, path.parent)


# --- running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """One line of ``sensor-sim station``'s table."""

    sensor: str
    kind: str
    where: str
    """The symlink (serial) or topic (MQTT)."""
    detail: str


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Station:
    """``async with Station(spec) as st:`` runs every device until the block ends."""

    spec: StationSpec
    river: RiverModel = field(init=False)
    ezo: dict[str, EzoPtyDevice] = field(default_factory=dict, init=False)
    buses: dict[str, ModbusSimBus] = field(default_factory=dict, init=False)
    adapters: dict[str, Sdi12PtyAdapter] = field(default_factory=dict, init=False)
    nodes: dict[str, MqttNode] = field(default_factory=dict, init=False)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.river = RiverModel(self.spec.seed, storms_per_week=self.spec.storms_per_week)

    async def __aenter__(self) -> Self:
        spec = self.spec
        spec.links.mkdir(parents=True, exist_ok=True)
        await self._stack.__aenter__()
        try:
            for i, e in enumerate(spec.ezo):
                dev = EzoPtyDevice.for_river(
                    e.circuit,  # type: ignore[arg-type]  # checked against EzoKind on parse
                    spec.links / e.name,
                    seed=spec.seed + i,
                    river=self.river,
                )
                self.ezo[e.name] = await self._stack.enter_async_context(dev)
            for bus in spec.modbus:
                slaves = [
                    SimSlave(s.slave, load_sim_profile(s.profile), self.river) for s in bus.slaves
                ]
                sim = ModbusSimBus(
                    slaves,
                    spec.links / bus.name,
                    baudrate=_bus_baudrate(bus),
                    parity=_PTY_PARITY,
                    seed=spec.seed,
                )
                self.buses[bus.name] = await self._stack.enter_async_context(sim)
            for a in spec.sdi12:
                sondes = [Sonde(s.address, s.model, self.river, seed=spec.seed) for s in a.sondes]
                adapter = Sdi12PtyAdapter(Sdi12Adapter(sondes), spec.links / a.name)
                self.adapters[a.name] = await self._stack.enter_async_context(adapter)
            for i, m in enumerate(spec.mqtt):
                node = MqttNode(
                    spec.mqtt_host,
                    spec.mqtt_port,
                    m.topic,
                    m.quantities,
                    self.river,
                    interval_s=m.interval_s,
                    node_id=f"sim-{m.id}",
                    seed=spec.seed + i,
                    format=m.format,  # type: ignore[arg-type]  # checked on parse
                )
                self.nodes[m.id] = node
                self._tasks.append(
                    asyncio.get_running_loop().create_task(node.run(), name=f"station.mqtt[{m.id}]")
                )
        except BaseException:
            await self._stop_nodes()
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_nodes()
        await self._stack.aclose()

    async def _stop_nodes(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def devices(self) -> list[DeviceInfo]:
        spec = self.spec
        out = [
            DeviceInfo(e.name, f"ezo/{e.circuit}", str(spec.links / e.name), "Atlas EZO circuit")
            for e in spec.ezo
        ]
        for bus in spec.modbus:
            for s in bus.slaves:
                out.append(
                    DeviceInfo(
                        s.id, "modbus", str(spec.links / bus.name), f"slave {s.slave}, {s.profile}"
                    )
                )
        for a in spec.sdi12:
            for so in a.sondes:
                out.append(
                    DeviceInfo(
                        so.id,
                        "sdi12",
                        str(spec.links / a.name),
                        f"address {so.address}, {so.model}",
                    )
                )
        for m in spec.mqtt:
            broker = f"{spec.mqtt_host}:{spec.mqtt_port}"
            out.append(DeviceInfo(m.id, "mqtt", m.topic, f"broker {broker}"))
        return out

    def gateway_sensors(self) -> str:
        """``[[sensor]]`` tables for a gateway reading this station (and its ``[mqtt]``)."""
        spec = self.spec
        parts: list[str] = []
        for e in spec.ezo:
            site = f"site = {_q(e.site)}\n" if e.site else ""
            parts.append(
                f'[[sensor]]\nid = {_q(e.name)}\ndriver = "ezo"\ncircuit = {_q(e.circuit)}\n'
                f"port = {_q(str(spec.links / e.name))}\ninterval_s = {e.interval_s}\n{site}"
            )
        for bus in spec.modbus:
            baud = _bus_baudrate(bus)
            for s in bus.slaves:
                parts.append(
                    f'[[sensor]]\nid = {_q(s.id)}\ndriver = "modbus"\n'
                    f"port = {_q(str(spec.links / bus.name))}\nslave = {s.slave}\n"
                    f"profile = {_q(s.profile)}\ninterval_s = {s.interval_s}\n"
                    f"baudrate = {baud}  # one bus, one speed\n"
                    f"parity = {_q(_PTY_PARITY)}  # a pty refuses parity bits; a real bus uses"
                    " the profile's\n"
                )
        for a in spec.sdi12:
            for so in a.sondes:
                model = SONDE_MODELS[so.model]
                pairs = ", ".join(
                    f"[{_q(q)}, {_q(SDI12_QUANTITIES[q].unit)}]" for q in model.quantities
                )
                parts.append(
                    f'[[sensor]]\nid = {_q(so.id)}\ndriver = "sdi12"\n'
                    f"port = {_q(str(spec.links / a.name))}\naddress = {_q(so.address)}\n"
                    f"quantities = [{pairs}]\ninterval_s = {so.interval_s}\n"
                )
        for m in spec.mqtt:
            parts.append(
                f'[[sensor]]\nid = {_q(m.id)}\ndriver = "mqtt"\ntopic = {_q(m.topic)}\n'
                f"format = {_q(m.format)}\ninterval_s = {m.interval_s}\n"
            )
        head = ""
        if spec.mqtt:
            head = f"[mqtt]\nhost = {_q(spec.mqtt_host)}\nport = {spec.mqtt_port}\n\n"
        return head + "\n".join(parts)


def _bus_baudrate(bus: ModbusSpec) -> int:
    """A bus runs at one speed: its first slave's factory setting."""
    return load_sim_profile(bus.slaves[0].profile).baudrate


def table(devices: Sequence[DeviceInfo]) -> str:
    width = max((len(d.sensor) for d in devices), default=6)
    lines = [f"{'sensor':<{width}}  {'kind':<8}  where / detail"]
    lines += [f"{d.sensor:<{width}}  {d.kind:<8}  {d.where}  ({d.detail})" for d in devices]
    return "\n".join(lines)

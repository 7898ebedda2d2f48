"""Gateway configuration: a TOML file read into frozen dataclasses.

Every key is checked: a missing required key, a value of the wrong type or
range, or an unknown key (usually a typo) refuses the start with a
ConfigError that names the file, the key and the problem. Limits are
documented defaults here, not magic numbers elsewhere.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from .errors import ConfigError

__all__ = [
    "EZO_BAUD_RATES",
    "AnchorConfig",
    "EzoSensorConfig",
    "GatewayConfig",
    "LogConfig",
    "MqttConfig",
    "MqttSensorConfig",
    "SensorConfig",
    "load_config",
    "parse_config",
]

EZO_BAUD_RATES = (300, 1200, 2400, 9600, 19200, 38400, 57600, 115200)
EZO_CIRCUITS = ("ph", "do", "ec", "orp", "rtd")


@dataclass(frozen=True)
class LogConfig:
    checkpoint_every_entries: int = 1000
    """Sign a checkpoint after this many new entries..."""
    checkpoint_every_seconds: float = 60.0
    """...or after this long with new entries, whichever comes first."""
    max_batch: int = 1024
    """Most readings committed in one transaction (group commit)."""
    queue_size: int = 10_000
    """Readings waiting for commit before sources are made to wait (back-pressure)."""


@dataclass(frozen=True)
class AnchorConfig:
    local: bool = True
    """Journal checkpoint digests in a local SQLite file (not independent evidence)."""
    retry_max_seconds: float = 300.0
    """Cap of the jittered exponential back-off between anchoring attempts."""


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    """Persistent-session identity; default riverseal-<device id>."""
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    max_payload_bytes: int = 65_536
    """Larger payloads are rejected and counted, never parsed."""


@dataclass(frozen=True)
class EzoSensorConfig:
    id: str
    port: str
    circuit: Literal["ph", "do", "ec", "orp", "rtd"]
    baudrate: int = 9600
    interval_s: float = 10.0
    timeout_s: float = 3.0
    driver: Literal["ezo"] = "ezo"


@dataclass(frozen=True)
class MqttSensorConfig:
    id: str
    topic: str
    interval_s: float = 60.0
    driver: Literal["mqtt"] = "mqtt"


SensorConfig = EzoSensorConfig | MqttSensorConfig


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    key_file: Path
    data_dir: Path
    origin: str | None = None
    log: LogConfig = field(default_factory=LogConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    mqtt: MqttConfig | None = None
    sensors: tuple[SensorConfig, ...] = ()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "log.sqlite"

    @property
    def anchor_journal_path(self) -> Path:
        return self.data_dir / "anchors-local.sqlite"


T = TypeVar("T")


class _Table:
    """A TOML table that remembers which keys were read, to refuse unknown ones."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(where, "expected a table")
        self.data: dict[str, Any] = data
        self.where = where
        self.used: set[str] = set()

    def _key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(
        self, name: str, typ: type[T], default: T | None = None, *, required: bool = False
    ) -> T:
        self.used.add(name)
        if name not in self.data:
            if required or default is None:
                raise ConfigError(self._key(name), "is required but missing")
            return default
        value = self.data[name]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ConfigError(
                self._key(name), f"must be {typ.__name__}, got {type(value).__name__} {value!r}"
            )
        return value

    def optional(self, name: str, typ: type[T]) -> T | None:
        if name not in self.data:
            self.used.add(name)
            return None
        return self.get(name, typ)

    def check(self, name: str, value: T, ok: Callable[[T], bool], problem: str) -> T:
        if not ok(value):
            raise ConfigError(self._key(name), f"{value!r} {problem}")
        return value

    def table(self, name: str) -> _Table | None:
        self.used.add(name)
        return _Table(self.data[name], self._key(name)) if name in self.data else None

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(self._key(unknown[0]), "is not a known setting (a typo?)")


def _positive(x: float) -> bool:
    return x > 0


def _parse_log(t: _Table | None) -> LogConfig:
    d = LogConfig()
    if t is None:
        return d
    every = t.get("checkpoint_every_entries", int, d.checkpoint_every_entries)
    cfg = LogConfig(
        checkpoint_every_entries=t.check(
            "checkpoint_every_entries", every, _positive, "must be > 0"
        ),
        checkpoint_every_seconds=t.check(
            "checkpoint_every_seconds",
            t.get("checkpoint_every_seconds", float, d.checkpoint_every_seconds),
            _positive,
            "must be > 0",
        ),
        max_batch=t.check(
            "max_batch", t.get("max_batch", int, d.max_batch), _positive, "must be > 0"
        ),
        queue_size=t.check(
            "queue_size", t.get("queue_size", int, d.queue_size), _positive, "must be > 0"
        ),
    )
    t.done()
    return cfg


def _parse_anchor(t: _Table | None) -> AnchorConfig:
    d = AnchorConfig()
    if t is None:
        return d
    local = True
    local_t = t.table("local")
    if local_t is not None:
        local = local_t.get("enabled", bool, True)
        local_t.done()
    retry = t.get("retry_max_seconds", float, d.retry_max_seconds)
    t.check("retry_max_seconds", retry, _positive, "must be > 0")
    t.done()
    return AnchorConfig(local=local, retry_max_seconds=retry)


def _parse_mqtt(t: _Table | None) -> MqttConfig | None:
    if t is None:
        return None
    d = MqttConfig()
    port = t.get("port", int, d.port)
    cfg = MqttConfig(
        host=t.get("host", str, d.host),
        port=t.check("port", port, lambda p: 0 < p < 65536, "is not a TCP port"),
        client_id=t.get("client_id", str, ""),
        username=t.optional("username", str),
        password=t.optional("password", str),
        keepalive=t.check(
            "keepalive", t.get("keepalive", int, d.keepalive), _positive, "must be > 0"
        ),
        max_payload_bytes=t.check(
            "max_payload_bytes",
            t.get("max_payload_bytes", int, d.max_payload_bytes),
            _positive,
            "must be > 0",
        ),
    )
    t.done()
    return cfg


def _parse_sensor(t: _Table) -> SensorConfig:
    sid = t.get("id", str, required=True)
    t.check("id", sid, lambda s: bool(s) and s.isprintable() and " " not in s, "is not a valid id")
    driver = t.get("driver", str, required=True)
    sensor: SensorConfig
    if driver == "ezo":
        circuit = t.get("circuit", str, required=True).lower()
        t.check("circuit", circuit, lambda c: c in EZO_CIRCUITS, f"is not one of {EZO_CIRCUITS}")
        baud = t.get("baudrate", int, 9600)
        t.check("baudrate", baud, lambda b: b in EZO_BAUD_RATES, f"is not one of {EZO_BAUD_RATES}")
        interval = t.get("interval_s", float, 10.0)
        timeout = t.get("timeout_s", float, 3.0)
        sensor = EzoSensorConfig(
            id=sid,
            port=t.get("port", str, required=True),
            circuit=circuit,  # type: ignore[arg-type]  # checked against EZO_CIRCUITS above
            baudrate=baud,
            interval_s=t.check("interval_s", interval, lambda x: x >= 0.1, "must be >= 0.1 s"),
            timeout_s=t.check("timeout_s", timeout, _positive, "must be > 0"),
        )
    elif driver == "mqtt":
        topic = t.get("topic", str, required=True)
        t.check(
            "topic",
            topic,
            lambda s: bool(s) and "#" not in s and "+" not in s,
            "must be a plain topic",
        )
        interval = t.get("interval_s", float, 60.0)
        sensor = MqttSensorConfig(
            id=sid,
            topic=topic,
            interval_s=t.check("interval_s", interval, _positive, "must be > 0"),
        )
    else:
        raise ConfigError(f"{t.where}.driver", f"{driver!r} is not one of 'ezo', 'mqtt'")
    t.done()
    return sensor


def parse_config(text: str, path: Path) -> GatewayConfig:
    """Parse config text; relative paths are taken from the config file's folder."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}") from exc
    root = _Table(data, "")
    base = path.parent
    device = root.table("device")
    if device is None:
        raise ConfigError(f"{path}: [device]", "section is required but missing")
    key_file = base / device.get("key_file", str, "device.key")
    data_dir = base / device.get("data_dir", str, "data")
    origin = device.optional("origin", str)
    device.done()
    log = _parse_log(root.table("log"))
    anchor = _parse_anchor(root.table("anchor"))
    mqtt = _parse_mqtt(root.table("mqtt"))
    sensors_raw = root.data.get("sensor", [])
    root.used.add("sensor")
    if not isinstance(sensors_raw, list):
        raise ConfigError("sensor", "must be an array of tables ([[sensor]])")
    sensors = tuple(_parse_sensor(_Table(s, f"sensor[{i}]")) for i, s in enumerate(sensors_raw))
    root.done()
    seen: set[str] = set()
    for i, s in enumerate(sensors):
        if s.id in seen:
            raise ConfigError(f"sensor[{i}].id", f"{s.id!r} is used by two sensors")
        seen.add(s.id)
        if isinstance(s, MqttSensorConfig) and mqtt is None:
            raise ConfigError(f"sensor[{i}].driver", "mqtt sensors need an [mqtt] section")
    return GatewayConfig(
        path=path,
        key_file=key_file,
        data_dir=data_dir,
        origin=origin,
        log=log,
        anchor=anchor,
        mqtt=mqtt,
        sensors=sensors,
    )


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "is not UTF-8 text") from exc
    try:
        return parse_config(text, path)
    except ConfigError as exc:
        if exc.where.startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc.where}", exc.problem) from None

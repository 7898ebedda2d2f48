"""The configuration file as a whole: ``[device]``, ``[log]`` and the sections it gathers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.drivers import DRIVERS
from gateway.drivers.mqtt.config import MqttConfig, parse_mqtt
from gateway.toml_table import Table, parse_toml, positive, read_text

from ..errors import ConfigError
from .anchors import AnchorConfig, parse_anchor
from .qc import QcConfig, parse_qc
from .sensors import SensorConfig, parse_sensor

__all__ = ["GatewayConfig", "LogConfig", "StorageConfig", "load_config", "parse_config"]


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
class StorageConfig:
    """``[storage]``: how much of the disk the data directory may take (gateway/storage.py)."""

    quota_mb: int = 0
    """Most MiB the data directory may hold; 0: no quota of its own, the file system's
    free space less ``reserve_mb`` is the limit."""
    reserve_mb: int = 64
    """MiB of the file system left free for everything else (with ``quota_mb = 0``)."""
    retry_max_seconds: float = 30.0
    """Longest wait between two write attempts while the storage refuses writes."""
    retain_days: int = 0
    """Days of entries kept in full; 0 keeps everything (gateway/retention.py)."""


def _parse_storage(t: Table | None) -> StorageConfig:
    d = StorageConfig()
    if t is None:
        return d
    cfg = StorageConfig(
        quota_mb=t.check(
            "quota_mb", t.get("quota_mb", int, d.quota_mb), lambda n: n >= 0, "must be >= 0"
        ),
        reserve_mb=t.check(
            "reserve_mb", t.get("reserve_mb", int, d.reserve_mb), lambda n: n >= 0, "must be >= 0"
        ),
        retry_max_seconds=t.check(
            "retry_max_seconds",
            t.get("retry_max_seconds", float, d.retry_max_seconds),
            positive,
            "must be > 0",
        ),
        retain_days=t.check(
            "retain_days",
            t.get("retain_days", int, d.retain_days),
            lambda n: n >= 0,
            "must be >= 0",
        ),
    )
    t.done()
    return cfg


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
    qc: QcConfig = field(default_factory=QcConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "log.sqlite"

    @property
    def anchor_journal_path(self) -> Path:
        return self.data_dir / "anchors-local.sqlite"


def _parse_log(t: Table | None) -> LogConfig:
    d = LogConfig()
    if t is None:
        return d
    every = t.get("checkpoint_every_entries", int, d.checkpoint_every_entries)
    cfg = LogConfig(
        checkpoint_every_entries=t.check(
            "checkpoint_every_entries", every, positive, "must be > 0"
        ),
        checkpoint_every_seconds=t.check(
            "checkpoint_every_seconds",
            t.get("checkpoint_every_seconds", float, d.checkpoint_every_seconds),
            positive,
            "must be > 0",
        ),
        max_batch=t.check(
            "max_batch", t.get("max_batch", int, d.max_batch), positive, "must be > 0"
        ),
        queue_size=t.check(
            "queue_size", t.get("queue_size", int, d.queue_size), positive, "must be > 0"
        ),
    )
    t.done()
    return cfg


def parse_config(text: str, path: Path) -> GatewayConfig:
    """Parse config text; relative paths are taken from the config file's folder."""
    root = Table(parse_toml(text, path), "", path.parent)
    base = path.parent
    device = root.table("device")
    if device is None:
        raise ConfigError(f"{path}: [device]", "section is required but missing")
    key_file = base / device.get("key_file", str, "device.key")
    data_dir = base / device.get("data_dir", str, "data")
    origin = device.optional("origin", str)
    device.done()
    log = _parse_log(root.table("log"))
    anchor = parse_anchor(root.table("anchor"))
    mqtt = parse_mqtt(root.table("mqtt"))
    sensors = tuple(parse_sensor(t) for t in root.tables("sensor"))
    qc = parse_qc(root.table("qc"), {s.id for s in sensors})
    storage = _parse_storage(root.table("storage"))
    root.done()
    seen: set[str] = set()
    for i, s in enumerate(sensors):
        if s.id in seen:
            raise ConfigError(f"sensor[{i}].id", f"{s.id!r} is used by two sensors")
        seen.add(s.id)
    config = GatewayConfig(
        path=path,
        key_file=key_file,
        data_dir=data_dir,
        origin=origin,
        log=log,
        anchor=anchor,
        mqtt=mqtt,
        sensors=sensors,
        qc=qc,
        storage=storage,
    )
    # Checks across sensors: an [mqtt] section for mqtt sensors; devices sharing one
    # serial bus agree on its settings and their addresses.
    for driver in DRIVERS:
        driver.check(config)
    return config


def load_config(path: Path) -> GatewayConfig:
    text = read_text(path)
    try:
        return parse_config(text, path)
    except ConfigError as exc:
        if exc.where.startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc.where}", exc.problem) from None

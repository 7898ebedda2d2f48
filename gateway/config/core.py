"""The configuration file as a whole: ``[device]``, ``[log]`` and the sections it gathers."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from gateway.drivers import DRIVERS
from gateway.drivers.mqtt.config import MqttConfig, parse_mqtt
from gateway.toml_table import Table, parse_toml, positive, read_text

from ..errors import ConfigError, ConfigProblems
from ..secrets import SecretReader
from .anchors import AnchorConfig, parse_anchor
from .problems import Problem, key_lines, locate, toml_error_line
from .qc import QcConfig, parse_qc
from .sensors import SensorConfig, parse_sensor
from .uplink import UplinkConfig, parse_uplink
from .witnesses import WitnessConfig, parse_witnesses

__all__ = [
    "GatewayConfig",
    "LogConfig",
    "StatusConfig",
    "StorageConfig",
    "load_config",
    "parse_config",
]

T = TypeVar("T")


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
    commit_window_s: float = 2.0
    """Under light load, the longest a batch waits for more readings before its commit
    (gateway/ingest.py): the worst-case latency gathering adds. 0 turns gathering off."""


COMMIT_WINDOW_MAX_S = 5.0
"""Largest ``commit_window_s``: well inside systemd's watchdog and MQTT keep-alives."""


@dataclass(frozen=True)
class StatusConfig:
    """``[status]``: the daemon's local status server (``/status``, ``/metrics``, ``/``)."""

    listen: str = "127.0.0.1:8470"
    """``host:port`` to serve on (``[::1]:8470`` for IPv6); ``""`` serves nothing. Localhost
    unless configured: the page shows the station's state to whoever can reach it."""
    max_request_bytes: int = 8192
    """Longest request head read; a longer one is refused (431)."""
    request_timeout_s: float = 5.0
    """A client that has not sent its request head within this is dropped."""

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of ``listen``, None when it is empty."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _valid_listen(text: str) -> bool:
    if not text:
        return True
    host, sep, port = text.rpartition(":")
    return bool(sep and host.strip("[]")) and port.isdigit() and 0 < int(port) < 65536


def _parse_status(t: Table | None) -> StatusConfig:
    d = StatusConfig()
    if t is None:
        return d
    cfg = StatusConfig(
        listen=t.check(
            "listen",
            t.get("listen", str, d.listen),
            _valid_listen,
            'is not host:port (e.g. "127.0.0.1:8470"), or "" for no status server',
        ),
        max_request_bytes=t.check(
            "max_request_bytes",
            t.get("max_request_bytes", int, d.max_request_bytes),
            lambda n: n >= 256,
            "must be >= 256",
        ),
        request_timeout_s=t.check(
            "request_timeout_s",
            t.get("request_timeout_s", float, d.request_timeout_s),
            positive,
            "must be > 0",
        ),
    )
    t.done()
    return cfg


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
    status: StatusConfig = field(default_factory=StatusConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    witnesses: tuple[WitnessConfig, ...] = ()
    """``[[witnesses]]``: who cosigns each checkpoint (gateway/config/witnesses.py)."""
    uplink: UplinkConfig | None = None
    """``[uplink]``: where the log is published as it grows (gateway/config/uplink.py)."""
    warnings: tuple[Problem, ...] = ()
    """What ``parse_config`` found doubtful but not wrong (``gateway check`` prints them)."""

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
        commit_window_s=t.check(
            "commit_window_s",
            t.get("commit_window_s", float, d.commit_window_s),
            lambda x: 0 <= x <= COMMIT_WINDOW_MAX_S,
            f"must be from 0 to {COMMIT_WINDOW_MAX_S:g}",
        ),
    )
    t.done()
    return cfg


def _guarded(t: Table, default: T, parse: Callable[[], T]) -> T:
    """``parse()``, or ``default`` once the ConfigError it raised is recorded in ``t``:
    a section that cannot be read leaves the others to be checked."""
    try:
        return parse()
    except ConfigError as exc:
        t.record(exc)
        return default


_SENSOR_INDEX = re.compile(r"^sensor\[(\d+)\]")


def _renumber(p: Problem, rows: list[int]) -> Problem:
    """``p`` with ``sensor[i]`` (the i-th sensor read) made the i-th's ``[[sensor]]`` table."""
    m = _SENSOR_INDEX.match(p.key)
    if m is None or int(m.group(1)) >= len(rows):
        return p
    return dataclasses.replace(p, key=f"sensor[{rows[int(m.group(1))]}]{p.key[m.end() :]}")


def parse_config(text: str, path: Path, *, secrets: SecretReader | None = None) -> GatewayConfig:
    """Parse config text; relative paths are taken from the config file's folder.

    Every problem is collected (key path, line, message); any error raises one
    ConfigProblems listing them all. Warnings ride along in ``warnings``.
    ``secrets`` reads secret keys (default: no environment, plain text allowed).
    """
    problems: list[Problem] = []
    try:
        data = parse_toml(text, path)
    except ConfigError as exc:  # nothing else can be read
        line = toml_error_line(exc.problem)
        raise ConfigProblems(str(path), [Problem("", exc.problem, line=line)]) from None
    root = Table(data, "", path.parent, problems)
    base = path.parent
    key_file, data_dir, origin = base / "device.key", base / "data", None
    device = _guarded(root, None, lambda: root.table("device"))
    if device is None:
        root.problem("device", "section is required but missing (key_file, data_dir)")
    else:
        key_file = base / device.get("key_file", str, "device.key")
        data_dir = base / device.get("data_dir", str, "data")
        origin = _guarded(device, None, lambda: device.optional("origin", str))
        device.done()
    log = _guarded(root, LogConfig(), lambda: _parse_log(root.table("log")))
    anchor = _guarded(root, AnchorConfig(), lambda: parse_anchor(root.table("anchor"), secrets))
    before = len(problems)
    mqtt = _guarded(root, None, lambda: parse_mqtt(root.table("mqtt"), secrets))
    mqtt_ok = len(problems) == before
    no_tables: list[Table] = []
    tables = _guarded(root, no_tables, lambda: root.tables("sensor"))
    parsed = [(i, parse_sensor(t)) for i, t in enumerate(tables)]
    sensors = tuple(s for _, s in parsed if s is not None)
    # Ids as written, so a QC override of a sensor whose table has a problem is not
    # reported as naming no sensor.
    ids = {s.id for s in sensors} | {str(t.data.get("id")) for t in tables}
    qc = _guarded(root, QcConfig(), lambda: parse_qc(root.table("qc"), ids))
    status = _guarded(root, StatusConfig(), lambda: _parse_status(root.table("status")))
    storage = _guarded(root, StorageConfig(), lambda: _parse_storage(root.table("storage")))
    no_witnesses: tuple[WitnessConfig, ...] = ()
    witnesses = _guarded(root, no_witnesses, lambda: parse_witnesses(root))
    uplink = _guarded(root, None, lambda: parse_uplink(root.table("uplink"), secrets))
    root.done()
    seen: set[str] = set()
    for i, s in parsed:
        if s is not None and s.id in seen:
            root.problem(f"sensor[{i}].id", f"{s.id!r} is used by two sensors")
        elif s is not None:
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
        status=status,
        storage=storage,
        witnesses=witnesses,
        uplink=uplink,
    )
    # Checks across sensors: an [mqtt] section for mqtt sensors; devices sharing one
    # serial bus agree on its settings and their addresses. (Not when [mqtt] itself
    # failed: every MQTT sensor would be said to lack it.)
    rows = [i for i, s in parsed if s is not None]
    if mqtt_ok:
        for driver in DRIVERS:
            before = len(problems)
            _guarded(root, None, lambda d=driver: d.check(config))  # type: ignore[misc]
            # The checks number the sensors read; the file numbers its tables.
            problems[before:] = [_renumber(p, rows) for p in problems[before:]]
    lines = key_lines(text)
    located = [dataclasses.replace(p, line=locate(lines, p.key)) for p in problems]
    if any(p.severity == "error" for p in located):
        refused = ConfigProblems(str(path), located)
        # What could be read, for gateway check's local checks (sensor i of it is
        # [[sensor]] table sensor_rows[i] of the file).
        refused.partial = config
        refused.sensor_rows = tuple(rows)
        raise refused
    return dataclasses.replace(config, warnings=tuple(located))


def load_config(path: Path, *, checking: bool = False, secrets: bool = True) -> GatewayConfig:
    """Read and parse the config file ``path``: ConfigProblems lists everything wrong.

    Secrets are read from the environment and systemd's credentials; a plain-text
    secret is refused if group or others can read ``path`` (gateway/secrets.py).
    ``checking``: for ``gateway check`` outside the service. ``secrets=False``: for a
    command that needs none (status, export): secrets kept in files, the environment or
    credentials are not fetched (``None``), so it runs without the service's environment.
    """
    text = read_text(path)
    reader = SecretReader.from_environment(path, checking=checking, resolve=secrets)
    return parse_config(text, path, secrets=reader)

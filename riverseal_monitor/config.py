"""``monitor.toml``: the boxes a monitor follows, its broker, webhook and state (monitor.md §2)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger_client.errors import LedgerClientError
from ledger_client.note import Verifier
from ledger_client.trust import TrustedKey, parse_trust

from .errors import MonitorConfigError
from .follow import BoxSpec

__all__ = ["BrokerConfig", "MonitorConfig", "load_config"]


@dataclass(frozen=True)
class BrokerConfig:
    """Where checkpoint announcements come from (MQTT 5, a shared subscription)."""

    host: str
    port: int = 1883
    group: str = "riverseal-monitor"
    """The shared-subscription group: instances in one group split the boxes."""
    topic: str = "riverseal/+/checkpoint"
    client_id: str = ""
    """Empty: a random id (each instance of a group needs its own)."""
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    keepalive: int = 30
    retry_max_seconds: float = 30.0


@dataclass(frozen=True)
class MonitorConfig:
    """The monitor's settings; limits are documented defaults."""

    boxes: tuple[BoxSpec, ...]
    state: Path
    broker: BrokerConfig | None = None
    webhook: str | None = None
    webhook_retries: int = 5
    """Attempts per alert (capped, jittered back-off between them) before it is logged lost."""
    webhook_timeout_s: float = 10.0
    poll_interval_s: float = 300.0
    """Each box's ``checkpoint`` is also fetched this often (fallback: broker down)."""
    tick_s: float = 1.0
    """How often the time-based alerts (box-silent, silent, anchor-overdue) are judged."""
    manifest_interval_s: float = 300.0
    """How often ``riverseal-bundle.json`` is read for anchors (boxes with anchor_overdue_s)."""
    fetch_concurrency: int = 8
    """HTTP requests in flight at once, across all boxes."""
    fetch_timeout_s: float = 30.0
    cache_tiles: int = 256
    """Immutable files (tiles, entry bundles) kept in memory for reuse."""
    witness_key: Path | None = None
    """A witness key (riverseal-witness keygen): each consistent checkpoint is cosigned."""
    state_url: str | None = None
    """``state = "postgresql://…"``: the state in PostgreSQL, shared by several instances."""
    instance: str = ""
    """This instance's name in the leases (empty: ``<host>-<pid>``)."""
    lease_s: float = 15.0
    """How long a box stays with an instance that stopped renewing (PostgreSQL only)."""
    listen: str | None = None
    """``host:port`` of the page (riverseal_monitor.web); None: no page."""


_MONITOR_KEYS = {
    "state",
    "webhook",
    "webhook_retries",
    "webhook_timeout_s",
    "poll_interval_s",
    "tick_s",
    "manifest_interval_s",
    "fetch_concurrency",
    "fetch_timeout_s",
    "cache_tiles",
    "witness_key",
    "instance",
    "lease_s",
    "listen",
    "checkpoint_interval_s",
    "box_silent_intervals",
    "qc_burst_count",
    "qc_burst_window_s",
    "anchor_overdue_s",
}
_BOX_DEFAULTS = (
    "checkpoint_interval_s",
    "box_silent_intervals",
    "qc_burst_count",
    "qc_burst_window_s",
    "anchor_overdue_s",
)
_BOX_KEYS = {"origin", "vkey", "trust", "url", "allowance_s", *_BOX_DEFAULTS}
_BROKER_KEYS = {
    "host",
    "port",
    "group",
    "topic",
    "client_id",
    "username",
    "password",
    "tls_ca",
    "keepalive",
    "retry_max_seconds",
}


def _number(table: dict[str, Any], key: str, where: str, default: float, low: float) -> float:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or v < low:
        raise MonitorConfigError(f"{where}.{key}: expected a number >= {low:g}, got {v!r}")
    return float(v)


def _int(table: dict[str, Any], key: str, where: str, default: int, low: int) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise MonitorConfigError(f"{where}.{key}: expected an integer >= {low}, got {v!r}")
    return v


def _str(table: dict[str, Any], key: str, where: str) -> str | None:
    v = table.get(key)
    if v is not None and not (isinstance(v, str) and v):
        raise MonitorConfigError(f"{where}.{key}: expected a non-empty string")
    return v


def _unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise MonitorConfigError(f"{where}: unknown key(s) {', '.join(extra)}")


def _keys(box: dict[str, Any], where: str, base: Path) -> tuple[TrustedKey, ...]:
    vkey, trust = _str(box, "vkey", where), _str(box, "trust", where)
    if (vkey is None) == (trust is None):
        raise MonitorConfigError(f"{where}: give exactly one of vkey and trust")
    try:
        if vkey is not None:
            return (TrustedKey(Verifier.from_vkey(vkey)),)
        path = base / str(trust)
        keys = tuple(parse_trust(path.read_text("utf-8")).keys)
    except OSError as exc:
        raise MonitorConfigError(f"{where}.trust: {exc.strerror or exc}") from exc
    except LedgerClientError as exc:
        raise MonitorConfigError(f"{where}: {exc}") from exc
    if not keys:
        raise MonitorConfigError(f"{where}.trust: the trust file lists no key")
    return keys


def _box(box: Any, n: int, defaults: dict[str, Any], base: Path) -> BoxSpec:
    where = f"box[{n}]"
    if not isinstance(box, dict):
        raise MonitorConfigError(f"{where}: expected a table")
    _unknown(box, _BOX_KEYS, where)
    origin, url = _str(box, "origin", where), _str(box, "url", where)
    if origin is None or url is None:
        raise MonitorConfigError(f"{where}: origin and url are required")
    if not url.startswith(("http://", "https://")):
        raise MonitorConfigError(f"{where}.url: expected an http:// or https:// prefix")
    merged = {**defaults, **box}
    allowance = box.get("allowance_s", {})
    if not isinstance(allowance, dict):
        raise MonitorConfigError(f"{where}.allowance_s: expected a table of sensor = seconds")
    for sensor in allowance:
        _number(allowance, sensor, f"{where}.allowance_s", 0, 0)
    return BoxSpec(
        origin=origin,
        keys=_keys(box, where, base),
        url=url.rstrip("/"),
        checkpoint_interval_s=_number(merged, "checkpoint_interval_s", where, 60.0, 0.1),
        box_silent_intervals=_int(merged, "box_silent_intervals", where, 5, 1),
        allowance_s=tuple(sorted((str(k), float(v)) for k, v in allowance.items())),
        qc_burst_count=_int(merged, "qc_burst_count", where, 5, 1),
        qc_burst_window_s=_number(merged, "qc_burst_window_s", where, 600.0, 1),
        anchor_overdue_s=_number(merged, "anchor_overdue_s", where, 0.0, 0),
    )


def _broker(table: Any, base: Path) -> BrokerConfig:
    where = "broker"
    if not isinstance(table, dict):
        raise MonitorConfigError(f"{where}: expected a table")
    _unknown(table, _BROKER_KEYS, where)
    host = _str(table, "host", where)
    if host is None:
        raise MonitorConfigError(f"{where}.host is required")
    tls_ca = _str(table, "tls_ca", where)
    ca = None if tls_ca is None else base / tls_ca
    if ca is not None and not ca.is_file():
        raise MonitorConfigError(f"{where}.tls_ca: {ca} is not a file")
    group = _str(table, "group", where) or "riverseal-monitor"
    if any(c in group for c in "/+#"):
        raise MonitorConfigError(f"{where}.group: no '/', '+' or '#'")
    return BrokerConfig(
        host=host,
        port=_int(table, "port", where, 8883 if tls_ca else 1883, 1),
        group=group,
        topic=_str(table, "topic", where) or "riverseal/+/checkpoint",
        client_id=_str(table, "client_id", where) or "",
        username=_str(table, "username", where),
        password=_str(table, "password", where),
        tls_ca=ca,
        keepalive=_int(table, "keepalive", where, 30, 5),
        retry_max_seconds=_number(table, "retry_max_seconds", where, 30.0, 0.1),
    )


def _address(listen: str) -> tuple[str, int] | None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        return None
    return host.strip("[]"), int(port)


def load_config(path: Path) -> MonitorConfig:
    """Read and check ``monitor.toml``; relative paths are relative to its folder."""
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise MonitorConfigError(f"{path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MonitorConfigError(f"{path}: {exc}") from exc
    _unknown(doc, {"monitor", "broker", "box"}, str(path))
    mon = doc.get("monitor", {})
    if not isinstance(mon, dict):
        raise MonitorConfigError("monitor: expected a table")
    _unknown(mon, _MONITOR_KEYS, "monitor")
    base = path.parent
    defaults = {k: mon[k] for k in _BOX_DEFAULTS if k in mon}
    boxes = doc.get("box", [])
    if not isinstance(boxes, list) or not boxes:
        raise MonitorConfigError("at least one [[box]] is required")
    specs = tuple(_box(b, n, defaults, base) for n, b in enumerate(boxes))
    origins = [s.origin for s in specs]
    if len(set(origins)) != len(origins):
        raise MonitorConfigError("two [[box]] tables name the same origin")
    webhook = _str(mon, "webhook", "monitor")
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise MonitorConfigError("monitor.webhook: expected an http:// or https:// URL")
    witness = _str(mon, "witness_key", "monitor")
    state = _str(mon, "state", "monitor") or "monitor.sqlite"
    url = state if state.startswith(("postgresql://", "postgres://")) else None
    listen = _str(mon, "listen", "monitor")
    if listen is not None and not _address(listen):
        raise MonitorConfigError(f"monitor.listen: expected host:port, got {listen!r}")
    return MonitorConfig(
        boxes=specs,
        state=base / ("monitor.sqlite" if url else state),
        state_url=url,
        instance=_str(mon, "instance", "monitor") or "",
        lease_s=_number(mon, "lease_s", "monitor", 15.0, 1.0),
        listen=listen,
        broker=None if "broker" not in doc else _broker(doc["broker"], base),
        webhook=webhook,
        webhook_retries=_int(mon, "webhook_retries", "monitor", 5, 1),
        webhook_timeout_s=_number(mon, "webhook_timeout_s", "monitor", 10.0, 0.1),
        poll_interval_s=_number(mon, "poll_interval_s", "monitor", 300.0, 0.1),
        tick_s=_number(mon, "tick_s", "monitor", 1.0, 0.05),
        manifest_interval_s=_number(mon, "manifest_interval_s", "monitor", 300.0, 0.1),
        fetch_concurrency=_int(mon, "fetch_concurrency", "monitor", 8, 1),
        fetch_timeout_s=_number(mon, "fetch_timeout_s", "monitor", 30.0, 0.1),
        cache_tiles=_int(mon, "cache_tiles", "monitor", 256, 0),
        witness_key=None if witness is None else base / witness,
    )

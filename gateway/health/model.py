"""The status document: pure, from the daemon's facts and an explicit clock.

``build_status`` turns a ``Facts`` snapshot (plain data the daemon gathers:
counts, times in ns, the silence tracker's verdicts, each ledger's state)
into the JSON document that ``status.json``, ``/status``, ``/metrics``, the
page and ``gateway status`` all show. Times are RFC 3339 UTC strings, ages
seconds at ``Facts.now_ns`` (one decimal). docs/operations.md ("Status and
health") lists every field.

A sensor's ``state`` (``sensor_state``):

- the reason of the silence it is in, once a gap record declared one
  (``silent``, ``link-lost``, ``broker-refused``, ``timeout``...): the same
  word the signed gap record carries;
- else a link reason (``gateway.silence.LINK_REASONS``) reported after its
  last reading: the link is down, the allowance has not run out yet;
- else ``waiting`` (no reading since the start) or ``ok``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger_client.records import format_time

from ..pipeline import Value
from ..silence import LINK_REASONS, Silence

__all__ = ["FLAG_NAMES", "Facts", "SensorFacts", "build_status", "sensor_state"]

FLAG_NAMES: Mapping[int, str] = {
    1: "pass",
    2: "not-evaluated",
    3: "suspect",
    4: "fail",
    9: "missing",
}
"""QARTOD aggregate flags by name (gateway/qc.py)."""

OK = "ok"
WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class SensorFacts:
    """What the daemon knows of one sensor."""

    name: str
    readings: int = 0
    last_reading_ns: int | None = None
    values: tuple[Value, ...] = ()
    """The values of its last committed reading."""
    rejected: Mapping[str, int] = field(default_factory=dict)
    """Refusals (and link-down reports) by reason since the start."""
    last_reject: tuple[str, str, int] | None = None
    """The latest: (reason, detail, time ns)."""
    silence: Silence | None = None
    qc: Mapping[str, int] = field(default_factory=dict)
    """Committed values by aggregate QC flag code (``"1"``, ``"4"``...)."""


@dataclass(frozen=True, slots=True)
class Facts:
    """A snapshot of the daemon, as plain data."""

    now_ns: int
    pid: int
    started_ns: int
    version: str
    device: str | None
    data_dir: str
    log_size: int
    checkpoint: tuple[int, int] | None
    """(size, signing time ns) of the last checkpoint."""
    anchored_final: int | None
    """The largest checkpoint size some ledger anchored final (None: none yet)."""
    first_unanchored_ns: int | None
    """The time of entry ``anchored_final`` (or 0), the oldest not anchored final."""
    sensors: Sequence[SensorFacts]
    sources: Mapping[str, Mapping[str, Any]]
    ingest: Mapping[str, int]
    anchors: Mapping[str, Mapping[str, Any]]
    disk_used_bytes: int | None
    disk_limit_bytes: int | None
    """What the data directory may hold: the quota, or its use plus the free space left."""
    disk_quota_bytes: int | None
    """``[storage] quota_mb``, if set."""
    disk_state: str | None
    """gateway/storage.py's ``ok``, ``warning``, ``critical``, ``full``, ``io-error``."""
    clock: str
    """``synced``, ``unsynced`` or ``unknown`` (gateway/clock.py)."""
    http: Mapping[str, Any] = field(default_factory=dict)
    storage: Mapping[str, Any] | None = None
    """gateway/storage.py's own account, passed through."""
    uplink: Mapping[str, Any] | None = None
    """gateway/uplink.py's ``Uplink.facts()`` (None: no ``[uplink]``)."""
    retention: Mapping[str, Any] | None = None
    """gateway/retention.py's ``Retention.to_json()`` (None: ``retain_days`` is 0)."""


def _age(now_ns: int, t_ns: int | None) -> float | None:
    return None if t_ns is None else round((now_ns - t_ns) / 1e9, 1)


def _time(t_ns: int | None) -> str | None:
    return None if t_ns is None else format_time(t_ns)


def sensor_state(s: SensorFacts) -> str:
    """``ok``, ``waiting``, or why the sensor is not heard (see the module docstring)."""
    if s.silence is not None:
        return s.silence.reason
    if s.last_reject is not None:
        reason, _, at = s.last_reject
        if reason in LINK_REASONS and (s.last_reading_ns is None or at > s.last_reading_ns):
            return reason
    return WAITING if s.last_reading_ns is None else OK


def _qc_by_name(counts: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for code, n in counts.items():
        name = FLAG_NAMES.get(int(code), f"flag-{code}") if code.isdigit() else code
        out[name] = out.get(name, 0) + n
    return out


def _sensor(now_ns: int, s: SensorFacts) -> dict[str, Any]:
    last_error = None
    if s.last_reject is not None:
        reason, detail, at = s.last_reject
        last_error = {
            "reason": reason,
            "detail": detail,
            "time": format_time(at),
            "age_s": _age(now_ns, at),
        }
    return {
        "state": sensor_state(s),
        "last_reading": _time(s.last_reading_ns),
        "age_s": _age(now_ns, s.last_reading_ns),
        "values": [{"quantity": v.quantity, "value": v.value, "unit": v.unit} for v in s.values],
        "readings": s.readings,
        "errors": sum(s.rejected.values()),
        "last_error": last_error,
        "rejected": dict(sorted(s.rejected.items())),
        "silence": (
            {
                "since": format_time(s.silence.since_ns),
                "reason": s.silence.reason,
                "age_s": _age(now_ns, s.silence.since_ns),
            }
            if s.silence is not None
            else None
        ),
        "qc": _qc_by_name(s.qc),
    }


def _uplink(now: int, log_size: int, u: Mapping[str, Any]) -> dict[str, Any]:
    published = u.get("published")
    error_ns = u.get("last_error_ns")
    announce = u.get("announce")
    return {
        "target": u.get("target"),
        "published": published,
        "published_at": _time(u.get("published_ns")),
        "lag_entries": max(0, log_size - (published or 0)),
        # How long the oldest checkpoint not yet on the target has waited (0: none waits).
        "lag_s": _age(now, u.get("pending_since_ns")) or 0.0,
        "backlog_bytes": u.get("backlog_bytes"),
        "bytes": u.get("bytes", 0),
        "files": u.get("files", 0),
        "failures": u.get("failures", 0),
        "last_error": (
            {"message": u["last_error"], "time": _time(error_ns), "age_s": _age(now, error_ns)}
            if u.get("last_error")
            else None
        ),
        "announce": (
            {
                "broker": announce.get("broker"),
                "connected": bool(announce.get("connected")),
                "announced": announce.get("announced", 0),
                "pending": announce.get("pending", 0),
                "failures": announce.get("failures", 0),
                "last_error": announce.get("last_error"),
            }
            if isinstance(announce, Mapping)
            else None
        ),
    }


def build_status(f: Facts) -> dict[str, Any]:
    """The status document (JSON-ready) of ``f`` at ``f.now_ns``."""
    now = f.now_ns
    sensors = {s.name: _sensor(now, s) for s in sorted(f.sensors, key=lambda s: s.name)}
    unanchored = None
    if f.anchors:
        first = f.anchored_final or 0
        if first < f.log_size:
            unanchored = {
                "index": first,
                "entries": f.log_size - first,
                "time": _time(f.first_unanchored_ns),
                "age_s": _age(now, f.first_unanchored_ns),
            }
    limit, used = f.disk_limit_bytes, f.disk_used_bytes
    return {
        "time": format_time(now),
        "running": True,
        "pid": f.pid,
        "started": format_time(f.started_ns),
        "uptime_s": _age(now, f.started_ns),
        "version": f.version,
        "device": f.device,
        "data_dir": f.data_dir,
        "clock": f.clock,
        "disk": {
            "used_bytes": used,
            "limit_bytes": limit,
            "quota_bytes": f.disk_quota_bytes,
            "used_fraction": round(used / limit, 4) if limit and used is not None else None,
            "state": f.disk_state,
        },
        "storage": dict(f.storage) if f.storage is not None else None,
        "log_size": f.log_size,
        "checkpoint": (
            {
                "size": f.checkpoint[0],
                "time": format_time(f.checkpoint[1]),
                "age_s": _age(now, f.checkpoint[1]),
            }
            if f.checkpoint is not None
            else None
        ),
        "unanchored": unanchored,
        "readings": {name: s["readings"] for name, s in sensors.items() if s["readings"]},
        "rejected": {
            f"{name}/{reason}": n
            for name, s in sensors.items()
            for reason, n in s["rejected"].items()
        },
        "sensors": sensors,
        "sources": {name: dict(h) for name, h in sorted(f.sources.items())},
        "ingest": dict(f.ingest),
        "anchors": {name: dict(a) for name, a in sorted(f.anchors.items())},
        "http": dict(f.http),
        "uplink": _uplink(now, f.log_size, f.uplink) if f.uplink is not None else None,
        "retention": dict(f.retention) if f.retention is not None else None,
    }

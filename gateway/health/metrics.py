"""The status document as Prometheus text exposition (format 0.0.4): pure.

Rendered from the same document as ``/status``, so the figures agree. The
metric names are listed in docs/operations.md ("Status and health"); a
figure the document does not have (no reading yet, no quota) is left out
rather than given a made-up value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STATES = ("ok", "waiting")
"""States every sensor gets a 0/1 sample for; the state it is in is added when it is another."""

_Sample = tuple[Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples: Iterable[_Sample]) -> None:
        rows = list(samples)
        if not rows:
            return
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(
                f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"
            )

    def one(self, name: str, kind: str, help_: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.family(name, kind, help_, [({}, float(value))])


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def render_metrics(doc: Mapping[str, Any]) -> str:
    """Prometheus text exposition of ``doc`` (ends with a newline)."""
    w = _Writer()
    w.one(
        "riverseal_up", "gauge", "1 while the gateway daemon runs.", 1 if doc.get("running") else 0
    )
    w.family(
        "riverseal_info",
        "gauge",
        "The gateway's version and device id (value 1).",
        [({"version": str(doc.get("version")), "device": str(doc.get("device"))}, 1.0)],
    )
    w.one(
        "riverseal_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        doc.get("uptime_s"),
    )
    w.one("riverseal_log_entries", "gauge", "Entries in the Merkle log.", doc.get("log_size"))
    cp = doc.get("checkpoint") or {}
    w.one(
        "riverseal_checkpoint_size", "gauge", "Size of the last signed checkpoint.", cp.get("size")
    )
    w.one(
        "riverseal_checkpoint_age_seconds",
        "gauge",
        "Seconds since the last checkpoint was signed.",
        cp.get("age_s"),
    )
    un = doc.get("unanchored")
    if "unanchored" in doc and doc.get("anchors"):
        w.one(
            "riverseal_unanchored_entries",
            "gauge",
            "Entries not yet covered by an anchor that is final on some ledger.",
            un["entries"] if un else 0,
        )
    if un:
        w.one(
            "riverseal_oldest_unanchored_age_seconds",
            "gauge",
            "Age of the oldest entry not yet anchored final.",
            un.get("age_s"),
        )
    disk = doc.get("disk") or {}
    w.one(
        "riverseal_disk_used_bytes",
        "gauge",
        "Bytes used by the data directory.",
        disk.get("used_bytes"),
    )
    w.one(
        "riverseal_disk_quota_bytes",
        "gauge",
        "The data directory's quota.",
        disk.get("quota_bytes"),
    )
    w.one(
        "riverseal_disk_limit_bytes",
        "gauge",
        "What the data directory may hold (the quota, or its use plus the free space left).",
        disk.get("limit_bytes"),
    )
    clock = doc.get("clock")
    if isinstance(clock, str):
        w.family(
            "riverseal_clock_synced",
            "gauge",
            "1 if the kernel says the system clock is synchronised (label: its state).",
            [({"state": clock}, 1.0 if clock == "synced" else 0.0)],
        )

    sensors: Mapping[str, Mapping[str, Any]] = doc.get("sensors") or {}
    w.family(
        "riverseal_sensor_readings_total",
        "counter",
        "Readings committed to the log since the daemon started.",
        [({"sensor": n}, float(s.get("readings", 0))) for n, s in sensors.items()],
    )
    w.family(
        "riverseal_sensor_errors_total",
        "counter",
        "Refused inputs and link failures since the daemon started.",
        [({"sensor": n}, float(s.get("errors", 0))) for n, s in sensors.items()],
    )
    w.family(
        "riverseal_sensor_rejected_total",
        "counter",
        "Refused inputs and link failures by reason.",
        [
            ({"sensor": n, "reason": r}, float(c))
            for n, s in sensors.items()
            for r, c in (s.get("rejected") or {}).items()
        ],
    )
    w.family(
        "riverseal_sensor_last_reading_age_seconds",
        "gauge",
        "Seconds since the sensor's last committed reading.",
        [({"sensor": n}, float(s["age_s"])) for n, s in sensors.items() if _num(s.get("age_s"))],
    )
    w.family(
        "riverseal_sensor_value",
        "gauge",
        "The values of the sensor's last committed reading.",
        [
            (
                {"sensor": n, "quantity": str(v["quantity"]), "unit": str(v["unit"])},
                float(v["value"]),
            )
            for n, s in sensors.items()
            for v in s.get("values") or []
            if _num(v.get("value"))
        ],
    )
    w.family(
        "riverseal_sensor_state",
        "gauge",
        "1 for the state the sensor is in (ok, waiting, or the reason it is not heard).",
        [
            ({"sensor": n, "state": st}, 1.0 if s.get("state") == st else 0.0)
            for n, s in sensors.items()
            for st in dict.fromkeys([*_STATES, str(s.get("state"))])
        ],
    )
    w.family(
        "riverseal_sensor_qc_values_total",
        "counter",
        "Committed values by QARTOD aggregate flag.",
        [
            ({"sensor": n, "flag": f}, float(c))
            for n, s in sensors.items()
            for f, c in (s.get("qc") or {}).items()
        ],
    )
    sources: Mapping[str, Mapping[str, Any]] = doc.get("sources") or {}
    w.family(
        "riverseal_source_restarts_total",
        "counter",
        "Times a source crashed and was restarted.",
        [({"source": n}, float(h.get("restarts", 0))) for n, h in sources.items()],
    )
    w.family(
        "riverseal_source_running",
        "gauge",
        "1 while the source runs.",
        [({"source": n}, 1.0 if h.get("running") else 0.0) for n, h in sources.items()],
    )
    anchors: Mapping[str, Mapping[str, Any]] = doc.get("anchors") or {}
    w.family(
        "riverseal_anchor_last_final_size",
        "gauge",
        "The largest checkpoint size anchored final on the ledger.",
        [
            ({"ledger": n}, float(a["last_final"]))
            for n, a in anchors.items()
            if _num(a.get("last_final"))
        ],
    )
    w.family(
        "riverseal_anchor_pending",
        "gauge",
        "Anchors sent or to send that are not final yet.",
        [({"ledger": n}, float(len(a.get("pending") or []))) for n, a in anchors.items()],
    )
    w.family(
        "riverseal_anchor_failures",
        "gauge",
        "Consecutive failed anchoring passes (0: healthy).",
        [({"ledger": n}, float(a.get("failures") or 0)) for n, a in anchors.items()],
    )
    up = doc.get("uplink")
    if up:
        w.one(
            "riverseal_uplink_published_size",
            "gauge",
            "Size of the checkpoint the uplink's target holds.",
            up.get("published") or 0,
        )
        w.one(
            "riverseal_uplink_lag_entries",
            "gauge",
            "Entries in the log not yet on the uplink's target.",
            up.get("lag_entries"),
        )
        w.one(
            "riverseal_uplink_lag_seconds",
            "gauge",
            "How long the oldest checkpoint not yet on the target has waited.",
            up.get("lag_s"),
        )
        w.one(
            "riverseal_uplink_backlog_bytes",
            "gauge",
            "Estimated bytes still to upload.",
            up.get("backlog_bytes"),
        )
        w.one(
            "riverseal_uplink_failures",
            "gauge",
            "Consecutive failed uploads (0: healthy).",
            up.get("failures"),
        )
        w.one(
            "riverseal_uplink_bytes_total",
            "counter",
            "Bytes uploaded since the daemon started.",
            up.get("bytes"),
        )
        ann = up.get("announce")
        if ann:
            w.one(
                "riverseal_uplink_announce_connected",
                "gauge",
                "1 while the announcement broker is connected.",
                1 if ann.get("connected") else 0,
            )
            w.one(
                "riverseal_uplink_announced_total",
                "counter",
                "Checkpoint announcements the broker acknowledged since the daemon started.",
                ann.get("announced"),
            )
    kept = doc.get("retention")
    if kept:
        w.one(
            "riverseal_retention_retained_from",
            "gauge",
            "The first entry whose record body is kept (retention pruned those below).",
            kept.get("retained_from") or 0,
        )
    ingest = doc.get("ingest") or {}
    w.one(
        "riverseal_ingest_committed_total",
        "counter",
        "Records committed since the daemon started.",
        ingest.get("committed"),
    )
    w.one(
        "riverseal_ingest_failed_batches_total",
        "counter",
        "Commits that failed since the daemon started.",
        ingest.get("failed_batches"),
    )
    return "\n".join(w.lines) + "\n"

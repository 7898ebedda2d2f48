"""The status document for a terminal (``gateway status``): pure, document in, text out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["duration", "render_text"]


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``4 d 3 h``."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _at(time: Any, age: Any) -> str:
    if time is None:
        return "never"
    return f"{time} ({duration(age)} ago)" if isinstance(age, int | float) else str(time)


def _value(v: Mapping[str, Any]) -> str:
    return f"{v.get('value')} {v.get('unit', '')}".strip()


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"


def _sensor_lines(name: str, s: Mapping[str, Any]) -> list[str]:
    lines = [f"sensor:      {name}: {s.get('state', '?')}"]
    values = s.get("values") or []
    if values:
        shown = ", ".join(_value(v) for v in values)
        lines.append(f"  last:      {shown} at {_at(s.get('last_reading'), s.get('age_s'))}")
    else:
        lines.append(
            f"  last:      no reading {'yet' if s.get('readings', 0) == 0 else ''}".rstrip()
        )
    lines.append(f"  counts:    {s.get('readings', 0)} readings, {s.get('errors', 0)} errors")
    err = s.get("last_error")
    if err:
        lines.append(
            f"  last error: {err.get('reason')} at {_at(err.get('time'), err.get('age_s'))}: "
            f"{err.get('detail')}"
        )
    silence = s.get("silence")
    if silence:
        lines.append(f"  silent:    since {_at(silence.get('since'), silence.get('age_s'))}")
    if s.get("qc"):
        lines.append(f"  qc:        {_counts(s['qc'])}")
    if s.get("rejected"):
        lines.append(f"  rejected:  {_counts(s['rejected'])}")
    return lines


def _anchor_lines(name: str, a: Mapping[str, Any]) -> list[str]:
    lines = [f"anchor:      {name}"]
    if a.get("last_final") is None:
        lines.append("  last final: none yet")
    else:
        lines.append(
            f"  last final: checkpoint {a['last_final']} (final at {a.get('last_final_at')})"
        )
    for o in a.get("open") or []:
        tx = o.get("tx") or o.get("last_sent")
        sent = f", {o['sent']} transaction(s) sent" if o.get("sent") else ""
        lines.append(
            f"  {o['state']}: checkpoint {o['checkpoint']} since {o['since']}"
            + (f", tx {tx}" if tx else "")
            + sent
        )
    if a.get("failures"):
        lines.append(f"  failures:  {a['failures']} in a row")
    if a.get("last_error"):
        at = f" (at {a['last_error_at']})" if a.get("last_error_at") else ""
        lines.append(f"  last error: {a['last_error']}{at}")
    if a.get("retry_in_s"):
        lines.append(f"  next try in {a['retry_in_s']} s")
    return lines


def render_text(doc: Mapping[str, Any]) -> str:
    """The document as ``gateway status`` prints it (ends with a newline)."""
    out: list[str] = []
    if doc.get("running"):
        out.append(
            f"daemon:      running, pid {doc.get('pid')}, up {duration(doc.get('uptime_s'))}, "
            f"version {doc.get('version')} (status of {doc.get('time')})"
        )
    elif doc.get("last_status"):
        out.append(
            f"daemon:      daemon not running (last status at {doc['last_status']}); "
            "log and ledgers read from the log database, sensors as they were then"
        )
    else:
        out.append("daemon:      daemon not running (no status yet); read from the log database")
    if doc.get("device"):
        out.append(f"device:      {doc['device']}")
    if doc.get("clock"):
        out.append(f"clock:       {doc['clock']}")
    disk = doc.get("disk")
    if isinstance(disk, Mapping) and disk.get("used_bytes") is not None:
        used = f"{disk['used_bytes']:,} bytes in {doc.get('data_dir', 'the data directory')}"
        if disk.get("limit_bytes"):
            frac = disk.get("used_fraction") or 0.0
            what = "the quota" if disk.get("quota_bytes") else "the free space"
            used += f", {frac:.1%} of {what} ({disk['limit_bytes']:,} bytes)"
        if disk.get("state"):
            used += f": {disk['state']}"
        out.append(f"disk:        {used}")
    cp = doc.get("checkpoint")
    cp_text = (
        f"; last checkpoint {cp['size']} at {_at(cp.get('time'), cp.get('age_s'))}"
        if cp
        else "; no checkpoint yet"
    )
    out.append(f"log:         {doc.get('log_size', 0)} entries{cp_text}")
    if "unanchored" in doc:
        un = doc.get("unanchored")
        if un:
            out.append(
                f"unanchored:  {un['entries']} entries from entry {un['index']} "
                f"(recorded {un.get('time')}, {duration(un.get('age_s'))} ago) "
                "not yet anchored final"
            )
        elif doc.get("anchors"):
            out.append("unanchored:  none: every entry is anchored final")
    for name, s in (doc.get("sensors") or {}).items():
        if isinstance(s, Mapping):
            out.extend(_sensor_lines(name, s))
    for name, h in (doc.get("sources") or {}).items():
        if isinstance(h, Mapping) and (h.get("restarts") or not h.get("running", True)):
            err = f", last error {h.get('last_error')} at {h.get('last_error_time')}"
            out.append(
                f"source:      {name}: {'running' if h.get('running') else 'down'}, "
                f"{h.get('restarts', 0)} restarts" + (err if h.get("last_error") else "")
            )
    for name, a in (doc.get("anchors") or {}).items():
        if isinstance(a, Mapping):
            out.extend(_anchor_lines(name, a))
    up = doc.get("uplink")
    if isinstance(up, Mapping):
        out.append(
            f"uplink:      {up.get('target')}: published {up.get('published') or 0}, "
            f"{up.get('lag_entries', 0)} entries behind ({duration(up.get('lag_s'))})"
            + (f", last error {up['last_error']['message']}" if up.get("last_error") else "")
        )
        ann = up.get("announce")
        if isinstance(ann, Mapping):
            out.append(
                f"announce:    {ann.get('broker')}: "
                f"{'connected' if ann.get('connected') else 'not connected'}, "
                f"{ann.get('announced', 0)} announced"
                + (f", last error {ann['last_error']}" if ann.get("last_error") else "")
            )
    kept = doc.get("retention")
    if isinstance(kept, Mapping):
        out.append(
            f"retention:   {kept.get('retain_days')} days; records kept from entry "
            f"{kept.get('retained_from') or 0} (bound by {kept.get('limit')}); "
            f"next pass {kept.get('next_run')}"
            + (f", last error {kept['last_error']}" if kept.get("last_error") else "")
        )
    http = doc.get("http")
    if doc.get("running") and isinstance(http, Mapping) and http.get("listen"):
        if http.get("error"):
            out.append(f"status page: not served: {http['error']}")
        else:
            out.append(f"status page: http://{http['listen']}/ (also /status, /metrics)")
    return "\n".join(out) + "\n"

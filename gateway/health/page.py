"""The status page: one self-contained HTML file for a phone, polling ``/status``.

No framework, no external files: a technician's phone on the box's network
(or an SSH tunnel) opens ``/`` and sees each sensor as a card, updated every
few seconds without reload. Data goes into the page only through
``textContent``, never as markup. Each figure carries a ``data-field``
attribute (sensors: ``data-sensor``) so a script, or a test, can read it.
"""

from __future__ import annotations

__all__ = ["PAGE", "POLL_MS"]

POLL_MS = 5000
"""How often the page asks for ``/status``."""

PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>riverseal status</title>
<style>
body{font:16px/1.4 system-ui,sans-serif;margin:0;padding:12px;background:#f4f6f7;color:#111}
h1{font-size:1.2em;margin:0 0 8px}
.card{background:#fff;border-radius:8px;padding:10px 12px;margin:0 0 10px;
  box-shadow:0 1px 2px #0002}
.card h2{font-size:1.05em;margin:0 0 4px;display:flex;justify-content:space-between}
.state{font-weight:bold;padding:0 6px;border-radius:4px;background:#fdd;color:#800}
.state.ok{background:#dfd;color:#060}.state.waiting{background:#eee;color:#444}
dl{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin:0}
dt{color:#555}dd{margin:0;overflow-wrap:anywhere}
#error{color:#800}
</style>
</head>
<body>
<h1>riverseal <span data-field="device"></span></h1>
<p id="error"></p>
<div class="card"><dl>
<dt>daemon</dt><dd data-field="daemon">loading…</dd>
<dt>status of</dt><dd data-field="time"></dd>
<dt>clock</dt><dd data-field="clock"></dd>
<dt>disk</dt><dd data-field="disk"></dd>
<dt>log</dt><dd data-field="log_size"></dd>
<dt>checkpoint</dt><dd data-field="checkpoint"></dd>
<dt>unanchored</dt><dd data-field="unanchored"></dd>
</dl></div>
<div id="sensors"></div>
<div id="anchors"></div>
<script>
"use strict";
const POLL_MS = """
    + str(POLL_MS)
    + """;
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function ago(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}
function mib(n) {
  return (n / 1048576).toFixed(1) + " MiB";
}
function set(field, text) {
  for (const e of document.querySelectorAll('[data-field="' + field + '"]')) {
    e.textContent = text;
  }
}
function row(dl, name, field, text) {
  dl.append(el("dt", {}, name), el("dd", {"data-field": field}, text));
}
function render(doc) {
  set("device", doc.device || "");
  set("daemon", doc.running ? "running, pid " + doc.pid + ", version " + doc.version
    : "not running");
  set("time", doc.time || "");
  set("clock", doc.clock || "");
  const disk = doc.disk || {};
  set("disk", disk.used_bytes === null || disk.used_bytes === undefined ? "" :
    mib(disk.used_bytes) + (disk.limit_bytes ?
      " (" + (100 * disk.used_fraction).toFixed(1) + " % of its limit)" : "") +
    (disk.state ? ", " + disk.state : ""));
  set("log_size", doc.log_size);
  const cp = doc.checkpoint;
  set("checkpoint", cp ? cp.size + " at " + cp.time + " (" + ago(cp.age_s) + ")" : "none yet");
  const un = doc.unanchored;
  set("unanchored", un ? un.entries + " entries from " + un.index + " (" + ago(un.age_s) + ")"
    : "none");
  const box = document.getElementById("sensors");
  const cards = [];
  // Sensors that are not heard first: that is what a technician came for.
  const rank = s => s.state === "ok" ? 2 : s.state === "waiting" ? 1 : 0;
  const sensors = Object.entries(doc.sensors || {});
  sensors.sort((a, b) => rank(a[1]) - rank(b[1]) || (a[0] < b[0] ? -1 : 1));
  for (const [name, s] of sensors) {
    const card = el("div", {"class": "card", "data-sensor": name});
    const h = el("h2", {}, name);
    h.append(el("span", {"class": "state " + s.state, "data-field": "state"}, s.state));
    card.append(h);
    const dl = el("dl");
    const values = (s.values || []).map(v => v.value + " " + v.unit).join(", ");
    row(dl, "last value", "values", values || "none yet");
    row(dl, "age", "age_s", s.age_s === null ? "no reading yet" : ago(s.age_s));
    row(dl, "readings", "readings", s.readings);
    row(dl, "errors", "errors", s.errors);
    const e = s.last_error;
    row(dl, "last error", "last_error_reason", e ? e.reason : "none");
    if (e) row(dl, "", "last_error", e.detail + " (" + e.time + ", " + ago(e.age_s) + ")");
    const qc = Object.entries(s.qc || {}).map(([k, n]) => k + " " + n).join(", ");
    row(dl, "qc", "qc", qc || "none");
    card.append(dl);
    cards.push(card);
  }
  box.replaceChildren(...cards);
  const anchors = [];
  for (const [name, a] of Object.entries(doc.anchors || {})) {
    const card = el("div", {"class": "card", "data-ledger": name});
    card.append(el("h2", {}, "anchor " + name));
    const dl = el("dl");
    row(dl, "last final", "last_final", a.last_final === null ? "none yet" : a.last_final);
    row(dl, "failures", "failures", a.failures || 0);
    if (a.last_error) row(dl, "last error", "last_error", a.last_error);
    card.append(dl);
    anchors.push(card);
  }
  document.getElementById("anchors").replaceChildren(...anchors);
  document.body.setAttribute("data-rendered", doc.time || "");
}
async function poll() {
  try {
    const r = await fetch("/status", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (err) {
    document.getElementById("error").textContent = "cannot reach the gateway: " + err;
  }
  setTimeout(poll, POLL_MS);
}
poll();
</script>
</body>
</html>
"""
)

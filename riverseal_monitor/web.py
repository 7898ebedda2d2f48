"""The monitor's page: stations, verdicts, live series per sensor (docs/monitor.md, "The page").

A small HTTP/1.1 server on asyncio streams (GET only, one request per
connection, a bounded request head read within a timeout, at most
``MAX_CLIENTS`` at once), reading the state through ``Display``:

- ``/``: the page (inline script and style, no external resource): every
  station with its verdict level and last alert; per station shown, a chart per
  sensor as inline SVG (values, QC flags, gaps with their reasons, anchoring
  times, the last verified checkpoint).
- ``/api/stations?seen=TOKEN``: the stations as JSON; when TOKEN is the current
  one, the answer waits (up to ``WAIT_S``) for a change: the page long-polls, so
  it updates as soon as new readings are verified (at most once a second)
  without reloading.
- ``/api/series?origin=O``: one station's series as JSON (state.Display.series),
  with the box's anchoring times (riverseal_monitor.anchors).
- ``/api/boxes/<origin>/checkpoint``: the box's last verified checkpoint with the
  monitor's cosignature, as a signed note (text/plain); 404 when there is none.

Nothing is written: the page only reads the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .config import MonitorConfig
from .state import ANCHORS_SQL, Display, level_of, series_doc

__all__ = [
    "MAX_CLIENTS",
    "PAGE",
    "POINTS",
    "WAIT_S",
    "PageServer",
    "SqliteDisplay",
    "page_server",
]

logger = logging.getLogger(__name__)

MAX_CLIENTS = 32
"""Connections served at once (each open page holds one long poll)."""
WAIT_S = 10.0
"""Longest a long poll waits for a change before answering unchanged."""
POINTS = 300
"""Readings per sensor in a series answer (the newest)."""
_CHECK_S = 0.25  # how often a waiting long poll looks for a change
_MAX_HEAD = 8192
_HEAD_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_BOXES, _CHECKPOINT = "/api/boxes/", "/checkpoint"  # /api/boxes/<origin>/checkpoint
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
)


class SqliteDisplay:
    """``Display`` over the SQLite state file, read-only, in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
            try:
                return list(db.execute(sql, args).fetchall())
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []  # the monitor has not made its schema yet
                raise

    def _stations(self) -> list[dict[str, Any]]:
        boxes = self._query("SELECT origin, size, verified_s FROM boxes ORDER BY origin")
        open_kinds: dict[str, list[str]] = {}
        for origin, kind in self._query(
            "SELECT origin, kind FROM alerts WHERE cleared_s IS NULL ORDER BY kind"
        ):
            open_kinds.setdefault(origin, []).append(kind)
        last = {
            o: {"kind": k, "message": m, "time_s": t, "cleared_s": c}
            for o, k, m, t, c in self._query(
                "SELECT origin, kind, message, raised_s, cleared_s FROM alerts WHERE id IN "
                "(SELECT max(id) FROM alerts GROUP BY origin)"
            )
        }
        return [
            {
                "origin": o,
                "verified_size": int(size),
                "verified_s": float(vs),
                "owner": None,
                "open": open_kinds.get(o, []),
                "last_alert": last.get(o),
            }
            for o, size, vs in boxes
        ]

    async def stations(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._stations)

    def _series(self, origin: str, after: float, limit: int) -> dict[str, Any]:
        readings = self._query(
            "SELECT sensor, time_s, vals FROM (SELECT sensor, time_s, vals, "
            "row_number() OVER (PARTITION BY sensor ORDER BY time_s DESC) AS n "
            "FROM readings WHERE origin = ? AND time_s > ?) WHERE n <= ? ORDER BY sensor, time_s",
            origin,
            after,
            limit,
        )
        gaps = self._query(
            "SELECT sensor, start, stop, reason FROM gaps WHERE origin = ? ORDER BY idx", origin
        )
        box = self._query("SELECT size, verified_s FROM boxes WHERE origin = ?", origin)
        anchors = self._query(ANCHORS_SQL, origin)
        return series_doc(readings, gaps, box[0] if box else None, anchors)

    async def series(self, origin: str, after: float, limit: int) -> dict[str, Any]:
        return await asyncio.to_thread(self._series, origin, after, limit)

    async def cosigned(self, origin: str) -> str | None:
        rows = await asyncio.to_thread(
            self._query, "SELECT cosigned FROM boxes WHERE origin = ?", origin
        )
        return None if not rows or rows[0][0] is None else str(rows[0][0])


def _token(stations: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(stations, sort_keys=True).encode()).hexdigest()[:16]


class PageServer:
    """Serves the page for ``display`` on ``host:port`` while ``serve`` runs."""

    def __init__(self, display: Display, host: str, port: int) -> None:
        self.display = display
        self.host = host
        self.port = port
        self._writers: set[asyncio.StreamWriter] = set()
        """The open client connections: at most ``MAX_CLIENTS``, closed when serving ends."""
        self.bound = asyncio.Event()
        """Set once listening; ``port`` is then the real one (``port`` 0 picks one)."""

    async def serve(self) -> None:
        server = await asyncio.start_server(self._handle, self.host, self.port, limit=_MAX_HEAD)
        self.port = int(server.sockets[0].getsockname()[1])
        logger.info("page on http://%s:%d/", self.host, self.port)
        self.bound.set()
        try:
            await server.serve_forever()
        finally:
            server.close()
            for writer in list(self._writers):  # Server.close_clients() is Python 3.13+
                writer.close()
            await server.wait_closed()  # from Python 3.12 on, waits for those to close

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CLIENTS:
            writer.close()
            return
        self._writers.add(writer)
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = await self._respond(head)
            lines = [
                f"HTTP/1.1 {status} {_REASONS[status]}",
                f"Content-Type: {ctype}",
                f"Content-Length: {len(body)}",
                "Cache-Control: no-store",
                f"Content-Security-Policy: {_CSP}",
                "Connection: close",
                "",
                "",
            ]
            writer.write("\r\n".join(lines).encode("ascii") + body)
            async with asyncio.timeout(_HEAD_TIMEOUT_S):
                await writer.drain()
        except (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # the client went away, stalled or sent too much: nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        except (UnicodeDecodeError, ValueError):
            return 400, "text/plain", b"bad request\n"
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            return 200, "text/html; charset=utf-8", PAGE.encode()
        if url.path == "/api/stations":
            return 200, "application/json", _json(await self._stations(query.get("seen", "")))
        if url.path == "/api/series" and "origin" in query:
            doc = await self.display.series(query["origin"], 0.0, POINTS)
            return 200, "application/json", _json(doc)
        if url.path.startswith(_BOXES) and url.path.endswith(_CHECKPOINT):
            origin = unquote(url.path[len(_BOXES) : -len(_CHECKPOINT)])
            note = await self.display.cosigned(origin) if origin else None
            if note is not None:
                return 200, "text/plain; charset=utf-8", note.encode()
        return 404, "text/plain", b"not found\n"

    async def _stations(self, seen: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            stations = await self.display.stations()
            token = _token(stations)
            if token != seen or loop.time() >= deadline:
                break
            await asyncio.sleep(_CHECK_S)
        for s in stations:
            s["level"] = level_of(s["verified_size"], s["open"])
        return {"token": token, "stations": stations}


def page_server(config: MonitorConfig, state: object) -> PageServer:
    """The page for ``config.listen``, reading ``state`` (or, for SQLite, its file)."""
    assert config.listen is not None
    host, _, port = config.listen.rpartition(":")
    display = state if isinstance(state, Display) else SqliteDisplay(config.state)
    return PageServer(display, host.strip("[]"), int(port))


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>riverseal monitor</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin: 1.2em 0 .3em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; text-align: left; }
tr { border-bottom: 1px solid #ddd; }
.level { font-weight: bold; padding: 0 .4em; border-radius: 3px; }
.FAILED { background: #c62828; color: #fff; } .ALERT { background: #f9a825; }
.VERIFIED { background: #2e7d32; color: #fff; } .PENDING { background: #bbb; }
svg.chart { background: #fafafa; border: 1px solid #ddd; display: block; }
.note { color: #666; font-size: .9em; }
</style></head>
<body data-updates="0">
<h1>riverseal monitor</h1>
<p class="note" id="status">loading…</p>
<table id="stations"><thead><tr><th>station</th><th>verdict</th><th>verified entries</th>
<th>last alert</th></tr></thead><tbody></tbody></table>
<div id="charts"></div>
<script>
"use strict";
const PAUSE_MS = 1000;  // at most a redraw a second, however busy the monitor
const SHOWN = 12;  // stations charted without a selection (#origin in the address selects one)
const COLORS = {1: "#2e7d32", 2: "#9e9e9e", 3: "#f9a825", 4: "#c62828", 9: "#9e9e9e"};
const ANCHOR_COLORS = {local: "#6d4c41", ledger: "#6a1b9a"};
const ANCHOR_LABELS = {local: "anchored in the box's own journal",
  ledger: "anchored on a ledger (receipt checked offline)"};
const anchorKind = a => a.status === "local" ? "local" : "ledger";
let token = "";
const el = (tag, attrs, text) => {
  const e = document.createElementNS(tag === "svg" || attrs.svg ? "http://www.w3.org/2000/svg"
    : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs)) if (k !== "svg") e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const when = s => new Date(s * 1000).toISOString().replace(".000Z", "Z");

function renderStations(stations) {
  const body = document.querySelector("#stations tbody");
  body.replaceChildren();
  for (const s of stations) {
    const tr = el("tr", {class: "station", "data-origin": s.origin, "data-level": s.level});
    const a = el("a", {href: "#" + encodeURIComponent(s.origin)}, s.origin);
    const name = el("td", {}); name.append(a); tr.append(name);
    const lv = el("td", {}); lv.append(el("span", {class: "level " + s.level}, s.level));
    tr.append(lv);
    tr.append(el("td", {}, String(s.verified_size)));
    const last = s.last_alert;
    tr.append(el("td", {class: "last-alert"}, last ? `${last.kind} at ${when(last.time_s)}` +
      (last.cleared_s ? " (cleared)" : "") + ": " + last.message : "none"));
    body.append(tr);
  }
}

function chart(origin, sensor, s, checkpoint, anchors) {
  const W = 640, H = 140, P = 30;
  const svg = el("svg", {class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`,
    "data-origin": origin, "data-sensor": sensor, "data-points": s.points.length});
  const pts = s.points.filter(p => p[1] !== null);
  const ts = s.points.map(p => p[0]);
  // Anchors from a second before the first reading (a TSA's genTime may be whole seconds).
  const marks = anchors.filter(a => a.time_s !== null && a.time_s >= Math.min(...ts) - 1);
  const t0 = Math.min(...ts, ...marks.map(a => a.time_s));
  // The axis runs to the last verification (a sensor gone quiet shows as empty space)
  // and to the newest anchoring time.
  const t1 = Math.max(...ts, t0 + 1, checkpoint ? checkpoint.verified_s : 0,
    ...marks.map(a => a.time_s));
  const vs = pts.map(p => p[1]);
  let v0 = Math.min(...vs), v1 = Math.max(...vs);
  if (!(v1 > v0)) { v0 -= 1; v1 += 1; }
  const x = t => P + (t - t0) / (t1 - t0) * (W - 2 * P);
  const y = v => H - P / 2 - (v - v0) / (v1 - v0) * (H - P);
  for (const g of s.gaps) {
    const a = Date.parse(g.start) / 1000, b = Date.parse(g.end) / 1000;
    if (b < t0 || a > t1) continue;
    const r = el("rect", {svg: 1, class: "gap", x: x(Math.max(a, t0)), y: 0, height: H,
      width: Math.max(2, x(Math.min(b, t1)) - x(Math.max(a, t0))), fill: "#ffcdd2"});
    r.append(el("title", {svg: 1}, `gap ${g.start} to ${g.end}: ${g.reason}`));
    svg.append(r);
  }
  if (checkpoint && checkpoint.verified_s >= t0 && checkpoint.verified_s <= t1) {
    const cx = x(checkpoint.verified_s);
    const l = el("line", {svg: 1, class: "checkpoint", x1: cx, x2: cx, y1: 0, y2: H,
      stroke: "#1565c0", "stroke-dasharray": "3 3"});
    const what = `checkpoint ${checkpoint.size} verified ${when(checkpoint.verified_s)}`;
    l.append(el("title", {svg: 1}, what));
    svg.append(l);
  }
  for (const a of marks) {
    const ax = x(a.time_s), kind = anchorKind(a);
    const l = el("line", {svg: 1, class: "anchor anchor-" + kind, x1: ax, x2: ax, y1: 14, y2: H,
      stroke: ANCHOR_COLORS[kind], "stroke-width": 2, "data-backend": a.backend,
      "data-checkpoint": a.checkpoint});
    l.append(el("title", {svg: 1}, `checkpoint ${a.checkpoint} anchored by ${a.backend} ` +
      `(${a.state}) at ${when(a.time_s)}; ${a.status === "local" ? "the box's own journal"
        : "receipt checked offline, the ledger itself not asked"}`));
    svg.append(l);
  }
  if (pts.length) {
    svg.append(el("polyline", {svg: 1, fill: "none", stroke: "#1565c0", "stroke-width": 1.5,
      points: pts.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}));
  }
  for (const p of pts) {
    if (p[2] === 1 || p[2] === null) continue;  // pass or not flagged: the line says enough
    const c = el("circle", {svg: 1, class: "qc qc-" + p[2], cx: x(p[0]), cy: y(p[1]), r: 3,
      fill: COLORS[p[2]] || "#000"});
    c.append(el("title", {svg: 1}, `QC flag ${p[2]} at ${when(p[0])}`));
    svg.append(c);
  }
  svg.append(el("text", {svg: 1, x: P, y: 12, "font-size": 11},
    `${sensor} ${s.unit || ""}: ${v0.toFixed(2)} to ${v1.toFixed(2)}, ${when(t0)} to ${when(t1)}`));
  return svg;
}

async function renderCharts(stations) {
  const chosen = decodeURIComponent(location.hash.slice(1));
  const shown = chosen ? stations.filter(s => s.origin === chosen) : stations.slice(0, SHOWN);
  const box = document.getElementById("charts");
  const parts = [];
  for (const s of shown) {
    const doc = await (await fetch("api/series?origin=" + encodeURIComponent(s.origin))).json();
    const sec = el("section", {class: "station-series", "data-origin": s.origin});
    sec.append(el("h2", {}, s.origin));
    const anchors = doc.anchors || [];
    for (const [sensor, series] of Object.entries(doc.sensors)) {
      if (series.points.length)
        sec.append(chart(s.origin, sensor, series, doc.checkpoint, anchors));
      for (const g of series.gaps)
        sec.append(el("p", {class: "note gap-reason"},
          `${sensor}: no readings ${g.start} to ${g.end}: ${g.reason}`));
    }
    const timed = anchors.filter(a => a.time_s !== null);
    if (timed.length) {
      const legend = el("p", {class: "note anchor-legend"});
      const kinds = new Set(timed.map(anchorKind));
      for (const kind of Object.keys(ANCHOR_LABELS).filter(k => kinds.has(k))) {
        legend.append(el("span", {style: `color: ${ANCHOR_COLORS[kind]}`}, "\u2503 "));
        legend.append(el("span", {class: "anchor-label"}, ANCHOR_LABELS[kind] + "  "));
      }
      sec.append(legend);
    }
    const last = timed[timed.length - 1];
    if (last)
      sec.append(el("p", {class: "note anchor-last"}, `last anchored: checkpoint ` +
        `${last.checkpoint} by ${last.backend} (${last.state}, ${last.status}) at ` +
        when(last.time_s)));
    for (const a of anchors.filter(a => a.status.startsWith("failed")))
      sec.append(el("p", {class: "note anchor-failed"},
        `anchor of checkpoint ${a.checkpoint} by ${a.backend}: ${a.status}`));
    parts.push(sec);
  }
  box.replaceChildren(...parts);
}

async function loop() {
  for (;;) {
    try {
      const r = await fetch("api/stations?seen=" + token);
      const doc = await r.json();
      token = doc.token;
      renderStations(doc.stations);
      await renderCharts(doc.stations);
      document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
      const points = [...document.querySelectorAll("svg.chart")]
        .reduce((n, c) => n + Number(c.dataset.points), 0);
      if (document.body.dataset.firstPoints === undefined)
        document.body.dataset.firstPoints = String(points);
      document.body.dataset.points = String(points);
      // The newest anchored checkpoint drawn, at first and now (tests watch it grow).
      const anchored = [...document.querySelectorAll("line.anchor")]
        .reduce((n, l) => Math.max(n, Number(l.dataset.checkpoint)), 0);
      if (document.body.dataset.firstAnchored === undefined)
        document.body.dataset.firstAnchored = String(anchored);
      document.body.dataset.anchored = String(anchored);
      document.getElementById("status").textContent =
        `${doc.stations.length} station(s), updated ${new Date().toISOString()}`;
      await new Promise(ok => setTimeout(ok, PAUSE_MS));
    } catch (e) {
      document.getElementById("status").textContent = "monitor unreachable: " + e;
      await new Promise(ok => setTimeout(ok, 2000));
    }
  }
}
window.addEventListener("hashchange", () => { token = ""; });
loop();
</script>
</body></html>
"""

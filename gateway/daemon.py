"""The gateway daemon: sources → ingest → log, with checkpoints and anchors beside them.

Everything long-lived is a named task in one TaskGroup. A source that fails
in a way its own driver did not handle is restarted after a capped, jittered
back-off; it never takes the daemon or the other sources down with it.
Shutdown stops the sources first, then commits what they handed over, signs a
final checkpoint and anchors it.

Beside them, the silence watcher writes signed gap records for configured
sensors that stop reporting (gateway/silence.py), whatever their driver, and
every reading value is quality-controlled before it is signed (gateway/qc.py).
``status.json`` shows, per sensor, its last reading, counts, refusals by reason,
the silence it is in and its QC flags, and per source its restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger_client.records import format_time

from .anchoring.anchorer import Anchorer
from .anchoring.backend import AnchorBackend
from .anchoring.registry import build_backends
from .backoff import Backoff
from .config import GatewayConfig
from .errors import GatewayError
from .ingest import Ingest
from .keys import DeviceKey, load_device_key
from .log import Log
from .qc import QC_TESTS, QcEngine
from .silence import Expectation, SilenceTracker, expectation
from .sources.base import Event, Source
from .sources.registry import build_sources
from .store import Store

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_RESTART_CAP_S = 60.0
_SILENCE_POLL_MAX_S = 30.0  # wake at least this often, in case the wall clock steps


@dataclass
class SourceHealth:
    """How one supervised source is doing, for status.json."""

    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    last_error_time: str | None = None


def sensor_expectations(config: GatewayConfig) -> dict[str, Expectation]:
    """Per configured sensor id, how often it should report.

    Every driver's config has ``interval_s``; one with a ``timeout_s`` gets at
    least the time its retries may take (``timeout_s`` x (``retries`` + 1)) as
    grace. An MQTT sensor whose id is a ``{id}`` template stands for sensors
    named by their topics, which are only known once they publish: it is not
    watched for silence (its nodes' ``seq`` jumps still become gap records).
    """
    out: dict[str, Expectation] = {}
    for s in config.sensors:
        if "{id}" in s.id:
            continue
        timeout = getattr(s, "timeout_s", None)
        if timeout is not None:
            timeout *= getattr(s, "retries", 0) + 1
        out[s.id] = expectation(s.interval_s, timeout)
    return out


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        sources: Sequence[Source] | None = None,
        backends: Sequence[AnchorBackend] | None = None,
        status_every_s: float = 5.0,
    ) -> None:
        self.config = config
        self._sources = sources
        self._backends = backends
        self.status_every_s = status_every_s
        self.ingest: Ingest | None = None
        self.anchorer: Anchorer | None = None
        self.key: DeviceKey | None = None
        self.silence: SilenceTracker | None = None
        self.health: dict[str, SourceHealth] = {}
        """Per source name (for serial drivers, the sensor id)."""
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        self.key = key = load_device_key(cfg.key_file)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        backends = list(self._backends) if self._backends is not None else build_backends(cfg)
        sources = (
            list(self._sources) if self._sources is not None else build_sources(cfg, key.device_id)
        )
        async with Store(cfg.db_path) as store:
            log_ = Log(store, key, qc=QcEngine(cfg.qc))
            await log_.open()
            self.anchorer = anchorer = Anchorer(
                store, backends, retry_max_seconds=cfg.anchor.retry_max_seconds
            )
            boot_ns = time.time_ns()
            # Silence is counted from this start: the boot event covers the downtime before it.
            self.silence = silence = SilenceTracker(sensor_expectations(cfg), boot_ns)
            self.ingest = ingest = Ingest(
                log_, cfg.log, on_checkpoint=anchorer.notify, silence=silence
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    writer = tg.create_task(ingest.run(), name="gateway.ingest")
                    await ingest.submit_event(Event("boot", boot_ns, self._boot_detail()))
                    anchoring = tg.create_task(anchorer.run(), name="gateway.anchor")
                    status = tg.create_task(self._write_status(), name="gateway.status")
                    watcher = tg.create_task(
                        self._watch_silence(silence, ingest), name="gateway.silence"
                    )
                    feeds = [
                        tg.create_task(
                            self._supervise(src, ingest), name=f"gateway.source[{src.name}]"
                        )
                        for src in sources
                    ]
                    log.info(
                        "gateway %s running: %d sources, log size %d",
                        key.device_id,
                        len(sources),
                        log_.size,
                    )
                    self.started.set()
                    await stop.wait()
                    log.info("stopping: sources first, then the log")
                    for t in [*feeds, watcher]:
                        t.cancel()
                    await asyncio.gather(*feeds, watcher, return_exceptions=True)
                    await ingest.close()
                    await writer
                    anchoring.cancel()
                    await asyncio.gather(anchoring, return_exceptions=True)
                    await anchorer.step()  # anchor the final checkpoint before leaving
                    status.cancel()
                    self._status_snapshot()
            finally:
                for b in backends:
                    await b.aclose()
        log.info("stopped cleanly at log size %d", log_.size)

    def _boot_detail(self) -> dict[str, Any]:
        try:
            cfg_hash = hashlib.sha256(self.config.path.read_bytes()).hexdigest()
        except OSError:
            cfg_hash = ""
        return {
            "version": VERSION,
            "config_sha256": cfg_hash,
            "pid": os.getpid(),
            # What the digits of each value's qc.tests stand for, in order.
            "qc_tests": ",".join(QC_TESTS),
        }

    async def _supervise(self, source: Source, ingest: Ingest) -> None:
        """Run ``source`` until cancelled; restart it after a crash, with back-off.

        Each crash is logged once, naming the source (the traceback only when the
        failure differs from the previous one, so a crash loop does not flood the
        journal), counted in ``health`` and offered to the silence tracker as
        the reason its sensor went quiet.
        """
        backoff = Backoff(base_s=1.0, cap_s=_RESTART_CAP_S)
        health = self.health.setdefault(source.name, SourceHealth())
        while True:
            started = time.monotonic()
            health.running = True
            try:
                await source.run(ingest)
                health.running = False
                return
            except GatewayError as exc:
                self._count_crash(source.name, health, exc)
                log.error("source %s stopped: %s (restart %d)", source.name, exc, health.restarts)
            except Exception as exc:
                if self._count_crash(source.name, health, exc):
                    log.exception("source %s crashed (restart %d)", source.name, health.restarts)
                else:
                    log.error(
                        "source %s crashed again: %s (restart %d)",
                        source.name,
                        health.last_error,
                        health.restarts,
                    )
            if time.monotonic() - started > _RESTART_CAP_S:
                backoff.reset()  # it ran well for a while: this is a new failure
            await backoff.sleep()

    def _count_crash(self, name: str, health: SourceHealth, exc: Exception) -> bool:
        """Count a stopped source; True if the failure differs from its previous one."""
        error = f"{type(exc).__name__}: {exc}"
        new = error != health.last_error
        health.running = False
        health.restarts += 1
        health.last_error = error
        health.last_error_time = format_time(time.time_ns())
        if self.silence is not None:
            self.silence.reject(name, "source-stopped")
        return new

    async def _watch_silence(self, silence: SilenceTracker, ingest: Ingest) -> None:
        """Write the gap records of silent sensors as they fall due."""
        while True:
            gaps = silence.poll(time.time_ns())
            if gaps:
                for gap in gaps:
                    log.warning(
                        "sensor %s: silent since %s (%s)",
                        gap.sensor,
                        format_time(gap.from_ns),
                        gap.reason,
                    )
                await asyncio.gather(*(ingest.submit_gap(g) for g in gaps))
            due = silence.next_due_ns()
            delay = _SILENCE_POLL_MAX_S if due is None else (due - time.time_ns()) / 1e9
            await asyncio.sleep(min(max(delay, 0.001), _SILENCE_POLL_MAX_S))

    def status(self) -> dict[str, Any]:
        ing, anc = self.ingest, self.anchorer
        if ing is None or anc is None:
            return {}
        cp = ing.log.last_checkpoint
        return {
            "time": format_time(time.time_ns()),
            "pid": os.getpid(),  # `gateway status` reads the store instead once this is gone
            "device": self.key.device_id if self.key else None,
            "log_size": ing.log.size,
            "checkpoint": {"size": cp.size, "time": format_time(cp.time_ns)} if cp else None,
            "readings": dict(ing.per_sensor),
            "rejected": {f"{s}/{r}": n for (s, r), n in ing.rejected.items()},
            "sensors": self._sensor_status(ing),
            "sources": {name: vars(h) for name, h in self.health.items()},
            "ingest": vars(ing.stats),
            "anchors": {name: st.to_json() for name, st in anc.status.items()},
        }

    def _sensor_status(self, ing: Ingest) -> dict[str, Mapping[str, Any]]:
        qc = ing.log.qc.flag_counts()
        names = {s.id for s in self.config.sensors} | set(ing.per_sensor)
        names |= {s for s, _ in ing.rejected}
        out: dict[str, Mapping[str, Any]] = {}
        for name in sorted(names):
            last = ing.last_reading_ns.get(name)
            quiet = self.silence.silence(name) if self.silence is not None else None
            out[name] = {
                "last_reading": format_time(last) if last is not None else None,
                "readings": ing.per_sensor.get(name, 0),
                "rejected": {r: n for (s, r), n in sorted(ing.rejected.items()) if s == name},
                "silence": (
                    {"since": format_time(quiet.since_ns), "reason": quiet.reason}
                    if quiet is not None
                    else None
                ),
                "qc": qc.get(name, {}),
            }
        return out

    def _status_snapshot(self) -> None:
        path: Path = self.config.data_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.status(), indent=1, sort_keys=True))
            os.replace(tmp, path)

    async def _write_status(self) -> None:
        while True:
            self._status_snapshot()
            await asyncio.sleep(self.status_every_s)

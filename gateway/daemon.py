"""The gateway daemon: sources → ingest → log, with checkpoints and anchors beside them.

Everything long-lived is a named task in one TaskGroup. A source that fails
in a way its own driver did not handle is restarted after a capped, jittered
back-off; it never takes the daemon or the other sources down with it.
Shutdown stops the sources first, then commits what they handed over, signs a
final checkpoint and anchors it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
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
from .sources.base import Event, Source
from .sources.registry import build_sources
from .store import Store

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_RESTART_CAP_S = 60.0


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
            log_ = Log(store, key)
            await log_.open()
            self.anchorer = anchorer = Anchorer(
                store, backends, retry_max_seconds=cfg.anchor.retry_max_seconds
            )
            self.ingest = ingest = Ingest(log_, cfg.log, on_checkpoint=anchorer.notify)
            try:
                async with asyncio.TaskGroup() as tg:
                    writer = tg.create_task(ingest.run(), name="gateway.ingest")
                    await ingest.submit_event(Event("boot", time.time_ns(), self._boot_detail()))
                    anchoring = tg.create_task(anchorer.run(), name="gateway.anchor")
                    status = tg.create_task(self._write_status(), name="gateway.status")
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
                    for t in feeds:
                        t.cancel()
                    await asyncio.gather(*feeds, return_exceptions=True)
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
        return {"version": VERSION, "config_sha256": cfg_hash, "pid": os.getpid()}

    async def _supervise(self, source: Source, ingest: Ingest) -> None:
        backoff = Backoff(base_s=1.0, cap_s=_RESTART_CAP_S)
        while True:
            started = time.monotonic()
            try:
                await source.run(ingest)
                return
            except GatewayError as exc:
                log.error("source %s stopped: %s", source.name, exc)
            except Exception:
                log.exception("source %s crashed; restarting it", source.name)
            if time.monotonic() - started > _RESTART_CAP_S:
                backoff.reset()  # it ran well for a while: this is a new failure
            await backoff.sleep()

    def status(self) -> dict[str, Any]:
        ing, anc = self.ingest, self.anchorer
        if ing is None or anc is None:
            return {}
        cp = ing.log.last_checkpoint
        return {
            "time": format_time(time.time_ns()),
            "device": self.key.device_id if self.key else None,
            "log_size": ing.log.size,
            "checkpoint": {"size": cp.size, "time": format_time(cp.time_ns)} if cp else None,
            "readings": dict(ing.per_sensor),
            "rejected": {f"{s}/{r}": n for (s, r), n in ing.rejected.items()},
            "ingest": vars(ing.stats),
            "anchors": {
                name: {
                    "last_final": st.last_final,
                    "pending": st.pending,
                    "last_error": st.last_error,
                }
                for name, st in anc.status.items()
            },
        }

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

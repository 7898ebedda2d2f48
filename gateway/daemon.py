"""The gateway daemon: sources → ingest → log, with checkpoints and anchors beside them.

Everything long-lived is a named task in one TaskGroup. A source that fails
in a way its own driver did not handle is restarted after a capped, jittered
back-off; it never takes the daemon or the other sources down with it.
Shutdown stops the sources first, then commits what they handed over, signs a
final checkpoint and anchors it.

Beside them, the silence watcher writes signed gap records for configured
sensors that stop reporting (gateway/silence.py), whatever their driver, and
every reading value is quality-controlled before it is signed (gateway/qc.py).
Wall time comes from a ``GatewayClock`` (gateway/clock.py; tests pass their own): when
it steps, a signed ``clock-step`` event is queued ahead of whatever is submitted next
and the silence deadlines move by the step (``_clock_stepped``, ``_StepAwareSink``).

The log bounds its own downtime (docs/bundle-format.md §4.2, §4.2.2): a
clean shutdown ends with a ``stop`` event; each ``boot`` event declares the
watched sensors and their expectations and says how the run before it ended
(``previous``: a ``stop`` last means clean, anything else a crash, a kill or
a power cut); right after it, a ``gateway-down`` gap per watched sensor
covers the time from its last covered instant to the boot, and a ``config``
event lists the sensors added, removed or changed since the last
declaration. Before anything is written, the log is checked against the
history this key has already signed (gateway/history.py).
The status document (gateway/health/model.py) shows, per sensor, its state,
last values and their age, counts, the real last error (a driver that knows
its link is down says why, and the gap records carry the same reason), the
silence it is in and its QC flags by name; per source its restarts; the log,
its last checkpoint, the oldest entry not anchored final, each ledger, disk use
and clock sync. It is written to ``status.json`` every ``status_every_s`` (in
systemd's ``$RUNTIME_DIRECTORY`` when it gives one, a tmpfs, with a symlink to
it in the data directory: ``status_file``; else in the data directory) and
served, as JSON, Prometheus metrics and a page, by the ``gateway.http`` task
(gateway/health/http.py, ``[status] listen``).

One daemon per data directory: ``run`` holds ``<data_dir>/gateway.lock``
(gateway/lock.py) before it reads or writes anything. Under systemd
(gateway/notify.py) it says ``READY=1`` once the boot event is committed and
the sources are started, keeps a one-line ``STATUS=`` with the status file,
sends ``WATCHDOG=1`` only while the ingest writer answers (``_watchdog``) and
``STOPPING=1`` when asked to stop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.drivers import build_sources, driver_for
from gateway.drivers.base import Source
from ledger_client.errors import LedgerClientError
from ledger_client.records import format_time, parse_time

from .anchoring.anchorer import Anchorer
from .anchoring.backend import AnchorBackend
from .anchoring.registry import build_backends
from .backoff import Backoff
from .clock import ClockStep, GatewayClock, clock_state
from .config import GatewayConfig
from .errors import GatewayError, StorageRefused, StoreError
from .health.http import StatusServer
from .health.model import Facts, SensorFacts, build_status
from .history import HighWater, HistoryConflict, check_history, high_water_path, read_high_water
from .ingest import Ingest
from .keys import DeviceKey, load_device_key
from .lock import hold_data_dir
from .log import Log
from .notify import Notifier
from .pipeline import Event, Gap, Reading, Sink
from .qc import QC_TESTS, QcEngine
from .retention import Retention
from .silence import Expectation, SilenceTracker, expectation
from .storage import StorageGuard
from .store import CheckpointRow, Store
from .uplink import Uplink
from .witnessing import Witnessing

__all__ = ["BOOT_META", "GATEWAY_DOWN", "BootPlan", "Gateway", "declared_sensors", "plan_boot"]

logger = logging.getLogger(__name__)

VERSION = "0.1.0"
_RESTART_CAP_S = 60.0
_SILENCE_POLL_MAX_S = 30.0  # wake at least this often, in case the wall clock steps
# Each step of a stop is bounded (the final anchor, witness and uplink tries: 5 s or so);
# a stop still running after this long is a bug, and the log says where it waits.
_SLOW_STOP_S = 20.0
_STOP_TASK_S = 5.0  # a cancelled task ends at its next await: this long is lost


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until they are done.

    On Python 3.11, ``asyncio.wait_for`` (inside aiomqtt, among others) loses a
    cancellation that arrives as the awaited future completes, and the task runs on:
    one still running after ``_STOP_TASK_S`` is logged and cancelled again."""
    for task in tasks:
        task.cancel()
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=_STOP_TASK_S)
        for task in pending:
            logger.error(
                "%s went on after it was cancelled, at %s: cancelling it again",
                task.get_name(),
                _awaiting(task),
            )
            task.cancel()


def _report_slow_stop() -> None:
    waiting = "; ".join(
        f"{task.get_name()} at {_awaiting(task)}" for task in asyncio.all_tasks() if not task.done()
    )
    logger.warning("still stopping after %g s, waiting in: %s", _SLOW_STOP_S, waiting)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is suspended: its chain of awaits, outermost first."""
    where: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(where) < 12:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            where.append(type(coro).__name__)
            break
        where.append(
            f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})"
        )
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return " > ".join(where)


GATEWAY_DOWN = "gateway-down"
"""The reason of the gaps that cover the time the gateway was not running."""
BOOT_META = "last_boot"
"""Meta key: ``{"index": i, "before": j}``, set just before each boot event is written at
index i, j being the index of the boot before it (or null). It spares the boot a walk
back through a year of readings to find the previous declaration of the sensors."""


@dataclass
class SourceHealth:
    """How one supervised source is doing, for status.json."""

    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    last_error_time: str | None = None


def sensor_expectations(config: GatewayConfig) -> dict[str, Expectation]:
    """Per configured sensor id, how often it should report.

    Every driver's config has ``interval_s``; the driver table's ``grace_s`` gives a
    sensor at least the time its retries may take (``timeout_s`` x (``retries`` + 1))
    as grace, and its ``watched`` leaves out what cannot be watched: an MQTT sensor
    whose id is a ``{id}`` template stands for sensors named by their topics, which
    are only known once they publish (its nodes' ``seq`` jumps still become gap
    records).
    """
    out: dict[str, Expectation] = {}
    for s in config.sensors:
        driver = driver_for(s)
        if driver.watched(s):
            out[s.id] = expectation(s.interval_s, driver.grace_s(s))
    return out


def declared_sensors(config: GatewayConfig) -> dict[str, dict[str, float]]:
    """What a ``boot`` event declares: per watched sensor, its interval and expectation."""
    intervals = {s.id: s.interval_s for s in config.sensors}
    return {
        sensor: {
            "interval_s": intervals[sensor],
            "allowance_s": e.allowance_ns / 1e9,
            "repeat_s": e.repeat_ns / 1e9,
        }
        for sensor, e in sorted(sensor_expectations(config).items())
    }


@dataclass(frozen=True)
class BootPlan:
    """What the daemon writes as it starts, worked out from the log before anything is."""

    previous: dict[str, Any] | None
    """The boot event's ``previous``: the last entry before it and how that run ended."""
    last_boot: int | None
    """The index of the latest earlier boot event, if the log has one."""
    sensors: dict[str, dict[str, float]]
    """The boot event's ``sensors``."""
    config: dict[str, Any] | None
    """The detail of the ``config`` event to write after it, if the sensors changed."""
    gaps: list[Gap]
    """The ``gateway-down`` gaps to write after it."""


async def _last_boot(store: Store, size: int) -> tuple[int, dict[str, Any]] | None:
    """The latest boot event of the log (since its start or history reset)."""
    text = await store.get_meta(BOOT_META)
    hint: Any = None
    if text is not None:
        with contextlib.suppress(ValueError):
            hint = json.loads(text)
    if isinstance(hint, dict):
        index, before = hint.get("index"), hint.get("before")
        if isinstance(index, int) and index >= size:
            # That start wrote nothing (stopped before its boot event was committed).
            index = before
            if index is None:
                return None
        if isinstance(index, int) and 0 <= index < size:
            rec = await store.record(index)
            if rec is not None and rec.get("kind") == "event" and rec.get("event") == "boot":
                return index, rec
    # No hint (a log written before there was one), or it does not hold: look.
    found = await store.last_event(("boot", "history-reset"))
    if found is None or found[1].get("event") != "boot":
        return None
    return found


async def plan_boot(store: Store, config: GatewayConfig, boot_ns: int) -> BootPlan:
    """The boot event's ``sensors`` and ``previous``, and what follows it."""
    size = await store.size()
    previous = None
    if size > 0:
        last = await store.record(size - 1)
        if last is None:
            raise StoreError(f"log database {store.path}: entry {size - 1} is missing")
        clean = last.get("kind") == "event" and last.get("event") == "stop"
        previous = {
            "index": size - 1,
            "time": last.get("time"),
            "stop": "clean" if clean else "unclean",
        }
    sensors = declared_sensors(config)
    boot = await _last_boot(store, size)
    change = None
    if boot is not None:
        detail = boot[1].get("detail")
        before = detail.get("sensors") if isinstance(detail, dict) else None
        if not isinstance(before, dict):
            before = {}  # a boot event of a gateway that did not declare its sensors
        added = sorted(sensors.keys() - before.keys())
        removed = sorted(before.keys() - sensors.keys())
        changed = sorted(s for s in sensors.keys() & before.keys() if before[s] != sensors[s])
        if added or removed or changed:
            change = {"added": added, "removed": removed, "changed": changed, "sensors": sensors}
    gaps = []
    for sensor in sensors:
        covered = await store.covered_until(sensor)
        if covered is not None and boot_ns > covered:
            gaps.append(Gap(sensor, GATEWAY_DOWN, covered, boot_ns))
    return BootPlan(previous, None if boot is None else boot[0], sensors, change, gaps)


def status_file(data_dir: Path, environ: Mapping[str, str]) -> Path:
    """Where the daemon writes status.json: ``$RUNTIME_DIRECTORY`` (systemd's
    ``RuntimeDirectory=``, a tmpfs under /run) when set, so that a rewrite every few
    seconds costs the SD card nothing, with ``<data_dir>/status.json`` made a symlink
    to it once (what ``gateway status`` and ``rotate-key`` read); else the data
    directory itself."""
    local = data_dir / "status.json"
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if not runtime:
        return local
    target = Path(runtime) / "status.json"
    try:
        if local.is_symlink() and local.readlink() == target:
            return target
        link = local.with_suffix(".link")
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        os.replace(link, local)
    except OSError as exc:
        logger.warning("status.json stays in %s: no symlink to %s (%s)", data_dir, target, exc)
        return local
    return target


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        sources: Sequence[Source] | None = None,
        backends: Sequence[AnchorBackend] | None = None,
        status_every_s: float = 5.0,
        notifier: Notifier | None = None,
        clock: GatewayClock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock if clock is not None else GatewayClock()
        """Wall time for everything the daemon stamps; a step becomes a ``clock-step`` event."""
        self._clock_events: list[Event] = []
        """``clock-step`` events not yet queued: each goes ahead of whatever is submitted next."""
        self.notifier = notifier if notifier is not None else Notifier(None)
        """systemd's notification socket (``Notifier.from_environment()``); a no-op by default."""
        self.watchdog_problem: str | None = None
        """Why ``WATCHDOG=1`` is being withheld, while it is."""
        self._status_sent: str | None = None
        self._sources = sources
        self._backends = backends
        self.status_every_s = status_every_s
        self._status_path: Path | None = None  # status_file, found at the first write
        self.ingest: Ingest | None = None
        self.anchorer: Anchorer | None = None
        self.witnessing: Witnessing | None = None
        self.uplink: Uplink | None = None
        self.key: DeviceKey | None = None
        self.silence: SilenceTracker | None = None
        self.storage: StorageGuard | None = None
        self.health: dict[str, SourceHealth] = {}
        """Per source name (for serial drivers, the sensor id)."""
        self.started = asyncio.Event()
        self.started_ns = self.clock.time_ns()
        self._resumed = asyncio.Event()
        """Set when a silent sensor reports again (the silence watcher recomputes its sleep)."""
        self.http: StatusServer | None = None
        """The status server, once the daemon runs."""
        self._store: Store | None = None
        self.retention: Retention | None = None
        """The retention task's state, with ``[storage] retain_days``."""
        self._first_unanchored: tuple[int, int | None] | None = None
        """(index, its time ns): the oldest entry not anchored final, as last looked up."""

    async def run(self, stop: asyncio.Event) -> None:
        # One daemon per data directory, taken before anything is read or written.
        with hold_data_dir(self.config.data_dir, "gateway run", self.config.path):
            try:
                await self._run(stop)
            finally:
                self.notifier.close()

    async def _run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        self.notifier.status("starting: checking the log")
        self.key = key = load_device_key(cfg.key_file)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        hw_path = high_water_path(cfg.key_file)
        mark = read_high_water(hw_path)
        if mark is not None and not cfg.db_path.exists():
            # Refused before an empty database is made in its place (history.py's words).
            raise HistoryConflict(
                f"this key already signed checkpoint {mark.size} (root "
                f"{base64.b64encode(mark.root).decode()}, at {mark.time}) per {hw_path}, but "
                f"{cfg.db_path.name} holds no entries: the database was deleted or restored "
                "from an older copy",
                cfg.path,
            )
        backends = list(self._backends) if self._backends is not None else build_backends(cfg)
        sources = (
            list(self._sources) if self._sources is not None else build_sources(cfg, key.device_id)
        )
        async with contextlib.AsyncExitStack() as stack:
            store = await self._open_store(stack)
            self._store = store
            # Before anything is written: does this log extend what the key already signed?
            await check_history(store, cfg, key)
            log_ = Log(store, key, qc=QcEngine(cfg.qc), clock=self.clock.time_ns)
            await log_.open()
            self.anchorer = anchorer = Anchorer(
                store, backends, retry_max_seconds=cfg.anchor.retry_max_seconds
            )
            self.witnessing = witnessing = Witnessing(store, cfg.witnesses)
            self.uplink = uplink = Uplink(log_, cfg.uplink) if cfg.uplink is not None else None
            high_water = HighWater(high_water_path(cfg.key_file), key.origin)
            boot_ns = self.clock.time_ns()
            plan = await plan_boot(store, cfg, boot_ns)
            # Silence is counted from this start; the gateway-down gaps cover the time before it.
            self.silence = silence = SilenceTracker(
                sensor_expectations(cfg), boot_ns, on_resume=lambda _: self._resumed.set()
            )
            self.clock.on_step.append(self._clock_stepped)

            def checkpoint_signed(cp: CheckpointRow) -> None:
                anchorer.notify(cp)
                witnessing.notify(cp)
                if uplink is not None:
                    uplink.notify(cp)
                high_water.checkpoint_signed(cp)

            self.storage = storage = StorageGuard(cfg.storage, cfg.data_dir)
            storage.measure()
            self.retention = retention = (
                Retention(
                    cfg.db_path,
                    [b.name for b in backends],
                    cfg.storage.retain_days,
                    mirror=uplink is not None,  # only what the mirror holds may go
                    clock=self.clock.time_ns,
                )
                if cfg.storage.retain_days
                else None
            )
            self.ingest = ingest = Ingest(
                log_,
                cfg.log,
                on_checkpoint=checkpoint_signed,
                silence=silence,
                storage=storage,
                hold_limits={s.id: s.interval_s / 2 for s in cfg.sensors},
            )
            boot = {
                **self._boot_detail(),
                "sensors": plan.sensors,
                "previous": plan.previous,
            }
            try:
                if uplink is not None:
                    await uplink.__aenter__()  # left in the finally below
                async with asyncio.TaskGroup() as tg:
                    writer = tg.create_task(ingest.run(), name="gateway.ingest")
                    # Status and the watchdog run while a full disk holds the boot back.
                    status = tg.create_task(self._write_status(), name="gateway.status")
                    self.http = StatusServer(cfg.status, self.status)
                    serving = tg.create_task(self.http.serve(), name="gateway.http")
                    pings: list[asyncio.Task[None]] = []
                    every_s = self.notifier.watchdog_interval_s
                    if every_s is not None:
                        pings.append(
                            tg.create_task(
                                self._watchdog(store, ingest, writer, every_s),
                                name="gateway.watchdog",
                            )
                        )
                    boot_items: list[Event | Gap] = [
                        Event("boot", boot_ns, boot),
                        *plan.gaps,
                        *(
                            [Event("config", self.clock.time_ns(), plan.config)]
                            if plan.config
                            else []
                        ),
                    ]
                    await self._write_boot(store, ingest, storage, boot_items, plan.last_boot)
                    storage.watched = set(silence.sensors)
                    for gap in plan.gaps:
                        logger.info(
                            "sensor %s: gap while the gateway was down, since %s",
                            gap.sensor,
                            format_time(gap.from_ns),
                        )
                    if plan.config is not None:
                        logger.warning(
                            "sensors changed since the last start: added %s, removed %s, "
                            "changed %s",
                            plan.config["added"],
                            plan.config["removed"],
                            plan.config["changed"],
                        )
                    anchoring = tg.create_task(anchorer.run(), name="gateway.anchor")
                    cosigning = tg.create_task(witnessing.run(), name="gateway.witnesses")
                    uplinking = tg.create_task(
                        uplink.run() if uplink is not None else asyncio.sleep(0),
                        name="gateway.uplink",
                    )
                    watcher = tg.create_task(
                        self._watch_silence(silence, ingest), name="gateway.silence"
                    )
                    if retention is not None:  # start, then hourly; cancelled with the pings
                        pings.append(tg.create_task(retention.run(), name="gateway.retention"))
                    feeds = [
                        tg.create_task(
                            self._supervise(src, _StepAwareSink(self, ingest)),
                            name=f"gateway.source[{src.name}]",
                        )
                        for src in sources
                    ]
                    logger.info(
                        "gateway %s running: %d sources, log size %d",
                        key.device_id,
                        len(sources),
                        log_.size,
                    )
                    self.started.set()
                    await asyncio.sleep(0)  # each source takes its first step
                    self.notifier.ready(self.summary())
                    await stop.wait()
                    logger.info("stopping: sources first, then the log")
                    slow = asyncio.get_running_loop().call_later(_SLOW_STOP_S, _report_slow_stop)
                    stack.callback(slow.cancel)
                    self.notifier.stopping("stopping: committing what the sources handed over")
                    await _stop(*feeds, watcher, *pings)
                    try:
                        # The last entry of a clean run: the next boot's "previous" says so.
                        await ingest.submit_event(
                            Event("stop", self.clock.time_ns(), {"cause": "clean"})
                        )
                    except GatewayError as exc:
                        logger.error("the stop event could not be logged: %s", exc)
                    await ingest.close()
                    await writer
                    if log_.last_checkpoint is not None:
                        high_water.write(log_.last_checkpoint)
                    await _stop(anchoring)
                    await anchorer.step()  # anchor the final checkpoint before leaving
                    await _stop(cosigning)
                    await witnessing.finish()  # one bounded try for the final checkpoint
                    await _stop(uplinking)
                    if uplink is not None:
                        await uplink.finish()  # the final checkpoint, bounded
                    await _stop(status, serving)
                    self._status_snapshot()
            finally:
                for b in backends:
                    await b.aclose()
                if self.uplink is not None:
                    await self.uplink.__aexit__(None, None, None)
        logger.info("stopped cleanly at log size %d", log_.size)

    async def _open_store(self, stack: contextlib.AsyncExitStack) -> Store:
        """The log database, opened. A disk too full (or failing) to open it — SQLite must
        make its WAL files — is waited for with the daemon up: it says why in ``STATUS=``,
        says ``READY=1`` (it is correctly refusing) and feeds the watchdog, since a
        restart would not help."""
        backoff = Backoff(base_s=0.5, cap_s=self.config.storage.retry_max_seconds)
        told = False
        while True:
            try:
                return await stack.enter_async_context(Store(self.config.db_path))
            except StorageRefused as exc:
                line = f"storage {exc.state}: the log cannot be opened, waiting ({exc})"
                if not told:
                    logger.error("%s", line)
                    self.notifier.ready(line)
                    told = True
                self.notifier.status(line)
                self.notifier.watchdog()
                delay = backoff.next_delay()
                every = self.notifier.watchdog_interval_s
                await asyncio.sleep(min(delay, every) if every is not None else delay)

    async def _write_boot(
        self,
        store: Store,
        ingest: Ingest,
        storage: StorageGuard,
        items: list[Event | Gap],
        last_boot: int | None,
    ) -> None:
        """The boot event and what follows it, each written once; retried while the
        storage refuses writes (restarting would not help), with the daemon up,
        its status saying why and its watchdog fed."""
        told_ready = False
        while True:
            boot_pending = isinstance(items[0], Event) and items[0].name == "boot"
            try:
                if boot_pending:
                    await store.set_meta(
                        BOOT_META, json.dumps({"index": ingest.log.size, "before": last_boot})
                    )
                # Queued together, in this order: usually one transaction.
                results = await asyncio.gather(
                    *(
                        ingest.submit_event(it) if isinstance(it, Event) else ingest.submit_gap(it)
                        for it in items
                    ),
                    return_exceptions=True,
                )
            except StorageRefused as exc:
                storage.failed(exc)
                results = [exc] * len(items)
            failed = [e for e in results if isinstance(e, BaseException)]
            for e in failed:
                if not isinstance(e, StorageRefused):
                    raise e
            if not failed:
                return
            items = [it for it, r in zip(items, results, strict=True) if r is not None]
            if not told_ready:
                # Up and correctly refusing: systemd must not take this for a failed start.
                self.notifier.ready(self.summary())
                told_ready = True
            self._notify_status()
            logger.error("the boot event waits for the storage: %s", failed[0])
            await asyncio.sleep(max(storage.retry_in() or 0.0, 0.5))

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

    async def _supervise(self, source: Source, ingest: Sink) -> None:
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
            except StorageRefused as exc:
                # Not the source's fault: it starts again as soon as the log takes writes
                # (the ingest writer retries on its own), with no growing back-off.
                self._count_crash(source.name, health, exc)
                logger.warning("source %s paused: %s", source.name, exc)
                if self.storage is not None:
                    await self.storage.accepting.wait()
                backoff.reset()
                continue
            except GatewayError as exc:
                self._count_crash(source.name, health, exc)
                logger.error(
                    "source %s stopped: %s (restart %d)", source.name, exc, health.restarts
                )
            except Exception as exc:
                if self._count_crash(source.name, health, exc):
                    logger.exception("source %s crashed (restart %d)", source.name, health.restarts)
                else:
                    logger.error(
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
        if self.ingest is not None and any(s.id == name for s in self.config.sensors):
            # A serial source is its sensor: its status shows the crash as its last error.
            self.ingest.reject(name, "source-stopped", error)
        elif self.silence is not None:
            self.silence.reject(name, "source-stopped")
        return new

    async def _watch_silence(self, silence: SilenceTracker, ingest: Ingest) -> None:
        """Write the gap records of silent sensors as they fall due."""
        while True:
            now = self.clock.time_ns()  # a step is noticed, and the tracker moved, first
            self.flush_clock_events(ingest)
            for gap in silence.poll(now):
                logger.warning(
                    "sensor %s: silent since %s (%s)",
                    gap.sensor,
                    format_time(gap.from_ns),
                    gap.reason,
                )
                # Queued now, before any reading that arrives after this poll (as the gap
                # that closes a silence is): a reading must never be logged ahead of the
                # gap that covers the silence before it (docs/bundle-format.md §4.2.2).
                ingest._enqueue_detached(gap)
            due = silence.next_due_ns()
            delay = _SILENCE_POLL_MAX_S if due is None else (due - now) / 1e9
            # Woken early when a silent sensor reports: its next silence is due within
            # its allowance, not at the repeat time this sleep was computed from.
            self._resumed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(max(delay, 0.001), _SILENCE_POLL_MAX_S)):
                    await self._resumed.wait()

    def _clock_stepped(self, step: ClockStep) -> None:
        """Wall time stepped: silence deadlines move with it, and the step is logged."""
        logger.warning(
            "the clock stepped %+.3f s (from %s to %s)",
            step.step_ns / 1e9,
            format_time(step.from_ns),
            format_time(step.to_ns),
        )
        if self.silence is not None:
            self.silence.clock_step(step.step_ns)
        self._clock_events.append(Event("clock-step", step.to_ns, step.detail()))

    def flush_clock_events(self, ingest: Ingest) -> None:
        """Queue the ``clock-step`` events noticed, ahead of anything submitted after this
        (at once, not awaiting their commit, so no submission overtakes another)."""
        while self._clock_events:
            ingest._enqueue_detached(self._clock_events.pop(0))

    def on_current_scale(self, reading: Reading) -> Reading:
        """``reading`` with its receive time on the clock's scale since its latest step.

        A reading stamped just before a step and submitted just after it is moved by
        the step (the same instant, read off the stepped clock), so the log never
        shows a stamp from the old scale after the ``clock-step`` event.
        """
        now = self.clock.time_ns()
        step = self.clock.last_step
        if step is None:
            return reading
        old_now = now - step.step_ns
        if abs(reading.received_ns - old_now) < abs(reading.received_ns - now):
            return dataclasses.replace(reading, received_ns=reading.received_ns + step.step_ns)
        return reading

    def status(self) -> dict[str, Any]:
        """The status document now (empty while starting)."""
        facts = self.facts()
        return {} if facts is None else build_status(facts)

    def facts(self) -> Facts | None:
        """What the daemon knows, as plain data for gateway/health/model.py."""
        ing, anc = self.ingest, self.anchorer
        if ing is None or anc is None:
            return None
        cp = ing.log.last_checkpoint
        # The local journal is no independent evidence: it counts only when it is the only one.
        ledgers = [st for name, st in anc.status.items() if name != "local"] or list(
            anc.status.values()
        )
        finals = [st.last_final for st in ledgers if st.last_final is not None]
        first = self._first_unanchored
        storage = self.storage
        return Facts(
            now_ns=self.clock.time_ns(),  # the records' clock: ages agree with their times
            pid=os.getpid(),  # `gateway status` reads the store instead once this is gone
            started_ns=self.started_ns,
            version=VERSION,
            device=self.key.device_id if self.key else None,
            data_dir=str(self.config.data_dir.resolve()),
            log_size=ing.log.size,
            checkpoint=(cp.size, cp.time_ns) if cp else None,
            anchored_final=max(finals, default=None),
            first_unanchored_ns=first[1] if first is not None else None,
            sensors=self._sensor_facts(ing),
            sources={name: vars(h) for name, h in self.health.items()},
            ingest=vars(ing.stats),
            anchors={name: st.to_json() for name, st in anc.status.items()},
            disk_used_bytes=storage.used if storage is not None else None,
            disk_limit_bytes=(storage.limit or None) if storage is not None else None,
            disk_quota_bytes=self.config.storage.quota_mb * 2**20 or None,
            disk_state=storage.state if storage is not None else None,
            clock=clock_state(),
            http=self.http.facts() if self.http is not None else {},
            storage=storage.to_json() if storage is not None else None,
            uplink=self.uplink.facts() if self.uplink is not None else None,
            retention=self.retention.to_json() if self.retention is not None else None,
        )

    def _sensor_facts(self, ing: Ingest) -> list[SensorFacts]:
        qc = ing.log.qc.flag_counts()
        names = {s.id for s in self.config.sensors} | set(ing.per_sensor)
        names |= {s for s, _ in ing.rejected}
        rejected: dict[str, dict[str, int]] = {}
        for (sensor, reason), n in ing.rejected.items():
            rejected.setdefault(sensor, {})[reason] = n
        return [
            SensorFacts(
                name=name,
                readings=ing.per_sensor.get(name, 0),
                last_reading_ns=ing.last_reading_ns.get(name),
                values=ing.last_values.get(name, ()),
                rejected=rejected.get(name, {}),
                last_reject=ing.last_reject.get(name),
                silence=self.silence.silence(name) if self.silence is not None else None,
                qc=qc.get(name, {}),
            )
            for name in sorted(names)
        ]

    async def _find_first_unanchored(self) -> None:
        """Look up when the oldest entry not anchored final was made (a read of the log)."""
        facts = self.facts()
        if facts is None or self._store is None:
            return
        index = facts.anchored_final or 0
        if index >= facts.log_size:
            self._first_unanchored = None
            return
        if self._first_unanchored is not None and self._first_unanchored[0] == index:
            return
        try:
            rec = await self._store.record(index)
        except GatewayError as exc:
            logger.warning("status: entry %d could not be read: %s", index, exc)
            return
        when = None
        if rec is not None and isinstance(rec.get("time"), str):
            with contextlib.suppress(ValueError, LedgerClientError):
                when = round(parse_time(rec["time"]).timestamp() * 1e9)
        self._first_unanchored = (index, when)

    def _status_snapshot(self) -> None:
        """Write status.json: a new file renamed over the old one, or, when the disk has
        no room for a new file, over the old one's bytes in place (it is padded with
        spaces to whole 4 KiB blocks so that it usually fits them): status must still
        say the disk is full when it is."""
        if self._status_path is None:
            self._status_path = status_file(self.config.data_dir, os.environ)
        path = self._status_path
        tmp = path.with_suffix(".tmp")
        text = json.dumps(self.status(), indent=1, sort_keys=True) + "\n"
        data = text.encode().ljust(-(-len(text) // 4096) * 4096, b" ")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
                with path.open("r+b") as f:
                    if os.fstat(f.fileno()).st_size >= len(data):
                        f.write(data)  # the rest was padding already

    async def _write_status(self) -> None:
        while True:
            if self.storage is not None:
                self.storage.measure()
            await self._find_first_unanchored()
            self._status_snapshot()
            self._notify_status()
            await asyncio.sleep(self.status_every_s)

    def _notify_status(self) -> None:
        """Send ``STATUS=`` to systemd if the summary changed since it was last sent."""
        line = self.summary()
        if line != self._status_sent:
            self.notifier.status(line)
            self._status_sent = line

    def summary(self) -> str:
        """One line for ``systemctl status`` (sd_notify ``STATUS=``)."""
        ing, anc = self.ingest, self.anchorer
        if ing is None or anc is None:
            return "starting"
        quiet = [
            f"{s.id} {q.reason}"
            for s in self.config.sensors
            if self.silence is not None and (q := self.silence.silence(s.id)) is not None
        ]
        # The first few by name and why, so `systemctl status` shows the cause.
        silent = f"{len(quiet)} silent: " + ", ".join(quiet[:3]) + (", …" if quiet[3:] else "")
        cp = ing.log.last_checkpoint
        failing = sorted(name for name, st in anc.status.items() if st.failures)
        parts = [
            f"log {ing.log.size} entries",
            f"{len(self.config.sensors)} sensors" + (f" ({silent})" if quiet else ""),
            f"last checkpoint {cp.size}" if cp is not None else "no checkpoint yet",
            (
                "no anchors"
                if not anc.status
                else f"anchors failing: {', '.join(failing)}"
                if failing
                else "anchors ok"
            ),
        ]
        down = sorted(name for name, h in self.health.items() if not h.running)
        if down:
            parts.append(f"sources down: {', '.join(down)}")
        told = self.storage.summary() if self.storage is not None else None
        if told is not None:
            parts.append(told)
        if self.watchdog_problem is not None:
            parts.append(f"watchdog held: {self.watchdog_problem}")
        return ", ".join(parts)

    async def _watchdog(
        self, store: Store, ingest: Ingest, writer: asyncio.Task[None], every_s: float
    ) -> None:
        """``WATCHDOG=1`` every ``every_s`` (half systemd's ``WatchdogSec``) while ingest works.

        The ping is the proof that the event loop runs and that the ingest writer
        answers; a quiet station with nothing to commit is healthy. It is withheld
        (and systemd restarts the daemon one ``WatchdogSec`` after the last one) when
        the writer task has ended, when items have waited in its queue since the
        previous look with no commit done (or failed) in between, or when the log
        database does not answer a read within ``every_s / 2``: the read goes through
        the one connection, and worker thread, that the writer commits on, so a commit
        stuck in the disk holds it. A commit that fails (disk full, I/O error) is an
        answer: restarting would not help, and status says so.
        """
        seen, waited = -1, 0
        while True:
            due = time.monotonic() + every_s
            answered = ingest.stats.batches + ingest.stats.failed_batches
            waiting = ingest._queue.qsize()
            problem = None
            if writer.done():
                problem = "the ingest writer has ended"
            elif waiting and waited and answered == seen:
                problem = f"items wait in the ingest queue, no commit done in {every_s:g} s"
            else:
                try:
                    async with asyncio.timeout(every_s / 2):
                        await store.get_meta(BOOT_META)
                except TimeoutError:
                    problem = f"the log database did not answer in {every_s / 2:g} s"
                except GatewayError:
                    pass  # it answered, with an error: the writer's commits say the rest
            seen, waited = answered, waiting
            if problem is None:
                self.notifier.watchdog()
                if self.watchdog_problem is not None:
                    logger.info("watchdog: ingest answers again")
                    self.watchdog_problem = None
                    self._notify_status()
            elif problem != self.watchdog_problem:
                logger.error("watchdog: not telling systemd all is well: %s", problem)
                self.watchdog_problem = problem
                self._notify_status()
            await asyncio.sleep(max(0.0, due - time.monotonic()))


class _StepAwareSink:
    """The Sink sources write to: a clock step is logged ahead of what comes after it.

    Each submission first reads the gateway's clock (which notices a step and moves the
    silence tracker before the stepped time is used), then commits any ``clock-step``
    event waiting, then hands the item to ingest.
    """

    def __init__(self, gateway: Gateway, ingest: Ingest) -> None:
        self._gateway = gateway
        self._ingest = ingest

    async def submit(self, reading: Reading) -> bool:
        reading = self._gateway.on_current_scale(reading)
        self._gateway.flush_clock_events(self._ingest)
        return await self._ingest.submit(reading)

    async def submit_gap(self, gap: Gap) -> None:
        self._gateway.clock.time_ns()
        self._gateway.flush_clock_events(self._ingest)
        await self._ingest.submit_gap(gap)

    async def submit_event(self, event: Event) -> None:
        self._gateway.clock.time_ns()
        self._gateway.flush_clock_events(self._ingest)
        await self._ingest.submit_event(event)

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        self._ingest.reject(sensor, reason, detail)

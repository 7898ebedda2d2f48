"""Following one box: the monitor's pure core (docs/monitor.md §3).

``Follower.step`` takes a signed checkpoint note, an injected async ``Fetcher``
for the box's published files and the time, and verifies everything new since
the last verified checkpoint: the note's signature under the box's trusted keys,
every new entry (record, signature, leaf hash against the published level-0
tile), the tree (the verified right edge extended by the new leaves must give
the note's root: consistency with the last verified checkpoint), and step 8 of
the verifier's checklist (``ledger_client.completeness``) fed entry by entry.
``Follower.tick`` judges what time alone reveals: a box or sensor gone quiet,
an anchor overdue. Both return alerts; IO (HTTP, MQTT, the database, the
webhook) is riverseal_monitor.monitor's.

Nothing here advances past what it could not verify: a step that finds a forged
entry or a fork leaves the state at the last verified checkpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger_client.bundle_v2 import Manifest
from ledger_client.checkpoint import Checkpoint
from ledger_client.completeness import Completeness
from ledger_client.errors import LedgerClientError, MalformedProof
from ledger_client.merkle import HASH_SIZE, Frontier
from ledger_client.note import open_note
from ledger_client.tiles import ENTRIES, TILE_WIDTH, decode_entry_bundle, split_hashes, tile_path
from ledger_client.trust import TrustedKey
from ledger_client.verify import EntryContext

__all__ = [
    "ALERT_KINDS",
    "Alert",
    "BoxSpec",
    "Fetcher",
    "Follower",
    "GapSpan",
    "Reading",
    "StepResult",
    "Verified",
]

ALERT_KINDS = (
    "fork",
    "forged",
    "gap",
    "silent",
    "qc-burst",
    "anchor-overdue",
    "bad-anchor",
    "box-silent",
)
"""Every ``kind`` an alert may have (docs/monitor.md §4)."""

QC_FAIL = 4  # QARTOD "fail"


class Fetcher(Protocol):
    """A box's published files by path (``checkpoint``, ``tile/0/000.p/5``…); None: 404."""

    async def get(self, path: str) -> bytes | None: ...


@dataclass(frozen=True)
class BoxSpec:
    """What the regulator knows of a box before trusting anything it publishes."""

    origin: str
    keys: tuple[TrustedKey, ...]
    """The device keys (a trust file's ``key`` lines): checkpoints and records must verify."""
    url: str
    """The prefix its files are published under (no trailing slash)."""
    checkpoint_interval_s: float = 60.0
    """How often the box signs a checkpoint: the unit of box-silent and the silence slack."""
    box_silent_intervals: int = 5
    """Checkpoint intervals with no new checkpoint before ``box-silent``."""
    allowance_s: tuple[tuple[str, float], ...] = ()
    """Per sensor, a silence allowance overriding what the box declares."""
    qc_burst_count: int = 5
    """QARTOD fail flags of one sensor within ``qc_burst_window_s`` that make a burst."""
    qc_burst_window_s: float = 600.0
    anchor_overdue_s: float = 0.0
    """Longest time with no new anchored checkpoint in the manifest; 0: not checked."""

    @property
    def device(self) -> str:
        return self.origin.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Alert:
    """One alert; ``key`` identifies the condition (one open alert per box and key)."""

    origin: str
    kind: str
    key: str
    time_s: float
    message: str
    sensor: str | None = None
    entry: int | None = None
    size: int | None = None
    detail: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "kind": self.kind,
            "key": self.key,
            "time_s": self.time_s,
            "message": self.message,
            "sensor": self.sensor,
            "entry": self.entry,
            "size": self.size,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class Reading:
    """A verified reading, for the series a display draws."""

    origin: str
    sensor: str
    index: int
    time: str
    time_s: float
    values: tuple[tuple[str, str, float | None, int | None], ...]
    """(quantity, unit, value, QARTOD flag or None) per value."""


@dataclass(frozen=True)
class GapSpan:
    """A verified gap record: the box says ``sensor`` has no readings from..to, and why."""

    origin: str
    sensor: str
    index: int
    start: str
    end: str
    reason: str


@dataclass(frozen=True)
class Verified:
    """The last verified checkpoint of a box: what the state keeps and resumes from."""

    size: int
    root: bytes
    edge: tuple[bytes, ...]
    """The tree's right edge at ``size`` (ledger_client.merkle.Frontier): O(log size) hashes."""
    note: str


@dataclass
class StepResult:
    """What one step verified and found."""

    advanced: bool = False
    verified: Verified | None = None
    readings: list[Reading] = field(default_factory=list)
    gaps: list[GapSpan] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    """Keys of alerts whose condition ended (a sensor reporting again, the box back)."""
    entries: int = 0


class _Sink:
    """Step 8's failures as ``gap`` alerts (ledger_client.completeness.CompletenessSink)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.sizes: list[int] = []
        self.notes: list[str] = []
        self.now = 0.0
        self.out: list[Alert] = []

    def fail(
        self,
        check: str,
        reason: str,
        entry: int | None = None,
        checkpoint: int | None = None,
        about: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        sensor = about[0] if about else None
        self.out.append(
            Alert(
                self.origin,
                "gap",
                f"gap:{entry}:{hashlib.sha256(reason.encode()).hexdigest()[:12]}",
                self.now,
                reason,
                sensor=sensor,
                entry=entry,
                size=checkpoint,
            )
        )

    def passed(self, check: str, n: int = 1) -> None:
        del check, n


class Follower:
    """One box's verification state; ``step`` and ``tick`` are its only mutators."""

    def __init__(self, spec: BoxSpec, verified: Verified | None, now: float) -> None:
        self.spec = spec
        self.verified = verified
        self.frontier = Frontier() if verified is None else Frontier(verified.size, verified.edge)
        self._verifiers = [k.verifier for k in spec.keys]
        keys: dict[str, list[tuple[Any, ...]]] = {}
        for k in spec.keys:
            v = k.verifier
            keys.setdefault(k.key_id, []).append(
                (v.name, v.key_id, v.public_key, k.valid_from, k.valid_until)
            )
        self._checker = EntryContext(
            {kid: tuple(ks) for kid, ks in keys.items()}, frozenset(), spec.device, {}, True
        ).checker()
        self._sink = _Sink(spec.origin)
        self._sink.sizes = [] if verified is None else [verified.size]
        self.completeness = Completeness(self._sink, subset=False)
        self.last_checkpoint_s = now
        """When the box last showed a new checkpoint (the monitor's clock)."""
        self.last_reading: dict[str, float] = {}
        """Per sensor, the time (the box's clock) of its newest verified reading."""
        self.box_time = 0.0
        """The newest record time verified (the box's clock)."""
        self._qc_fails: dict[str, deque[float]] = {}
        self.anchored_size = 0
        self.anchored_since_s = now
        self._overrides = dict(spec.allowance_s)

    @property
    def size(self) -> int:
        return 0 if self.verified is None else self.verified.size

    # --- a new checkpoint -------------------------------------------------------------

    async def step(self, note: str, fetch: Fetcher, now: float) -> StepResult:
        """Verify ``note`` and every entry it adds; advance only if all of it holds."""
        res = StepResult()
        origin = self.spec.origin
        try:
            cp = Checkpoint.parse(open_note(note, self._verifiers))
        except LedgerClientError as exc:
            digest = hashlib.sha256(note.encode()).hexdigest()[:16]
            res.alerts.append(
                Alert(
                    origin,
                    "forged",
                    f"forged:checkpoint:{digest}",
                    now,
                    f"a checkpoint note does not verify under the box's keys: {exc}",
                    detail=(("what", "checkpoint"),),
                )
            )
            return res
        if cp.origin != origin:
            res.alerts.append(
                Alert(
                    origin,
                    "forged",
                    f"forged:origin:{cp.origin}",
                    now,
                    f"a checkpoint signed by the box names origin {cp.origin!r}",
                    size=cp.size,
                    detail=(("what", "checkpoint"),),
                )
            )
            return res
        old = self.size
        if cp.size < old:
            return res  # an older announcement arriving late: nothing new
        if cp.size == old:
            if self.verified is not None and cp.root != self.verified.root:
                res.alerts.append(self._fork(cp, now, "another root at the verified size"))
            return res
        try:
            got = await self._entries(cp, fetch, now, res)
        except LedgerClientError as exc:
            res.alerts.append(
                Alert(
                    origin,
                    "forged",
                    f"forged:size:{cp.size}",
                    now,
                    f"the files of checkpoint {cp.size} are malformed: {exc}",
                    size=cp.size,
                    detail=(("what", "tiles"),),
                )
            )
            return res
        if got is None:
            return res  # a forged entry or a missing file: alerted, not advanced
        leaves, records = got
        trial = self.frontier.copy()
        for leaf in leaves:
            trial.append(leaf)
        if trial.root() != cp.root:
            res.alerts.append(
                self._fork(
                    cp,
                    now,
                    f"its validly signed entries {old}..{cp.size - 1} on the verified tree of "
                    f"size {old} do not give its root",
                )
            )
            return res
        # Only a consistent step reaches step 8 and the series.
        self._sink.now = now
        self.completeness.extend_to(cp.size)
        for i, rec in records:
            self._take(i, rec, now, res)
        self.completeness.compact()  # entries come in order: no bit per entry kept
        res.alerts.extend(self._sink.out)
        self._sink.out = []
        res.entries = len(leaves)
        self._accept(cp, note, trial, now, res)
        return res

    def _fork(self, cp: Checkpoint, now: float, why: str) -> Alert:
        return Alert(
            self.spec.origin,
            "fork",
            f"fork:{cp.size}:{cp.root.hex()[:16]}",
            now,
            f"checkpoint {cp.size} is not consistent with verified checkpoint {self.size}: {why}",
            size=cp.size,
            detail=(
                ("verified_size", self.size),
                ("verified_root", "" if self.verified is None else self.verified.root.hex()),
                ("root", cp.root.hex()),
            ),
        )

    async def _entries(
        self, cp: Checkpoint, fetch: Fetcher, now: float, res: StepResult
    ) -> tuple[list[bytes], list[tuple[int, Any]]] | None:
        """Leaf hashes and compact records of entries ``size..cp.size``, each verified;
        None if any fails (alerted in ``res``)."""
        origin = self.spec.origin
        start = self.size
        tiles = range(start // TILE_WIDTH, (cp.size - 1) // TILE_WIDTH + 1)
        paths = []
        for t in tiles:
            width = min(TILE_WIDTH, cp.size - t * TILE_WIDTH)
            paths += [tile_path(ENTRIES, t, width), tile_path(0, t, width)]
        # The fetcher bounds how many are in flight; all of a step's files are wanted.
        files = await asyncio.gather(*(fetch.get(p) for p in paths))
        leaves: list[bytes] = []
        records: list[tuple[int, Any]] = []
        ok = True
        for n, t in enumerate(tiles):
            width = min(TILE_WIDTH, cp.size - t * TILE_WIDTH)
            epath, hpath = paths[2 * n], paths[2 * n + 1]
            bundle, hashes = files[2 * n], files[2 * n + 1]
            if bundle is None or hashes is None:
                missing = epath if bundle is None else hpath
                res.alerts.append(
                    Alert(
                        origin,
                        "forged",
                        "missing",  # one at a time: cleared by the next verified checkpoint
                        now,
                        f"{missing} of checkpoint {cp.size} is not published",
                        size=cp.size,
                        detail=(("what", "missing"), ("path", missing)),
                    )
                )
                return None
            entries = decode_entry_bundle(bundle, width)
            tile = split_hashes(hashes, hpath)
            if len(tile) != width:
                raise MalformedProof(f"{hpath} holds {len(tile)} hashes, not {width}")
            first = max(start, t * TILE_WIDTH) - t * TILE_WIDTH
            for k in range(first, width):
                i = t * TILE_WIDTH + k
                out = self._checker.check(i, entries[k])
                bad = [f"{step}: {why}" for step, why in out.failures]
                if out.leaf != tile[k]:
                    bad.append(f"its hash is not hash {k} of {hpath}")
                if bad:
                    ok = False
                    res.alerts.append(
                        Alert(
                            origin,
                            "forged",
                            f"forged:{i}:{out.leaf.hex()[:16]}",
                            now,
                            f"entry {i} ({epath}) is rejected: " + "; ".join(bad),
                            sensor=out.about[0] if out.about else None,
                            entry=i,
                            size=cp.size,
                            detail=(("what", "entry"), ("path", epath)),
                        )
                    )
                    continue
                leaves.append(out.leaf)
                records.append((i, out.rec))
        return (leaves, records) if ok else None

    def _take(self, i: int, rec: Any, now: float, res: StepResult) -> None:
        self.completeness.add(i, rec)
        if rec is None:
            return
        t = rec.seconds
        self.box_time = max(self.box_time, t)
        sensor = rec.sensor
        if rec.kind == "reading" and sensor is not None:
            res.readings.append(Reading(self.spec.origin, sensor, i, rec.time, t, rec.values or ()))
            if t >= self.last_reading.get(sensor, float("-inf")):
                self.last_reading[sensor] = t
            res.cleared.append(f"silent:{sensor}")
            if any(v[3] == QC_FAIL for v in rec.values or ()):
                self._qc_fail(sensor, i, rec, now, res)
        elif rec.kind == "gap" and sensor is not None:
            reason, a, b = rec.extra
            res.gaps.append(GapSpan(self.spec.origin, sensor, i, a, b, reason))

    def _qc_fail(self, sensor: str, i: int, rec: Any, now: float, res: StepResult) -> None:
        spec = self.spec
        # The last qc_burst_count failures' times: a burst when they span the window or less.
        window = self._qc_fails.get(sensor)
        if window is None:
            window = self._qc_fails[sensor] = deque(maxlen=spec.qc_burst_count)
        window.append(rec.seconds)
        if len(window) == spec.qc_burst_count and (
            rec.seconds - window[0] <= spec.qc_burst_window_s
        ):
            # One alert per window: the key names the window's start on the box's clock.
            bucket = int(rec.seconds // spec.qc_burst_window_s)
            res.alerts.append(
                Alert(
                    spec.origin,
                    "qc-burst",
                    f"qc-burst:{sensor}:{bucket}",
                    now,
                    f"sensor {sensor}: {len(window)} QC failures within "
                    f"{spec.qc_burst_window_s:g} s (up to entry {i}, {rec.time})",
                    sensor=sensor,
                    entry=i,
                    detail=(("failures", len(window)), ("window_s", spec.qc_burst_window_s)),
                )
            )

    def _accept(
        self, cp: Checkpoint, note: str, frontier: Frontier, now: float, res: StepResult
    ) -> None:
        self.frontier = frontier
        edge = tuple(frontier._edge)  # the right edge is what a restart resumes the tree from
        assert all(len(h) == HASH_SIZE for h in edge)
        self.verified = Verified(cp.size, cp.root, edge, note)
        self.last_checkpoint_s = now
        res.advanced = True
        res.verified = self.verified
        res.cleared += ["box-silent", "missing"]

    # --- what time alone reveals -------------------------------------------------------

    def allowances(self) -> dict[str, float]:
        """Per sensor, the silence allowance: the config's override, else the box's own."""
        out = self.completeness.allowances()
        out.update(self._overrides)
        return out

    def tick(self, now: float) -> tuple[list[Alert], list[str]]:
        """Alerts the passing of time raises, and keys of those it clears.

        A sensor is silent when its newest reading is older than its allowance
        on the box's clock: the newest record the box logged or, while the box
        publishes nothing newer, its time at the last verified checkpoint moved
        on by ours, less one checkpoint interval (what may not be published
        yet). Either way a silence is alerted within its allowance plus one
        interval of the box's publishing it, and a backlog being caught up is
        not taken for silence.
        """
        spec = self.spec
        alerts: list[Alert] = []
        cleared: list[str] = []
        quiet = now - self.last_checkpoint_s
        limit = spec.box_silent_intervals * spec.checkpoint_interval_s
        if quiet > limit:
            alerts.append(
                Alert(
                    spec.origin,
                    "box-silent",
                    "box-silent",
                    now,
                    f"no new checkpoint for {quiet:.0f} s (more than {spec.box_silent_intervals} "
                    f"intervals of {spec.checkpoint_interval_s:g} s); last verified size "
                    f"{self.size}",
                    size=self.size,
                    detail=(("quiet_s", round(quiet, 3)),),
                )
            )
        for sensor, allowance in sorted(self.allowances().items()):
            last = self.last_reading.get(sensor)
            if last is None:
                continue  # never seen reporting since the monitor started following
            # The box's clock runs on with its other records; without them, it is taken
            # to run on as ours has since the last verified checkpoint, less the one
            # interval the box may not yet have published. Not ours outright: a box
            # whose backlog is being caught up is not silent, only behind.
            box_now = max(
                self.box_time,
                self.box_time + (now - self.last_checkpoint_s) - spec.checkpoint_interval_s,
            )
            silent = box_now - last
            if silent > allowance:
                alerts.append(
                    Alert(
                        spec.origin,
                        "silent",
                        f"silent:{sensor}",
                        now,
                        f"sensor {sensor}: no reading for {silent:.1f} s "
                        f"(allowance {allowance:g} s)",
                        sensor=sensor,
                        detail=(("silent_s", round(silent, 3)), ("allowance_s", allowance)),
                    )
                )
        if spec.anchor_overdue_s > 0 and now - self.anchored_since_s > spec.anchor_overdue_s:
            alerts.append(
                Alert(
                    spec.origin,
                    "anchor-overdue",
                    f"anchor-overdue:{self.anchored_size}",
                    now,
                    f"no newer anchored checkpoint than {self.anchored_size} for "
                    f"{now - self.anchored_since_s:.0f} s (limit {spec.anchor_overdue_s:g} s)",
                    size=self.anchored_size,
                )
            )
        return alerts, cleared

    def manifest(self, data: bytes, now: float) -> list[str]:
        """Read the published manifest's anchors; keys of anchor alerts it clears."""
        manifest = Manifest.loads(data)
        sizes: Sequence[int] = [a.checkpoint for a in manifest.anchors if a.state == "final"]
        top = max(sizes, default=0)
        if top > self.anchored_size:
            old, self.anchored_size, self.anchored_since_s = self.anchored_size, top, now
            return [f"anchor-overdue:{old}"]
        return []

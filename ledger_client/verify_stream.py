"""Verify any riverseal evidence in bounded memory, on all cores.

``verify_source`` takes a path or URL and finds what it is:

- a version 1 bundle (one JSON document, docs/bundle-format.md §2), read as a stream;
- a version 2 bundle (a ustar container of tiles and a manifest, §15);
- a published mirror: a tiles directory or an ``http(s)://`` prefix (§16.1);
- a single reading's evidence, a C2SP tlog-proof (§16.2).

Entries travel in units of one tile (256 entries) to worker processes that run
steps 2–3 (and 4 for v1's per-entry proofs) and send back, per entry, its leaf
hash and a compact record; this process keeps the checklist (``verify.Checklist``)
and, for tiled sources, rebuilds the tree with ``tiles.TileBuilder``, checking
every carried tile and every checkpoint's root. Memory is bounded by the number
of units in flight, not by the size of the log.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .anchors import AnchorChecker
from .bundle import Bundle, BundleEntry
from .bundle_v2 import CHECKPOINT_NAME, MANIFEST_NAME, SELECTED_PREFIX, Manifest, decode_selected
from .checkpoint import Checkpoint
from .container import BLOCK, ContainerReader, is_container
from .errors import LedgerClientError, MalformedBundle
from .lineage import KeptCheckpoint
from .merkle import HASH_SIZE
from .note import Verifier, split_note
from .tiles import (
    ENTRIES,
    TILE_WIDTH,
    TileBuilder,
    decode_entry_bundle,
    left_context,
    split_hashes,
    tile_path,
)
from .trust import TrustedKey, TrustList
from .verify import Checklist, EntryChecker, EntryContext, EntryObserver, EntryOutcome, Report

if TYPE_CHECKING:
    import concurrent.futures
    import multiprocessing.context

__all__ = ["EVIDENCE_MAGIC", "Progress", "default_jobs", "detect", "verify_source"]

EVIDENCE_MAGIC = b"c2sp.org/tlog-proof@v1\n"
Progress = Callable[[int, int], None]
"""Called as entries are checked: (entries done, entries in all)."""

Trusted = TrustList | Iterable[TrustedKey | Verifier] | None


def default_jobs() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def detect(source: str | os.PathLike[str]) -> str:
    """What ``source`` is: ``"url"``, ``"mirror"``, ``"v2"``, ``"evidence"`` or ``"v1"``.

    Raises MalformedBundle if it cannot be read at all.
    """
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        return "url"
    path = Path(text)
    try:
        if path.is_dir():
            return "mirror"
        with path.open("rb") as f:
            head = f.read(BLOCK)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MalformedBundle(f"cannot read {text!r}: {reason}") from exc
    if is_container(head) or head[257:262] == b"ustar":  # any tar: the reader says why not
        return "v2"
    if head.startswith(EVIDENCE_MAGIC):
        return "evidence"
    return "v1"


# --- work units and the worker side ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unit:
    """One tile's worth of work for a worker."""

    first: int  # log index of the first entry or hash
    width: int
    entries: bytes | None = None  # an entry bundle
    hashes: bytes | None = None  # a level-0 hash tile
    selected: bytes | None = None  # riverseal/selected/<N>
    v1: tuple[BundleEntry, ...] = ()
    name: str = ""


@dataclass(frozen=True, slots=True)
class _Done:
    """A unit's results, in the plain shapes that cross between processes cheaply:
    ``leaves`` joined (None: the tree cannot go on past this unit) and each outcome
    an EntryOutcome's fields as a plain tuple, its leaf left out (it is in ``leaves``)."""

    first: int
    width: int
    leaves: bytes | None
    outcomes: list[tuple[Any, ...]]
    failures: list[tuple[str, str, int | None]]  # (step, reason, entry)


def _plain(outcomes: Iterable[EntryOutcome]) -> list[tuple[Any, ...]]:
    return [
        (o[0], None, None if o[2] is None else tuple(o[2]), o[3], o[4], o[5], o[6], o[7])
        for o in outcomes
    ]


_checker: EntryChecker | None = None


def _init_worker(ctx: EntryContext) -> None:
    global _checker
    _checker = ctx.checker()


def _work(unit: _Unit) -> _Done:
    checker = _checker
    assert checker is not None, "worker not initialised"
    return _run_unit(checker, unit)


def _run_unit(checker: EntryChecker, unit: _Unit) -> _Done:
    failures: list[tuple[str, str, int | None]] = []
    if unit.v1:
        outcomes = [checker.check(e.index, e.entry, e.checkpoint, e.inclusion) for e in unit.v1]
        return _Done(unit.first, unit.width, None, _plain(outcomes), failures)
    if unit.entries is not None:
        try:
            raws = decode_entry_bundle(unit.entries, unit.width)
        except LedgerClientError as exc:
            failures.append(("inclusion", f"{unit.name}: {exc}", unit.first))
            return _Done(unit.first, unit.width, None, [], failures)
        outcomes = [checker.check(unit.first + i, raw) for i, raw in enumerate(raws)]
        leaves = [o.leaf for o in outcomes]
        if unit.hashes is not None:
            _compare_level0(unit, leaves, failures)
        return _Done(unit.first, unit.width, b"".join(leaves), _plain(outcomes), failures)
    if unit.hashes is None:  # neither entries nor hashes: named missing when it was read
        return _Done(unit.first, unit.width, None, [], failures)
    try:
        leaves = split_hashes(unit.hashes, unit.name)
    except LedgerClientError as exc:
        failures.append(("inclusion", str(exc), unit.first))
        return _Done(unit.first, unit.width, None, [], failures)
    if len(leaves) != unit.width:
        failures.append(
            ("inclusion", f"{unit.name} holds {len(leaves)} hashes, not {unit.width}", unit.first)
        )
        return _Done(unit.first, unit.width, None, [], failures)
    outcomes = []
    if unit.selected is not None:
        what = f"{SELECTED_PREFIX}{unit.name.rsplit('/', 1)[-1]}"
        try:
            chosen = decode_selected(unit.selected, unit.width, what)
        except LedgerClientError as exc:
            failures.append(("record", str(exc), unit.first))
            chosen = []
        for pos, raw in chosen:
            o = checker.check(unit.first + pos, raw)
            if o.leaf != leaves[pos]:
                failures.append(
                    (
                        "inclusion",
                        f"its leaf hash is not hash {pos} of {unit.name}",
                        unit.first + pos,
                    )
                )
                o = o._replace(included=False)
            else:
                o = o._replace(included=True)
            outcomes.append(o)
    return _Done(unit.first, unit.width, unit.hashes, _plain(outcomes), failures)


def _compare_level0(unit: _Unit, leaves: list[bytes], failures: list[Any]) -> None:
    assert unit.hashes is not None
    if unit.hashes != b"".join(leaves):
        at = next(
            (i for i, h in enumerate(leaves) if unit.hashes[i * 32 : i * 32 + 32] != h),
            len(leaves),
        )
        failures.append(
            (
                "inclusion",
                f"tile/0 hash {at} of tile {unit.first // TILE_WIDTH} is not the leaf hash of "
                "its entry",
                unit.first + at,
            )
        )


def _mp_context() -> multiprocessing.context.BaseContext:
    import multiprocessing

    # fork starts workers at once and re-imports nothing (callers need no
    # ``__main__`` guard); with other threads running, a forked child could inherit
    # a held lock, so then a fork server starts them from a clean process.
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver")


class _Pool:
    """Runs units in order: in this process for one job, else in worker processes
    with a bounded number of units in flight."""

    def __init__(self, ctx: EntryContext, jobs: int) -> None:
        self.jobs = jobs
        self._local = ctx.checker() if jobs <= 1 else None
        self._exec: concurrent.futures.ProcessPoolExecutor | None = None
        if jobs > 1:
            import concurrent.futures

            self._exec = concurrent.futures.ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=_mp_context(),
                initializer=_init_worker,
                initargs=(ctx,),
            )

    def map(self, units: Iterable[_Unit]) -> Iterator[_Done]:
        if self._local is not None:
            for u in units:
                yield _run_unit(self._local, u)
            return
        assert self._exec is not None
        window: deque[concurrent.futures.Future[_Done]] = deque()
        limit = 3 * self.jobs
        for u in units:
            window.append(self._exec.submit(_work, u))
            if len(window) >= limit:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self) -> None:
        if self._exec is not None:
            self._exec.shutdown(wait=True, cancel_futures=True)


# --- tiled sources ---------------------------------------------------------------------


class _Files(Protocol):
    """Where a tiled source's files come from (a ContainerReader is one)."""

    def get(self, name: str) -> bytes | None: ...


class _DirFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MalformedBundle(f"cannot read {self.root / name}: {exc.strerror}") from exc

    def partials_beside(self, name: str) -> list[tuple[int, str]]:
        """Partial tiles stored beside full tile ``name`` (older sizes): (width, name)."""
        folder = self.root / (name + ".p")
        try:
            listing = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in listing:
            if e.name.isdigit() and e.is_file():
                out.append((int(e.name), f"{name}.p/{e.name}"))
        return sorted(out)


class _UrlFiles:
    def __init__(self, prefix: str, timeout: float = 30.0) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MalformedBundle(
                "reading a mirror over HTTP needs httpx: pip install 'riverseal[online]'"
            ) from exc
        self._httpx = httpx
        self.prefix = prefix.rstrip("/") + "/"
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)

    def get(self, name: str) -> bytes | None:
        url = self.prefix + name
        try:
            r = self.client.get(url)
        except self._httpx.HTTPError as exc:
            raise MalformedBundle(f"cannot fetch {url}: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise MalformedBundle(f"cannot fetch {url}: HTTP {r.status_code}")
        return bytes(r.content)

    def close(self) -> None:
        self.client.close()


def _one_line(note: str) -> str:
    """A signed note on one line, its newlines shown as ⏎ (for failure texts)."""
    return note.rstrip("\n").replace("\n", "⏎")


def _root_of(note: str) -> bytes | None:
    try:
        return Checkpoint.parse(split_note(note)[0]).root
    except LedgerClientError:
        return None


def _checkpoint_size(note: str) -> int | None:
    try:
        return Checkpoint.parse(split_note(note)[0]).size
    except LedgerClientError:
        return None


class _Tree:
    """Rebuilds the tree of a tiled source from ``start`` and checks it as it goes."""

    def __init__(
        self,
        checklist: Checklist,
        files: _Files,
        start: int,
        size: int,
        *,
        mirror: bool,
    ) -> None:
        self.cl = checklist
        self.files = files
        self.start = start
        self.size = size
        self.mirror = mirror
        self.broken: str | None = None
        run = checklist.run
        self.roots = {
            s: info.checkpoint.root
            for s, info in run.checkpoints.items()
            if start <= s <= size and s > 0
        }
        for s in sorted(run.checkpoints):
            if s < max(start, 1) or s > size:
                checklist.fail(
                    "consistency",
                    f"checkpoint {s} lies outside the tree the bundle carries "
                    f"(leaves {start} to {size})",
                    checkpoint=s,
                )
        wanted = {s for s in checklist.wanted_roots() if start < s <= size}
        self.pending_sizes = sorted(set(self.roots) | wanted)
        # Carried hashes to compare with what the builder computes: (level, index) ->
        # (hashes, name), for the left context's tiles beyond their prefix.
        self.carried: dict[tuple[int, int], tuple[bytes, str]] = {}
        self.builder = self._seed()

    def _seed(self) -> TileBuilder | None:
        ctx: dict[int, list[bytes]] = {}
        for ref in left_context(self.start, self.size):
            name = ref.path
            data = self.files.get(name)
            if data is None:
                self._break(f"tile {name} (left context) is missing")
                return None
            try:
                hashes = split_hashes(data, name)
            except LedgerClientError as exc:
                self._break(str(exc))
                return None
            if len(hashes) != ref.width:
                self._break(f"tile {name} holds {len(hashes)} hashes, not {ref.width}")
                return None
            ctx[ref.level] = hashes
            self.carried[(ref.level, ref.index)] = (data, name)
        try:
            builder = TileBuilder(self.start, ctx)
        except LedgerClientError as exc:
            self._break(str(exc))
            return None
        self._check_roots(builder)
        return builder

    def _break(self, why: str) -> None:
        if self.broken is None:
            self.broken = why
            self.cl.fail("inclusion", why)

    def _check_roots(self, builder: TileBuilder) -> None:
        while self.pending_sizes and self.pending_sizes[0] == builder.size:
            s = self.pending_sizes.pop(0)
            root = builder.root()
            self.cl.tree_root(s, root)
            if s not in self.roots:
                continue  # a size a kept checkpoint asked about
            if root == self.roots[s]:
                self.cl.passed("consistency")
            else:
                self.cl.fail(
                    "consistency",
                    f"the root of the tree's first {s} entries is not the root checkpoint {s} "
                    "signs (an entry or tile before it was changed, removed or inserted)",
                    checkpoint=s,
                )

    def feed(self, done: _Done) -> None:
        b = self.builder
        if b is None:
            return
        if done.leaves is None:
            self._break(f"the tree cannot be rebuilt past leaf {done.first}")
            self.builder = None
            return
        if b.size != done.first:  # pragma: no cover - units are fed in order
            raise AssertionError(f"tree at {b.size}, unit at {done.first}")
        blob = done.leaves
        leaves = [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
        end = done.first + len(leaves)
        if (self.pending_sizes and self.pending_sizes[0] <= end) or len(leaves) != TILE_WIDTH:
            for leaf in leaves:
                b.append(leaf)
                if self.pending_sizes and self.pending_sizes[0] == b.size:
                    self._check_roots(b)
        else:
            b.append_tile(leaves)
        for level, index, data in b.take_full_tiles():
            self._compare(level, index, TILE_WIDTH, data)

    def _compare(self, level: int, index: int, width: int, data: bytes) -> None:
        """A computed tile against the carried copy (mirror: the published file)."""
        name = tile_path(level, index, width)
        carried = self.carried.pop((level, index), None)
        if carried is not None:
            have, cname = carried
            self._same(cname, have, data[: len(have)])
        if self.mirror and (level > 0 or width < TILE_WIDTH):
            got = self.files.get(name)
            if got is None:
                self.cl.fail("inclusion", f"tile {name} is missing from the mirror")
            else:
                self._same(name, got, data)
        if self.mirror and isinstance(self.files, _DirFiles):
            # Partial tiles of older sizes stay published beside their successor.
            for w, pname in self.files.partials_beside(tile_path(level, index)):
                got = self.files.get(pname)
                if got is not None and w < width:
                    self._same(pname, got, data[: w * 32], older=True)

    def _same(self, name: str, have: bytes, want: bytes, *, older: bool = False) -> None:
        if have == want:
            return
        if len(have) != len(want):
            self.cl.fail(
                "inclusion", f"tile {name} is {len(have)} bytes, the tree gives {len(want)}"
            )
            return
        at = next(i for i in range(0, len(want), 32) if have[i : i + 32] != want[i : i + 32])
        what = "an older partial tile disagrees with its full successor: " if older else ""
        self.cl.fail(
            "inclusion",
            f"{what}tile {name}: hash {at // 32} is not the hash of the entries under it",
        )

    def finish(self) -> None:
        b = self.builder
        if b is not None:
            if b.size != self.size:
                self._break(f"the tiles end at leaf {b.size}, the checkpoint says {self.size}")
            else:
                for ref, data in b.partials():
                    self._compare(ref.level, ref.index, ref.width, data)
        for s in self.pending_sizes:
            if s not in self.roots:
                continue
            why = self.broken or "the tree never reached it"
            self.cl.fail(
                "consistency", f"checkpoint {s} could not be recomputed: {why}", checkpoint=s
            )


def _tiled_units(
    files: _Files,
    start: int,
    size: int,
    *,
    by_sensor: bool,
    levels0: bool,
    failures: Callable[[str, str, int | None], None],
) -> Iterator[_Unit]:
    """Units for every level-0 tile from ``start`` to ``size``."""
    first_tile, last_tile = start // TILE_WIDTH, (size - 1) // TILE_WIDTH
    for t in range(first_tile, last_tile + 1):
        width = min(TILE_WIDTH, size - t * TILE_WIDTH)
        bundle_name = tile_path(ENTRIES, t, width)
        hash_name = tile_path(0, t, width)
        entries = files.get(bundle_name)
        hashes = files.get(hash_name)
        if levels0 and hashes is None:
            failures("inclusion", f"tile {hash_name} is missing", t * TILE_WIDTH)
        selected = None
        if by_sensor and entries is None:
            selected = files.get(SELECTED_PREFIX + tile_path(0, t)[len("tile/0/") :])
        if entries is None and hashes is None:
            what = f"entry bundle {bundle_name}" + (f" or tile {hash_name}" if by_sensor else "")
            failures("inclusion", f"{what} is missing", t * TILE_WIDTH)
            yield _Unit(t * TILE_WIDTH, width, name=bundle_name)
            continue
        if entries is None and not by_sensor:
            # Its entries are not there to check; the tree goes on over the level-0
            # tile so that what follows is still checked.
            failures("inclusion", f"entry bundle {bundle_name} is missing", t * TILE_WIDTH)
        if entries is not None and isinstance(files, _DirFiles):
            for w, pname in files.partials_beside(tile_path(ENTRIES, t)):
                if w >= width:
                    continue  # the bundle itself, or not older
                older = files.get(pname) or b""
                if not _is_prefix_bundle(older, entries, w):
                    failures(
                        "inclusion",
                        f"an older partial entry bundle {pname} disagrees with its full successor",
                        t * TILE_WIDTH,
                    )
        yield _Unit(
            t * TILE_WIDTH,
            width,
            entries=entries,
            hashes=hashes,
            selected=selected,
            name=bundle_name if entries is not None else hash_name,
        )


def _is_prefix_bundle(older: bytes, full: bytes, width: int) -> bool:
    """Whether ``older`` is the first ``width`` entries of entry bundle ``full``."""
    try:
        decode_entry_bundle(older, width)
    except LedgerClientError:
        return False
    return full.startswith(older)


def _allowed_members(manifest: Manifest, size: int) -> set[str]:
    """Every member name §15.2 allows a v2 bundle of this manifest to hold."""
    names = {MANIFEST_NAME, CHECKPOINT_NAME}
    names.update(ref.path for ref in left_context(manifest.start, size))
    for t in range(manifest.start // TILE_WIDTH, (size - 1) // TILE_WIDTH + 1):
        width = min(TILE_WIDTH, size - t * TILE_WIDTH)
        names.add(tile_path(ENTRIES, t, width))
        names.add(tile_path(0, t, width))
        if manifest.selection is not None and manifest.selection.sensors is not None:
            names.add(SELECTED_PREFIX + tile_path(0, t)[len("tile/0/") :])
    return names


def _verify_tiled(
    checklist: Checklist,
    files: _Files,
    start: int,
    size: int,
    *,
    mirror: bool,
    by_sensor: bool,
    jobs: int,
    progress: Progress | None,
) -> None:
    tree = _Tree(checklist, files, start, size, mirror=mirror)
    units = _tiled_units(
        files,
        start,
        size,
        by_sensor=by_sensor,
        levels0=mirror,
        failures=lambda step, reason, entry: checklist.fail(step, reason, entry=entry),
    )
    pool = _Pool(checklist.context(), jobs)
    total = size - start
    try:
        for done in pool.map(units):
            for step, reason, entry in done.failures:
                checklist.fail(step, reason, entry=entry)
            if done.leaves is not None and not by_sensor:  # selected ones carry their own
                checklist.passed("inclusion", len(done.outcomes))
            checklist.add(done.outcomes)
            tree.feed(done)
            if progress is not None:
                progress(done.first + done.width - start, total)
    finally:
        pool.close()
    tree.finish()


@dataclass(frozen=True)
class _How:
    """How to verify, whatever the source: the caller's keys, time, checkers and cores."""

    trusted: Trusted
    now: datetime
    checkers: Sequence[AnchorChecker]
    jobs: int
    progress: Progress | None
    observer: EntryObserver | None = None
    kept: Sequence[KeptCheckpoint] = ()


def _open_manifest(files: _Files, where: str) -> Manifest:
    data = files.get(MANIFEST_NAME)
    if data is None:
        raise MalformedBundle(f"{where} has no {MANIFEST_NAME}")
    return Manifest.loads(data)


def _verify_v2(
    path: Path,
    how: _How,
) -> Report:
    with ContainerReader(path) as files:
        manifest = _open_manifest(files, str(path))
        by_sensor = manifest.selection is not None and manifest.selection.sensors is not None
        checklist = Checklist(
            manifest,
            how.trusted,
            now=how.now,
            subset=by_sensor,
            observer=how.observer,
            kept=how.kept,
        )
        size = _checkpoint_size(manifest.checkpoints[-1]) or 0
        cp_member = files.get(CHECKPOINT_NAME)
        if cp_member is None:
            checklist.fail("checkpoint", "the bundle has no checkpoint member")
        elif cp_member != manifest.checkpoints[-1].encode("utf-8"):
            checklist.fail(
                "checkpoint",
                "the checkpoint member is not the manifest's newest checkpoint",
                checkpoint=size,
            )
        if size <= 0 or manifest.start % TILE_WIDTH or manifest.start > size:
            checklist.fail(
                "inclusion",
                f"start {manifest.start} and tree size {size} do not describe a tree "
                "(start must be a multiple of 256 below the newest checkpoint)",
            )
        else:
            allowed = _allowed_members(manifest, size)
            for name in files:
                if name not in allowed:
                    checklist.fail("inclusion", f"member {name!r} has no place in this bundle")
            _verify_tiled(
                checklist,
                files,
                manifest.start,
                size,
                mirror=False,
                by_sensor=by_sensor,
                jobs=how.jobs,
                progress=how.progress,
            )
        return checklist.finish(
            anchor_checkers=how.checkers, tree_size=size, tree_start=manifest.start
        )


def _verify_mirror(
    files: _DirFiles | _UrlFiles,
    where: str,
    how: _How,
) -> Report:
    manifest = _open_manifest(files, where)
    note_bytes = files.get(CHECKPOINT_NAME)
    if note_bytes is None:
        raise MalformedBundle(f"{where} has no checkpoint")
    try:
        note = note_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBundle(f"{where}/checkpoint is not UTF-8") from exc
    size = _checkpoint_size(note)
    if size is None:
        raise MalformedBundle(f"{where}/checkpoint is not a checkpoint")
    # Publication writes tiles, then the manifest, then the checkpoint: every signed
    # checkpoint the mirror holds (manifest and checkpoint file) must be a root of the
    # one tree its tiles hold, and the checkpoint file must be the newest of them.
    by_size: dict[int, str] = {}
    for c in manifest.checkpoints:
        by_size.setdefault(_checkpoint_size(c) or 0, c)
    newest = max(by_size, default=0)
    clash = by_size.get(size)
    if clash is None:
        by_size[size] = note
    notes = tuple(by_size[k] for k in sorted(by_size))
    sizes = set(by_size)
    anchors = tuple(a for a in manifest.anchors if a.checkpoint in sizes)
    checklist = Checklist(
        _MirrorHeader(manifest, notes, anchors),
        how.trusted,
        now=how.now,
        observer=how.observer,
        kept=how.kept,
    )
    if clash is not None and clash != note and _root_of(clash) != _root_of(note):
        a = checklist.signed(clash, f"{where}/{MANIFEST_NAME}")
        b = checklist.signed(note, f"{where}/{CHECKPOINT_NAME}")
        if a is not None and b is not None:
            checklist.fork(a, b, f"two checkpoints of size {size} with different roots")
        else:
            checklist.fail(
                "consistency",
                f"the mirror's checkpoint file and its manifest hold two different roots for "
                f"size {size}; checkpoint file {_one_line(note)}; "
                f"manifest {_one_line(clash)}",
                checkpoint=size,
            )
    if newest > size:
        checklist.fail(
            "checkpoint",
            f"the mirror's checkpoint file (size {size}) is older than checkpoint {newest} "
            "its manifest publishes: rolled back, or a publication was cut off before its "
            "last step (publish again)",
            checkpoint=size,
        )
    size = max(size, newest)
    if manifest.start != 0 or manifest.selection is not None:
        checklist.fail("inclusion", "a mirror's manifest must have start 0 and no selection")
    _verify_tiled(
        checklist,
        files,
        0,
        size,
        mirror=True,
        by_sensor=False,
        jobs=how.jobs,
        progress=how.progress,
    )
    return checklist.finish(anchor_checkers=how.checkers, tree_size=size)


@dataclass(frozen=True)
class _MirrorHeader:
    manifest: Manifest
    checkpoints: tuple[str, ...]
    anchors: tuple[Any, ...]

    @property
    def origin(self) -> str:
        return self.manifest.origin

    @property
    def device(self) -> str:
        return self.manifest.device

    @property
    def keys(self) -> tuple[Any, ...]:
        return self.manifest.keys


# --- v1 ------------------------------------------------------------------------------------


def _v1_units(entries: Iterable[BundleEntry]) -> Iterator[_Unit]:
    chunk: list[BundleEntry] = []
    position = 0
    for e in entries:
        chunk.append(e)
        if len(chunk) == TILE_WIDTH:
            yield _Unit(position, len(chunk), v1=tuple(chunk))
            position += len(chunk)
            chunk = []
    if chunk:
        yield _Unit(position, len(chunk), v1=tuple(chunk))


def _verify_v1(
    path: Path,
    how: _How,
) -> Report:
    header, entries, total = _open_v1(path)
    checklist = Checklist(header, how.trusted, now=how.now, observer=how.observer, kept=how.kept)
    pool = _Pool(checklist.context(proofs=True), how.jobs)
    try:
        done_count = 0
        for done in pool.map(_v1_units(entries())):
            checklist.add(done.outcomes)
            done_count += done.width
            if how.progress is not None:
                how.progress(done_count, max(total, done_count))
    finally:
        pool.close()
    return checklist.finish(anchor_checkers=how.checkers, consistency=header.consistency)


def _open_v1(path: Path) -> tuple[Any, Callable[[], Iterator[BundleEntry]], int]:
    """The v1 header, a way to stream its entries, and an estimate of their number."""
    try:
        from . import bundle_v1_stream
    except ImportError:
        bundle_v1_stream = None  # type: ignore[assignment]
    size = path.stat().st_size
    if bundle_v1_stream is not None and hasattr(bundle_v1_stream, "read_v1"):
        header, entries = bundle_v1_stream.read_v1(path)
        return header, entries, max(1, size // 1200)
    bundle = Bundle.loads(path.read_bytes())
    return bundle, lambda: iter(bundle.entries), len(bundle.entries)


# --- the entry point ---------------------------------------------------------------------


def verify_source(
    source: str | os.PathLike[str],
    trusted: Trusted = None,
    *,
    now: datetime,
    anchor_checkers: Sequence[AnchorChecker] = (),
    jobs: int | None = None,
    progress: Progress | None = None,
    observer: EntryObserver | None = None,
    kept: Sequence[KeptCheckpoint] = (),
) -> Report:
    """Verify a bundle (v1 or v2), a mirror (directory or URL) or one reading's evidence.

    ``jobs``: worker processes (default: every core this process may use; 1 runs
    everything here). ``observer`` sees every entry with its values, in log order
    (the CSV and HTML reports); one reading's evidence is not shown to it. Raises
    MalformedBundle (or another MalformedError) when the source cannot be read;
    every problem with its contents is a failure in the Report.
    """
    how = _How(
        trusted,
        now,
        anchor_checkers,
        default_jobs() if jobs is None else max(1, jobs),
        progress,
        observer,
        tuple(kept),
    )
    kind = detect(source)
    if kind == "url":
        files = _UrlFiles(os.fspath(source))
        try:
            return _verify_mirror(files, os.fspath(source), how)
        finally:
            files.close()
    path = Path(os.fspath(source))
    if kind == "mirror":
        return _verify_mirror(_DirFiles(path), str(path), how)
    if kind == "v2":
        return _verify_v2(path, how)
    if kind == "evidence":
        from .evidence import parse_evidence, verify_evidence

        return verify_evidence(
            parse_evidence(path.read_bytes()),
            trusted,
            now=now,
            anchor_checkers=anchor_checkers,
            kept=kept,
        )
    return _verify_v1(path, how)


def newest_checkpoint(source: str | os.PathLike[str]) -> str:
    """The newest signed checkpoint note a source carries (for ``--previous``), unverified:
    the checklist checks it against the keys in force. Raises MalformedBundle when the
    source cannot be read or carries none."""
    kind = detect(source)
    notes: list[str]
    if kind == "url":
        files = _UrlFiles(os.fspath(source))
        try:
            notes = list(_open_manifest(files, os.fspath(source)).checkpoints)
            extra = files.get(CHECKPOINT_NAME)
        finally:
            files.close()
        notes += [] if extra is None else [extra.decode("utf-8", "replace")]
    else:
        path = Path(os.fspath(source))
        if kind == "mirror":
            dir_files = _DirFiles(path)
            notes = list(_open_manifest(dir_files, str(path)).checkpoints)
            extra = dir_files.get(CHECKPOINT_NAME)
            notes += [] if extra is None else [extra.decode("utf-8", "replace")]
        elif kind == "v2":
            with ContainerReader(path) as members:
                notes = list(_open_manifest(members, str(path)).checkpoints)
        elif kind == "evidence":
            from .evidence import parse_evidence

            notes = [parse_evidence(path.read_bytes()).checkpoint]
        else:
            header, _, _ = _open_v1(path)
            notes = list(header.checkpoints)
    sized = [(_checkpoint_size(n), n) for n in notes]
    readable = [(size, n) for size, n in sized if size is not None]
    if not readable:
        raise MalformedBundle(f"{os.fspath(source)} carries no readable checkpoint")
    return max(readable, key=lambda x: x[0])[1]

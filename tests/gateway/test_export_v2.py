"""``gateway export`` version 2 (tiles in a ustar container) and ``--proof`` evidence.

Logs are real SQLite files written by a real Log with a fixed key and a fake
clock; each is built once per session and copied into each test. Until the v2
verifier lands, a bundle is checked here the way it will be: a TileBuilder
fed from the bundle's own tiles and entries must reproduce the root of every
checkpoint in its manifest.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import export_v2
from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.local import LocalJournal
from gateway.cli import main
from gateway.config import load_config
from gateway.evidence import NoSuchEntry, build_evidence, reading_at
from gateway.export import ExportEmpty
from gateway.export_v2 import MANIFEST_MAX_ANCHORED, Window, export_bundle_v2, plan_window
from gateway.keys import DeviceKey, device_id_for, load_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import AnchorRow, Store
from ledger_client.bundle import Bundle
from ledger_client.bundle_v2 import Manifest, Selection, decode_selected
from ledger_client.checkpoint import Checkpoint
from ledger_client.cli import main as ledger_verify
from ledger_client.container import ContainerReader
from ledger_client.evidence import parse_evidence, verify_evidence
from ledger_client.merkle import leaf_hash
from ledger_client.note import Signer, split_note
from ledger_client.records import format_time
from ledger_client.tiles import TileBuilder, decode_entry_bundle, parse_tile_path, split_hashes
from ledger_client.verify_stream import verify_source

SEED = bytes(range(0x20, 0x40))
"""A test key seed: never use it for anything real."""
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
STEP = 10**9  # entry j is received at T0 + j seconds
SENSORS = ("ph-1", "do-1", "ctd-1")  # round robin: entry j is of SENSORS[j % 3]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def device_key() -> DeviceKey:
    device = device_id_for(Signer.from_seed("x", SEED).public_key)
    return DeviceKey(device, Signer.from_seed(f"riverseal.example/gw/{device}", SEED))


class FakeClock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def readings(first: int, last: int) -> list[Reading]:
    return [
        Reading(SENSORS[j % 3], (Value("ph", 7.0 + (j % 50) / 100, "pH"),), T0 + j * STEP)
        for j in range(first, last)
    ]


async def write_log(
    db: Path, key: DeviceKey, size: int, *, every: int, anchor_every: int = 0
) -> None:
    """``size`` entries, a checkpoint after every ``every`` (the tail left unsealed), and a
    local anchor of every ``anchor_every``-th checkpoint."""
    clock = FakeClock(T0)
    async with Store(db) as store:
        log = Log(store, key, clock=clock, clock_state=lambda: "synced")
        await log.open()
        journal = LocalJournal(db.with_name(db.name + ".anchors"), clock=clock)
        anchorer = Anchorer(store, [journal], clock=clock, monotonic=lambda: 0.0)
        for first in range(0, size, every):
            last = min(first + every, size)
            clock.now_ns = T0 + last * STEP
            await log.append(readings(first, last), checkpoint=last % every == 0)
            if anchor_every and last % (every * anchor_every) == 0:
                await anchorer.step()
        await journal.aclose()


SMALL = 3037  # 11 full level-0 tiles and one of 221; checkpoints at 100, 200, …, 3000
BIG = 67_123  # past 65,536: a left context two tile levels deep; checkpoints every 1,000


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("logs")
    made = {"small": where / "small.sqlite", "big": where / "big.sqlite"}
    key = device_key()
    asyncio.run(write_log(made["small"], key, SMALL, every=100, anchor_every=5))
    asyncio.run(write_log(made["big"], key, BIG, every=1000, anchor_every=10))
    return made


@asynccontextmanager
async def opened(src: Path, tmp_path: Path) -> AsyncIterator[Log]:
    db = tmp_path / "log.sqlite"
    shutil.copy(src, db)
    async with Store(db) as store:
        log = Log(store, device_key(), clock=FakeClock(T0 + 10**6 * STEP))
        await log.open()
        yield log


@dataclass
class Read:
    names: list[str]
    manifest: Manifest
    members: dict[str, bytes]

    def roots(self) -> dict[int, bytes]:
        out = {}
        for note in self.manifest.checkpoints:
            cp = Checkpoint.parse(split_note(note)[0])
            out[cp.size] = cp.root
        return out


def read_bundle(path: Path) -> Read:
    with ContainerReader(path) as r:
        members = {name: r.read(name) for name in r}
        names = list(r.order)
    return Read(names, Manifest.loads(members["riverseal-bundle.json"]), members)


async def store_entries(log: Log, first: int, last: int) -> list[bytes]:
    return [row.data async for row in log.store.entries(first, last)]


def rebuild(read: Read, leaves: Iterable[bytes]) -> TileBuilder:
    """Seed a TileBuilder with the bundle's left context, feed it ``leaves`` and check that
    every manifest checkpoint's root comes out, and that carried hash tiles match."""
    m = read.manifest
    context = {
        ref.level: split_hashes(read.members[name], name)
        for name in read.names
        if name.startswith("tile/")
        and not name.startswith("tile/entries/")
        and (ref := parse_tile_path(name)).level > 0
    }
    builder = TileBuilder(m.start, context)
    roots = read.roots()
    seen: set[int] = set()
    built: dict[tuple[int, int], bytes] = {}

    def check() -> None:
        if builder.size in roots:
            assert builder.root() == roots[builder.size], builder.size
            seen.add(builder.size)
        for level, index, data in builder.take_full_tiles():
            built[level, index] = data

    check()
    for leaf in leaves:
        builder.append(leaf)
        check()
    assert seen == set(roots)
    n = max(roots)
    assert builder.size == n
    for name in read.names:
        if name.startswith("tile/") and not name.startswith("tile/entries/"):
            ref = parse_tile_path(name)
            got = built.get((ref.level, ref.index)) if ref.full else builder.partial(ref.level)
            assert got == read.members[name], name
    return builder


def entry_leaves(read: Read) -> list[bytes]:
    out = []
    for name in read.names:
        if name.startswith("tile/entries/"):
            ref = parse_tile_path(name)
            out += [leaf_hash(e) for e in decode_entry_bundle(read.members[name], ref.width)]
    return out


def assert_verifies(path: Path, entries: int) -> None:
    """The v2 verifier (ledger-verify's) agrees, under the device key as the trust list."""
    report = verify_source(path, [device_key().signer.verifier()], now=NOW, jobs=1)
    assert report.ok, report.failures[:5]
    assert report.entries == entries


def manifest_sizes(
    cps: list[tuple[int, int]],
    anchors: list[tuple[int, str]],
    low: int,
    high: int,
    at_most: int = MANIFEST_MAX_ANCHORED,
) -> list[int]:
    """The manifest's checkpoint sizes by the rule of docs/bundle-format.md §15.2, worked
    out here from (size, time) and (checkpoint, backend) pairs: every anchored one, or,
    past ``at_most``, per span of time (an hour or longer) the smallest anchored
    independently if any is, else the smallest anchored; plus ``low`` and ``high``."""
    independent: dict[int, bool] = {}
    for size, backend in anchors:
        if low <= size <= high:
            independent[size] = independent.get(size, False) or backend != "local"
    times = {size: t for size, t in cps if size in independent}
    if len(times) <= at_most:
        return sorted(set(times) | {low, high})
    hour = 3600 * 10**9
    span = max(hour, -(-(max(times.values()) - min(times.values()) + 1) // at_most))
    spans: dict[int, list[int]] = {}
    for size, t in times.items():
        spans.setdefault(t // span, []).append(size)
    chosen = {min([s for s in sizes if independent[s]] or sizes) for sizes in spans.values()}
    return sorted(chosen | {low, high})


async def expected_manifest(
    log: Log, low: int, high: int, at_most: int = MANIFEST_MAX_ANCHORED
) -> tuple[list[str], list[int]]:
    cps = await log.store.checkpoints()
    anchors = [a for a in await log.store.anchors() if a.state != "pending"]
    sizes = manifest_sizes(
        [(c.size, c.time_ns) for c in cps],
        [(a.checkpoint, a.backend) for a in anchors],
        low,
        high,
        at_most,
    )
    notes = [c.note for c in cps if c.size in sizes]
    return notes, [a.checkpoint for a in anchors if a.checkpoint in sizes]


def tar_names(path: Path) -> list[str]:
    done = subprocess.run(["tar", "tf", str(path)], check=True, capture_output=True, text=True)
    return done.stdout.splitlines()


# --- the window rules ---------------------------------------------------------------------


def test_plan_window_follows_the_rules() -> None:
    sizes = [100 * k for k in range(1, 31)]
    assert plan_window(1290, 2345, sizes, whole=False) == Window(1290, 2345, 1200, 1024, 2400)
    assert plan_window(50, 60, sizes, whole=False) == Window(50, 60, None, 0, 100)
    assert plan_window(0, 2999, sizes, whole=True) == Window(0, 2999, None, 0, 3000)
    assert plan_window(1290, 2345, sizes, whole=True).start == 0
    # The checkpoint before decides the tile when it is in an earlier one.
    assert plan_window(1290, 1300, [1000, 1400], whole=False) == Window(1290, 1300, 1000, 768, 1400)
    # A checkpoint exactly at the first entry is the one before it (size ≤ a).
    assert plan_window(1200, 1250, sizes, whole=False).previous == 1200
    assert plan_window(1200, 1299, sizes, whole=False).size == 1300
    assert plan_window(1200, 1300, sizes, whole=False).size == 1400
    with pytest.raises(ExportEmpty):
        plan_window(0, 3000, sizes, whole=True)
    w = plan_window(1290, 2345, sizes, whole=False)
    assert w.lowest_checkpoint == 1200
    assert [t.path for t in w.tiles()][-1] == "tile/0/009.p/96"
    assert plan_window(10, 20, sizes, whole=False).lowest_checkpoint == 1


# --- whole log ----------------------------------------------------------------------------


async def test_whole_log_bundle(logs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar"
    async with opened(logs["small"], tmp_path) as log:
        summary = await export_bundle_v2(log, out)
        entries = await store_entries(log, 0, SMALL - 1)
        all_notes = [c.note for c in await log.store.checkpoints()]
        anchored = [a.checkpoint for a in await log.store.anchors()]
        notes, kept = await expected_manifest(log, 1, SMALL)
    read = read_bundle(out)
    tiles = [f"tile/entries/{t:03d}" for t in range(11)] + ["tile/entries/011.p/221"]
    assert read.names == ["riverseal-bundle.json", "checkpoint", *tiles]
    assert tar_names(out) == read.names
    m = read.manifest
    assert (m.start, m.selection, m.device, m.origin) == (
        0,
        None,
        log.key.device_id,
        log.key.origin,
    )
    # Sealed first: 100, 200, …, 3000 and 3037; anchored 500, 1000, …, 3000: the
    # manifest keeps the anchored ones and the newest.
    assert [Checkpoint.parse(split_note(n)[0]).size for n in all_notes][-2:] == [3000, SMALL]
    assert anchored == [500, 1000, 1500, 2000, 2500, 3000]
    assert m.checkpoints == tuple(notes)
    assert [Checkpoint.parse(split_note(n)[0]).size for n in notes] == [*anchored, SMALL]
    assert [a.checkpoint for a in m.anchors] == kept == anchored
    assert all(a.state == "final" and a.backend == "local" for a in m.anchors)
    assert read.members["checkpoint"] == m.checkpoints[-1].encode()
    assert [k.vkey for k in m.keys] == [log.key.vkey]
    decoded = [
        e
        for name in tiles
        for e in decode_entry_bundle(read.members[name], parse_tile_path(name).width)
    ]
    assert decoded == entries
    rebuild(read, entry_leaves(read))
    assert_verifies(out, SMALL)
    assert summary.entries == SMALL
    assert summary.bytes == out.stat().st_size
    assert summary.window == Window(0, SMALL - 1, None, 0, SMALL)
    assert not out.with_name(out.name + ".tmp").exists()


async def test_whole_log_bundle_size_is_close_to_its_entries(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bundle.tar"
    async with opened(logs["big"], tmp_path) as log:
        summary = await export_bundle_v2(log, out)
        payload = sum(len(e) for e in await store_entries(log, 0, BIG - 1))
        notes, _ = await expected_manifest(log, 1, BIG)
    ratio = out.stat().st_size / payload
    assert ratio <= 1.15, ratio
    assert summary.entries == BIG
    read = read_bundle(out)
    assert read.manifest.checkpoints == tuple(notes)
    rebuild(read, entry_leaves(read))


# --- a time range -------------------------------------------------------------------------


async def test_time_range_starts_at_the_tile_of_the_checkpoint_before(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bundle.tar"
    since, until = T0 + 1290 * STEP, T0 + 2345 * STEP
    async with opened(logs["small"], tmp_path) as log:
        summary = await export_bundle_v2(log, out, since_ns=since, until_ns=until)
        entries = await store_entries(log, 1024, 2399)
    read = read_bundle(out)
    m = read.manifest
    # a = 1290, b = 2345; p = 1200, s = 256·⌊1200/256⌋ = 1024; n = 2400
    assert summary.window == Window(1290, 2345, 1200, 1024, 2400)
    assert m.start == 1024
    assert m.selection == Selection(1290, 2345, format_time(since), format_time(until), None)
    assert sorted(read.roots()) == [1200, 1500, 2000, 2400]  # before, anchored, newest
    assert [a.checkpoint for a in m.anchors] == [1500, 2000]
    tiles = [f"tile/entries/{t:03d}" for t in range(4, 9)] + ["tile/entries/009.p/96"]
    assert read.names == ["riverseal-bundle.json", "checkpoint", "tile/1/000.p/9", *tiles]
    assert tar_names(out) == read.names
    assert read.members["checkpoint"] == m.checkpoints[-1].encode()
    assert entry_leaves(read) == [leaf_hash(e) for e in entries]
    rebuild(read, entry_leaves(read))
    assert_verifies(out, 2400 - 1024)
    assert summary.entries == 2400 - 1024


async def test_time_range_before_any_checkpoint(logs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar"
    async with opened(logs["small"], tmp_path) as log:
        await export_bundle_v2(log, out, since_ns=T0 + 50 * STEP, until_ns=T0 + 60 * STEP)
    read = read_bundle(out)
    assert read.names == ["riverseal-bundle.json", "checkpoint", "tile/entries/000.p/100"]
    assert read.manifest.start == 0
    assert read.manifest.selection is not None
    assert sorted(read.roots()) == [100]
    rebuild(read, entry_leaves(read))


async def test_time_range_in_the_newest_entries_seals_them(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bundle.tar"
    async with opened(logs["small"], tmp_path) as log:
        summary = await export_bundle_v2(log, out, since_ns=T0 + 3010 * STEP)
    read = read_bundle(out)
    assert summary.window == Window(3010, SMALL - 1, 3000, 2816, SMALL)
    assert sorted(read.roots()) == [3000, SMALL]
    assert read.names[2:] == ["tile/1/000.p/11", "tile/entries/011.p/221"]
    rebuild(read, entry_leaves(read))


async def test_left_context_two_levels_deep(logs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar"
    async with opened(logs["big"], tmp_path) as log:
        summary = await export_bundle_v2(
            log, out, since_ns=T0 + 66_500 * STEP, until_ns=T0 + 66_600 * STEP
        )
    read = read_bundle(out)
    # p = 66,000, s = 256·257 = 65,792, n = 67,000
    assert summary.window == Window(66_500, 66_600, 66_000, 65_792, 67_000)
    tiles = [f"tile/entries/{t}" for t in range(257, 261)] + ["tile/entries/261.p/184"]
    assert read.names == [
        "riverseal-bundle.json",
        "checkpoint",
        "tile/1/001.p/5",
        "tile/2/000.p/1",
        *tiles,
    ]
    assert tar_names(out) == read.names
    assert sorted(read.roots()) == [66_000, 67_000]
    rebuild(read, entry_leaves(read))
    assert_verifies(out, 67_000 - 65_792)


async def test_empty_window_writes_nothing(logs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar"
    async with opened(logs["small"], tmp_path) as log:
        with pytest.raises(ExportEmpty):
            await export_bundle_v2(log, out, since_ns=T0 + 10**6 * STEP)
        with pytest.raises(ExportEmpty, match="nope"):
            await export_bundle_v2(log, out, sensors=["nope"])
    assert list(tmp_path.iterdir()) == [tmp_path / "log.sqlite"]


# --- selected by sensor -------------------------------------------------------------------


async def test_sensor_selection_carries_hash_tiles_and_chosen_entries(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bundle.tar"
    async with opened(logs["small"], tmp_path) as log:
        summary = await export_bundle_v2(log, out, sensors=["do-1", "ctd-1", "do-1"])
        rows = [row async for row in log.store.entries(0, SMALL - 1)]
    read = read_bundle(out)
    m = read.manifest
    assert m.start == 0
    assert m.selection == Selection(0, SMALL - 1, None, None, ("ctd-1", "do-1"))
    expected = ["riverseal-bundle.json", "checkpoint"]
    for t in range(12):
        width = 256 if t < 11 else 221
        expected += [f"tile/0/{t:03d}" + ("" if width == 256 else ".p/221")]
        expected += [f"riverseal/selected/{t:03d}"]
    assert read.names == expected
    assert tar_names(out) == read.names
    leaves: list[bytes] = []
    carried = 0
    for t in range(12):
        names = [n for n in read.names if n.startswith(f"tile/0/{t:03d}")]
        (tile_name,) = names
        width = parse_tile_path(tile_name).width
        hashes = split_hashes(read.members[tile_name], tile_name)
        assert len(hashes) == width
        leaves += hashes
        chosen = decode_selected(read.members[f"riverseal/selected/{t:03d}"], width, "selected")
        want = [
            (r.index - t * 256, r.data)
            for r in rows[t * 256 : t * 256 + width]
            if r.sensor in ("do-1", "ctd-1")
        ]
        assert chosen == want
        for pos, entry in chosen:
            assert leaf_hash(entry) == hashes[pos]
        carried += len(chosen)
    assert leaves == [leaf_hash(r.data) for r in rows]
    assert summary.entries == carried == sum(1 for r in rows if r.sensor != "ph-1")
    rebuild(read, leaves)
    assert_verifies(out, carried)


async def test_sensor_and_time_range(logs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar"
    since, until = T0 + 1290 * STEP, T0 + 1300 * STEP
    async with opened(logs["small"], tmp_path) as log:
        await export_bundle_v2(log, out, since_ns=since, until_ns=until, sensors=["ph-1"])
    read = read_bundle(out)
    assert read.manifest.start == 1024
    assert read.manifest.selection == Selection(
        1290, 1300, format_time(since), format_time(until), ("ph-1",)
    )
    assert read.names == [
        "riverseal-bundle.json",
        "checkpoint",
        "tile/1/000.p/5",
        "tile/0/004",
        "riverseal/selected/004",
        "tile/0/005.p/120",
        "riverseal/selected/005",
    ]
    leaves = []
    for name in ("tile/0/004", "tile/0/005.p/120"):
        leaves += split_hashes(read.members[name], name)
    rebuild(read, leaves)
    assert_verifies(out, 125)  # ph-1 among 1024–1399 (j % 3 == 0): 1026, 1029, …, 1398
    chosen = decode_selected(read.members["riverseal/selected/005"], 120, "selected")
    assert [pos for pos, _ in chosen] == [p for p in range(120) if (1280 + p) % 3 == 0]


# --- evidence -----------------------------------------------------------------------------


async def test_evidence_uses_the_first_anchored_checkpoint(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    async with opened(logs["small"], tmp_path) as log:
        ev = await build_evidence(log, 1234)
        unanchored = await build_evidence(log, 3010)  # seals 3037 first
        first = await build_evidence(log, 0)
        entry = (await store_entries(log, 1234, 1234))[0]
        by_time = await reading_at(log.store, "do-1", T0 + 1236 * STEP + STEP // 2)
        with pytest.raises(NoSuchEntry):
            await build_evidence(log, SMALL)
        with pytest.raises(NoSuchEntry):
            await reading_at(log.store, "do-1", T0 - 1)
    trusted = [device_key().signer.verifier()]
    assert ev.tree.size == 1500
    assert ev.entry == entry
    assert [a.checkpoint for a in ev.anchors] == [1500]
    assert unanchored.tree.size == SMALL and unanchored.anchors == ()
    assert first.tree.size == 500
    assert by_time == 1234  # the do-1 reading received at or just before 1236.5 s
    for e in (ev, unanchored, first):
        again = parse_evidence(e.dumps())
        assert again == e
        report = verify_evidence(again, trusted, now=NOW)
        assert report.ok, report.failures
        assert report.step("anchors").passed == len(e.anchors)
    altered = replace(ev, entry=ev.entry.replace(b'"v":', b'"v":1', 1))
    report = verify_evidence(altered, trusted, now=NOW)
    assert {(f.check, f.entry) for f in report.failures} >= {("inclusion", 1234)}
    report = verify_evidence(replace(ev, index=1235), trusted, now=NOW)
    assert {("record", 1235), ("inclusion", 1235)} <= {(f.check, f.entry) for f in report.failures}


# --- the command line ---------------------------------------------------------------------


def test_cli_export_formats_and_proofs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = tmp_path / "box"
    assert main(["init", str(box)]) == 0
    cfg_path = box / "gateway.toml"
    cfg = load_config(cfg_path)
    key = load_device_key(cfg.key_file)
    asyncio.run(write_log(cfg.db_path, key, 600, every=100, anchor_every=2))
    capsys.readouterr()
    base = ["export", "--config", str(cfg_path), "--out"]

    def run(*args: str) -> tuple[int, str, str]:
        rc = main([*base, *args])
        out, err = capsys.readouterr()
        return rc, out, err

    v2 = tmp_path / "b.tar"
    rc, out, _ = run(str(v2))
    assert rc == 0
    assert out.startswith(f"wrote {v2}: 600 entries, {v2.stat().st_size} bytes")
    assert read_bundle(v2).manifest.start == 0
    trust = str(box / "trust.txt")
    assert ledger_verify([str(v2), "--trust", trust, "--jobs", "1"]) == 3  # local anchors

    v1 = tmp_path / "b.json"
    rc, out, _ = run(str(v1), "--format", "v1")
    assert rc == 0
    assert len(Bundle.loads(v1.read_bytes()).entries) == 600

    sel = tmp_path / "sel.tar"
    rc, out, _ = run(str(sel), "--sensor", "ph-1", "--since", "2026-01-01T00:05:00")
    assert rc == 0
    # a = 300, p = 300, s = 256, n = 600: the ph-1 entries of 256–599 (j % 3 == 0)
    assert out.startswith(f"wrote {sel}: 114 entries")
    assert read_bundle(sel).manifest.selection == Selection(
        300, 599, "2026-01-01T00:05:00.000000Z", None, ("ph-1",)
    )

    proof = tmp_path / "p.tlog-proof"
    rc, out, _ = run(str(proof), "--proof", "123")
    assert rc == 0
    assert out.startswith(f"wrote {proof}: evidence for entry 123")
    ev = parse_evidence(proof.read_bytes())
    assert ev.index == 123 and ev.tree.size == 200
    assert verify_evidence(ev, [key.signer.verifier()], now=NOW).ok
    assert ledger_verify([str(proof), "--trust", trust]) == 3

    rc, out, _ = run(str(proof), "--proof-sensor", "do-1", "--proof-time", "2026-01-01T00:02:00Z")
    assert rc == 0
    assert parse_evidence(proof.read_bytes()).index == 118  # 118 % 3 == 1, at 118 s ≤ 120 s

    for wrong in (
        ["--proof", "1", "--since", "2026-01-01"],
        ["--proof-sensor", "do-1"],
        ["--proof-time", "2026-01-01T00:02:00Z"],
        ["--sensor", "do-1", "--format", "v1"],
        ["--proof", "1", "--format", "v2"],
    ):
        rc, _, err = run(str(tmp_path / "x"), *wrong)
        assert rc == 2, wrong
        assert err.startswith("gateway export: ")
    rc, _, err = run(str(tmp_path / "x"), "--proof", "600")
    assert rc == 1
    assert "entry 600 is not in the log" in err
    assert not (tmp_path / "x").exists()


async def test_past_its_cap_the_manifest_keeps_one_anchored_checkpoint_an_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint a minute, each anchored locally, some independently: past the cap
    (3 here, 10,000 in use) the manifest keeps per hour the first independently
    anchored one (else the first anchored at all), and the newest — not 180."""
    monkeypatch.setattr(export_v2, "MANIFEST_MAX_ANCHORED", 3)
    key = device_key()
    clock = FakeClock(T0)
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key, clock=clock, clock_state=lambda: "synced")
        await log.open()
        for minute in range(1, 181):
            clock.now_ns = T0 + minute * 60 * 10**9
            await log.append(readings((minute - 1) * 20, minute * 20), checkpoint=True)
            cp = log.last_checkpoint
            assert cp is not None
            digest = Checkpoint(key.origin, cp.size, cp.root).digest()
            backends = ["local"] + (["evm:river"] if minute in (70, 75, 150) else [])
            for backend in backends:
                await store.put_anchor(
                    AnchorRow(cp.size, backend, digest, "final", "{}", 1, None, 0, 0)
                )
        out = tmp_path / "b.tar"
        await export_bundle_v2(log, out)
        m = read_bundle(out).manifest
        expected, _ = await expected_manifest(log, 1, 3600, at_most=3)
    sizes = [Checkpoint.parse(split_note(n)[0]).size for n in m.checkpoints]
    # hour 0: minutes 1–59 (first anchored: 20); hour 1: minute 70 has an evm anchor
    # (1400); hour 2: minute 150 (3000); minute 180 is the newest and opens hour 3.
    assert sizes == [20, 1400, 3000, 3600]
    assert m.checkpoints == tuple(expected)
    assert {(a.checkpoint, a.backend) for a in m.anchors} == {
        (20, "local"),
        (1400, "local"),
        (1400, "evm:river"),
        (3000, "local"),
        (3000, "evm:river"),
        (3600, "local"),
    }

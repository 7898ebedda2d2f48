"""The streamed version 1 export writes exactly what the old in-memory export wrote.

``_reference_export`` is the in-memory ``export_bundle`` as it was before the
export streamed (it planned every proof, fetched every node through
``Store.nodes``, built the whole ``Bundle``): the new writer must give the same
bytes as its ``Bundle.dumps`` on every log and range, and the committed v1
fixture's generator must still write the committed files.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib.util
import io
import itertools
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.local import LocalJournal
from gateway.cli import main
from gateway.config import load_config
from gateway.errors import GatewayError
from gateway.export import (
    ExportEmpty,
    _InclusionProofs,
    _outside_nodes,
    _Subtrees,
    export_bundle,
    export_bundle_v1,
    write_bundle_v1,
)
from gateway.keys import DeviceKey, device_id_for, load_device_key
from gateway.log import Log
from gateway.pipeline import Event, Gap, Reading, Value
from gateway.store import CheckpointRow, Store
from ledger_client import merkle
from ledger_client.bundle import AnchorReceipt, Bundle, BundleEntry, ConsistencyProof
from ledger_client.bundle import DeviceKey as BundleKey
from ledger_client.note import Signer
from ledger_client.records import format_time
from ledger_client.trust import parse_trust
from ledger_client.verify import verify_bundle

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
SEED = bytes(range(0x60, 0x80))
"""A test key seed: never use it for anything real."""
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
STEP = 10**9  # entry j is received at T0 + j seconds
NOW = datetime(2026, 6, 1, tzinfo=UTC)


# --- the export as it was: every proof planned, every node fetched, one Bundle in memory -----


async def _reference_export(
    log: Log,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    seal: bool = True,
    clock: Callable[[], int] = time.time_ns,
) -> Bundle:
    store = log.store
    if seal:
        await log.checkpoint()
    span = await store.index_range(since_ns, until_ns)
    if span is None:
        raise ExportEmpty("no entries in the requested time window")
    first, last = span
    all_cps = await store.checkpoints()
    sizes = [c.size for c in all_cps]
    lo = bisect.bisect_right(sizes, first)
    hi = bisect.bisect_right(sizes, last)
    if hi == len(sizes):
        last = sizes[-1] - 1 if sizes else -1
        if last < first:
            raise ExportEmpty("no checkpoint covers the requested entries yet")
        hi = bisect.bisect_right(sizes, last)
    cps: list[CheckpointRow] = all_cps[max(lo - 1, 0) : hi + 1]
    cp_sizes = [c.size for c in cps]
    incl_plans: list[tuple[int, int, list[list[merkle.Node]]]] = []
    for i in range(first, last + 1):
        size = cp_sizes[bisect.bisect_right(cp_sizes, i)]
        incl_plans.append((i, size, merkle.inclusion_plan(i, size)))
    cons_plans = [
        (a.size, b.size, merkle.consistency_plan(a.size, b.size))
        for a, b in itertools.pairwise(cps)
    ]
    wanted = {n for _, _, plan in incl_plans for el in plan for n in el}
    wanted.update(n for _, _, plan in cons_plans for el in plan for n in el)
    hashes = await store.nodes(wanted)

    def resolve(plan: list[list[merkle.Node]]) -> tuple[bytes, ...]:
        return tuple(merkle.fold([hashes[n] for n in el]) for el in plan)

    entries = []
    plan_iter = iter(incl_plans)
    async for row in store.entries(first, last):
        idx, size, plan = next(plan_iter)
        if idx != row.index:
            raise GatewayError(f"log database has a hole at index {idx}")
        entries.append(BundleEntry(row.index, row.data, size, resolve(plan)))
    consistency = [ConsistencyProof(a, b, resolve(p)) for a, b, p in cons_plans]
    in_bundle = set(cp_sizes)
    anchors = [
        AnchorReceipt(a.checkpoint, a.backend, a.digest, a.state, json.loads(a.receipt))
        for a in await store.anchors()
        if a.checkpoint in in_bundle and a.state != "pending"
    ]
    vkey = await store.get_meta("vkey") or log.key.vkey
    created = await store.get_meta("created")
    return Bundle(
        origin=log.key.origin,
        device=log.key.device_id,
        keys=(BundleKey(vkey, created, None),),
        entries=tuple(entries),
        checkpoints=tuple(c.note for c in cps),
        consistency=tuple(consistency),
        anchors=tuple(anchors),
        exported=format_time(clock()),
        exporter="riverseal 0.1.0",
    )


# --- deterministic logs ---------------------------------------------------------------------


class FakeClock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def device_key() -> DeviceKey:
    device = device_id_for(Signer.from_seed("x", SEED).public_key)
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", SEED))


NOTE = {"text": 'Zürich "quoted" \\ back\nslash\ttab \u2028 ✓ 𝄞 \x7f', "n": 1.5e-7}
"""An event detail whose entry needs every kind of JSON string escape, and none."""


def item(j: int) -> Reading | Gap | Event:
    t = T0 + j * STEP
    if j % 97 == 5:
        return Event("note", t, {**NOTE, "j": j})
    if j % 211 == 7:
        return Gap("ph-1", "timeout", t - STEP, t)
    return Reading(
        ("ph-1", "µS-2", "do-1")[j % 3],
        (Value("ph", 7.0 + (j % 50) / 100, "pH"), Value("ec", 400.0 + j % 7, "uS/cm")),
        t,
    )


async def write_log(
    db: Path, size: int, checkpoints: list[int], anchored: frozenset[int] = frozenset()
) -> None:
    """``size`` entries, a checkpoint at each of ``checkpoints`` (the rest left unsealed),
    those in ``anchored`` anchored in a local journal."""
    clock = FakeClock(T0)
    async with Store(db) as store:
        log = Log(store, device_key(), clock=clock, clock_state=lambda: "synced")
        await log.open()
        journal = LocalJournal(db.with_name(db.name + ".anchors"), clock=clock)
        anchorer = Anchorer(store, [journal], clock=clock, monotonic=lambda: 0.0)
        at = 0
        for cut in [*checkpoints, size]:
            if cut > at:
                clock.now_ns = T0 + cut * STEP
                await log.append([item(j) for j in range(at, cut)], checkpoint=cut != size)
                at = cut
            if cut in anchored:
                await anchorer.step()
        await journal.aclose()


IRREGULAR = 2_930
IRREGULAR_CPS = [1, 2, 3, 7, 100, 255, 256, 257, 511, 700, 1024, 1500, 2048, 2049, 2600, 2893]
BIG = 70_100  # past 65,536: subtrees of level 16 and up left of a range's first tile
BIG_CPS = list(range(1000, 70_001, 1000))


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("v1logs")
    made = {"irregular": where / "irregular.sqlite", "big": where / "big.sqlite"}
    asyncio.run(write_log(made["irregular"], IRREGULAR, IRREGULAR_CPS, frozenset({3, 700, 2049})))
    asyncio.run(write_log(made["big"], BIG, BIG_CPS, frozenset({5000, 66_000})))
    return made


@asynccontextmanager
async def opened(src: Path, where: Path) -> AsyncIterator[Log]:
    """A fresh copy of a log: an export may seal a checkpoint into it."""
    where.mkdir()
    db = where / "log.sqlite"
    shutil.copy(src, db)
    async with Store(db) as store:
        log = Log(store, device_key(), clock=FakeClock(T0 + 10**6 * STEP))
        await log.open()
        yield log


async def streamed(log: Log, **kw: Any) -> bytes:
    buf = io.BytesIO()
    summary = await write_bundle_v1(log, buf, clock=FakeClock(T0 + 2 * 10**6 * STEP), **kw)
    data = buf.getvalue()
    assert summary.bytes == len(data)
    return data


async def reference(log: Log, **kw: Any) -> bytes:
    b = await _reference_export(log, clock=FakeClock(T0 + 2 * 10**6 * STEP), **kw)
    return b.dumps().encode("utf-8")


def window(a: int | None, b: int | None) -> dict[str, Any]:
    """Entries received at seconds a…b (None: open)."""
    return {
        "since_ns": None if a is None else T0 + a * STEP,
        "until_ns": None if b is None else T0 + b * STEP,
    }


# (log, since, until, seal): whole logs, time ranges, ranges ending before the newest
# checkpoint, ranges in the unsealed tail (sealed first), single entries.
CASES = [
    ("irregular", None, None, True),  # the tail 2893–2929 needs a seal
    ("irregular", None, None, False),  # cut at 2893, the newest checkpoint
    ("irregular", 300, 1200, True),  # first entry not on a tile boundary
    ("irregular", 0, 0, False),  # one entry, the one-leaf tree
    ("irregular", 0, 300, True),
    ("irregular", 256, 511, False),  # exactly a tile, starting at a checkpoint
    ("irregular", 257, 257, False),
    ("irregular", 1023, 2050, False),  # ends well before the newest checkpoint
    ("irregular", 2048, 2048, False),
    ("irregular", 2900, None, True),  # only the unsealed tail: sealed first
    ("irregular", 2600, 2920, True),
    ("irregular", 2600, 2920, False),  # cut at 2893
    ("big", None, None, True),
    ("big", 65_530, 67_100, False),  # across 2**16, left subtrees of level 16
    ("big", 66_561, 69_999, True),  # the checkpoint before is 66,000: three tiles to its right
    ("big", 68_999, 70_099, True),
]


@pytest.mark.parametrize(("name", "since", "until", "seal"), CASES)
async def test_streamed_bytes_are_the_in_memory_bundles(
    logs: dict[str, Path],
    tmp_path: Path,
    name: str,
    since: int | None,
    until: int | None,
    seal: bool,
) -> None:
    kw = {**window(since, until), "seal": seal}
    async with opened(logs[name], tmp_path / "new") as log:
        new = await streamed(log, **kw)
        again = await export_bundle(log, clock=FakeClock(T0 + 2 * 10**6 * STEP), **kw)
    async with opened(logs[name], tmp_path / "old") as log:
        old = await reference(log, **kw)
    assert new == old
    assert again.dumps().encode("utf-8") == old
    assert again == Bundle.loads(old)


async def test_the_streamed_bundles_verify(logs: dict[str, Path], tmp_path: Path) -> None:
    trust = parse_trust(f"key {device_key().vkey}\n")
    async with opened(logs["irregular"], tmp_path / "a") as log:
        whole = Bundle.loads(await streamed(log))
        part = Bundle.loads(await streamed(log, **window(1023, 2050)))
    assert len(whole.entries) == IRREGULAR
    # gap records take the time of their batch: gap 851 is received with checkpoint 1024
    assert [e.index for e in part.entries] == list(range(851, 2051))
    assert len(whole.anchors) == 3
    for b in (whole, part):
        report = verify_bundle(b, trust, now=NOW)
        assert report.ok, report.failures


async def test_empty_windows_are_refused_alike(logs: dict[str, Path], tmp_path: Path) -> None:
    async with opened(logs["irregular"], tmp_path / "a") as log:
        with pytest.raises(ExportEmpty, match="no entries"):
            await streamed(log, **window(10**5, None), seal=False)
        with pytest.raises(ExportEmpty, match="no checkpoint covers"):
            await streamed(log, **window(2900, None), seal=False)
        with pytest.raises(ExportEmpty, match="no checkpoint covers"):
            await _reference_export(log, **window(2900, None), seal=False)


# --- the fixture's generator -----------------------------------------------------------------


def _make_fixture() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Written:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def dumps(self) -> str:
        return self.data.decode("utf-8")


async def _streamed_export(log: Log, **kw: Any) -> _Written:
    buf = io.BytesIO()
    await write_bundle_v1(log, buf, **kw)
    return _Written(buf.getvalue())


@pytest.mark.parametrize("how", ["export_bundle", "write_bundle_v1"])
def test_the_fixture_generator_still_writes_the_committed_files(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    module = _make_fixture()
    if how == "write_bundle_v1":
        monkeypatch.setattr(module, "export_bundle", _streamed_export)
    with tempfile.TemporaryDirectory() as tmp:
        texts = asyncio.run(module.build(Path(tmp)))
    for name, text in zip(["bundle.json", "bundle-partial.json", "trust.txt"], texts, strict=True):
        assert text.encode("utf-8") == (FIXTURE / name).read_bytes(), name


# --- the proofs, from the hash arrays, against every plan ------------------------------------


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    out = [leaves]
    while len(out[-1]) > 1:
        below = out[-1]
        out.append([merkle.node_hash(below[k], below[k + 1]) for k in range(0, len(below) - 1, 2)])
    return out


def _proof_maker(levels: list[list[bytes]], start: int, end: int) -> _InclusionProofs:
    leaves = bytearray(b"".join(levels[0][start:end]))
    outside = {n: levels[n.level][n.index] for n in _outside_nodes(start, end)}
    return _InclusionProofs(_Subtrees(start, leaves, outside))


def _quoted(proof: list[bytes]) -> list[str]:
    return [json.dumps(h) for h in BundleEntry(0, b"", 1, tuple(proof)).to_json()["inclusion"]]


@pytest.mark.parametrize("start", [0, 1, 5, 13, 64, 128, 200])
def test_every_inclusion_proof_of_a_small_tree(start: int) -> None:
    end = 210
    levels = _levels([merkle.leaf_hash(b"%d" % j) for j in range(end)])
    proofs = _proof_maker(levels, start, end)
    for size in range(start + 1, end + 1):
        for i in range(start, size):
            want = [
                merkle.fold([levels[n.level][n.index] for n in el])
                for el in merkle.inclusion_plan(i, size)
            ]
            assert proofs.proof(i, size) == _quoted(want), (i, size)


def test_inclusion_proofs_of_a_tree_past_two_tile_levels() -> None:
    end = 70_100
    tree = merkle.MerkleTree(b"%d" % j for j in range(end))
    levels = _levels([tree.leaf(j) for j in range(end)])
    for start in (0, 65_536 - 256, 65_536 + 3 * 256, 69_888):
        proofs = _proof_maker(levels, start, end)
        indices = sorted(
            {start, start + 1, start + 255, start + 256, 65_535, 65_536, 67_000, 69_999, end - 1}
        )
        for i in (i for i in indices if start <= i < end):
            for size in sorted({i + 1, i + 2, i + 257, 65_537, 66_000, 70_000, end}):
                if size <= i or size > end:
                    continue
                want = tree.inclusion_proof(i, size)
                assert proofs.proof(i, size) == _quoted(want), (start, i, size)
                merkle.verify_inclusion(i, size, tree.leaf(i), want, tree.root(size))


def test_a_subtree_neither_held_nor_fetched_is_an_error() -> None:
    levels = _levels([merkle.leaf_hash(b"%d" % j) for j in range(300)])
    trees = _Subtrees(256, bytearray(b"".join(levels[0][256:300])), {})
    with pytest.raises(GatewayError, match="subtree"):
        trees.hash(8, 0)
    assert trees.hash(2, 64) == levels[2][64]


# --- the file: written beside, renamed, never half under the final name -----------------------


class _CountingWriter(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data: Any) -> int:
        self.sizes.append(len(data))
        return super().write(data)


async def test_entries_are_written_as_they_are_read(logs: dict[str, Path], tmp_path: Path) -> None:
    async with opened(logs["irregular"], tmp_path / "a") as log:
        out = _CountingWriter()
        summary = await write_bundle_v1(log, out)
    assert summary.entries == IRREGULAR and summary.bytes == len(out.getvalue())
    assert len(out.sizes) >= IRREGULAR // 512
    assert max(out.sizes) < summary.bytes / 4


async def test_export_to_a_file_is_renamed_into_place(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "out" / "b.json"
    path.parent.mkdir()
    path.write_bytes(b"the previous bundle")
    async with opened(logs["irregular"], tmp_path / "a") as log:
        with pytest.raises(ExportEmpty):
            await export_bundle_v1(log, path, **window(10**5, None))
        assert path.read_bytes() == b"the previous bundle"
        assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]
        summary = await export_bundle_v1(
            log, path, clock=FakeClock(T0 + 2 * 10**6 * STEP), **window(300, 1200)
        )
        want = await streamed(log, **window(300, 1200))
    assert summary.path == path and (summary.first, summary.last) == (300, 1200)
    assert summary.checkpoints == 5 and summary.anchors == 1  # 257 … 1500; 700 anchored
    assert path.read_bytes() == want and summary.bytes == len(want)
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]


@pytest.mark.parametrize("missing", [1000, 1199])
async def test_a_hole_in_the_log_fails_and_leaves_no_file(
    logs: dict[str, Path], tmp_path: Path, missing: int
) -> None:
    db = tmp_path / "a" / "log.sqlite"
    db.parent.mkdir()
    shutil.copy(logs["irregular"], db)
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM entries WHERE idx = ?", (missing,))
    con.close()
    path = tmp_path / "b.json"
    async with Store(db) as store:
        log = Log(store, device_key())
        await log.open()
        with pytest.raises(GatewayError, match=f"hole at index {missing}"):
            await export_bundle_v1(log, path, seal=False, **window(300, 1200))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_cli_v1_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = tmp_path / "box"
    assert main(["init", str(box)]) == 0
    cfg = load_config(box / "gateway.toml")
    key = load_device_key(cfg.key_file)

    async def fill() -> None:
        async with Store(cfg.db_path) as store:
            log = Log(store, key)
            await log.open()
            await log.append([item(j) for j in range(300)], checkpoint=True)
            await log.append([item(j) for j in range(300, 345)])

    asyncio.run(fill())
    capsys.readouterr()
    out = tmp_path / "b.json"
    rc = main(
        ["export", "--config", str(box / "gateway.toml"), "--format", "v1", "--out", str(out)]
    )
    assert rc == 0
    assert capsys.readouterr().out == f"wrote {out}: 345 entries, 2 checkpoints, 0 anchors\n"
    b = Bundle.loads(out.read_bytes())
    assert [e.index for e in b.entries] == list(range(345))
    trust = parse_trust((box / "trust.txt").read_text())
    assert verify_bundle(b, trust, now=datetime.now(UTC) + timedelta(minutes=5)).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "box"]

"""One history across bundles (docs/bundle-format.md §9.2), with the gateway's own exports.

A real Log and Store write a box's log under a fake clock; ``gateway``'s exporters write
v1 and v2 bundles of it at two moments; ``ledger-verify`` (its command line) must link
the later bundle to a checkpoint the regulator kept from the earlier one
(``--save-checkpoint``, ``--since-checkpoint``, ``--previous``), and must report a
fork — with both signed checkpoints — for a box whose database was restored from an
older copy and then kept running. (The daemon refuses to run on such a database,
gateway/history.py; an owner who also removed that evidence, or an attacker with the
key, is what the regulator's kept checkpoint is for. The Log is driven directly here.)
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.export import export_bundle_v1
from gateway.export_v2 import export_bundle_v2
from gateway.keys import DeviceKey, device_id_for
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from ledger_client.cli import main as ledger_verify
from ledger_client.note import Signer
from ledger_client.verify_stream import newest_checkpoint

SEED = bytes(range(0x40, 0x60))
"""A test key seed: never use it for anything real."""
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
STEP = 10**9


def device_key() -> DeviceKey:
    device = device_id_for(Signer.from_seed("x", SEED).public_key)
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", SEED))


class Clock:
    def __init__(self) -> None:
        self.now_ns = T0

    def __call__(self) -> int:
        return self.now_ns


async def grow(db: Path, first: int, last: int, *, value: float = 7.0) -> None:
    """Entries ``first``..``last``-1 (reading j at T0 + j s), a checkpoint every 100."""
    clock = Clock()
    async with Store(db) as store:
        log = Log(store, device_key(), clock=clock, clock_state=lambda: "synced")
        await log.open()
        assert log.size == first
        for a in range(first, last, 100):
            b = min(a + 100, last)
            clock.now_ns = T0 + b * STEP
            items = [
                Reading("ph-1", (Value("ph", value + (j % 7) / 100, "pH"),), T0 + j * STEP)
                for j in range(a, b)
            ]
            await log.append(items, checkpoint=True)


async def export(db: Path, out: Path, *, v1: bool = False, since_index: int | None = None) -> Path:
    async with Store(db) as store:
        log = Log(store, device_key(), clock=lambda: T0 + 10**6 * STEP)
        await log.open()
        since = None if since_index is None else T0 + since_index * STEP
        if v1:
            await export_bundle_v1(log, out, since_ns=since, seal=False)
        else:
            await export_bundle_v2(log, out, since_ns=since, seal=False)
    return out


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The box's bundles: ``first`` at 600 entries, ``later`` (v2, v1, a range) at 1,200, and
    ``forked``: a copy of the database at 600, restored and kept running to 1,500 with
    other readings."""
    where = tmp_path_factory.mktemp("lineage")
    db = where / "log.sqlite"
    trust = where / "trust.txt"
    trust.write_text(f"key {device_key().vkey}\n")
    out: dict[str, Path] = {"trust": trust}

    async def build() -> None:
        await grow(db, 0, 600)
        out["first"] = await export(db, where / "first.tar")
        shutil.copy(db, where / "restored.sqlite")
        await grow(db, 600, 1200)
        out["later"] = await export(db, where / "later.tar")
        out["later_v1"] = await export(db, where / "later.json", v1=True)
        out["range"] = await export(db, where / "range.tar", since_index=700)
        out["late_range"] = await export(db, where / "late.tar", since_index=1100)
        restored = where / "restored.sqlite"
        await grow(restored, 600, 1500, value=6.0)
        out["forked"] = await export(restored, where / "forked.tar")
        out["forked_v1"] = await export(restored, where / "forked.json", v1=True)

    asyncio.run(build())
    return out


def verify(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict[str, object]]:
    rc = ledger_verify([*(str(a) for a in args), "--json", "--jobs", "1"])
    doc = json.loads(capsys.readouterr().out)
    return rc, doc


@pytest.fixture(scope="module")
def kept(box: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint the regulator kept when it accepted the first bundle."""
    path = tmp_path_factory.mktemp("regulator") / "kept-checkpoint.txt"
    rc = ledger_verify(
        [str(box["first"]), "--trust", str(box["trust"]), "--save-checkpoint", str(path)]
    )
    assert rc == 3  # authentic under the trust file; only dated by the box itself
    assert path.read_text().split("\n")[1] == "600"
    return path


def test_save_checkpoint_refuses_an_untrusted_or_failed_source(
    box: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kept.txt"
    assert ledger_verify([str(box["first"]), "--save-checkpoint", str(path)]) == 4
    assert not path.exists()
    assert "not written" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["later", "later_v1", "range"])
def test_a_later_export_extends_the_kept_checkpoint(
    box: dict[str, Path], kept: Path, which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for link in (["--since-checkpoint", kept], ["--previous", box["first"]]):
        rc, doc = verify(capsys, box[which], "--trust", box["trust"], *link)
        assert rc == 3, doc["failures"]
        assert doc["failure_count"] == 0 and doc["forks"] == []
        linked: Sequence[str] = doc["linked"]  # type: ignore[assignment]
        assert len(linked) == 1 and "size 600" in linked[0], linked


def test_a_range_that_starts_after_the_kept_checkpoint_cannot_link(
    box: dict[str, Path], kept: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, doc = verify(capsys, box["late_range"], "--trust", box["trust"], "--since-checkpoint", kept)
    assert rc == 1
    (failure,) = doc["failures"]  # type: ignore[misc]
    assert failure["check"] == "consistency" and failure["checkpoint"] == 600
    assert "lies before the first leaf" in failure["reason"]


def test_the_earlier_bundle_cannot_prove_it_extends_a_later_checkpoint(
    box: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bundle older than the kept checkpoint (or a log rolled back) is not linked."""
    rc, doc = verify(capsys, box["first"], "--trust", box["trust"], "--previous", box["later"])
    assert rc == 1
    assert any("beyond this source's newest (600)" in f["reason"] for f in doc["failures"])  # type: ignore[union-attr]


@pytest.mark.parametrize("which", ["forked", "forked_v1"])
def test_a_restored_database_that_kept_running_is_a_fork_with_both_checkpoints(
    box: dict[str, Path], which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, doc = verify(capsys, box[which], "--trust", box["trust"], "--previous", box["later"])
    assert rc == 5 and doc["level"] == "forked" and doc["verified"] is False
    (fork,) = doc["forks"]  # type: ignore[misc]
    later_note = newest_checkpoint(box["later"])
    notes = {fork["a"]["note"], fork["b"]["note"]}
    assert later_note in notes  # the checkpoint the regulator holds from the genuine history
    assert all(n.startswith(f"riverseal/{device_key().device_id}\n") for n in notes)
    assert fork["a"]["size"] == 1200
    # v2 rebuilds its tree and finds the kept 1,200 is not its prefix; v1 carries its own
    # checkpoint 1,200, with another root.
    assert fork["reason"] == (
        "the kept checkpoint 1200 is not a prefix of the tree checkpoint 1500 signs"
        if which == "forked"
        else "two checkpoints of size 1200 with different roots"
    )
    # The human report shows both notes, whole.
    assert (
        ledger_verify(
            [str(box[which]), "--trust", str(box["trust"]), "--previous", str(box["later"])]
        )
        == 5
    )
    out = capsys.readouterr().out
    assert "FORK: " in out and out.count("    — riverseal/") >= 2
    assert out.splitlines()[-1].startswith("FORKED HISTORY: 1 fork(s) proven")


def test_the_forked_bundle_alone_is_consistent(
    box: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without what the regulator kept, a rewritten history is indistinguishable: that is
    why it keeps checkpoints (docs/tamper-matrix.md)."""
    rc, doc = verify(capsys, box["forked"], "--trust", box["trust"])
    assert rc == 3 and doc["failure_count"] == 0

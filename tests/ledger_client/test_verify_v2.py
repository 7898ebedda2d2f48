"""Bundle v2 and mirrors (docs/bundle-format.md §14–§16): every v1 tamper test, in tiles.

Each test builds a v2 bundle (a ustar container of a manifest, the checkpoint and
tiles, v2_bundles.v2_members) or a published mirror (v2_bundles.write_mirror)
purely, tampers with it, and checks that ``verify_source`` fails at the right step
of the §9 checklist, naming the entry index or checkpoint size as the Report's
Failure objects do, while the untampered bundle verifies.

v1 tests of test_verify.py that have no v2 form, and why:

- test_a_truncated_inclusion_proof_fails, test_an_altered_inclusion_proof_fails:
  v2 carries no per-entry inclusion proof; the tree is rebuilt from the entries.
  Their v2 form is a changed hash tile (left context, level-0 tiles, mirrors).
- test_an_entry_must_name_the_smallest_covering_checkpoint,
  test_a_missing_checkpoint_is_named: a v2 entry names no checkpoint; every
  checkpoint's root is recomputed from the one tree (step 6 names the checkpoint).
- test_a_removed_consistency_proof_fails, test_a_tampered_consistency_proof_fails,
  test_an_extra_or_duplicate_consistency_proof_fails: v2 carries no consistency
  proof objects; consistency is every checkpoint being a root of the one rebuilt
  tree (test_a_forked_log_fails_consistency is the v2 form).
- test_swapped_entries_are_named (entry objects moved together with their
  ``index``, "out of order"): a v2 entry's index is its position in its entry
  bundle, so moving an entry is test_swapped_entry_texts_are_named; "out of
  order" and "appears more than once" cannot arise.
- test_failure_text_names_entry_check_and_reason,
  test_anchor_digest_is_the_checkpoint_body_digest: facts of Failure and of the
  format, not tampering; nothing in them depends on the bundle version.
- test_verify_writes_nothing: verify_source reads its source by design (v1's
  verify_bundle is the pure one).
- test_verify_is_deterministic: here, jobs=1 and jobs=2 giving identical
  Reports (test_jobs_give_identical_reports) is the stronger form.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import AnchorReceipt, DeviceKey
from ledger_client.bundle_v2 import Manifest, Selection, decode_selected, encode_selected
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.cli import main as ledger_verify
from ledger_client.errors import MalformedError
from ledger_client.merkle import leaf_hash
from ledger_client.note import Signer, split_note
from ledger_client.records import format_time, make_entry
from ledger_client.tiles import decode_entry_bundle, encode_entry_bundle
from ledger_client.trust import TrustedKey, TrustList
from ledger_client.verify import LOCAL_STATUS, STEPS, UNCHECKED_STATUS, Report
from ledger_client.verify_stream import verify_source
from tests.ledger_client.lc_bundles import (
    NOW,
    ORIGIN,
    OTHER_SEED,
    SEED,
    SENSORS,
    T0_NS,
    BundleMaker,
)
from tests.ledger_client.v2_bundles import (
    manifest_for,
    notes_for,
    ustar_member,
    v2_members,
    write_container,
    write_mirror,
    write_raw_container,
)

Members = list[tuple[str, bytes]]

DEVICE = "rs-0a1b2c"
SIGNER = Signer.from_seed(ORIGIN, SEED)
OTHER = Signer.from_seed(ORIGIN, OTHER_SEED)
KEY = SIGNER.key_id.hex()
SIZES = (200, 450, 602)  # checkpoints of the standard log: three tiles, the last partial
MANIFEST = "riverseal-bundle.json"
CHECKPOINT = "checkpoint"
JOBS = pytest.mark.parametrize("jobs", [1, 2])
_names = itertools.count()


# --- building logs and bundles -------------------------------------------------------------


def log_records(maker: BundleMaker, rounds: int) -> list[dict[str, Any]]:
    """BundleMaker.standard_records with ``rounds`` rounds: a boot event, then readings
    of 3 sensors round-robin; in round 12 a do-1 src_seq is lost and a gap covers it."""
    recs = [maker.event("boot", {"software": "riverseal 0.1.0"})]
    for i in range(rounds):
        for sensor in SENSORS:
            if sensor == "do-1" and i == 12:
                recs.append(maker.gap("do-1", "timeout", (maker.src_seq["do-1"] + 1,) * 2))
                recs.append(maker.reading("do-1", skip_src=1))
            else:
                recs.append(maker.reading(sensor))
    return recs


def sign_all(
    maker: BundleMaker, recs: Sequence[dict[str, Any]], signer: Signer | None = None
) -> list[bytes]:
    return [maker.sign(r, i, signer) for i, r in enumerate(recs)]


@dataclasses.dataclass(frozen=True)
class Log:
    entries: tuple[bytes, ...]


@pytest.fixture(scope="module")
def log() -> Log:
    """602 entries (tiles 0 and 1 full, tile 2 of width 90), 3 sensors, one gap."""
    maker = BundleMaker()
    recs = log_records(maker, 200)
    assert len(recs) == 602
    return Log(tuple(sign_all(maker, recs)))


def local_anchor(note: str) -> AnchorReceipt:
    cp = Checkpoint.parse(split_note(note)[0])
    receipt = {"journal": "anchors.sqlite", "seq": 1, "time": format_time(T0_NS + 10**13)}
    return AnchorReceipt(cp.size, "local", cp.digest(), "final", receipt)


def build(
    entries: Sequence[bytes],
    sizes: Sequence[int] = SIZES,
    *,
    tree: Sequence[bytes] | None = None,
    signer: Signer = SIGNER,
    start: int = 0,
    sensors: Sequence[str] | None = None,
    anchor: bool = True,
) -> Members:
    """The members of a v2 bundle of ``entries`` as riverseal writes it; the checkpoints
    (of ``sizes``) sign the tree of ``tree`` (default: the entries themselves), and the
    newest one has a local anchor."""
    notes = notes_for(signer, ORIGIN, entries if tree is None else tree, sizes)
    selection = None
    if sensors is not None:
        selection = Selection(start, sizes[-1] - 1, sensors=tuple(sensors))
    manifest = manifest_for(signer, ORIGIN, DEVICE, notes, start=start, selection=selection)
    if anchor:
        manifest = dataclasses.replace(manifest, anchors=(local_anchor(notes[-1]),))
    return v2_members(entries, manifest, sizes[-1], sensors=sensors)


def forked_log() -> list[bytes]:
    """The standard log, but entry 500 holds another value (signed by the same key)."""
    fork_maker = BundleMaker()
    records = log_records(fork_maker, 200)
    records[500]["values"][0]["v"] = 99.0
    return sign_all(fork_maker, records)


def member(members: Members, name: str) -> bytes:
    found = [d for n, d in members if n == name]
    assert len(found) == 1, f"{name} in {[n for n, _ in members]}"
    return found[0]


def replaced(members: Members, name: str, data: bytes) -> Members:
    member(members, name)
    return [(n, data if n == name else d) for n, d in members]


def without(members: Members, *names: str) -> Members:
    for name in names:
        member(members, name)
    return [(n, d) for n, d in members if n not in names]


def manifest_of(members: Members) -> Manifest:
    return Manifest.loads(member(members, MANIFEST))


def with_manifest(members: Members, manifest: Manifest, *, checkpoint: bool = True) -> Members:
    """``members`` with this manifest, and (``checkpoint``) its newest note as the
    checkpoint member."""
    out = replaced(members, MANIFEST, manifest.dumps())
    if checkpoint:
        out = replaced(out, CHECKPOINT, manifest.checkpoints[-1].encode())
    return out


def edit_manifest(members: Members, **changes: Any) -> Members:
    return with_manifest(members, dataclasses.replace(manifest_of(members), **changes))


def flip(data: bytes, hash_index: int) -> bytes:
    """A hash tile with one bit of hash ``hash_index`` flipped."""
    out = bytearray(data)
    out[hash_index * 32] ^= 0x01
    return bytes(out)


def write(tmp_path: Path, members: Members) -> Path:
    return write_container(tmp_path / f"bundle-{next(_names)}.rsb", members)


def verify(
    source: Path,
    trusted: Any = None,
    *,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    return verify_source(source, trusted, now=NOW, jobs=jobs, progress=progress)


def check(tmp_path: Path, members: Members, trusted: Any = None, *, jobs: int = 1) -> Report:
    return verify(write(tmp_path, members), trusted, jobs=jobs)


def named(report: Report, step: str | None = None) -> set[int]:
    """The entry indexes the failures name (of one step, or of all)."""
    return {
        f.entry
        for f in report.failures
        if f.entry is not None and (step is None or f.check == step)
    }


def cps(report: Report, step: str | None = None) -> set[int]:
    """The checkpoint sizes the failures name (of one step, or of all)."""
    return {
        f.checkpoint
        for f in report.failures
        if f.checkpoint is not None and (step is None or f.check == step)
    }


def checks(report: Report) -> set[str]:
    return {f.check for f in report.failures}


def texts(report: Report) -> list[str]:
    return [str(f) for f in report.failures]


def comparable(report: Report) -> dict[str, Any]:
    doc = report.to_json()
    del doc["checked_at"]
    return doc


def entry_bundle(members: Members, name: str, width: int) -> list[bytes]:
    return decode_entry_bundle(member(members, name), width)


def value_changed(entry: bytes) -> bytes:
    """The entry with its reading's value changed (the signature no longer matches)."""
    rec = json.loads(entry)["rec"]
    old = rec["values"][0]["v"]
    new = round(old + 1, 3)
    before, after = f'"v":{old}}}'.encode(), f'"v":{new}}}'.encode()
    assert entry.count(before) == 1
    return entry.replace(before, after)


@pytest.fixture(scope="module")
def good(log: Log) -> Members:
    """The whole-log bundle of the standard log: checkpoints 200, 450, 602, a local anchor."""
    return build(log.entries)


@pytest.fixture(scope="module")
def ranged(log: Log) -> Members:
    """Entries 256–601 of the standard log: left context tile/1/000.p/2, checkpoints
    256 (at the start), 450 and 602."""
    return build(log.entries, (256, 450, 602), start=256)


@pytest.fixture(scope="module")
def by_sensor(log: Log) -> Members:
    """The standard log chosen by sensor ph-1: level-0 hash tiles and the ph-1 readings."""
    return build(log.entries, sensors=["ph-1"])


# --- the good bundles ----------------------------------------------------------------------


@JOBS
def test_the_whole_log_bundle_verifies(tmp_path: Path, good: Members, jobs: int) -> None:
    assert [n for n, _ in good] == [
        MANIFEST,
        CHECKPOINT,
        "tile/entries/000",
        "tile/entries/001",
        "tile/entries/002.p/90",
    ]
    report = check(tmp_path, good, jobs=jobs)
    assert report.failures == ()
    assert report.ok
    assert report.entries == 602
    assert [s.name for s in report.steps] == list(STEPS)
    assert all(s.ok and s.failed == 0 for s in report.steps)
    assert report.step("record").passed == 602
    assert report.step("signature").passed == 602
    assert report.step("inclusion").passed == 602
    assert report.step("checkpoint").passed == 3
    assert report.step("consistency").passed == 3
    assert report.step("anchors").passed == 1
    assert report.step("completeness").passed == 602
    assert report.checkpoints == SIZES
    assert {s: (c.readings, c.gaps) for s, c in report.sensors.items()} == {
        "ph-1": (200, 0),
        "do-1": (200, 1),
        "temp-1": (200, 0),
    }
    assert report.events == 1
    assert (report.first_index, report.last_index) == (0, 601)
    assert [a.status for a in report.anchors] == [LOCAL_STATUS]
    assert not report.keys_trusted
    assert any("NOT independently trusted" in n for n in report.notes)


def test_trusted_keys_are_reported_as_trusted(tmp_path: Path, good: Members) -> None:
    path = write(tmp_path, good)
    for trusted in (
        [SIGNER.verifier()],
        [TrustedKey(SIGNER.verifier())],
        TrustList((TrustedKey(SIGNER.verifier()),)),
    ):
        report = verify(path, trusted)
        assert report.ok, texts(report)
        assert report.keys_trusted
        assert report.keys == (KEY,)
        assert report.ignored_keys == ()


def test_the_manifest_survives_its_json_round_trip(good: Members) -> None:
    manifest = manifest_of(good)
    assert Manifest.loads(manifest.dumps()) == manifest
    assert manifest.dumps() == member(good, MANIFEST)


@JOBS
def test_a_range_from_the_middle_of_the_log_verifies(
    tmp_path: Path, ranged: Members, jobs: int
) -> None:
    assert [n for n, _ in ranged] == [
        MANIFEST,
        CHECKPOINT,
        "tile/1/000.p/2",
        "tile/entries/001",
        "tile/entries/002.p/90",
    ]
    report = check(tmp_path, ranged, jobs=jobs)
    assert report.ok, texts(report)
    assert (report.first_index, report.last_index) == (256, 601)
    assert report.entries == 346
    assert report.checkpoints == (256, 450, 602)
    assert report.step("consistency").passed == 3


@JOBS
def test_a_bundle_by_sensor_verifies(tmp_path: Path, by_sensor: Members, jobs: int) -> None:
    assert [n for n, _ in by_sensor][2:] == [
        "tile/0/000",
        "riverseal/selected/000",
        "tile/0/001",
        "riverseal/selected/001",
        "tile/0/002.p/90",
        "riverseal/selected/002",
    ]
    report = check(tmp_path, by_sensor, jobs=jobs)
    assert report.ok, texts(report)
    assert report.entries == 200
    assert set(report.sensors) == {"ph-1"}
    assert report.step("inclusion").passed == 200
    assert report.step("consistency").passed == 3


# --- v1's tampering, in tiles --------------------------------------------------------------


@JOBS
def test_a_changed_value_fails_at_that_entry(tmp_path: Path, log: Log, jobs: int) -> None:
    entries = list(log.entries)
    entries[17] = value_changed(entries[17])
    report = check(tmp_path, build(entries, tree=log.entries), jobs=jobs)
    assert not report.ok
    assert named(report) == {17}
    assert named(report, "signature") == {17}
    # The changed leaf changes the root of every checkpoint above it.
    assert cps(report, "consistency") == {200, 450, 602}
    assert checks(report) == {"signature", "consistency"}


def test_a_changed_value_in_a_range_fails_at_that_entry(tmp_path: Path, log: Log) -> None:
    entries = list(log.entries)
    entries[460] = value_changed(entries[460])
    report = check(tmp_path, build(entries, (256, 450, 602), tree=log.entries, start=256))
    assert named(report) == {460}
    assert cps(report, "consistency") == {602}  # 256 and 450 lie before it


@JOBS
def test_an_entry_removed_from_its_entry_bundle_is_named(
    tmp_path: Path, good: Members, jobs: int
) -> None:
    name = "tile/entries/000"
    entries = entry_bundle(good, name, 256)
    del entries[17]
    report = check(tmp_path, replaced(good, name, encode_entry_bundle(entries)), jobs=jobs)
    assert not report.ok
    assert "entry 0: inclusion: tile/entries/000: entry bundle holds 255 entries, not 256" in (
        texts(report)
    )
    # The tree cannot be rebuilt, so no checkpoint is recomputed.
    assert cps(report, "consistency") == {200, 450, 602}
    assert report.entries == 602 - 256


def test_an_entry_deleted_and_the_rest_moved_up_is_named(tmp_path: Path, log: Log) -> None:
    # Entry 17 deleted and the later ones moved up, the freed last slot filled with a
    # copy of the last entry so that every tile keeps its width: each moved record
    # says another index, and every checkpoint's root changes.
    entries = [*log.entries[:17], *log.entries[18:], log.entries[-1]]
    report = check(tmp_path, build(entries, tree=log.entries))
    assert not report.ok
    assert named(report, "record") == set(range(17, 601))
    assert "entry 17: record: the record says index 18" in texts(report)
    assert cps(report, "consistency") == {200, 450, 602}
    # The moved records failed step 2, so they take no part in step 8 (§9, 8 c): the
    # dropped reading's hole is among theirs, and is not a second failure.
    assert not any(f.check == "completeness" for f in report.failures)


def test_several_deleted_entries_are_one_failure(tmp_path: Path, good: Members) -> None:
    # Tile 1's entries cannot be read: they are missing from the report, as one hole.
    name = "tile/entries/001"
    entries = entry_bundle(good, name, 256)
    report = check(tmp_path, replaced(good, name, encode_entry_bundle(entries[:200])))
    missing = [str(f) for f in report.failures if f.reason.startswith("missing")]
    assert missing == [
        "entry 256: completeness: missing, and so are 257–511 (indexes jump from 255 to 512)"
    ]
    assert named(report, "inclusion") == {256}
    assert cps(report, "consistency") == {450, 602}
    assert report.step("consistency").passed == 1  # 200, before the damage


@JOBS
def test_an_entry_bundle_removed_from_the_middle_is_named(
    tmp_path: Path, good: Members, jobs: int
) -> None:
    report = check(tmp_path, without(good, "tile/entries/001"), jobs=jobs)
    assert not report.ok
    assert "entry 256: inclusion: entry bundle tile/entries/001 is missing" in texts(report)
    assert (
        "entry 256: completeness: missing, and so are 257–511 (indexes jump from 255 to 512)"
        in texts(report)
    )
    assert cps(report, "consistency") == {450, 602}


@JOBS
def test_swapped_entry_texts_are_named(tmp_path: Path, log: Log, jobs: int) -> None:
    entries = list(log.entries)
    entries[17], entries[18] = entries[18], entries[17]
    report = check(tmp_path, build(entries, tree=log.entries), jobs=jobs)
    assert not report.ok
    assert named(report, "record") == {17, 18}
    assert cps(report, "consistency") == {200, 450, 602}


def test_entries_swapped_across_tiles_are_named(tmp_path: Path, log: Log) -> None:
    entries = list(log.entries)
    entries[255], entries[256] = entries[256], entries[255]
    report = check(tmp_path, build(entries, tree=log.entries))
    assert named(report, "record") == {255, 256}
    assert cps(report, "consistency") == {450, 602}


def test_a_signature_from_another_key_fails(tmp_path: Path, log: Log) -> None:
    entries = list(log.entries)
    rec = json.loads(entries[30])["rec"]
    entries[30] = make_entry(rec, OTHER.signing_key)  # same record; "key" still names ours
    # Logged by the device so (the checkpoints sign it): only the signature fails.
    report = check(tmp_path, build(entries))
    assert texts(report) == [f"entry 30: signature: does not verify under key {KEY}"]
    # Slipped in afterwards: the checkpoints above it no longer match either.
    report = check(tmp_path, build(entries, tree=log.entries))
    assert named(report, "signature") == {30}
    assert cps(report, "consistency") == {200, 450, 602}


def test_a_record_signed_by_an_unknown_key_fails(tmp_path: Path, log: Log) -> None:
    entries = list(log.entries)
    rec = json.loads(entries[300])["rec"]
    rec["key"] = OTHER.key_id.hex()
    entries[300] = make_entry(rec, OTHER.signing_key)
    report = check(tmp_path, build(entries))
    assert named(report, "signature") == {300}
    assert checks(report) == {"signature"}
    assert any("which is unknown" in f.reason for f in report.failures)


@JOBS
@pytest.mark.parametrize(("position", "size"), [(0, 200), (1, 450), (2, 602)])
def test_a_changed_checkpoint_root_names_it(
    tmp_path: Path, good: Members, position: int, size: int, jobs: int
) -> None:
    manifest = manifest_of(good)
    notes = list(manifest.checkpoints)
    origin, size_line, root, rest = notes[position].split("\n", 3)
    assert size_line == str(size)
    flipped = bytearray(base64.b64decode(root))
    flipped[0] ^= 0x80
    notes[position] = "\n".join([origin, size_line, base64.b64encode(flipped).decode(), rest])
    # (with_manifest keeps the checkpoint member equal to the newest note)
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=tuple(notes)))
    report = check(tmp_path, members, jobs=jobs)
    assert not report.ok
    assert cps(report, "checkpoint") == {size}  # its signature no longer verifies
    assert cps(report, "consistency") == {size}  # and the tree has another root there
    # The anchor commits to the real checkpoint 602's body.
    assert cps(report, "anchors") == ({602} if size == 602 else set())
    assert named(report) == set()


def test_a_checkpoint_left_out_is_no_failure(tmp_path: Path, good: Members) -> None:
    manifest = manifest_of(good)
    notes = (manifest.checkpoints[0], manifest.checkpoints[2])
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=notes))
    report = check(tmp_path, members)
    assert report.ok, texts(report)
    assert report.checkpoints == (200, 602)


def test_entries_beyond_the_largest_checkpoint_fail(tmp_path: Path, log: Log) -> None:
    # The newest checkpoint (602) is dropped from the manifest and the checkpoint
    # member: the bundle then holds an entry bundle beyond the tree it claims.
    members = build(log.entries, (200, 512, 602), anchor=False)
    manifest = manifest_of(members)
    members = with_manifest(
        members, dataclasses.replace(manifest, checkpoints=manifest.checkpoints[:2])
    )
    report = check(tmp_path, members)
    assert texts(report) == [
        "inclusion: member 'tile/entries/002.p/90' has no place in this bundle"
    ]
    assert report.entries == 512


@JOBS
def test_a_forked_log_fails_consistency(tmp_path: Path, log: Log, jobs: int) -> None:
    # Two checkpoints signed by the device, but of different histories.
    fork = forked_log()
    assert fork[:500] == list(log.entries[:500]) and fork[500] != log.entries[500]
    members = build(log.entries, anchor=False)
    manifest = manifest_of(members)
    fork_602 = notes_for(SIGNER, ORIGIN, fork, [602])[0]
    notes = (*manifest.checkpoints[:2], fork_602)
    members = with_manifest(members, dataclasses.replace(manifest, checkpoints=notes))
    report = check(tmp_path, members, jobs=jobs)
    assert not report.ok
    assert [str(f) for f in report.failures] == [
        "checkpoint 602: consistency: the root of the tree's first 602 entries is not the "
        "root checkpoint 602 signs (an entry or tile before it was changed, removed or "
        "inserted)"
    ]
    # The fork's own tiles against the first history's checkpoints: 200 and 450 are
    # the same in both, 602 is not.
    fork_members = with_manifest(build(fork, anchor=False), manifest)
    report = check(tmp_path, fork_members, jobs=jobs)
    assert cps(report, "consistency") == {602}
    assert checks(report) == {"consistency"}


def test_checkpoints_must_ascend_and_carry_the_origin(tmp_path: Path, good: Members) -> None:
    manifest = manifest_of(good)
    notes = list(manifest.checkpoints)
    notes[0], notes[1] = notes[1], notes[0]
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=tuple(notes)))
    report = check(tmp_path, members)
    assert any("does not ascend" in f.reason for f in report.failures)
    assert checks(report) == {"checkpoint"}

    other_origin = sign_checkpoint(Checkpoint("riverseal.example/gw/other", 602, bytes(32)), SIGNER)
    forged = (*manifest.checkpoints[:2], other_origin)
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=forged))
    report = check(tmp_path, members)
    assert any(f.check == "checkpoint" and "origin" in f.reason for f in report.failures)
    assert 602 in cps(report, "checkpoint")


def test_the_newest_checkpoints_swapped_fail(tmp_path: Path, good: Members) -> None:
    manifest = manifest_of(good)
    notes = list(manifest.checkpoints)
    notes[1], notes[2] = notes[2], notes[1]
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=tuple(notes)))
    report = check(tmp_path, members)
    assert any("does not ascend" in f.reason for f in report.failures)


@pytest.mark.parametrize(("position", "size"), [(0, 200), (2, 602)])
def test_a_checkpoint_by_another_key_is_untrusted(
    tmp_path: Path, good: Members, position: int, size: int
) -> None:
    manifest = manifest_of(good)
    notes = list(manifest.checkpoints)
    body = notes[position].split("\n\n")[0] + "\n"
    notes[position] = sign_checkpoint(Checkpoint.parse(body), OTHER)
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=tuple(notes)))
    report = check(tmp_path, members)
    assert not report.ok
    assert cps(report, "checkpoint") == {size}
    assert checks(report) == {"checkpoint"}


def test_unreadable_checkpoint_notes_fail(tmp_path: Path, good: Members) -> None:
    manifest = manifest_of(good)
    notes = (manifest.checkpoints[0], "not a note", *manifest.checkpoints[1:])
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=notes))
    report = check(tmp_path, members)
    assert any(f.check == "checkpoint" and "checkpoints[1]" in f.reason for f in report.failures)
    # An unreadable newest note leaves no tree to check the tiles against.
    notes = (*manifest.checkpoints, "not a note")
    members = with_manifest(good, dataclasses.replace(manifest, checkpoints=notes))
    report = check(tmp_path, members)
    assert any(f.check == "checkpoint" and "checkpoints[3]" in f.reason for f in report.failures)
    assert "inclusion" in checks(report)


# --- keys and trust ------------------------------------------------------------------------


@JOBS
def test_a_wrong_trusted_key_fails_everything(tmp_path: Path, good: Members, jobs: int) -> None:
    report = check(tmp_path, good, [OTHER.verifier()], jobs=jobs)
    assert not report.ok
    assert report.keys_trusted
    assert named(report, "signature") == set(range(602))
    assert cps(report, "checkpoint") == set(SIZES)
    assert report.ignored_keys == (KEY,)
    assert any("not in the trust list" in f.reason for f in report.failures)


def test_an_empty_trust_list_trusts_nothing(tmp_path: Path, good: Members) -> None:
    report = check(tmp_path, good, [])
    assert not report.ok
    assert "keys" in checks(report)


def test_a_bundle_without_keys_fails(tmp_path: Path, good: Members) -> None:
    assert "keys" in checks(check(tmp_path, edit_manifest(good, keys=())))
    report = check(tmp_path, edit_manifest(good, keys=(DeviceKey("garbage"),)))
    assert "keys" in checks(report)


def test_bundle_key_validity_window(tmp_path: Path, good: Members) -> None:
    vkey = SIGNER.verifier().to_vkey()
    members = edit_manifest(good, keys=(DeviceKey(vkey, "2026-03-01T00:10:00.000000Z"),))
    report = check(tmp_path, members)
    # Records before 00:10 (ticks 1-29, 20 s apart) are outside the window.
    assert named(report, "signature") == set(range(29))
    assert all("validity window" in f.reason for f in report.failures)
    members = edit_manifest(good, keys=(DeviceKey(vkey, "not a time"),))
    assert "keys" in checks(check(tmp_path, members))


def test_trusted_key_validity_window(tmp_path: Path, good: Members) -> None:
    key = TrustedKey(SIGNER.verifier(), None, datetime(2026, 3, 1, 0, 0, 40, tzinfo=UTC))
    report = check(tmp_path, good, [key])
    assert named(report, "signature") == set(range(2, 602))


@JOBS
def test_key_rotation_with_windows(tmp_path: Path, jobs: int) -> None:
    maker = BundleMaker()
    recs = log_records(maker, 200)
    # From entry 300 on (in tile 1), records are signed by the new key.
    entries = [maker.sign(r, i, OTHER if i >= 300 else None) for i, r in enumerate(recs)]
    switch = datetime.fromisoformat(recs[300]["time"].replace("Z", "+00:00"))
    trust = [
        TrustedKey(SIGNER.verifier(), None, switch),
        TrustedKey(OTHER.verifier(), switch, None),
    ]
    path = write(tmp_path, build(entries))
    report = verify(path, trust, jobs=jobs)
    assert report.ok, texts(report)
    late = [
        TrustedKey(SIGNER.verifier()),
        TrustedKey(OTHER.verifier(), switch.replace(second=switch.second + 30)),
    ]
    assert named(verify(path, late, jobs=jobs), "signature") == {300, 301}
    # The manifest's own keys and windows do the same without a trust list.
    keys = (
        DeviceKey(SIGNER.verifier().to_vkey(), None, recs[299]["time"]),
        DeviceKey(OTHER.verifier().to_vkey(), recs[300]["time"], None),
    )
    report = check(tmp_path, edit_manifest(build(entries), keys=keys), jobs=jobs)
    assert report.ok, texts(report)


def test_colliding_key_ids_need_one_key_that_both_signs_and_covers(
    tmp_path: Path, good: Members
) -> None:
    real = SIGNER.verifier()
    twin = dataclasses.replace(OTHER.verifier(), key_id=real.key_id)  # a 4-byte collision
    early = datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)
    # The real key's window ends early; the twin covers everything but signed nothing.
    report = check(tmp_path, good, [TrustedKey(real, None, early), TrustedKey(twin)])
    assert named(report, "signature") == set(range(1, 602))
    assert all("validity window" in f.reason for f in report.failures if f.check == "signature")


# --- anchors -------------------------------------------------------------------------------


def test_non_local_anchors_are_present_but_unchecked(tmp_path: Path, good: Members) -> None:
    digest = manifest_of(good).anchors[0].digest
    receipts: list[tuple[str, dict[str, Any]]] = [
        ("evm:chain-1337", {"chain_id": 1337, "tx": "0x" + "ab" * 32, "block": 7}),
        ("rfc3161:tsa-1", {"token": base64.b64encode(b"der").decode()}),
    ]
    for backend, receipt in receipts:
        anchor = AnchorReceipt(602, backend, digest, "final", receipt)
        report = check(tmp_path, edit_manifest(good, anchors=(anchor,)))
        assert report.ok, texts(report)
        assert [a.status for a in report.anchors] == [UNCHECKED_STATUS]


def test_anchors_of_older_checkpoints_verify(tmp_path: Path, good: Members) -> None:
    anchors = tuple(local_anchor(n) for n in manifest_of(good).checkpoints)
    report = check(tmp_path, edit_manifest(good, anchors=anchors))
    assert report.ok, texts(report)
    assert [(a.checkpoint, a.status) for a in report.anchors] == [
        (200, LOCAL_STATUS),
        (450, LOCAL_STATUS),
        (602, LOCAL_STATUS),
    ]


def test_anchor_failures(tmp_path: Path, good: Members) -> None:
    g = manifest_of(good).anchors[0]
    r = dict(g.receipt)
    bad = [
        AnchorReceipt(603, "local", g.digest, "final", r),
        AnchorReceipt(602, "local", bytes(32), "final", r),
        AnchorReceipt(450, "local", g.digest, "final", r),  # another checkpoint's digest
        AnchorReceipt(602, "evm", g.digest[:31], "final", {}),
        AnchorReceipt(602, "evm", bytes(32), "final", {}),
        AnchorReceipt(602, "local", g.digest, "pending", r),
        AnchorReceipt(602, "local", g.digest, "final", {"journal": "j", "seq": -1, "time": "x"}),
        AnchorReceipt(602, "local", g.digest, "final", {"journal": "j", "seq": 1, "time": "x"}),
        AnchorReceipt(602, "local", g.digest, "final", {"seq": 1, "time": r["time"]}),
        AnchorReceipt(602, "mocal", g.digest, "final", r),  # unknown kind
    ]
    for anchor in bad:
        report = check(tmp_path, edit_manifest(good, anchors=(anchor,)))
        assert checks(report) == {"anchors"}, anchor
        assert report.anchors[0].status.startswith("failed")
        assert report.failures[0].checkpoint == anchor.checkpoint


# --- completeness --------------------------------------------------------------------------


def small_log(maker: BundleMaker) -> list[dict[str, Any]]:
    """302 records (tile 0 full, tile 1 of width 46) to append one more to."""
    return log_records(maker, 100)


def last_of(recs: Sequence[dict[str, Any]], sensor: str) -> int:
    return max(i for i, r in enumerate(recs) if r.get("sensor") == sensor)


def verify_records(
    tmp_path: Path, maker: BundleMaker, recs: Sequence[dict[str, Any]], *, jobs: int = 1
) -> Report:
    n = len(recs)
    return check(tmp_path, build(sign_all(maker, recs), (n // 2, n)), jobs=jobs)


@JOBS
def test_a_seq_hole_without_a_gap_record_names_the_sensor(
    tmp_path: Path, maker: BundleMaker, jobs: int
) -> None:
    recs = small_log(maker)
    before = last_of(recs, "ph-1")
    maker.seq["ph-1"] += 2  # two ph-1 readings never logged
    recs.append(maker.reading("ph-1"))
    report = verify_records(tmp_path, maker, recs, jobs=jobs)
    assert texts(report) == [
        "entry 302: completeness: sensor ph-1: seq 100–101 missing "
        f"(seq jumps from 99 at entry {before} to 102)"
    ]


def test_a_repeated_seq_fails(tmp_path: Path, maker: BundleMaker) -> None:
    recs = small_log(maker)
    maker.seq["temp-1"] -= 1
    recs.append(maker.reading("temp-1"))
    report = verify_records(tmp_path, maker, recs)
    assert named(report, "completeness") == {302}
    assert checks(report) == {"completeness"}
    assert "temp-1" in report.failures[0].reason


def test_a_src_seq_jump_covered_by_a_gap_passes(tmp_path: Path, maker: BundleMaker) -> None:
    recs = small_log(maker)
    src = maker.src_seq["temp-1"]
    recs.append(maker.gap("temp-1", "crc error", (src + 1, src + 3)))
    recs.append(maker.reading("temp-1", skip_src=3))
    report = verify_records(tmp_path, maker, recs)
    assert report.ok, texts(report)
    assert report.sensors["temp-1"].gaps == 1


def test_a_src_seq_jump_partly_covered_fails(tmp_path: Path, maker: BundleMaker) -> None:
    recs = small_log(maker)
    before = last_of(recs, "temp-1")
    src = maker.src_seq["temp-1"]
    recs.append(maker.gap("temp-1", "crc error", (src + 1, src + 1)))
    recs.append(maker.reading("temp-1", skip_src=3))
    report = verify_records(tmp_path, maker, recs)
    assert texts(report) == [
        f"entry 303: completeness: sensor temp-1: src_seq {src + 2}–{src + 3} skipped after "
        f"entry {before} and no gap record covers it"
    ]


def test_an_uncovered_src_seq_jump_fails(tmp_path: Path, maker: BundleMaker) -> None:
    recs = small_log(maker)
    recs.append(maker.reading("ph-1", skip_src=1))
    report = verify_records(tmp_path, maker, recs)
    assert named(report, "completeness") == {302}
    assert "ph-1" in report.failures[0].reason
    assert "src_seq" in report.failures[0].reason


def test_a_src_seq_restart_is_allowed(tmp_path: Path, maker: BundleMaker) -> None:
    recs = small_log(maker)
    maker.src_seq["ph-1"] = 0  # the probe rebooted and counts from 1 again
    recs.append(maker.reading("ph-1"))
    assert verify_records(tmp_path, maker, recs).ok


def test_a_seq_hole_in_a_bundle_by_sensor_is_named(tmp_path: Path, by_sensor: Members) -> None:
    # One ph-1 reading left out of riverseal/selected/001: the tiles still match (its
    # hash is in tile/0/001), but the sensor's seq has a hole.
    name = "riverseal/selected/001"
    chosen = decode_selected(member(by_sensor, name), 256, name)
    pos, _ = chosen.pop(10)
    report = check(tmp_path, replaced(by_sensor, name, encode_selected(chosen)))
    assert checks(report) == {"completeness"}
    next_pos = chosen[10][0]
    assert named(report) == {256 + next_pos}
    assert "sensor ph-1" in report.failures[0].reason
    assert pos < next_pos


def test_records_of_another_device_or_index_fail(tmp_path: Path, good: Members, log: Log) -> None:
    report = check(tmp_path, edit_manifest(good, device="rs-other"))
    assert named(report, "record") == set(range(602))
    # The device logged entry 3 with the record index 4.
    maker = BundleMaker()
    entries = list(log.entries)
    entries[3] = maker.sign(
        {k: v for k, v in json.loads(entries[3])["rec"].items() if k != "index"}, 4
    )
    report = check(tmp_path, build(entries))
    assert texts(report) == ["entry 3: record: the record says index 4"]


def test_an_empty_bundle_does_not_verify(tmp_path: Path, log: Log) -> None:
    # A bundle by a sensor that never reported: hash tiles, no entry.
    members = build(log.entries, sensors=["cond-1"])
    assert not any(n.startswith("riverseal/selected/") for n, _ in members)
    report = check(tmp_path, members)
    assert not report.ok
    assert checks(report) == {"completeness"}
    assert report.entries == 0
    assert report.step("consistency").passed == 3


def test_all_failures_are_collected(tmp_path: Path, log: Log) -> None:
    entries = list(log.entries)
    entries[40] = entries[40].replace(b'"synced"', b'"unknown"')
    members = build(entries, tree=log.entries)
    name = "tile/entries/001"
    members = replaced(members, name, member(members, name)[:-5])
    manifest = manifest_of(members)
    anchor = dataclasses.replace(manifest.anchors[0], digest=bytes(32))
    members = with_manifest(members, dataclasses.replace(manifest, anchors=(anchor,)))
    members.append(("tile/entries/003", b""))
    report = check(tmp_path, members)
    assert {40, 256} <= named(report)
    assert {"signature", "inclusion", "consistency", "anchors", "completeness"} <= checks(report)
    counts = {s.name: s.failed for s in report.steps}
    assert counts["anchors"] == 1
    assert sum(counts.values()) == len(report.failures) == report.failure_count


def test_notes_on_clock_and_time(tmp_path: Path, maker: BundleMaker) -> None:
    recs = small_log(maker)
    recs[5]["clock"] = "unsynced"
    path = write(tmp_path, build(sign_all(maker, recs), (302,)))
    report = verify_source(path, now=datetime(2026, 3, 1, 0, 10, tzinfo=UTC), jobs=1)
    assert report.ok
    assert any("not synced" in n for n in report.notes)
    assert any("dated after the verification time" in n for n in report.notes)


@pytest.mark.parametrize("sensor", SENSORS)
def test_each_sensor_is_counted(tmp_path: Path, log: Log, sensor: str) -> None:
    report = check(tmp_path, build(log.entries, sensors=[sensor]))
    assert report.ok, texts(report)
    assert set(report.sensors) == {sensor}
    assert report.sensors[sensor].readings == 200


# --- v2 only: tiles ------------------------------------------------------------------------


@JOBS
def test_a_left_context_hash_altered_breaks_every_root(
    tmp_path: Path, ranged: Members, jobs: int
) -> None:
    # Hash 0 of tile/1/000.p/2 is the subtree of leaves 0–255, left of the range.
    name = "tile/1/000.p/2"
    report = check(tmp_path, replaced(ranged, name, flip(member(ranged, name), 0)), jobs=jobs)
    assert not report.ok
    assert cps(report, "consistency") == {256, 450, 602}
    assert checks(report) == {"consistency"}


@JOBS
def test_a_left_context_hash_beyond_the_start_is_checked(
    tmp_path: Path, ranged: Members, jobs: int
) -> None:
    # Hash 1 of tile/1/000.p/2 covers leaves 256–511, which the bundle carries.
    name = "tile/1/000.p/2"
    report = check(tmp_path, replaced(ranged, name, flip(member(ranged, name), 1)), jobs=jobs)
    assert texts(report) == [
        "inclusion: tile tile/1/000.p/2: hash 1 is not the hash of the entries under it"
    ]


def test_a_left_context_tile_cut_or_missing_fails(tmp_path: Path, ranged: Members) -> None:
    name = "tile/1/000.p/2"
    report = check(tmp_path, without(ranged, name))
    assert "inclusion: tile tile/1/000.p/2 (left context) is missing" in texts(report)
    assert cps(report, "consistency") == {256, 450, 602}
    report = check(tmp_path, replaced(ranged, name, member(ranged, name)[:40]))
    assert "inclusion" in checks(report)
    assert cps(report, "consistency") == {256, 450, 602}
    report = check(tmp_path, replaced(ranged, name, member(ranged, name)[:32]))
    assert any("holds 1 hashes, not 2" in f.reason for f in report.failures)


@JOBS
def test_a_level0_hash_altered_in_a_bundle_by_sensor(
    tmp_path: Path, by_sensor: Members, jobs: int
) -> None:
    name = "tile/0/001"
    chosen = [
        pos for pos, _ in decode_selected(member(by_sensor, "riverseal/selected/001"), 256, "")
    ]
    # The hash of a selected entry: that entry is named, and the roots above it change.
    pos = chosen[4]
    report = check(
        tmp_path, replaced(by_sensor, name, flip(member(by_sensor, name), pos)), jobs=jobs
    )
    assert f"entry {256 + pos}: inclusion: its leaf hash is not hash {pos} of tile/0/001" in (
        texts(report)
    )
    assert named(report) == {256 + pos}
    assert cps(report, "consistency") == {450, 602}
    # The hash of an entry not carried: only the roots show it.
    other = next(p for p in range(256) if p not in chosen)
    report = check(tmp_path, replaced(by_sensor, name, flip(member(by_sensor, name), other)))
    assert named(report) == set()
    assert cps(report, "consistency") == {450, 602}
    assert checks(report) == {"consistency"}


def test_a_level0_tile_cut_in_a_bundle_by_sensor(tmp_path: Path, by_sensor: Members) -> None:
    name = "tile/0/002.p/90"
    report = check(tmp_path, replaced(by_sensor, name, member(by_sensor, name)[:-32]))
    assert "entry 512: inclusion: tile/0/002.p/90 holds 89 hashes, not 90" in texts(report)
    assert cps(report, "consistency") == {602}


def test_a_selected_entry_changed_fails_its_tile(tmp_path: Path, by_sensor: Members) -> None:
    name = "riverseal/selected/000"
    chosen = decode_selected(member(by_sensor, name), 256, name)
    pos, entry = chosen[7]
    chosen[7] = (pos, value_changed(entry))
    report = check(tmp_path, replaced(by_sensor, name, encode_selected(chosen)))
    assert not report.ok
    assert named(report) == {pos}
    assert f"entry {pos}: inclusion: its leaf hash is not hash {pos} of tile/0/000" in (
        texts(report)
    )
    assert "signature" in checks(report)
    assert report.step("inclusion").passed == 199


def test_a_selected_member_that_is_garbage_fails(tmp_path: Path, by_sensor: Members) -> None:
    name = "riverseal/selected/002"
    report = check(tmp_path, replaced(by_sensor, name, b"\xff\x00\x05abc"))
    assert "record" in checks(report)
    assert named(report) == {512}


@JOBS
def test_an_entry_bundle_cut_short_fails(tmp_path: Path, good: Members, jobs: int) -> None:
    name = "tile/entries/001"
    data = member(good, name)
    report = check(tmp_path, replaced(good, name, data[:-10]), jobs=jobs)
    assert not report.ok
    assert named(report, "inclusion") == {256}
    assert any(
        f.entry == 256 and f.reason.startswith("tile/entries/001: entry bundle: entry 255 claims")
        for f in report.failures
    )
    assert cps(report, "consistency") == {450, 602}
    report = check(
        tmp_path, replaced(good, name, data[: -len(entry_bundle(good, name, 256)[-1]) - 1])
    )
    assert any("a length prefix is cut" in f.reason for f in report.failures)


def test_an_entry_bundle_with_an_entry_fewer_or_more_fails(
    tmp_path: Path, good: Members, log: Log
) -> None:
    name = "tile/entries/002.p/90"
    entries = entry_bundle(good, name, 90)
    for changed, held in ((entries[:-1], 89), ([*entries, log.entries[0]], 91)):
        report = check(tmp_path, replaced(good, name, encode_entry_bundle(changed)))
        assert texts(report)[0] == (
            f"entry 512: inclusion: tile/entries/002.p/90: entry bundle holds {held} entries, "
            "not 90"
        )
        assert named(report) == {512}
        assert cps(report, "consistency") == {602}
        assert report.entries == 512


def test_the_last_partial_entry_bundle_missing_is_named(tmp_path: Path, good: Members) -> None:
    report = check(tmp_path, without(good, "tile/entries/002.p/90"))
    assert "entry 512: inclusion: entry bundle tile/entries/002.p/90 is missing" in texts(report)
    assert cps(report, "consistency") == {602}


def test_a_level0_tile_missing_from_a_bundle_by_sensor_is_named(
    tmp_path: Path, by_sensor: Members
) -> None:
    report = check(tmp_path, without(by_sensor, "tile/0/001", "riverseal/selected/001"))
    assert (
        "entry 256: inclusion: entry bundle tile/entries/001 or tile tile/0/001 is missing"
        in texts(report)
    )
    assert cps(report, "consistency") == {450, 602}


def test_an_entry_bundle_replaced_by_its_hash_tile_is_named(
    tmp_path: Path, good: Members, log: Log
) -> None:
    # Not a bundle by sensor: the level-0 tile does not stand in for the entries, but
    # the tree goes on over it, so the checkpoints are still recomputed.
    tile0 = dict(v2_members(log.entries, manifest_of(good), 602, sensors=["x"]))
    members = [*without(good, "tile/entries/001"), ("tile/0/001", tile0["tile/0/001"])]
    report = check(tmp_path, members)
    assert "entry 256: inclusion: entry bundle tile/entries/001 is missing" in texts(report)
    assert (
        "entry 256: completeness: missing, and so are 257–511 (indexes jump from 255 to 512)"
        in texts(report)
    )
    assert report.step("consistency").passed == 3
    assert report.entries == 602 - 256


@pytest.mark.parametrize(
    "name",
    [
        "extra.txt",
        "tile/entries/003",  # beyond the tree
        "tile/entries/002.p/89",  # the wrong width
        "tile/1/000.p/2",  # a whole-log bundle carries no hash tiles above level 0
        "riverseal/selected/000",  # not a bundle by sensor
        "tile/entries/000/",
    ],
)
def test_a_member_without_a_place_fails(tmp_path: Path, good: Members, name: str) -> None:
    report = check(tmp_path, [*good, (name, b"\0" * 32)])
    assert texts(report) == [f"inclusion: member {name!r} has no place in this bundle"]


def test_level0_tiles_beside_entry_bundles_are_allowed_and_checked(
    tmp_path: Path, good: Members, log: Log
) -> None:
    tile0 = v2_members(log.entries, manifest_of(good), 602, sensors=["ph-1"])
    extra = [(n, d) for n, d in tile0 if n.startswith("tile/0/")]
    assert [n for n, _ in extra] == ["tile/0/000", "tile/0/001", "tile/0/002.p/90"]
    report = check(tmp_path, [*good, *extra])
    assert report.ok, texts(report)
    extra[1] = (extra[1][0], flip(extra[1][1], 9))
    report = check(tmp_path, [*good, *extra])
    assert texts(report) == [
        "entry 265: inclusion: tile/0 hash 9 of tile 1 is not the leaf hash of its entry"
    ]


def test_the_checkpoint_member_must_be_the_newest_checkpoint(tmp_path: Path, good: Members) -> None:
    notes = manifest_of(good).checkpoints
    report = check(tmp_path, replaced(good, CHECKPOINT, notes[1].encode()))
    assert texts(report) == [
        "checkpoint 602: checkpoint: the checkpoint member is not the manifest's newest checkpoint"
    ]
    report = check(tmp_path, replaced(good, CHECKPOINT, notes[2].encode() + b"\n"))
    assert cps(report, "checkpoint") == {602}
    report = check(tmp_path, without(good, CHECKPOINT))
    assert texts(report) == ["checkpoint: the bundle has no checkpoint member"]


def test_a_start_off_a_tile_boundary_fails(tmp_path: Path, ranged: Members) -> None:
    report = check(tmp_path, edit_manifest(ranged, start=300))
    assert not report.ok
    assert any(f.check == "inclusion" and "start 300" in f.reason for f in report.failures)


def test_a_checkpoint_before_the_start_fails(tmp_path: Path, log: Log) -> None:
    members = build(log.entries, (200, 450, 602), start=256)
    report = check(tmp_path, members)
    assert cps(report, "consistency") == {200}
    assert any("lies outside the tree" in f.reason for f in report.failures)


# --- v2 only: unreadable bundles -----------------------------------------------------------


def assert_cli_unreadable(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert ledger_verify([str(path), "--jobs", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("ledger-verify: ")
    assert "Traceback" not in err


def _manifest_doc(good: Members) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(member(good, MANIFEST))
    return doc


def _with_version(version: Any) -> Callable[[Members], Members]:
    def edit(good: Members) -> Members:
        doc = _manifest_doc(good)
        doc["version"] = version
        return replaced(good, MANIFEST, json.dumps(doc).encode())

    return edit


def _duplicate_json_member(good: Members) -> Members:
    text = member(good, MANIFEST).decode()
    assert text.startswith("{\n")
    return replaced(good, MANIFEST, ('{\n "start": 256,' + text[1:]).encode())


def _nested(good: Members) -> Members:
    doc = _manifest_doc(good)
    text = json.dumps(doc)[:-1] + ', "deep": ' + "[" * 600 + "]" * 600 + "}"
    return replaced(good, MANIFEST, text.encode())


UNREADABLE: dict[str, Callable[[Members], Members]] = {
    "version true": _with_version(True),
    'version "2"': _with_version("2"),
    "version 2.0": _with_version(2.0),
    "version 1": _with_version(1),
    "duplicate manifest member": _duplicate_json_member,
    "nesting 600 deep": _nested,
    "no manifest": lambda good: without(good, MANIFEST),
    "manifest not JSON": lambda good: replaced(good, MANIFEST, b"{"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_an_unreadable_manifest_is_refused(
    tmp_path: Path, good: Members, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, UNREADABLE[case](good))
    with pytest.raises(MalformedError):
        verify(path)
    assert_cli_unreadable(path, capsys)


@pytest.mark.parametrize(
    "case",
    ["duplicate member name", "directory member", "no end blocks", "cut in a member"],
)
def test_an_unreadable_container_is_refused(
    tmp_path: Path, good: Members, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.rsb"
    if case == "duplicate member name":
        write_raw_container(path, [*good, ("tile/entries/000", member(good, "tile/entries/000"))])
    elif case == "directory member":
        raw = b"".join(
            [*(ustar_member(n, d) for n, d in good), ustar_member("tile/", b"", typeflag=b"5")]
        )
        path.write_bytes(raw + bytes(1024))
    elif case == "no end blocks":
        path.write_bytes(write(tmp_path, good).read_bytes()[:-1024])
    else:
        path.write_bytes(write(tmp_path, good).read_bytes()[:3000])
    with pytest.raises(MalformedError):
        verify(path)
    assert_cli_unreadable(path, capsys)


def test_a_raw_container_with_unique_names_is_read(tmp_path: Path, good: Members) -> None:
    # The hand-made header writer used above agrees with the reader on good input.
    report = verify(write_raw_container(tmp_path / "raw.rsb", good))
    assert report.ok, texts(report)


def test_the_cli_reports_a_tampered_bundle_with_exit_1(
    tmp_path: Path, log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = list(log.entries)
    entries[17] = value_changed(entries[17])
    path = write(tmp_path, build(entries, tree=log.entries))
    assert ledger_verify([str(path), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"entry 17 \(.*\): signature:", out), out
    assert "FAILED" in out
    assert ledger_verify([str(write(tmp_path, build(log.entries))), "--jobs", "1"]) == 4


# --- mirrors -------------------------------------------------------------------------------


def mirror_of(
    root: Path, entries: Sequence[bytes], sizes: Sequence[int] = SIZES, *, anchor: bool = True
) -> Path:
    notes = notes_for(SIGNER, ORIGIN, entries, sizes)
    manifest = manifest_for(SIGNER, ORIGIN, DEVICE, notes)
    if anchor:
        manifest = dataclasses.replace(manifest, anchors=(local_anchor(notes[-1]),))
    return write_mirror(root, entries, manifest, sizes[-1])


def flip_file(path: Path, hash_index: int) -> None:
    path.write_bytes(flip(path.read_bytes(), hash_index))


@pytest.fixture
def mirror(tmp_path: Path, log: Log) -> Path:
    return mirror_of(tmp_path / "mirror", log.entries)


@JOBS
def test_a_mirror_verifies(mirror: Path, jobs: int) -> None:
    report = verify(mirror, jobs=jobs)
    assert report.ok, texts(report)
    assert report.entries == 602
    assert report.checkpoints == SIZES
    assert [a.status for a in report.anchors] == [LOCAL_STATUS]
    assert report.step("consistency").passed == 3


@JOBS
def test_a_mirror_level0_tile_altered_names_the_entry(mirror: Path, jobs: int) -> None:
    flip_file(mirror / "tile/0/001", 7)
    report = verify(mirror, jobs=jobs)
    assert texts(report) == [
        "entry 263: inclusion: tile/0 hash 7 of tile 1 is not the leaf hash of its entry"
    ]


def test_a_mirror_partial_level0_tile_altered_fails(mirror: Path) -> None:
    flip_file(mirror / "tile/0/002.p/90", 89)
    report = verify(mirror)
    assert named(report, "inclusion") == {601}
    assert "inclusion: tile tile/0/002.p/90: hash 89 is not the hash of the entries under it" in (
        texts(report)
    )


@JOBS
def test_a_mirror_level1_tile_altered_fails(mirror: Path, jobs: int) -> None:
    flip_file(mirror / "tile/1/000.p/2", 1)
    report = verify(mirror, jobs=jobs)
    assert texts(report) == [
        "inclusion: tile tile/1/000.p/2: hash 1 is not the hash of the entries under it"
    ]


def test_a_mirror_tile_missing_fails(mirror: Path) -> None:
    (mirror / "tile/1/000.p/2").unlink()
    assert texts(verify(mirror)) == ["inclusion: tile tile/1/000.p/2 is missing from the mirror"]


def test_a_mirror_level0_tile_missing_fails(mirror: Path) -> None:
    (mirror / "tile/0/001").unlink()
    report = verify(mirror)
    assert "entry 256: inclusion: tile tile/0/001 is missing" in texts(report)
    assert not report.ok


def test_a_mirror_missing_a_whole_tile_is_named(mirror: Path) -> None:
    (mirror / "tile/entries/001").unlink()
    (mirror / "tile/0/001").unlink()
    report = verify(mirror)
    assert not report.ok
    assert any(f.entry == 256 and "missing" in f.reason for f in report.failures)
    assert cps(report, "consistency") == {450, 602}


@pytest.mark.parametrize(
    ("gone", "first"),
    [("tile/entries/000", 0), ("tile/entries/001", 256), ("tile/entries/002.p/90", 512)],
)
def test_a_mirror_entry_bundle_missing_fails(mirror: Path, gone: str, first: int) -> None:
    # Its level-0 tile is there, so the tree goes on; the entries are not checked.
    (mirror / gone).unlink()
    report = verify(mirror)
    assert not report.ok
    assert texts(report)[0] == f"entry {first}: inclusion: entry bundle {gone} is missing"
    assert report.entries == 602 - (90 if first == 512 else 256)
    assert report.step("consistency").passed == 3


def test_a_mirror_entry_changed_fails(mirror: Path, log: Log) -> None:
    path = mirror / "tile/entries/001"
    entries = decode_entry_bundle(path.read_bytes(), 256)
    entries[3] = value_changed(entries[3])
    path.write_bytes(encode_entry_bundle(entries))
    report = verify(mirror)
    assert named(report) == {259}
    assert {"signature", "inclusion"} <= checks(report)  # its hash in tile/0/001 differs


@pytest.mark.parametrize("agree", [True, False])
def test_an_older_partial_tile_beside_its_full_successor(
    mirror: Path, log: Log, agree: bool
) -> None:
    older = b"".join(leaf_hash(e) for e in log.entries[:100])
    if not agree:
        older = flip(older, 42)
    (mirror / "tile/0/000.p").mkdir()
    (mirror / "tile/0/000.p/100").write_bytes(older)
    report = verify(mirror)
    if agree:
        assert report.ok, texts(report)
    else:
        assert texts(report) == [
            "inclusion: an older partial tile disagrees with its full successor: "
            "tile tile/0/000.p/100: hash 42 is not the hash of the entries under it"
        ]


@pytest.mark.parametrize("agree", [True, False])
def test_an_older_partial_entry_bundle_beside_its_full_successor(
    mirror: Path, log: Log, agree: bool
) -> None:
    entries = list(log.entries[:100])
    if not agree:
        entries[50] = value_changed(entries[50])
    (mirror / "tile/entries/000.p").mkdir()
    (mirror / "tile/entries/000.p/100").write_bytes(encode_entry_bundle(entries))
    report = verify(mirror)
    if agree:
        assert report.ok, texts(report)
    else:
        assert texts(report) == [
            "entry 0: inclusion: an older partial entry bundle tile/entries/000.p/100 "
            "disagrees with its full successor"
        ]


@pytest.mark.parametrize("kind", ["tile/0", "tile/entries"])
def test_an_older_partial_beside_a_newer_partial_is_checked(
    mirror: Path, log: Log, kind: str
) -> None:
    if kind == "tile/0":
        older = flip(b"".join(leaf_hash(e) for e in log.entries[512:552]), 3)
    else:
        entries = list(log.entries[512:552])
        entries[3] = value_changed(entries[3])
        older = encode_entry_bundle(entries)
    (mirror / f"{kind}/002.p/40").write_bytes(older)
    report = verify(mirror)
    assert not report.ok
    assert any("older partial" in f.reason for f in report.failures)


def publish(root: Path, entries: Sequence[bytes], sizes: Sequence[int]) -> Path:
    """Publish as the gateway does, once per size: tiles stay, manifest and checkpoint
    are replaced (each manifest lists the checkpoints up to that size)."""
    for n in sizes:
        mirror_of(root, entries, [s for s in sizes if s <= n])
    return root


def test_a_mirror_rolled_back_to_an_older_publication_verifies_to_its_size(
    tmp_path: Path, log: Log
) -> None:
    # Published at 200, 450 and 602, then the manifest and checkpoint of 450 put back
    # (a stale copy): not a failure by itself, but the mirror then proves 450 entries.
    root = publish(tmp_path / "mirror", log.entries, SIZES)
    stale = manifest_for(SIGNER, ORIGIN, DEVICE, notes_for(SIGNER, ORIGIN, log.entries, SIZES[:2]))
    stale = dataclasses.replace(stale, anchors=(local_anchor(stale.checkpoints[-1]),))
    (root / MANIFEST).write_bytes(stale.dumps())
    (root / CHECKPOINT).write_text(stale.checkpoints[-1])
    report = verify(root)
    assert report.ok, texts(report)
    assert report.checkpoints == (200, 450)
    assert report.entries == 450
    assert (report.first_index, report.last_index) == (0, 449)
    assert [a.checkpoint for a in report.anchors] == [450]


def test_a_mirror_checkpoint_file_older_than_its_manifest_fails(mirror: Path, log: Log) -> None:
    # Only the checkpoint file put back (the manifest still publishes 602). NOTE: docs
    # §16.1 still says "the manifest's checkpoints larger than it are ignored" (so
    # this would verify up to 450); since 33a4e8e the verifier refuses it and checks
    # the whole tree up to the manifest's newest checkpoint.
    (mirror / CHECKPOINT).write_text(notes_for(SIGNER, ORIGIN, log.entries, [450])[0])
    report = verify(mirror)
    assert not report.ok
    assert cps(report) == {450}
    assert checks(report) == {"checkpoint"}
    assert "older than checkpoint 602" in report.failures[0].reason
    assert report.entries == 602


def test_a_manifest_lagging_its_checkpoint_file_verifies_to_the_file(
    mirror: Path, log: Log
) -> None:
    # The checkpoint file is newer than every checkpoint in the manifest (512 against
    # 200 and 450): its tiles are all there, so the mirror verifies up to 512.
    stale = manifest_for(SIGNER, ORIGIN, DEVICE, notes_for(SIGNER, ORIGIN, log.entries, SIZES[:2]))
    (mirror / MANIFEST).write_bytes(stale.dumps())
    (mirror / CHECKPOINT).write_text(notes_for(SIGNER, ORIGIN, log.entries, [512])[0])
    report = verify(mirror)
    assert report.ok, texts(report)
    assert report.checkpoints == (200, 450, 512)
    assert report.entries == 512


def test_a_mirror_rolled_back_without_its_older_tiles_fails(mirror: Path, log: Log) -> None:
    # Published only at 602, then manifest and checkpoint of 450 put back: the partial
    # tiles of size 450 were never written.
    stale = manifest_for(SIGNER, ORIGIN, DEVICE, notes_for(SIGNER, ORIGIN, log.entries, SIZES[:2]))
    (mirror / MANIFEST).write_bytes(stale.dumps())
    (mirror / CHECKPOINT).write_text(stale.checkpoints[-1])
    report = verify(mirror)
    assert not report.ok
    found = texts(report)
    assert "entry 256: inclusion: tile tile/0/001.p/194 is missing" in found
    assert any("entry bundle tile/entries/001.p/194" in t for t in found)
    assert any("checkpoint 450 could not be recomputed" in t for t in found)


@JOBS
def test_a_mirror_with_a_forked_checkpoint_fails(mirror: Path, log: Log, jobs: int) -> None:
    fork_602 = notes_for(SIGNER, ORIGIN, forked_log(), [602])[0]
    (mirror / CHECKPOINT).write_text(fork_602)
    report = verify(mirror, jobs=jobs)
    assert not report.ok
    assert cps(report) == {602}
    assert checks(report) == {"consistency"}
    assert any("forked history" in f.reason for f in report.failures)
    # The same when the manifest does not list 602: the tiles are not of its tree.
    stale = manifest_for(SIGNER, ORIGIN, DEVICE, notes_for(SIGNER, ORIGIN, log.entries, SIZES[:2]))
    (mirror / MANIFEST).write_bytes(stale.dumps())
    report = verify(mirror, jobs=jobs)
    assert cps(report) == {602}
    assert checks(report) == {"consistency"}
    assert any("is not the root checkpoint 602 signs" in f.reason for f in report.failures)


def test_a_mirror_forked_against_its_manifest_fails(tmp_path: Path, log: Log) -> None:
    # Tiles and checkpoint of a fork, beside a manifest that holds the first history's
    # checkpoint of the same size: two roots for 602, both signed by the device.
    root = mirror_of(tmp_path / "mirror", forked_log(), anchor=False)
    real = manifest_for(SIGNER, ORIGIN, DEVICE, notes_for(SIGNER, ORIGIN, log.entries, SIZES))
    (root / MANIFEST).write_bytes(real.dumps())
    assert (root / CHECKPOINT).read_text() != real.checkpoints[-1]
    report = verify(root)
    assert not report.ok
    assert any("forked history" in f.reason for f in report.failures)
    assert cps(report, "consistency") == {602}


def test_a_mirror_checkpoint_missing_or_unreadable_is_refused(
    mirror: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mirror / CHECKPOINT).write_text("not a checkpoint\n")
    with pytest.raises(MalformedError):
        verify(mirror)
    assert_cli_unreadable(mirror, capsys)
    (mirror / CHECKPOINT).unlink()
    with pytest.raises(MalformedError):
        verify(mirror)
    assert_cli_unreadable(mirror, capsys)


def test_a_mirror_manifest_with_a_start_fails(mirror: Path) -> None:
    manifest = Manifest.loads((mirror / MANIFEST).read_bytes())
    (mirror / MANIFEST).write_bytes(dataclasses.replace(manifest, start=256).dumps())
    report = verify(mirror)
    assert texts(report) == ["inclusion: a mirror's manifest must have start 0 and no selection"]


# --- a mirror of more than 65,536 entries: full level-1 tiles --------------------------------

BIG = 65_536 + 300  # tile/1/000 full, tile/1/001.p/1, tile/2/000.p/1, tile/0/256.p/44


@pytest.fixture(scope="module")
def big_log() -> list[bytes]:
    maker = BundleMaker()
    return [maker.sign(maker.reading(SENSORS[i % 3]), i) for i in range(BIG)]


@pytest.fixture(scope="module")
def big_mirror(tmp_path_factory: pytest.TempPathFactory, big_log: list[bytes]) -> Path:
    return mirror_of(tmp_path_factory.mktemp("big") / "mirror", big_log, (65_536, BIG))


@pytest.fixture
def big_copy(tmp_path: Path, big_mirror: Path) -> Path:
    return Path(shutil.copytree(big_mirror, tmp_path / "mirror"))


def test_a_big_mirror_verifies_with_agreeing_older_partials(
    big_copy: Path, big_log: list[bytes]
) -> None:
    full1 = (big_copy / "tile/1/000").read_bytes()
    (big_copy / "tile/1/000.p").mkdir()
    (big_copy / "tile/1/000.p/100").write_bytes(full1[: 100 * 32])
    (big_copy / "tile/0/255.p").mkdir()
    (big_copy / "tile/0/255.p/7").write_bytes(
        b"".join(leaf_hash(e) for e in big_log[255 * 256 : 255 * 256 + 7])
    )
    report = verify(big_copy, jobs=2)
    assert report.ok, texts(report)
    assert report.entries == BIG
    assert report.checkpoints == (65_536, BIG)


def test_a_big_mirror_level1_and_level2_tiles_altered_or_missing_fail(big_copy: Path) -> None:
    flip_file(big_copy / "tile/1/000", 200)
    flip_file(big_copy / "tile/2/000.p/1", 0)
    (big_copy / "tile/1/001.p/1").unlink()
    report = verify(big_copy, jobs=2)
    assert sorted(texts(report)) == [
        "inclusion: tile tile/1/000: hash 200 is not the hash of the entries under it",
        "inclusion: tile tile/1/001.p/1 is missing from the mirror",
        "inclusion: tile tile/2/000.p/1: hash 0 is not the hash of the entries under it",
    ]


def test_a_big_mirror_older_level1_partial_that_disagrees_fails(big_copy: Path) -> None:
    full1 = (big_copy / "tile/1/000").read_bytes()
    (big_copy / "tile/1/000.p").mkdir()
    (big_copy / "tile/1/000.p/100").write_bytes(flip(full1[: 100 * 32], 99))
    report = verify(big_copy, jobs=2)
    assert texts(report) == [
        "inclusion: an older partial tile disagrees with its full successor: "
        "tile tile/1/000.p/100: hash 99 is not the hash of the entries under it"
    ]


@pytest.fixture(scope="module")
def big_ranged(big_log: list[bytes]) -> Members:
    """The last 556 entries of the big log: its left context is the full tile/1/000."""
    return build(big_log, (65_280, 65_536, BIG), start=65_280)


def test_a_full_left_context_tile_verifies_and_is_checked(
    tmp_path: Path, big_ranged: Members
) -> None:
    name = "tile/1/000"
    assert [n for n, _ in big_ranged][2] == name
    report = check(tmp_path, big_ranged)
    assert report.ok, texts(report)
    assert report.entries == BIG - 65_280
    # Hash 255 (leaves 65,280–65,535) is the bundle's to prove; hash 3 lies left of it.
    report = check(tmp_path, replaced(big_ranged, name, flip(member(big_ranged, name), 255)))
    assert texts(report) == [
        "inclusion: tile tile/1/000: hash 255 is not the hash of the entries under it"
    ]
    report = check(tmp_path, replaced(big_ranged, name, flip(member(big_ranged, name), 3)))
    assert cps(report, "consistency") == {65_280, 65_536, BIG}
    assert checks(report) == {"consistency"}


# --- jobs and progress ---------------------------------------------------------------------


def _tampered(log: Log) -> Members:
    entries = list(log.entries)
    entries[17] = value_changed(entries[17])
    entries[300] = entries[300].replace(b'"synced"', b'"unknown"')
    members = build(entries, tree=log.entries)
    name = "tile/entries/002.p/90"
    return replaced(members, name, member(members, name)[:-3])


def test_jobs_give_identical_reports(tmp_path: Path, log: Log, good: Members) -> None:
    for members in (good, _tampered(log)):
        path = write(tmp_path, members)
        one, two = verify(path, jobs=1), verify(path, jobs=2)
        assert comparable(one) == comparable(two)
    root = mirror_of(tmp_path / "mirror", log.entries)
    assert comparable(verify(root, jobs=1)) == comparable(verify(root, jobs=2))
    flip_file(root / "tile/0/001", 7)
    flip_file(root / "tile/1/000.p/2", 0)
    one, two = verify(root, jobs=1), verify(root, jobs=2)
    assert not one.ok
    assert comparable(one) == comparable(two)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("kind", ["whole", "ranged", "by sensor", "mirror"])
def test_progress_counts_up_to_the_total(
    tmp_path: Path,
    log: Log,
    good: Members,
    ranged: Members,
    by_sensor: Members,
    kind: str,
    jobs: int,
) -> None:
    calls: list[tuple[int, int]] = []
    if kind == "mirror":
        path = mirror_of(tmp_path / "mirror", log.entries)
    else:
        path = write(tmp_path, {"whole": good, "ranged": ranged, "by sensor": by_sensor}[kind])
    report = verify(path, jobs=jobs, progress=lambda done, total: calls.append((done, total)))
    assert report.ok
    total = 602 - 256 if kind == "ranged" else 602
    assert calls, "progress was never called"
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[-1] == total

"""The tamper matrix (docs/tamper-matrix.md): each attack on a bundle, and what
``ledger-verify`` says about it.

Every test takes the same genuine evidence — box rs-0a1b2c's 62 entries (a boot
event, then ph-1, do-1 and temp-1 readings round-robin, with one do-1 reading lost
on the wire and a gap record for it), checkpoints 20, 45 and 62, a local anchor on
62 — as a v1 bundle and as a v2 container, tampers with it as an attacker would,
and runs the real CLI (``ledger_client.cli.main``) with the regulator's trust file.
It asserts the exit status, the verdict and that the failure names the entry or
checkpoint and, where the record can be read, its sensor and time — in the
``Failure`` objects (from ``--json``) and in the printed report.

The genuine bundles exit 3 (AUTHENTIC, NOT INDEPENDENTLY DATED: trusted keys, only
a local anchor); every attack below must do worse, except where the matrix says
honestly that the result is a smaller true claim.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import MAX_NESTING, AnchorReceipt, Bundle
from ledger_client.bundle_v1_stream import MAX_VALUE_CHARS
from ledger_client.canonical import canonical_bytes
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.cli import main
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer, split_note
from ledger_client.records import format_time, make_entry
from ledger_client.tiles import ENTRIES, decode_entry_bundle, encode_entry_bundle, tile_path
from ledger_client.verify import Failure
from tests.ledger_client.lc_bundles import ORIGIN, OTHER_SEED, SEED, T0_NS, BundleMaker
from tests.ledger_client.v2_bundles import manifest_for, notes_for, v2_members, write_container

SIGNER = Signer.from_seed(ORIGIN, SEED)
KEY = SIGNER.key_id.hex()
ATTACKER = Signer.from_seed(ORIGIN, OTHER_SEED)
"""A key the attacker made, under the box's own name: only its key ID differs."""
ATTACKER_KEY = ATTACKER.key_id.hex()
OTHER_ORIGIN = "riverseal.example/gw/ffffff"
OTHER_BOX = Signer.from_seed(OTHER_ORIGIN, bytes(range(2, 34)))
"""Another box of the same operator, with its own key and log."""
SIZES = (20, 45, 62)
DOC = Path(__file__).resolve().parents[2] / "docs" / "tamper-matrix.md"
MANIFEST = "riverseal-bundle.json"
ENTRY_BUNDLE = tile_path(ENTRIES, 0, 62)  # tile/entries/000.p/62: the whole log
Doc = dict[str, Any]
Members = list[tuple[str, bytes]]


# --- the genuine evidence, built once ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class World:
    root: Path
    trust: Path
    maker: BundleMaker
    records: tuple[dict[str, Any], ...]
    """The 62 records as the maker wrote them (no index, key or device)."""
    bundle: Bundle
    raws: tuple[bytes, ...]
    """The 62 signed entries."""
    v1: Path
    v2: Path

    def rec(self, index: int) -> dict[str, Any]:
        """The full signed record of entry ``index``."""
        rec: dict[str, Any] = json.loads(self.raws[index])["rec"]
        return rec

    def sig(self, index: int) -> bytes:
        return base64.b64decode(json.loads(self.raws[index])["sig"])

    def note(self, size: int) -> str:
        return self.bundle.checkpoints[SIZES.index(size)]

    def doc(self) -> Doc:
        """A fresh copy of the v1 bundle's JSON document, to tamper with."""
        return copy.deepcopy(self.bundle.to_json())

    def write(self, what: Doc | Bundle | bytes | str, suffix: str = ".json") -> Path:
        path = self.root / f"tampered-{next(_counter)}{suffix}"
        if isinstance(what, Bundle):
            path.write_text(what.dumps(), encoding="utf-8")
        elif isinstance(what, bytes):
            path.write_bytes(what)
        elif isinstance(what, str):
            path.write_text(what, encoding="utf-8")
        else:
            path.write_text(json.dumps(what, indent=1, ensure_ascii=False), encoding="utf-8")
        return path

    def members(
        self,
        entries: Sequence[bytes] | None = None,
        sizes: Sequence[int] = SIZES,
        *,
        tree: Sequence[bytes] | None = None,
        notes: Sequence[str] | None = None,
    ) -> Members:
        """The members of a v2 bundle of ``entries`` (default: the genuine ones) whose
        checkpoints of ``sizes`` the box signed over ``tree`` (default: the entries)."""
        entries = self.raws if entries is None else entries
        if notes is None:
            notes = notes_for(SIGNER, ORIGIN, self.raws if tree is None else tree, sizes)
        manifest = manifest_for(SIGNER, ORIGIN, self.bundle.device, notes)
        manifest = dataclasses.replace(manifest, anchors=(local_anchor(notes[-1]),))
        return v2_members(entries, manifest, sizes[-1])

    def write_v2(self, members: Members) -> Path:
        return write_container(self.root / f"tampered-{next(_counter)}.rsb", members)


_counter = iter(range(10**6))


def local_anchor(note: str, seq: int = 1) -> AnchorReceipt:
    cp = Checkpoint.parse(split_note(note)[0])
    receipt = {"journal": "anchors.sqlite", "seq": seq, "time": format_time(T0_NS + 10**12 * seq)}
    return AnchorReceipt(cp.size, "local", cp.digest(), "final", receipt)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("tamper")
    maker = BundleMaker()
    records = maker.standard_records()
    bundle = maker.build(records, SIZES)
    raws = tuple(e.entry for e in bundle.entries)
    trust = root / "trust.txt"
    trust.write_text(f"# box rs-0a1b2c, key received on site\nkey {SIGNER.verifier().to_vkey()}\n")
    v1 = root / "genuine.json"
    v1.write_text(bundle.dumps(), encoding="utf-8")
    w = World(root, trust, maker, tuple(records), bundle, raws, v1, root / "genuine.rsb")
    write_container(w.v2, w.members())
    return w


# --- running ledger-verify -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Verdict:
    rc: int
    out: str
    """The human report (stdout)."""
    err: str
    json: dict[str, Any]
    failures: tuple[Failure, ...]

    def at(
        self, *, entry: int | None = None, checkpoint: int | None = None, check: str | None = None
    ) -> list[Failure]:
        return [
            f
            for f in self.failures
            if (entry is None or f.entry == entry)
            and (checkpoint is None or f.checkpoint == checkpoint)
            and (check is None or f.check == check)
        ]

    def one(
        self, *, check: str, entry: int | None = None, checkpoint: int | None = None
    ) -> Failure:
        found = self.at(entry=entry, checkpoint=checkpoint, check=check)
        assert found, f"no {check} failure at entry {entry} / checkpoint {checkpoint}:\n{self.out}"
        return found[0]

    def printed(self, failure: Failure) -> None:
        """The failure is printed for a person, with what the entry says."""
        assert f"  {failure.described()}\n" in self.out, self.out


def ledger_verify(
    capsys: pytest.CaptureFixture[str],
    world: World,
    source: Path,
    *args: str | Path,
    trust: bool = True,
) -> Verdict:
    """``ledger-verify SOURCE --trust <regulator's file> --jobs 1 ARGS``, human and --json
    (``trust=False``: without the trust file, as someone holding no key would run it)."""
    argv = [str(source), "--jobs", "1", *map(str, args)]
    if trust:
        argv += ["--trust", str(world.trust)]
    rc = main(argv)
    out, err = capsys.readouterr()
    rc_json = main([*argv, "--json"])
    jout, jerr = capsys.readouterr()
    assert rc_json == rc
    assert "Traceback" not in err + jerr
    doc = json.loads(jout)
    failures = tuple(Failure(**f) for f in doc["failures"])
    return Verdict(rc, out, err, doc, failures)


def assert_unreadable(v: Verdict, *words: str) -> None:
    """Exit 2 with a one-line diagnosis on stderr, and nothing on stdout."""
    assert v.rc == 2, v.out
    assert v.out == ""
    assert v.err.startswith("ledger-verify: ") and v.err.count("\n") == 1, v.err
    for word in words:
        assert word in v.err, v.err
    assert v.json["level"] == "unreadable"


def assert_about(f: Failure, world: World, index: int, **changed: str) -> None:
    """``f`` names entry ``index`` and says what its record says: sensor and time (the
    genuine ones unless the attack ``changed`` them)."""
    rec = world.rec(index)
    assert f.entry == index
    assert f.sensor == changed.get("sensor", rec.get("sensor")), f
    assert f.time == changed.get("time", rec["time"]), f


# --- tampering helpers ---------------------------------------------------------------------------


def entry_with(rec: dict[str, Any], sig: bytes) -> bytes:
    """A canonical entry of ``rec`` carrying signature ``sig`` (not necessarily its own)."""
    return b'{"rec":' + canonical_bytes(rec) + b',"sig":"' + base64.b64encode(sig) + b'"}'


def edited(world: World, index: int, **changes: Any) -> bytes:
    """Entry ``index`` with members of its record changed, its signature kept."""
    rec = world.rec(index)
    rec.update(changes)
    return entry_with(rec, world.sig(index))


def set_entry(doc: Doc, index: int, entry: bytes | str) -> Doc:
    doc["entries"][index]["entry"] = entry if isinstance(entry, str) else entry.decode()
    return doc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def replace_member(members: Members, name: str, data: bytes) -> Members:
    assert any(n == name for n, _ in members)
    return [(n, data if n == name else d) for n, d in members]


def member(members: Members, name: str) -> bytes:
    return next(d for n, d in members if n == name)


# --- the genuine evidence ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_the_genuine_bundle_is_authentic(
    capsys: pytest.CaptureFixture[str], world: World, fmt: str
) -> None:
    v = ledger_verify(capsys, world, world.v1 if fmt == "v1" else world.v2)
    assert v.rc == 3, v.out
    assert v.json["level"] == "authentic-undated"
    assert v.failures == ()
    assert "entries     62 (index 0–61)" in v.out


# --- 1–4: a reading altered ----------------------------------------------------------------------

# Entry 17 is do-1's sixth reading (seq 5), DO 8.93 mg/L.


def test_altered_value(capsys: pytest.CaptureFixture[str], world: World) -> None:
    rec = world.rec(17)
    assert (rec["sensor"], rec["values"][0]["q"], rec["values"][0]["u"]) == ("do-1", "DO", "mg/L")
    forged = edited(world, 17, values=[{**rec["values"][0], "v": 5.5}])
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 17, forged)))
    assert v.rc == 1 and v.json["level"] == "failed"
    sig = v.one(check="signature", entry=17)
    assert sig.reason == f"does not verify under key {KEY}"
    assert_about(sig, world, 17)
    assert sig.values == "DO 5.5 mg/L"  # what the forged record says
    v.printed(sig)
    inc = v.one(check="inclusion", entry=17)
    assert inc.reason == "the proof does not lead to the root of checkpoint 20"
    assert {f.entry for f in v.failures} == {17}
    assert v.out.rstrip().endswith("FAILED: 2 problems")


def test_altered_value_v2(capsys: pytest.CaptureFixture[str], world: World) -> None:
    rec = world.rec(17)
    entries = list(world.raws)
    entries[17] = edited(world, 17, values=[{**rec["values"][0], "v": 5.5}])
    v = ledger_verify(capsys, world, world.write_v2(world.members(entries, tree=world.raws)))
    assert v.rc == 1
    sig = v.one(check="signature", entry=17)
    assert_about(sig, world, 17)
    v.printed(sig)
    # The changed leaf changes the root of every checkpoint above it.
    for size in SIZES:
        f = v.one(check="consistency", checkpoint=size)
        assert f"is not the root checkpoint {size} signs" in f.reason


def test_altered_time(capsys: pytest.CaptureFixture[str], world: World) -> None:
    # Backdated by an hour: the reading would fall before a permit breach began.
    assert world.rec(17)["time"] == format_time(T0_NS + 18 * 20 * 10**9)
    earlier = format_time(T0_NS + 18 * 20 * 10**9 - 3600 * 10**9)
    forged = edited(world, 17, time=earlier)
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 17, forged)))
    assert v.rc == 1
    sig = v.one(check="signature", entry=17)
    assert sig.reason == f"does not verify under key {KEY}"
    assert_about(sig, world, 17, time=earlier)
    v.printed(sig)
    assert v.at(check="inclusion", entry=17)


def test_altered_unit(capsys: pytest.CaptureFixture[str], world: World) -> None:
    rec = world.rec(17)
    forged = edited(world, 17, values=[{**rec["values"][0], "u": "ug/L"}])
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 17, forged)))
    assert v.rc == 1
    sig = v.one(check="signature", entry=17)
    assert_about(sig, world, 17)
    assert sig.values is not None and "ug/L" in sig.values
    v.printed(sig)


def test_altered_sensor_id(capsys: pytest.CaptureFixture[str], world: World) -> None:
    forged = edited(world, 17, sensor="do-2")
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 17, forged)))
    assert v.rc == 1
    sig = v.one(check="signature", entry=17)
    assert_about(sig, world, 17, sensor="do-2")
    v.printed(sig)
    # do-1 lost a reading: its next one (entry 20) shows the hole in seq and src_seq.
    seq = v.one(check="completeness", entry=20)
    assert seq.reason.startswith("sensor do-1: seq 5 missing")


# --- 5–7: entries deleted ------------------------------------------------------------------------


def test_deleted_entry(capsys: pytest.CaptureFixture[str], world: World) -> None:
    doc = world.doc()
    del doc["entries"][17]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    missing = v.one(check="completeness", entry=17)
    assert missing.reason == "missing (indexes jump from 16 to 18)"
    v.printed(missing)
    # do-1's next reading (entry 20, readable) shows which sensor lost what.
    hole = [f for f in v.at(check="completeness", entry=20) if "seq 5 missing" in f.reason]
    assert hole, v.out
    assert_about(hole[0], world, 20)
    v.printed(hole[0])


def test_deleted_entry_v2(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """v2: an entry cut out of its entry bundle; the bundle no longer splits into its width."""
    members = world.members()
    entries = [*world.raws[:17], *world.raws[18:]]
    members = replace_member(members, ENTRY_BUNDLE, encode_entry_bundle(entries))
    v = ledger_verify(capsys, world, world.write_v2(members))
    assert v.rc == 1
    f = v.one(check="inclusion", entry=0)
    assert f.reason == f"{ENTRY_BUNDLE}: entry bundle holds 61 entries, not 62"
    for size in SIZES:
        assert "could not be recomputed" in v.one(check="consistency", checkpoint=size).reason


def test_deleted_run_at_the_end_keeping_its_checkpoints(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """v1: entries 50–61 removed, checkpoint 62 kept. A v1 export of a time range ends
    at its last reading while its checkpoint lies beyond (gateway/export.py), so this
    is a smaller true claim: the report says the entries stop at 49 and before when."""
    doc = world.doc()
    doc["entries"] = doc["entries"][:50]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 3, v.out
    assert (v.json["first_index"], v.json["last_index"]) == (0, 49)
    assert f"entries     50 (index 0–49), {world.rec(0)['time']}" in v.out
    assert v.out.rstrip().endswith("(give --tsa-roots or --rpc)")
    assert f"to {world.rec(49)['time']}" in v.out.splitlines()[-1]


def test_deleted_run_at_the_end_keeping_its_checkpoints_v2(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """v2 carries every entry up to its newest checkpoint: the cut is a failure."""
    members = world.members()
    members = replace_member(members, ENTRY_BUNDLE, encode_entry_bundle(world.raws[:50]))
    v = ledger_verify(capsys, world, world.write_v2(members))
    assert v.rc == 1
    f = v.one(check="inclusion", entry=0)
    assert f.reason == f"{ENTRY_BUNDLE}: entry bundle holds 50 entries, not 62"
    assert "could not be recomputed" in v.one(check="consistency", checkpoint=62).reason


def test_deleted_run_at_the_end_with_its_checkpoint(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """Entries 50–61 removed and checkpoint 62 (with its proof and anchor) dropped:
    entries 45–49 are then covered by no checkpoint."""
    doc = world.doc()
    doc["entries"] = doc["entries"][:50]
    doc["checkpoints"] = doc["checkpoints"][:2]
    doc["consistency"] = doc["consistency"][:1]
    doc["anchors"] = []
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    for i in range(45, 50):
        inc = v.one(check="inclusion", entry=i)
        assert inc.reason == "names checkpoint 62, which is not in the bundle"
        assert_about(inc, world, i)
        v.printed(inc)
        cover = v.one(check="completeness", entry=i)
        assert cover.reason == "not covered by any checkpoint (the largest is 45)"
    assert {f.entry for f in v.failures} == set(range(45, 50))


# --- 8: truncation to an earlier checkpoint ------------------------------------------------------


def truncated_to_45(world: World) -> Doc:
    doc = world.doc()
    doc["entries"] = doc["entries"][:45]
    doc["checkpoints"] = doc["checkpoints"][:2]
    doc["consistency"] = doc["consistency"][:1]
    doc["anchors"] = []
    return doc


def test_truncation_to_an_earlier_checkpoint_passes_alone(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """Entries 0–44 and checkpoints 20, 45: exactly what the box had signed at 45. Alone
    this verifies — it is a smaller, true claim (the report says 0–44, no anchor)."""
    v = ledger_verify(capsys, world, world.write(truncated_to_45(world)))
    assert v.rc == 3, v.out
    assert v.failures == ()
    assert (v.json["last_index"], v.json["checkpoints"]) == (44, [20, 45])
    assert "note: the bundle holds no anchor receipt" in v.out


def test_truncation_fails_against_the_checkpoint_the_regulator_kept(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    kept = world.root / "kept-62.txt"
    kept.write_text(world.note(62), encoding="utf-8")
    truncated = world.write(truncated_to_45(world))
    for how in (("--since-checkpoint", kept), ("--previous", world.v1)):
        v = ledger_verify(capsys, world, truncated, *how)
        assert v.rc == 1, v.out
        f = v.one(check="consistency", checkpoint=62)
        assert f.reason.startswith(f"the checkpoint you kept ({how[0]} {how[1]}) is at size 62, ")
        assert "beyond this source's newest (45)" in f.reason
        assert "a log rolled back" in f.reason
        v.printed(f)
    # The genuine bundle extends what was kept.
    v = ledger_verify(capsys, world, world.v1, "--since-checkpoint", kept)
    assert v.rc == 3
    assert f"linked: extends the checkpoint you kept (--since-checkpoint {kept}, size 62)" in v.out


def test_truncation_v2(capsys: pytest.CaptureFixture[str], world: World) -> None:
    kept = world.root / "kept-62-v2.txt"
    kept.write_text(world.note(62), encoding="utf-8")
    truncated = world.write_v2(world.members(world.raws[:45], (20, 45)))
    assert ledger_verify(capsys, world, truncated).rc == 3  # alone: a smaller true claim
    v = ledger_verify(capsys, world, truncated, "--since-checkpoint", kept)
    assert v.rc == 1
    assert "beyond this source's newest (45)" in v.one(check="consistency", checkpoint=62).reason


# --- 9–10: a forged entry inserted ---------------------------------------------------------------


def forged_reading(world: World, index: int, key: str) -> dict[str, Any]:
    """A ph-1 reading the attacker wants in the log, at ``index``."""
    rec = world.rec(index)
    return {
        **rec,
        "kind": "reading",
        "sensor": "ph-1",
        "seq": 99,
        "key": key,
        "values": [{"q": "pH", "v": 7.0, "u": "pH"}],
        "time": format_time(T0_NS + (index * 20 + 10) * 10**9),  # between index - 1 and index
    }


def test_inserted_entry_signed_by_an_attacker_key(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    rec = forged_reading(world, 30, ATTACKER_KEY)
    doc = world.doc()
    forged = {**doc["entries"][30], "entry": make_entry(rec, ATTACKER.signing_key).decode()}
    doc["entries"].insert(30, forged)
    doc["keys"].append({"vkey": ATTACKER.verifier().to_vkey(), "valid_from": None})
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    sig = v.one(check="signature", entry=30)
    assert sig.reason == f"signed with key {ATTACKER_KEY}, which is not in the trust list"
    assert (sig.sensor, sig.time) == ("ph-1", rec["time"])
    v.printed(sig)
    assert f"note: bundle key(s) not in the trust list, ignored: {ATTACKER_KEY}" in v.out
    assert any(f.reason == "appears more than once" for f in v.at(entry=30))
    # Without the trust file the attacker's key, in the bundle, is in force: the
    # signature passes, but the tree and the indexes still give the insertion away.
    v = ledger_verify(capsys, world, world.write(doc), trust=False)
    assert v.rc == 1
    assert not v.at(check="signature")
    inc = v.one(check="inclusion", entry=30)
    assert inc.reason == "the proof does not lead to the root of checkpoint 45"
    assert (inc.sensor, inc.time) == ("ph-1", rec["time"])


def test_inserted_entry_signed_by_no_key(capsys: pytest.CaptureFixture[str], world: World) -> None:
    rec = forged_reading(world, 30, KEY)
    doc = world.doc()
    doc["entries"].insert(30, {**doc["entries"][30], "entry": entry_with(rec, bytes(64)).decode()})
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    sig = v.one(check="signature", entry=30)
    assert sig.reason == f"does not verify under key {KEY}"
    assert (sig.sensor, sig.time) == ("ph-1", rec["time"])
    v.printed(sig)


# --- 11–13: genuine entries moved, replayed, or signed by an unknown key -------------------------


def test_reordered_entries(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """Entries 17 and 18 listed the other way round (each keeps its index and proof)."""
    doc = world.doc()
    doc["entries"][17], doc["entries"][18] = doc["entries"][18], doc["entries"][17]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    f = v.one(check="completeness", entry=17)
    assert f.reason == "out of order (listed after entry 18)"
    assert_about(f, world, 17)
    v.printed(f)


def test_reordered_entries_v2(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """In v2 an entry's index is its position: moved entries say another index."""
    entries = list(world.raws)
    entries[17], entries[18] = entries[18], entries[17]
    v = ledger_verify(capsys, world, world.write_v2(world.members(entries, tree=world.raws)))
    assert v.rc == 1
    f = v.one(check="record", entry=17)
    assert f.reason == "the record says index 18"
    # What the entry at position 17 now holds: entry 18's reading.
    assert (f.sensor, f.time) == (world.rec(18)["sensor"], world.rec(18)["time"])
    v.printed(f)


def test_replayed_entry(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """do-1's reading at entry 5, genuine and signed (as an earlier bundle of this box
    carries it), replayed at position 23 — another do-1 reading's place."""
    assert world.rec(5)["sensor"] == world.rec(23)["sensor"] == "do-1"
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 23, world.raws[5])))
    assert v.rc == 1
    f = v.one(check="record", entry=23)
    assert f.reason == "the record says index 5"
    assert (f.sensor, f.time) == ("do-1", world.rec(5)["time"])
    v.printed(f)
    assert v.at(check="inclusion", entry=23)


def test_replayed_entry_v2(capsys: pytest.CaptureFixture[str], world: World) -> None:
    entries = list(world.raws)
    entries[23] = world.raws[5]
    v = ledger_verify(capsys, world, world.write_v2(world.members(entries, tree=world.raws)))
    assert v.rc == 1
    f = v.one(check="record", entry=23)
    assert (f.reason, f.sensor, f.time) == ("the record says index 5", "do-1", world.rec(5)["time"])


def test_entry_under_an_unknown_key(capsys: pytest.CaptureFixture[str], world: World) -> None:
    rec = world.rec(40)
    rec["key"] = ATTACKER_KEY
    forged = make_entry(rec, ATTACKER.signing_key)
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 40, forged)))
    assert v.rc == 1
    f = v.one(check="signature", entry=40)
    assert f.reason == f"signed with key {ATTACKER_KEY}, which is unknown"
    assert_about(f, world, 40)
    v.printed(f)


# --- 14–17: checkpoints --------------------------------------------------------------------------


def note_lines(note: str) -> list[str]:
    return note.split("\n")


def test_checkpoint_root_altered(capsys: pytest.CaptureFixture[str], world: World) -> None:
    doc = world.doc()
    lines = note_lines(doc["checkpoints"][1])
    root = bytearray(base64.b64decode(lines[2]))
    root[0] ^= 0x80
    lines[2] = b64(bytes(root))
    doc["checkpoints"][1] = "\n".join(lines)
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    f = v.one(check="checkpoint", checkpoint=45)
    assert f.reason == f"signature by trusted key {ORIGIN!r} does not verify"
    v.printed(f)
    assert v.one(check="consistency", checkpoint=45)
    inc = v.one(check="inclusion", entry=20)
    assert_about(inc, world, 20)


def test_checkpoint_size_altered(capsys: pytest.CaptureFixture[str], world: World) -> None:
    doc = world.doc()
    lines = note_lines(doc["checkpoints"][1])
    assert lines[1] == "45"
    lines[1] = "44"
    doc["checkpoints"][1] = "\n".join(lines)
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    f = v.one(check="checkpoint", checkpoint=44)
    assert "does not verify" in f.reason
    v.printed(f)
    inc = v.one(check="inclusion", entry=20)
    assert inc.reason == "names checkpoint 45, which is not in the bundle"
    assert_about(inc, world, 20)


def test_checkpoint_from_another_device(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """Box ffffff signs a checkpoint with the very root of this log at 45."""
    doc = world.doc()
    cp = Checkpoint.parse(split_note(world.note(45))[0])
    doc["checkpoints"][1] = sign_checkpoint(Checkpoint(OTHER_ORIGIN, 45, cp.root), OTHER_BOX)
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    reasons = [f.reason for f in v.at(check="checkpoint", checkpoint=45)]
    assert f"no signature by a trusted key (signed by: {OTHER_ORIGIN})" in reasons
    assert f"origin {OTHER_ORIGIN!r} is not the bundle's origin {ORIGIN!r}" in reasons
    inc = v.one(check="inclusion", entry=30)
    assert inc.reason == "checkpoint 45 is not signed by a trusted key"
    assert_about(inc, world, 30)


def test_dropped_checkpoint(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """v1: checkpoint 45 removed; entries 20–44 still name it, and the consistency
    chain 20 → 45 → 62 no longer links."""
    doc = world.doc()
    del doc["checkpoints"][1]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    reasons = {f.reason for f in v.at(check="consistency")}
    assert "no consistency proof from checkpoint 20 to checkpoint 62" in reasons
    assert "a proof from size 20 to 45 links no consecutive pair of checkpoints" in reasons
    for i in range(20, 45):
        inc = v.one(check="inclusion", entry=i)
        assert inc.reason == "names checkpoint 45, which is not in the bundle"
        assert_about(inc, world, i)


def test_dropped_checkpoint_v2(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """v2: checkpoint 45 left out of the manifest is no failure — every entry is still
    proven by the tree checkpoint 62 signs — and a regulator who kept 45 is still linked
    to it, through the rebuilt tree's root at 45."""
    notes = notes_for(SIGNER, ORIGIN, world.raws, SIZES)
    members = world.members(notes=[notes[0], notes[2]], sizes=(20, 62))
    source = world.write_v2(members)
    kept = world.root / "kept-45.txt"
    kept.write_text(notes[1], encoding="utf-8")
    v = ledger_verify(capsys, world, source, "--since-checkpoint", kept)
    assert v.rc == 3, v.out
    assert v.json["checkpoints"] == [20, 62]
    assert f"linked: extends the checkpoint you kept (--since-checkpoint {kept}, size 45)" in v.out


# --- 18: inclusion proofs cut or padded (v1) -----------------------------------------------------


@pytest.mark.parametrize(
    ("how", "expected"),
    [("truncated", "proof has 2 hashes, expected exactly 3"), ("padded", "proof has 4 hashes")],
)
def test_inclusion_proof_truncated_or_padded(
    capsys: pytest.CaptureFixture[str], world: World, how: str, expected: str
) -> None:
    doc = world.doc()
    proof = doc["entries"][17]["inclusion"]
    assert len(proof) == 3  # entry 17 in the tree of 20
    doc["entries"][17]["inclusion"] = proof[:-1] if how == "truncated" else [*proof, proof[0]]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    f = v.one(check="inclusion", entry=17)
    assert f.reason.startswith("bad proof against checkpoint 20: ") and expected in f.reason
    assert_about(f, world, 17)
    v.printed(f)
    assert {g.entry for g in v.failures} == {17}


# --- 19: a forged gap record ---------------------------------------------------------------------


def test_forged_gap_record_over_a_deleted_reading(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """do-1's reading at entry 17 replaced by a gap record claiming the sensor timed out
    (seq and src_seq in order, so completeness alone would pass it), signed by a key the
    attacker made and added to the bundle."""
    rec = world.rec(17)
    gap = {key: rec[key] for key in ("v", "device", "index", "time", "clock", "sensor", "seq")} | {
        "kind": "gap",
        "key": ATTACKER_KEY,
        "reason": "timeout",
        "from": world.rec(14)["time"],
        "to": rec["time"],
        "src_seq_from": rec["src_seq"],
        "src_seq_to": rec["src_seq"],
    }
    doc = set_entry(world.doc(), 17, make_entry(gap, ATTACKER.signing_key))
    doc["keys"].append({"vkey": ATTACKER.verifier().to_vkey()})
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    f = v.one(check="signature", entry=17)
    assert f.reason == f"signed with key {ATTACKER_KEY}, which is not in the trust list"
    assert_about(f, world, 17)
    assert f.values == f"gap {gap['from']} to {gap['to']} (timeout)"
    v.printed(f)
    assert not v.at(check="completeness")  # it is the signature that catches it


# --- 20: anchors ---------------------------------------------------------------------------------


def anchored_twice(world: World) -> Doc:
    doc = world.doc()
    doc["anchors"] = [
        local_anchor(world.note(45), 1).to_json(),
        local_anchor(world.note(62), 2).to_json(),
    ]
    return doc


def test_anchor_receipts_swapped_between_checkpoints(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """The receipt for 62 (digest and receipt) put under checkpoint 45, and 45's under 62."""
    doc = anchored_twice(world)
    assert ledger_verify(capsys, world, world.write(doc)).rc == 3
    a, b = doc["anchors"]
    a["checkpoint"], b["checkpoint"] = b["checkpoint"], a["checkpoint"]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    for size in (45, 62):
        f = v.one(check="anchors", checkpoint=size)
        assert f.reason == "local anchor: the digest is not the checkpoint's digest"
        v.printed(f)


def test_local_receipt_bodies_swapped_are_not_evidence_of_time(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """A limit, stated honestly: a local receipt is the box's own journal line (no
    signature of its own); swapping two receipts' journal seq and time is not
    detectable offline. The verifier never dates anything by them: the verdict stays
    NOT INDEPENDENTLY DATED and no entry gets a "recorded no later than"."""
    doc = anchored_twice(world)
    a, b = doc["anchors"]
    a["receipt"], b["receipt"] = b["receipt"], a["receipt"]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 3
    assert v.json["recorded_by"] == []
    assert all(x["status"] == "local, not independent" for x in v.json["anchors"])


# --- 21–22: forked histories ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def forked(world: World) -> Bundle:
    """The same box's key signing another history: temp-1's reading at entry 30 says 99."""
    records = copy.deepcopy(list(world.records))
    assert records[30]["sensor"] == "temp-1"
    records[30]["values"][0]["v"] = 99.0
    return world.maker.build(records, SIZES)


def test_forked_history_in_one_bundle(
    capsys: pytest.CaptureFixture[str], world: World, forked: Bundle
) -> None:
    doc = world.doc()
    other_45 = forked.checkpoints[1]
    assert other_45 != world.note(45)
    doc["checkpoints"].insert(2, other_45)
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 5, v.out
    assert v.json["level"] == "forked"
    assert "FORK: two checkpoints of size 45 with different roots. Both checkpoints are " in v.out
    for note in (world.note(45), other_45):
        for line in note.rstrip("\n").split("\n"):
            assert f"    {line}\n" in v.out
    (fork,) = v.json["forks"]
    assert {fork["a"]["note"], fork["b"]["note"]} == {world.note(45), other_45}
    repeated = v.one(check="checkpoint", checkpoint=45)
    assert repeated.reason == "size 45 does not ascend from the previous checkpoint's 45"
    proven = v.one(check="consistency", checkpoint=45)
    assert proven.reason == (
        "forked history: two checkpoints of size 45 with different roots "
        "(this source, checkpoints[1]; this source, checkpoints[2]); both are validly signed"
    )
    v.printed(proven)
    assert v.out.rstrip().splitlines()[-1].startswith("FORKED HISTORY: 1 fork(s) proven")


def test_forked_history_across_bundles(
    capsys: pytest.CaptureFixture[str], world: World, forked: Bundle
) -> None:
    other = world.write(forked)
    assert ledger_verify(capsys, world, other).rc == 3  # alone, a consistent history
    v = ledger_verify(capsys, world, other, "--previous", world.v1)
    assert v.rc == 5, v.out
    (fork,) = v.json["forks"]
    assert {fork["a"]["note"], fork["b"]["note"]} == {world.note(62), forked.checkpoints[2]}
    assert fork["a"]["source"] == f"--previous {world.v1}"
    assert "FORK: two checkpoints of size 62 with different roots" in v.out
    assert forked.checkpoints[2].split("\n")[2] in v.out and world.note(62).split("\n")[2] in v.out


# --- 23–24: non-canonical JSON and duplicate names -----------------------------------------------


def non_canonical(world: World, how: str) -> bytes:
    raw = world.raws[17]
    v = world.rec(17)["values"][0]["v"]
    if how == "whitespace":
        return raw.replace(b'{"rec":{', b'{"rec": {', 1)
    if how == "reordered members":
        assert raw.startswith(b'{"rec":{"clock":"synced","device":"rs-0a1b2c",')
        return raw.replace(
            b'"clock":"synced","device":"rs-0a1b2c"', b'"device":"rs-0a1b2c","clock":"synced"', 1
        )
    if how == "non-shortest number":
        return raw.replace(f'"v":{v}}}'.encode(), f'"v":{v}0}}'.encode(), 1)
    assert how == "duplicate member in the record"
    return raw.replace(f'"v":{v}}}'.encode(), f'"v":{v},"v":0.5}}'.encode(), 1)


@pytest.mark.parametrize(
    "how",
    ["whitespace", "reordered members", "non-shortest number", "duplicate member in the record"],
)
def test_non_canonical_entry(capsys: pytest.CaptureFixture[str], world: World, how: str) -> None:
    forged = non_canonical(world, how)
    assert forged != world.raws[17]
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 17, forged)))
    assert v.rc == 1
    f = v.one(check="record", entry=17)
    assert f.reason == "entry is not in RFC 8785 canonical form"
    assert_about(f, world, 17)
    v.printed(f)


def test_duplicate_member_at_the_bundle_top_level(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    text = world.v1.read_text(encoding="utf-8")
    text = text.replace('"origin": ', f'"origin": "{OTHER_ORIGIN}",\n "origin": ', 1)
    v = ledger_verify(capsys, world, world.write(text))
    assert_unreadable(v, "duplicate member name 'origin'")


def test_duplicate_member_in_an_entry_object(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    text = world.v1.read_text(encoding="utf-8")
    text = text.replace('"index": 17,', '"index": 17,\n   "index": 18,', 1)
    v = ledger_verify(capsys, world, world.write(text))
    assert_unreadable(v, "duplicate member name 'index'", "entries[17]")


def test_duplicate_member_in_the_manifest(capsys: pytest.CaptureFixture[str], world: World) -> None:
    members = world.members()
    text = member(members, MANIFEST).decode()
    text = text.replace('"device": ', '"device": "rs-ffffff",\n "device": ', 1)
    v = ledger_verify(
        capsys, world, world.write_v2(replace_member(members, MANIFEST, text.encode()))
    )
    assert_unreadable(v, "manifest", "duplicate member name 'device'")


# --- 25: the version of the wrong type -----------------------------------------------------------


@pytest.mark.parametrize("version", ["true", "1.0", '"1"'])
def test_bundle_version_of_the_wrong_type(
    capsys: pytest.CaptureFixture[str], world: World, version: str
) -> None:
    text = world.v1.read_text(encoding="utf-8").replace(
        '"version": 1,', f'"version": {version},', 1
    )
    v = ledger_verify(capsys, world, world.write(text))
    assert_unreadable(v, "bundle version", "is not the integer 1")


@pytest.mark.parametrize("version", ["true", "2.0", '"2"'])
def test_manifest_version_of_the_wrong_type(
    capsys: pytest.CaptureFixture[str], world: World, version: str
) -> None:
    members = world.members()
    text = member(members, MANIFEST).decode().replace('"version": 2,', f'"version": {version},', 1)
    v = ledger_verify(
        capsys, world, world.write_v2(replace_member(members, MANIFEST, text.encode()))
    )
    assert_unreadable(v, "manifest version", "is not the integer 2")


# --- 26–27: pathological nesting -----------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [600, 900, 5_000, 100_000])
@pytest.mark.parametrize("framing", ["canonical", "with whitespace"])
def test_record_nested_deep_inside_an_entry(
    capsys: pytest.CaptureFixture[str], world: World, depth: int, framing: str
) -> None:
    """A record member (``raw``, which may hold anything) nested ``depth`` levels deep,
    inside the entry string: the bundle's own nesting is unchanged. The entry must fail
    cleanly at entry 17, never as a traceback."""
    raw = world.raws[17].decode()
    at = raw.index('"sensor":')
    forged = raw[:at] + f'"raw":{nested(depth)},' + raw[at:]
    if framing == "with whitespace":
        forged = forged.replace('{"rec":{', '{"rec": {', 1)
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 17, forged)))
    assert v.rc == 1, v.err
    if framing == "canonical" and depth < 1_000:
        # Read and re-encoded at C speed: a record, but not the one the box signed.
        f = v.one(check="signature", entry=17)
        assert f.reason == f"does not verify under key {KEY}"
    else:
        f = v.one(check="record", entry=17)
        assert f.reason == "entry nests arrays and objects too deeply to be checked"
    if depth < 1_000:  # json can still read it for the report
        assert_about(f, world, 17)
    v.printed(f)
    # Unread, the record leaves a hole in do-1's seq at its next reading (entry 20).
    assert {g.entry for g in v.failures} <= {17, 20}


@pytest.mark.parametrize("depth", [600, 100_000])
@pytest.mark.parametrize("where", ["top level", "entry object"])
def test_bundle_nested_deep(
    capsys: pytest.CaptureFixture[str], world: World, depth: int, where: str
) -> None:
    text = world.v1.read_text(encoding="utf-8")
    if where == "top level":
        text = text.replace('"origin": ', f'"comment": {nested(depth)},\n "origin": ', 1)
    else:
        text = text.replace('"index": 17,', f'"index": 17,\n   "extra": {nested(depth)},', 1)
    v = ledger_verify(capsys, world, world.write(text))
    assert_unreadable(v, f"nests arrays and objects deeper than {MAX_NESTING}")


@pytest.mark.parametrize("depth", [600, 100_000])
def test_manifest_nested_deep(capsys: pytest.CaptureFixture[str], world: World, depth: int) -> None:
    members = world.members()
    text = member(members, MANIFEST).decode()
    text = text.replace('"origin": ', f'"comment": {nested(depth)},\n "origin": ', 1)
    v = ledger_verify(
        capsys, world, world.write_v2(replace_member(members, MANIFEST, text.encode()))
    )
    assert_unreadable(v, f"manifest nests deeper than {MAX_NESTING} levels")


# --- 28–30: pathological sizes -------------------------------------------------------------------


def test_huge_string_member(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """A top-level string longer than the reader takes in one value (64 Mi characters):
    refused with a one-line reason, in memory bounded by that limit, not by the file."""
    text = world.v1.read_text(encoding="utf-8")
    head, tail = text.split('"origin": ', 1)
    path = world.root / "huge-string.json"
    with path.open("w", encoding="utf-8") as f:
        f.write(head + '"comment": "')
        chunk = "A" * (1 << 20)
        for _ in range(MAX_VALUE_CHARS // len(chunk) + 4):
            f.write(chunk)
        f.write('",\n "origin": ' + tail)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        rc = main([str(path), "--trust", str(world.trust), "--jobs", "1"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    path.unlink()
    assert rc == 2 and out == ""
    assert f"a single value longer than {MAX_VALUE_CHARS} characters" in err
    assert err.count("\n") == 1
    assert peak < 4 * MAX_VALUE_CHARS, (peak, size)


def test_entry_of_megabytes(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """Entry 17 with 3 MB of ``raw`` slipped into its record (kept canonical)."""
    forged = edited(world, 17, raw="x" * 3_000_000)
    assert len(forged) > 3_000_000
    v = ledger_verify(capsys, world, world.write(set_entry(world.doc(), 17, forged)))
    assert v.rc == 1
    f = v.one(check="signature", entry=17)
    assert f.reason == f"does not verify under key {KEY}"
    assert_about(f, world, 17)
    v.printed(f)


def test_inclusion_proof_of_thousands_of_hashes(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    doc = world.doc()
    doc["entries"][17]["inclusion"] = [b64(bytes([i % 256]) * 32) for i in range(5_000)]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    f = v.one(check="inclusion", entry=17)
    assert f.reason == "bad proof against checkpoint 20: proof has 5000 hashes, expected exactly 3"
    assert_about(f, world, 17)
    v.printed(f)


def test_consistency_proof_of_thousands_of_hashes(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    doc = world.doc()
    doc["consistency"][0]["proof"] = [b64(bytes([i % 256]) * 32) for i in range(5_000)]
    v = ledger_verify(capsys, world, world.write(doc))
    assert v.rc == 1
    f = v.one(check="consistency", checkpoint=45)
    assert f.reason.startswith("checkpoint 20 is not proven a prefix of it: proof has 5000 hashes")
    v.printed(f)


# The tree the v1 fixture's proofs come from is the one the entries make (a sanity check
# of the fixture, so that every failure above is the attack's doing).
def test_the_fixture_tree_is_the_entries_tree(world: World) -> None:
    tree = MerkleTree(world.raws)
    for size in SIZES:
        cp = Checkpoint.parse(split_note(world.note(size))[0])
        assert cp.root == tree.root(size)
    assert [e.index for e in world.bundle.entries] == list(range(62))
    assert decode_entry_bundle(member(world.members(), ENTRY_BUNDLE), 62) == list(world.raws)


def test_the_matrix_document_lists_every_row_and_its_tests() -> None:
    """docs/tamper-matrix.md: rows 1–N in the table, each with tests of this module."""
    text = DOC.read_text(encoding="utf-8")
    rows = [int(n) for n in re.findall(r"^\| (\d+) \|", text, re.MULTILINE)]
    assert rows == list(range(1, len(rows) + 1)) and len(rows) >= 20
    listed = dict(re.findall(r"^(\d+)\. (`test_.*)$", text, re.MULTILINE))
    assert sorted(map(int, listed)) == rows
    ours = {name for name in globals() if name.startswith("test_")}
    for row, names in listed.items():
        for name in re.findall(r"`(test_\w+)`", names):
            assert name in ours, f"row {row}: no test {name}"
    named = set(re.findall(r"`(test_\w+)`", text))
    assert ours - named == {
        "test_the_fixture_tree_is_the_entries_tree",
        "test_the_matrix_document_lists_every_row_and_its_tests",
    }

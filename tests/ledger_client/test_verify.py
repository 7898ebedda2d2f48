"""The verifier: a good bundle passes; every kind of tampering fails and names the entry."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import AnchorReceipt, Bundle
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.note import Signer
from ledger_client.records import make_entry
from ledger_client.trust import TrustedKey, TrustList
from ledger_client.verify import (
    LOCAL_STATUS,
    STEPS,
    UNCHECKED_STATUS,
    Failure,
    Report,
    verify_bundle,
)
from tests.ledger_client.lc_bundles import NOW, ORIGIN, OTHER_SEED, SENSORS, BundleMaker

Doc = dict[str, Any]


def verify_doc(doc: Doc, trusted: Any = None) -> Report:
    return verify_bundle(Bundle.from_json(doc), trusted, now=NOW)


def named(report: Report, check: str | None = None) -> set[int]:
    """The entry indexes the failures name (of one check, or of all)."""
    return {
        f.entry
        for f in report.failures
        if f.entry is not None and (check is None or f.check == check)
    }


def checks(report: Report) -> set[str]:
    return {f.check for f in report.failures}


# --- the good bundle -----------------------------------------------------------------------


def test_the_fixture_bundle_verifies(bundle: Bundle) -> None:
    report = verify_bundle(bundle, now=NOW)
    assert report.failures == ()
    assert report.ok
    assert report.entries == 62
    assert [s.name for s in report.steps] == list(STEPS)
    assert [s.number for s in report.steps] == list(range(1, 9))
    assert all(s.ok and s.failed == 0 for s in report.steps)
    assert report.step("record").passed == 62
    assert report.step("signature").passed == 62
    assert report.step("inclusion").passed == 62
    assert report.step("checkpoint").passed == 3
    assert report.step("consistency").passed == 2
    assert report.step("anchors").passed == 1
    assert report.step("completeness").passed == 62
    assert report.checkpoints == (20, 45, 62)
    assert {s: (c.readings, c.gaps) for s, c in report.sensors.items()} == {
        "ph-1": (20, 0),
        "do-1": (20, 1),
        "temp-1": (20, 0),
    }
    assert report.events == 1
    assert (report.first_index, report.last_index) == (0, 61)
    assert report.first_time == "2026-03-01T00:00:20.000000Z"
    assert report.last_time == "2026-03-01T00:20:40.000000Z"
    assert [a.status for a in report.anchors] == [LOCAL_STATUS]
    assert not report.keys_trusted
    assert any("NOT independently trusted" in n for n in report.notes)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["verified"] is False and doc["level"] == "untrusted-key"


def test_trusted_keys_are_reported_as_trusted(bundle: Bundle, maker: BundleMaker) -> None:
    for trusted in (
        [maker.signer.verifier()],
        [TrustedKey(maker.signer.verifier())],
        TrustList((TrustedKey(maker.signer.verifier()),)),
    ):
        report = verify_bundle(bundle, trusted, now=NOW)
        assert report.ok, report.failures
        assert report.keys_trusted
        assert report.keys == (maker.signer.key_id.hex(),)
        assert report.ignored_keys == ()


def test_the_bundle_survives_its_json_round_trip(bundle: Bundle) -> None:
    again = Bundle.loads(bundle.dumps())
    assert again == bundle
    assert verify_bundle(again, now=NOW).ok


def test_a_range_from_the_middle_of_the_log_verifies(maker: BundleMaker) -> None:
    # As the gateway exports: the checkpoint just before the range comes along.
    b = maker.build(maker.standard_records(), [10, 30, 50, 72], first=10)
    report = verify_bundle(b, now=NOW)
    assert report.ok, [str(f) for f in report.failures]
    assert (report.first_index, report.last_index) == (10, 71)
    assert report.checkpoints == (10, 30, 50, 72)


def test_failure_text_names_entry_check_and_reason() -> None:
    f = Failure("signature", "does not verify under key a1b2c3d4", entry=17)
    assert str(f) == "entry 17: signature: does not verify under key a1b2c3d4"
    assert str(Failure("checkpoint", "bad", checkpoint=45)) == "checkpoint 45: checkpoint: bad"
    assert str(Failure("keys", "none")) == "keys: none"
    assert str(Failure("inclusion", "x", entry=3, checkpoint=20)).startswith("entry 3: inclusion")


# --- tampering -----------------------------------------------------------------------------


def test_a_changed_value_fails_at_that_entry(bundle: Bundle) -> None:
    doc = bundle.to_json()
    text = doc["entries"][17]["entry"]
    assert '"v":7.' in text or '"v":8.' in text or '"v":11.' in text
    rec = json.loads(text)
    old = rec["rec"]["values"][0]["v"]
    doc["entries"][17]["entry"] = text.replace(f'"v":{old}', f'"v":{old + 1}')
    report = verify_doc(doc)
    assert not report.ok
    assert named(report) == {17}
    assert {"signature", "inclusion"} <= checks(report)


def test_a_deleted_entry_is_named(bundle: Bundle) -> None:
    doc = bundle.to_json()
    del doc["entries"][17]
    report = verify_doc(doc)
    assert not report.ok
    assert 17 in named(report, "completeness")
    assert any(
        str(f) == "entry 17: completeness: missing (indexes jump from 16 to 18)"
        for f in report.failures
    )
    # The deleted reading also leaves a hole in its sensor's seq.
    assert any("seq" in f.reason and "missing" in f.reason for f in report.failures)


def test_several_deleted_entries_are_one_failure(bundle: Bundle) -> None:
    doc = bundle.to_json()
    del doc["entries"][17:21]
    report = verify_doc(doc)
    missing = [f for f in report.failures if f.reason.startswith("missing")]
    assert [str(f) for f in missing] == [
        "entry 17: completeness: missing, and so are 18–20 (indexes jump from 16 to 21)"
    ]


def test_swapped_entries_are_named(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["entries"][17], doc["entries"][18] = doc["entries"][18], doc["entries"][17]
    report = verify_doc(doc)
    assert not report.ok
    assert any(
        str(f) == "entry 17: completeness: out of order (listed after entry 18)"
        for f in report.failures
    )


def test_swapped_entry_texts_are_named(bundle: Bundle) -> None:
    doc = bundle.to_json()
    a, b = doc["entries"][17], doc["entries"][18]
    a["entry"], b["entry"] = b["entry"], a["entry"]
    report = verify_doc(doc)
    assert not report.ok
    assert named(report, "record") == {17, 18}
    assert named(report, "inclusion") == {17, 18}


def test_a_signature_from_another_key_fails(bundle: Bundle, maker: BundleMaker) -> None:
    other = Signer.from_seed(ORIGIN, OTHER_SEED)
    doc = bundle.to_json()
    rec = json.loads(doc["entries"][30]["entry"])["rec"]
    forged = make_entry(rec, other.signing_key).decode()  # same record, "key" still names ours
    doc["entries"][30]["entry"] = forged
    report = verify_doc(doc)
    assert not report.ok
    assert named(report, "signature") == {30}
    key = maker.signer.key_id.hex()
    assert any(
        str(f) == f"entry 30: signature: does not verify under key {key}" for f in report.failures
    )


def test_a_record_signed_by_an_unknown_key_fails(bundle: Bundle) -> None:
    other = Signer.from_seed(ORIGIN, OTHER_SEED)
    doc = bundle.to_json()
    rec = json.loads(doc["entries"][30]["entry"])["rec"]
    rec["key"] = other.key_id.hex()
    doc["entries"][30]["entry"] = make_entry(rec, other.signing_key).decode()
    report = verify_doc(doc)
    assert named(report, "signature") == {30}
    assert any("which is unknown" in f.reason for f in report.failures)


def test_a_changed_checkpoint_root_names_it_and_its_entries(bundle: Bundle) -> None:
    doc = bundle.to_json()
    note = doc["checkpoints"][1]
    origin, size, root, rest = note.split("\n", 3)
    assert size == "45"
    flipped = bytearray(base64.b64decode(root))
    flipped[0] ^= 0x80
    doc["checkpoints"][1] = "\n".join([origin, size, base64.b64encode(flipped).decode(), rest])
    report = verify_doc(doc)
    assert not report.ok
    assert any(f.checkpoint == 45 and f.check == "checkpoint" for f in report.failures)
    # Every entry proven against checkpoint 45 (indexes 20-44) is named.
    assert named(report, "inclusion") == set(range(20, 45))
    assert any(f.checkpoint == 45 and f.check == "consistency" for f in report.failures)


def test_a_truncated_inclusion_proof_fails(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["entries"][5]["inclusion"] = doc["entries"][5]["inclusion"][:-1]
    report = verify_doc(doc)
    assert not report.ok
    assert named(report) == {5}
    assert checks(report) == {"inclusion"}


def test_an_altered_inclusion_proof_fails(bundle: Bundle) -> None:
    doc = bundle.to_json()
    proof = doc["entries"][5]["inclusion"]
    proof[0], proof[1] = proof[1], proof[0]
    report = verify_doc(doc)
    assert [str(f) for f in report.failures] == [
        "entry 5: inclusion: the proof does not lead to the root of checkpoint 20"
    ]


def test_an_entry_must_name_the_smallest_covering_checkpoint(
    bundle: Bundle, maker: BundleMaker
) -> None:
    # A valid proof against checkpoint 62 for entry 5 is still the wrong evidence.
    tree_bundle = maker.build(BundleMaker().standard_records(), [62])
    doc = bundle.to_json()
    doc["entries"][5] = tree_bundle.to_json()["entries"][5]
    report = verify_doc(doc)
    assert [str(f) for f in report.failures] == [
        "entry 5: inclusion: names checkpoint 62, but it should be 20 "
        "(the smallest checkpoint above the index)"
    ]


def test_a_missing_checkpoint_is_named(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["entries"][5]["checkpoint"] = 21
    report = verify_doc(doc)
    assert named(report, "inclusion") == {5}


def test_a_removed_consistency_proof_fails(bundle: Bundle) -> None:
    doc = bundle.to_json()
    del doc["consistency"][0]
    report = verify_doc(doc)
    assert [str(f) for f in report.failures] == [
        "checkpoint 45: consistency: no consistency proof from checkpoint 20 to checkpoint 45"
    ]


def test_a_tampered_consistency_proof_fails(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["consistency"][1]["proof"][0] = base64.b64encode(bytes(32)).decode()
    report = verify_doc(doc)
    assert checks(report) == {"consistency"}


def test_an_extra_or_duplicate_consistency_proof_fails(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["consistency"].append(copy.deepcopy(doc["consistency"][0]))
    assert checks(verify_doc(doc)) == {"consistency"}
    doc = bundle.to_json()
    doc["consistency"].append({"size1": 20, "size2": 62, "proof": []})
    assert checks(verify_doc(doc)) == {"consistency"}


def test_a_forked_log_fails_consistency(maker: BundleMaker) -> None:
    # Two checkpoints signed by the device, but of different histories.
    a = maker.build(maker.standard_records(), [20, 45, 62])
    fork_maker = BundleMaker()
    records = fork_maker.standard_records()
    records[30]["values"][0]["v"] = 99.0
    b = fork_maker.build(records, [20, 45, 62])
    doc = a.to_json()
    doc["checkpoints"][2] = b.to_json()["checkpoints"][2]
    doc["consistency"][1] = b.to_json()["consistency"][1]
    report = verify_doc(doc)
    assert not report.ok
    assert "consistency" in checks(report)
    assert named(report, "inclusion") == set(range(45, 62))


def test_checkpoints_must_ascend_and_carry_the_origin(bundle: Bundle, maker: BundleMaker) -> None:
    doc = bundle.to_json()
    doc["checkpoints"][0], doc["checkpoints"][1] = doc["checkpoints"][1], doc["checkpoints"][0]
    report = verify_doc(doc)
    assert any("does not ascend" in f.reason for f in report.failures)

    doc = bundle.to_json()
    cp = Checkpoint("riverseal.example/gw/other", 62, bytes(32))
    doc["checkpoints"][2] = sign_checkpoint(cp, maker.signer)
    report = verify_doc(doc)
    assert any(f.check == "checkpoint" and "origin" in f.reason for f in report.failures)


def test_a_checkpoint_by_another_key_is_untrusted(bundle: Bundle) -> None:
    other = Signer.from_seed(ORIGIN, OTHER_SEED)
    doc = bundle.to_json()
    body = doc["checkpoints"][0].split("\n\n")[0] + "\n"
    doc["checkpoints"][0] = sign_checkpoint(Checkpoint.parse(body), other)
    report = verify_doc(doc)
    assert any(f.checkpoint == 20 and f.check == "checkpoint" for f in report.failures)
    assert named(report, "inclusion") == set(range(20))


def test_unreadable_checkpoint_notes_fail(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["checkpoints"].append("not a note")
    report = verify_doc(doc)
    assert any(f.check == "checkpoint" and "checkpoints[3]" in f.reason for f in report.failures)


# --- keys and trust ------------------------------------------------------------------------


def test_a_wrong_trusted_key_fails_everything(bundle: Bundle) -> None:
    other = Signer.from_seed(ORIGIN, OTHER_SEED).verifier()
    report = verify_bundle(bundle, [other], now=NOW)
    assert not report.ok
    assert report.keys_trusted
    assert named(report, "signature") == set(range(62))
    assert report.ignored_keys != ()
    assert any("not in the trust list" in f.reason for f in report.failures)


def test_an_empty_trust_list_trusts_nothing(bundle: Bundle) -> None:
    report = verify_bundle(bundle, [], now=NOW)
    assert not report.ok
    assert "keys" in checks(report)


def test_a_bundle_without_keys_fails(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["keys"] = []
    assert "keys" in checks(verify_doc(doc))
    doc["keys"] = [{"vkey": "garbage"}]
    assert "keys" in checks(verify_doc(doc))


def test_bundle_key_validity_window(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["keys"][0]["valid_from"] = "2026-03-01T00:10:00.000000Z"
    report = verify_doc(doc)
    # Records before 00:10 (ticks 1-29, 20 s apart) are outside the window.
    assert named(report, "signature") == set(range(29))
    assert all("validity window" in f.reason for f in report.failures)
    doc["keys"][0]["valid_from"] = "not a time"
    assert "keys" in checks(verify_doc(doc))


def test_trusted_key_validity_window(bundle: Bundle, maker: BundleMaker) -> None:
    from datetime import UTC, datetime

    key = TrustedKey(maker.signer.verifier(), None, datetime(2026, 3, 1, 0, 0, 40, tzinfo=UTC))
    report = verify_bundle(bundle, [key], now=NOW)
    assert named(report, "signature") == set(range(2, 62))


def test_key_rotation_with_windows(maker: BundleMaker) -> None:
    second = Signer.from_seed(ORIGIN, OTHER_SEED)
    recs = maker.standard_records()
    b = maker.build(recs, [20, 45, 62])
    doc = b.to_json()
    for i in range(31, 62):  # from entry 31 on, records are signed by the new key
        doc["entries"][i]["entry"] = maker.sign(recs[i], i, second).decode()
    # rebuild proofs for the new entries
    rebuilt = maker.build(recs, [20, 45, 62], entries=[e["entry"].encode() for e in doc["entries"]])
    from datetime import UTC, datetime

    switch = datetime(2026, 3, 1, 0, 10, 20, tzinfo=UTC)  # the time of entry 31
    trust = [
        TrustedKey(maker.signer.verifier(), None, switch),
        TrustedKey(second.verifier(), switch, None),
    ]
    report = verify_bundle(rebuilt, trust, now=NOW)
    assert report.ok, [str(f) for f in report.failures]
    late = [
        TrustedKey(maker.signer.verifier()),
        TrustedKey(second.verifier(), switch.replace(minute=11)),
    ]
    assert named(verify_bundle(rebuilt, late, now=NOW), "signature") == {31, 32}


# --- anchors -------------------------------------------------------------------------------


def _with_anchor(bundle: Bundle, anchor: AnchorReceipt) -> Bundle:
    return Bundle.from_json({**bundle.to_json(), "anchors": [anchor.to_json()]})


def test_non_local_anchors_are_present_but_unchecked(bundle: Bundle) -> None:
    digest = bundle.anchors[0].digest
    for backend, receipt in [
        ("evm:chain-1337", {"chain_id": 1337, "tx": "0x" + "ab" * 32, "block": 7}),
        ("rfc3161:tsa-1", {"token": base64.b64encode(b"der").decode()}),
    ]:
        b = _with_anchor(bundle, AnchorReceipt(62, backend, digest, "final", receipt))
        report = verify_bundle(b, now=NOW)
        assert report.ok
        assert [a.status for a in report.anchors] == [UNCHECKED_STATUS]


def test_anchor_failures(bundle: Bundle) -> None:
    good = bundle.anchors[0]
    bad = [
        AnchorReceipt(63, "local", good.digest, "final", dict(good.receipt)),
        AnchorReceipt(62, "local", bytes(32), "final", dict(good.receipt)),
        AnchorReceipt(62, "evm", good.digest[:31], "final", {}),
        AnchorReceipt(62, "evm", bytes(32), "final", {}),
        AnchorReceipt(62, "local", good.digest, "pending", dict(good.receipt)),
        AnchorReceipt(62, "local", good.digest, "final", {"journal": "j", "seq": -1, "time": "x"}),
        AnchorReceipt(62, "local", good.digest, "final", {"journal": "j", "seq": 1, "time": "x"}),
        AnchorReceipt(62, "local", good.digest, "final", {"seq": 1, "time": good.receipt["time"]}),
        AnchorReceipt(62, "mocal", good.digest, "final", dict(good.receipt)),  # unknown kind
    ]
    for anchor in bad:
        report = verify_bundle(_with_anchor(bundle, anchor), now=NOW)
        assert checks(report) == {"anchors"}, anchor
        assert report.anchors[0].status.startswith("failed")
        assert report.failures[0].checkpoint == anchor.checkpoint


def test_anchor_digest_is_the_checkpoint_body_digest(bundle: Bundle) -> None:
    body = bundle.checkpoints[2].split("\n\n")[0] + "\n"
    import hashlib

    assert bundle.anchors[0].digest == hashlib.sha256(body.encode()).digest()


# --- completeness --------------------------------------------------------------------------


def test_a_seq_hole_without_a_gap_record_names_the_sensor(maker: BundleMaker) -> None:
    recs = maker.standard_records()
    maker.seq["ph-1"] += 2  # two ph-1 readings never logged
    recs.append(maker.reading("ph-1"))
    b = maker.build(recs, [20, 45, 63])
    report = verify_bundle(b, now=NOW)
    assert not report.ok
    assert [str(f) for f in report.failures] == [
        "entry 62: completeness: sensor ph-1: seq 20–21 missing "
        "(seq jumps from 19 at entry 59 to 22)"
    ]


def test_a_repeated_seq_fails(maker: BundleMaker) -> None:
    recs = maker.standard_records()
    maker.seq["temp-1"] -= 1
    recs.append(maker.reading("temp-1"))
    report = verify_bundle(maker.build(recs, [63]), now=NOW)
    assert named(report, "completeness") == {62}
    assert "temp-1" in report.failures[0].reason


def test_a_src_seq_jump_covered_by_a_gap_passes(maker: BundleMaker) -> None:
    recs = maker.standard_records()
    src = maker.src_seq["temp-1"]
    recs.append(maker.gap("temp-1", "crc error", (src + 1, src + 3)))
    recs.append(maker.reading("temp-1", skip_src=3))
    report = verify_bundle(maker.build(recs, [64]), now=NOW)
    assert report.ok, [str(f) for f in report.failures]


def test_a_src_seq_jump_partly_covered_fails(maker: BundleMaker) -> None:
    recs = maker.standard_records()
    src = maker.src_seq["temp-1"]
    recs.append(maker.gap("temp-1", "crc error", (src + 1, src + 1)))
    recs.append(maker.reading("temp-1", skip_src=3))
    report = verify_bundle(maker.build(recs, [64]), now=NOW)
    assert [str(f) for f in report.failures] == [
        f"entry 63: completeness: sensor temp-1: src_seq {src + 2}–{src + 3} skipped after "
        "entry 61 and no gap record covers it"
    ]


def test_an_uncovered_src_seq_jump_fails(maker: BundleMaker) -> None:
    recs = maker.standard_records()
    recs.append(maker.reading("ph-1", skip_src=1))
    report = verify_bundle(maker.build(recs, [63]), now=NOW)
    assert named(report, "completeness") == {62}
    assert "ph-1" in report.failures[0].reason
    assert "src_seq" in report.failures[0].reason


def test_a_src_seq_restart_is_allowed(maker: BundleMaker) -> None:
    recs = maker.standard_records()
    maker.src_seq["ph-1"] = 0  # the probe rebooted and counts from 1 again
    recs.append(maker.reading("ph-1"))
    assert verify_bundle(maker.build(recs, [63]), now=NOW).ok


def test_entries_beyond_the_largest_checkpoint_fail(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["checkpoints"] = doc["checkpoints"][:2]
    doc["consistency"] = doc["consistency"][:1]
    doc["anchors"] = []
    report = verify_doc(doc)
    assert named(report, "completeness") == set(range(45, 62))
    assert named(report, "inclusion") == set(range(45, 62))


def test_an_empty_bundle_does_not_verify(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["entries"] = []
    report = verify_doc(doc)
    assert not report.ok
    assert checks(report) == {"completeness"}


def test_records_of_another_device_or_index_fail(bundle: Bundle, maker: BundleMaker) -> None:
    doc = bundle.to_json()
    doc["device"] = "rs-other"
    report = verify_doc(doc)
    assert named(report, "record") == set(range(62))
    doc = bundle.to_json()
    doc["entries"][3]["index"] = 4
    report = verify_doc(doc)
    assert 4 in named(report, "record")


def test_all_failures_are_collected(bundle: Bundle) -> None:
    doc = bundle.to_json()
    doc["entries"][2]["inclusion"] = []
    doc["entries"][40]["entry"] = doc["entries"][40]["entry"].replace('"synced"', '"unknown"')
    del doc["entries"][50]
    doc["anchors"][0]["digest"] = "00" * 32
    report = verify_doc(doc)
    assert {2, 40, 50} <= named(report)
    assert {"inclusion", "signature", "completeness", "anchors"} <= checks(report)
    counts = {s.name: s.failed for s in report.steps}
    assert counts["anchors"] == 1
    assert sum(counts.values()) == len(report.failures)


def test_notes_on_clock_and_time(maker: BundleMaker) -> None:
    recs = maker.standard_records()
    recs[5]["clock"] = "unsynced"
    b = maker.build(recs, [62])
    from datetime import UTC, datetime

    report = verify_bundle(b, now=datetime(2026, 3, 1, 0, 10, tzinfo=UTC))
    assert report.ok
    assert any("not synced" in n for n in report.notes)
    assert any("dated after the verification time" in n for n in report.notes)


@pytest.mark.parametrize("sensor", SENSORS)
def test_each_sensor_is_counted(bundle: Bundle, sensor: str) -> None:
    assert verify_bundle(bundle, now=NOW).sensors[sensor].readings == 20


def test_verify_writes_nothing(bundle: Bundle, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)

    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("verify_bundle did IO")

    monkeypatch.setattr("builtins.open", no_io)
    assert verify_bundle(bundle, now=NOW).ok


def test_verify_is_deterministic(bundle: Bundle) -> None:
    a = verify_bundle(bundle, now=NOW)
    b = verify_bundle(bundle, now=NOW)
    assert a == b


def test_colliding_key_ids_need_one_key_that_both_signs_and_covers(
    bundle: Bundle, maker: BundleMaker
) -> None:
    import dataclasses
    from datetime import UTC, datetime

    real = maker.signer.verifier()
    other = Signer.from_seed(ORIGIN, OTHER_SEED).verifier()
    twin = dataclasses.replace(other, key_id=real.key_id)  # a 4-byte key ID collision
    early = datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)
    # The real key's window ends early; the twin covers everything but signed nothing.
    trust = [TrustedKey(real, None, early), TrustedKey(twin)]
    report = verify_bundle(bundle, trust, now=NOW)
    assert named(report, "signature") == set(range(1, 62))
    assert all("validity window" in f.reason for f in report.failures if f.check == "signature")

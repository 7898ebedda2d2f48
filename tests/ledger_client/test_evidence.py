"""One reading as evidence (C2SP tlog-proof@v1): strict parsing and the checklist.

Evidence is built purely from a bundle made the gateway's way (lc_bundles),
so these tests need nothing of the gateway.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable

import pytest

from ledger_client.bundle import Bundle, DeviceKey
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.errors import MalformedBundle
from ledger_client.evidence import PROOF_HEADER, Evidence, parse_evidence, verify_evidence
from ledger_client.note import Signer, split_note
from ledger_client.verify import LOCAL_STATUS, STEPS, Report
from tests.ledger_client.lc_bundles import NOW, ORIGIN, OTHER_SEED, BundleMaker


def evidence_for(bundle: Bundle, index: int) -> Evidence:
    be = next(e for e in bundle.entries if e.index == index)
    note = next(
        n for n in bundle.checkpoints if Checkpoint.parse(split_note(n)[0]).size == be.checkpoint
    )
    return Evidence(
        index=index,
        hashes=be.inclusion,
        checkpoint=note,
        device=bundle.device,
        keys=bundle.keys,
        entry=be.entry,
        anchors=tuple(a for a in bundle.anchors if a.checkpoint == be.checkpoint),
    )


@pytest.fixture
def ev(bundle: Bundle) -> Evidence:
    """Entry 50 of the standard bundle: under checkpoint 62, which has a local anchor."""
    return evidence_for(bundle, 50)


def check(ev: Evidence, maker: BundleMaker, *, trust: bool = True) -> Report:
    return verify_evidence(
        ev, [maker.signer.verifier()] if trust else None, now=NOW, anchor_checkers=()
    )


def test_round_trip_is_byte_exact_tlog_proof(ev: Evidence) -> None:
    data = ev.dumps()
    text = data.decode()
    lines = text.split("\n")
    assert lines[0] == PROOF_HEADER
    assert lines[1].startswith("extra ")
    assert lines[2] == "index 50"
    assert lines[3 : 3 + len(ev.hashes)] == [base64.b64encode(h).decode() for h in ev.hashes]
    assert lines[3 + len(ev.hashes)] == ""
    assert text.endswith(ev.checkpoint)
    extra = json.loads(base64.b64decode(lines[1][6:]))
    assert extra["format"] == "riverseal-evidence"
    assert extra["version"] == 1
    assert extra["entry"].encode() == ev.entry
    assert parse_evidence(data) == ev
    assert parse_evidence(data).dumps() == data


def test_evidence_verifies_with_eight_steps(ev: Evidence, maker: BundleMaker) -> None:
    report = check(ev, maker)
    assert report.ok, report.failures
    assert [s.name for s in report.steps] == list(STEPS)
    passed = {s.name: s.passed for s in report.steps}
    assert passed == {
        "keys": 1,
        "record": 1,
        "signature": 1,
        "inclusion": 1,
        "checkpoint": 1,
        "consistency": 0,
        "anchors": 1,
        "completeness": 0,
    }
    assert all(s.failed == 0 for s in report.steps)
    assert any("consistency (step 6) does not apply" in n for n in report.notes)
    assert any("completeness (step 8) does not apply" in n for n in report.notes)
    assert report.keys_trusted
    assert report.entries == 1
    assert report.checkpoints == (62,)
    assert report.origin == ORIGIN
    assert [(a.checkpoint, a.status) for a in report.anchors] == [(62, LOCAL_STATUS)]


def test_without_a_trust_list_the_keys_in_the_evidence_are_used_and_said_so(
    ev: Evidence, maker: BundleMaker
) -> None:
    report = check(ev, maker, trust=False)
    assert report.ok
    assert not report.keys_trusted
    assert any("NOT independently trusted" in n for n in report.notes)


def test_the_first_and_last_entries_verify(bundle: Bundle, maker: BundleMaker) -> None:
    for index in (0, 19, 20, 61):
        assert check(evidence_for(bundle, index), maker).ok, index


def failures(report: Report) -> set[tuple[str, int | None]]:
    return {(f.check, f.entry) for f in report.failures}


def test_an_altered_entry_fails_naming_it(ev: Evidence, maker: BundleMaker) -> None:
    entry = ev.entry.replace(b'"seq":', b'"seq":1', 1)
    report = check(dataclasses.replace(ev, entry=entry), maker)
    assert not report.ok
    assert ("signature", 50) in failures(report)
    assert ("inclusion", 50) in failures(report)
    assert any("does not lead to the root of checkpoint 62" in f.reason for f in report.failures)


def test_an_altered_hash_fails_inclusion(ev: Evidence, maker: BundleMaker) -> None:
    hashes = list(ev.hashes)
    hashes[2] = bytes([hashes[2][0] ^ 1]) + hashes[2][1:]
    report = check(dataclasses.replace(ev, hashes=tuple(hashes)), maker)
    assert failures(report) == {("inclusion", 50)}
    (f,) = report.failures
    assert f.reason == "the proof does not lead to the root of checkpoint 62"
    # and once written and read back, the same
    again = parse_evidence(dataclasses.replace(ev, hashes=tuple(hashes)).dumps())
    assert failures(check(again, maker)) == {("inclusion", 50)}


def test_a_missing_hash_fails_inclusion(ev: Evidence, maker: BundleMaker) -> None:
    report = check(dataclasses.replace(ev, hashes=ev.hashes[:-1]), maker)
    assert failures(report) == {("inclusion", 50)}
    assert "bad proof" in report.failures[0].reason


def test_a_checkpoint_from_another_key_fails(
    bundle: Bundle, ev: Evidence, maker: BundleMaker
) -> None:
    other = Signer.from_seed(ORIGIN, OTHER_SEED)  # same name and origin, another key
    body = Checkpoint.parse(split_note(ev.checkpoint)[0])
    forged = sign_checkpoint(body, other)
    report = check(dataclasses.replace(ev, checkpoint=forged), maker)
    assert not report.ok
    checks = {f.check for f in report.failures}
    assert "checkpoint" in checks
    assert ("inclusion", 50) in failures(report)
    assert any("no signature by a trusted key" in f.reason for f in report.failures)
    # A different tree signed by the other key fails inclusion as well as the signature.
    fake = Checkpoint(ORIGIN, 62, bytes(32))
    report = check(dataclasses.replace(ev, checkpoint=sign_checkpoint(fake, other)), maker)
    assert {"checkpoint", "inclusion"} <= {f.check for f in report.failures}


def test_an_index_off_by_one_fails(ev: Evidence, maker: BundleMaker) -> None:
    for index in (49, 51):
        report = check(dataclasses.replace(ev, index=index), maker)
        assert ("record", index) in failures(report)
        assert ("inclusion", index) in failures(report)
        assert any("the record says index 50" in f.reason for f in report.failures)


def test_an_index_beyond_the_checkpoint_fails(ev: Evidence, maker: BundleMaker) -> None:
    report = check(dataclasses.replace(ev, index=62), maker)
    assert not report.ok
    assert report.failure_count == len(report.failures) > 0
    assert ("inclusion", 62) in failures(report)
    assert report.step("completeness").failed == 0  # it does not apply; inclusion said it


def test_anchor_of_another_checkpoint_or_digest_fails(ev: Evidence, maker: BundleMaker) -> None:
    (anchor,) = ev.anchors
    moved = dataclasses.replace(anchor, checkpoint=45)
    report = check(dataclasses.replace(ev, anchors=(moved,)), maker)
    assert [f.check for f in report.failures] == ["anchors"]
    bad = dataclasses.replace(anchor, digest=bytes(32))
    report = check(dataclasses.replace(ev, anchors=(bad,)), maker)
    assert [f.check for f in report.failures] == ["anchors"]
    assert "not the checkpoint's digest" in report.failures[0].reason


def test_no_anchor_verifies_with_a_note(ev: Evidence, maker: BundleMaker) -> None:
    report = check(dataclasses.replace(ev, anchors=()), maker)
    assert report.ok
    assert any("no anchor receipt" in n for n in report.notes)


def test_a_record_of_another_device_fails(ev: Evidence, maker: BundleMaker) -> None:
    report = check(dataclasses.replace(ev, device="rs-other"), maker)
    assert ("record", 50) in failures(report)


# --- strict parsing ----------------------------------------------------------------------


def _lines(ev: Evidence) -> list[str]:
    return ev.dumps().decode().split("\n")


def _join(lines: list[str]) -> bytes:
    return "\n".join(lines).encode()


def _extra(ev: Evidence, **changes: object) -> str:
    doc = {**ev.extra_json(), **changes}
    return "extra " + base64.b64encode(json.dumps(doc).encode()).decode()


Mutation = Callable[[list[str], Evidence], list[str]]

MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "header": (lambda ls, ev: ["c2sp.org/tlog-proof@v2", *ls[1:]], "line 1"),
    "header with space": (lambda ls, ev: [ls[0] + " ", *ls[1:]], "line 1"),
    "no extra": (lambda ls, ev: [ls[0], *ls[2:]], "line 2"),
    "extra not base64": (lambda ls, ev: [ls[0], "extra !!", *ls[2:]], "line 2"),
    "extra not canonical base64": (
        lambda ls, ev: (
            [ls[0], ls[1].rstrip("=") + "", *ls[2:]]
            if ls[1].endswith("=")
            else [ls[0], "extra QQ", *ls[2:]]
        ),
        "line 2",
    ),
    "extra not JSON": (
        lambda ls, ev: [ls[0], "extra " + base64.b64encode(b"{").decode(), *ls[2:]],
        "line 2",
    ),
    "extra wrong format": (lambda ls, ev: [ls[0], _extra(ev, format="x"), *ls[2:]], "line 2"),
    "extra version 1.0": (lambda ls, ev: [ls[0], _extra(ev, version=1.0), *ls[2:]], "line 2"),
    "extra version true": (lambda ls, ev: [ls[0], _extra(ev, version=True), *ls[2:]], "line 2"),
    "extra no entry": (lambda ls, ev: [ls[0], _extra(ev, entry=None), *ls[2:]], "line 2"),
    "extra keys not a list": (lambda ls, ev: [ls[0], _extra(ev, keys={}), *ls[2:]], "line 2"),
    "extra bad anchor": (lambda ls, ev: [ls[0], _extra(ev, anchors=[{}]), *ls[2:]], "line 2"),
    "no index": (lambda ls, ev: [*ls[:2], *ls[3:]], "line 3"),
    "index leading zero": (lambda ls, ev: [*ls[:2], "index 050", *ls[3:]], "line 3"),
    "index negative": (lambda ls, ev: [*ls[:2], "index -1", *ls[3:]], "line 3"),
    "index two spaces": (lambda ls, ev: [*ls[:2], "index  50", *ls[3:]], "line 3"),
    "hash not base64": (lambda ls, ev: [*ls[:4], "not*base64", *ls[5:]], "line 5"),
    "hash 31 bytes": (
        lambda ls, ev: [*ls[:3], base64.b64encode(bytes(31)).decode(), *ls[4:]],
        "line 4",
    ),
    "hash without padding": (lambda ls, ev: [*ls[:3], ls[3].rstrip("="), *ls[4:]], "line 4"),
    "no blank line": (
        lambda ls, ev: [*ls[:3], *[x for x in ls[3:] if x != ""]],
        "line",
    ),
    "checkpoint unsigned": (
        lambda ls, ev: [*ls[: ls.index("") + 1], ORIGIN, "62", ls[-4], ""],
        r"line \d+ \(the checkpoint\)",
    ),
    "file ends after the hashes": (lambda ls, ev: ls[: ls.index("") + 1], r"line \d+: the file"),
    "checkpoint missing": (
        lambda ls, ev: [*ls[: ls.index("") + 1], ""],
        r"line \d+ \(the checkpoint\): missing",
    ),
    "checkpoint body bad": (
        lambda ls, ev: [*ls[: ls.index("") + 1], ORIGIN, "062", *ls[ls.index("") + 3 :]],
        r"line \d+ \(the checkpoint\)",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_malformed_evidence_is_refused_naming_the_line(ev: Evidence, name: str) -> None:
    mutate, where = MUTATIONS[name]
    data = _join(mutate(_lines(ev), ev))
    with pytest.raises(MalformedBundle, match=f"evidence {where}"):
        parse_evidence(data)


def test_not_utf8_and_crlf_are_refused(ev: Evidence) -> None:
    with pytest.raises(MalformedBundle, match="not UTF-8"):
        parse_evidence(b"\xff" + ev.dumps())
    with pytest.raises(MalformedBundle, match="line 1"):
        parse_evidence(ev.dumps().replace(b"\n", b"\r\n"))
    with pytest.raises(MalformedBundle, match="line 1"):
        parse_evidence(b"")


def test_the_extra_line_is_not_trusted_for_the_verdict(ev: Evidence, maker: BundleMaker) -> None:
    """Keys in ``extra`` are ignored when a trust list is given."""
    stranger = Signer.from_seed("someone/else", OTHER_SEED)
    swapped = dataclasses.replace(ev, keys=(DeviceKey(stranger.verifier().to_vkey()),))
    report = check(swapped, maker)
    assert report.ok
    assert report.ignored_keys == (stranger.key_id.hex(),)

"""Step 7's seam for online anchor checks, and the "recorded no later than" ranges.

The checkers here are test doubles of the AnchorChecker interface, standing in
for a ledger only to pin down what the verifier does with their answers; the
real EVM and RFC 3161 checkers are tested against a real anvil node and a real
openssl TSA in their own modules.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from ledger_client.anchors import AnchorEvidence
from ledger_client.bundle import AnchorReceipt, Bundle
from ledger_client.checkpoint import Checkpoint
from ledger_client.errors import AnchorCheckError, LedgerUnreachable
from ledger_client.note import Verifier, split_note
from ledger_client.verify import UNCHECKED_STATUS, VERIFIED_STATUS, Level, verify_bundle
from tests.ledger_client.lc_bundles import NOW, BundleMaker


class Ledger:
    """Answers for backend "evm:<name>" from a table of checkpoint size → outcome."""

    def __init__(self, outcomes: dict[int, datetime | Exception]) -> None:
        self.outcomes = outcomes
        self.asked: list[int] = []

    def handles(self, backend: str) -> bool:
        return backend.startswith("evm:")

    def check(self, anchor: AnchorReceipt) -> AnchorEvidence:
        self.asked.append(anchor.checkpoint)
        outcome = self.outcomes[anchor.checkpoint]
        if isinstance(outcome, Exception):
            raise outcome
        return AnchorEvidence(outcome, f"confirmed size {anchor.checkpoint}")


def _anchored(sizes: list[int], n: int = 12) -> Bundle:
    m = BundleMaker()
    bundle = m.build([m.reading("ph-1") for _ in range(n)], sizes, anchor=False)
    anchors = []
    for note in bundle.checkpoints:
        cp = Checkpoint.parse(split_note(note)[0])
        anchors.append(
            AnchorReceipt(cp.size, "evm:test-chain", cp.digest(), "final", {"tx": cp.size})
        )
    return dataclasses.replace(bundle, anchors=tuple(anchors))


def t(hour: int) -> datetime:
    return datetime(2026, 5, 1, hour, tzinfo=UTC)


def test_without_a_checker_receipts_are_unchecked_never_verified() -> None:
    report = verify_bundle(_anchored([4, 8, 12]), now=NOW)
    assert report.ok
    assert {a.status for a in report.anchors} == {UNCHECKED_STATUS}
    assert report.recorded_by == ()
    assert any("no anchor was checked" in n for n in report.notes)


def test_confirmed_anchors_bound_the_entries_they_cover() -> None:
    ledger = Ledger({4: t(10), 8: t(9), 12: t(11)})
    report = verify_bundle(_anchored([4, 8, 12]), now=NOW, anchor_checkers=[ledger])
    assert report.ok, report.failures
    assert sorted(ledger.asked) == [4, 8, 12]
    assert all(a.status == VERIFIED_STATUS for a in report.anchors)
    # Entries 0-7 are covered by checkpoint 8 (09:00), earlier than checkpoint 4's 10:00.
    ranges = [(r.first, r.last, r.time) for r in report.recorded_by]
    assert ranges == [
        (0, 7, "2026-05-01T09:00:00.000000Z"),
        (8, 11, "2026-05-01T11:00:00.000000Z"),
    ]


def test_a_contradicting_or_unreachable_ledger_fails_the_anchor_step() -> None:
    ledger = Ledger(
        {
            4: t(10),
            8: AnchorCheckError("the calldata is not the checkpoint digest"),
            12: LedgerUnreachable("node http://127.0.0.1:1 refused the connection"),
        }
    )
    report = verify_bundle(_anchored([4, 8, 12]), now=NOW, anchor_checkers=[ledger])
    assert not report.ok
    failed = {f.checkpoint: f.reason for f in report.failures if f.check == "anchors"}
    assert "calldata" in failed[8] and "refused" in failed[12]
    assert set(failed) == {8, 12}
    # Only the confirmed checkpoint bounds anything.
    assert [(r.first, r.last) for r in report.recorded_by] == [(0, 3)]


def test_a_checker_time_without_a_zone_is_not_a_verdict() -> None:
    ledger = Ledger({4: datetime(2026, 5, 1, 10), 8: t(9), 12: t(11)})
    report = verify_bundle(_anchored([4, 8, 12]), now=NOW, anchor_checkers=[ledger])
    assert not report.ok
    assert [f.checkpoint for f in report.failures] == [4]


# --- verdict levels (docs/bundle-format.md §9.1) --------------------------------------------


def _trusted(bundle: Bundle) -> list[Verifier]:
    return [Verifier.from_vkey(k.vkey) for k in bundle.keys]


def test_each_verdict_level_and_what_it_needs() -> None:
    from ledger_client.cli import exit_status

    bundle = _anchored([4, 8, 12])
    ledger = Ledger({4: t(10), 8: t(9), 12: t(11)})
    cases = {
        # no trust file: the bundle's own keys prove nothing, however well anchored
        "untrusted-key": verify_bundle(bundle, now=NOW, anchor_checkers=[ledger]),
        # trusted keys, receipts present but unchecked (offline)
        "authentic-undated": verify_bundle(bundle, _trusted(bundle), now=NOW),
        # trusted keys and no anchor at all
        "authentic-undated ": verify_bundle(
            dataclasses.replace(bundle, anchors=()), _trusted(bundle), now=NOW
        ),
        # trusted keys and an independently checked anchor: the only VERIFIED
        "verified": verify_bundle(bundle, _trusted(bundle), now=NOW, anchor_checkers=[ledger]),
    }
    for want, report in cases.items():
        assert report.ok and report.failure_count == 0, (want, report.failures)
        assert report.level.value == want.strip(), want
        assert report.verified is (want == "verified")
        assert report.to_json()["verified"] is (want == "verified")
    assert [exit_status(r.level) for r in cases.values()] == [4, 3, 3, 0]
    offline = cases["authentic-undated"]
    step7 = offline.step("anchors")
    assert (step7.passed, step7.skipped, step7.failed) == (0, 3, 0)  # never "passed"
    # Any failure is FAILED, exit 1, whatever else holds.
    ledger = Ledger({4: t(10), 8: AnchorCheckError("the node has no such transaction"), 12: t(11)})
    failed = verify_bundle(bundle, _trusted(bundle), now=NOW, anchor_checkers=[ledger])
    assert failed.level is Level.FAILED and exit_status(failed.level) == 1
    assert not failed.verified

"""A third party's anchor checker, written only against ``ledger_client``'s top-level names.

Someone who confirms receipts against a ledger of their own choosing (here an
EVM chain read through their own explorer, stood in for by a table of what it
saw) imports ``ledger_client`` and nothing below it: the checker interface, its
evidence, its two errors, and ``verify_source`` with its ``Report`` and ``Level``.
Only the bundle itself is built with the test harness (``lc_bundles``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import ledger_client as lc
from ledger_client.note import split_note
from tests.ledger_client.lc_bundles import NOW, BundleMaker

CHAIN = "evm:explorer-chain"


class ExplorerChecker:
    """What the explorer says about each transaction: its block time, or nothing."""

    def __init__(self, seen: Mapping[str, datetime], *, reachable: bool = True) -> None:
        self.seen = seen
        self.reachable = reachable
        self.asked: list[int] = []

    def handles(self, backend: str) -> bool:
        return backend == CHAIN

    def check(self, anchor: lc.AnchorReceipt) -> lc.AnchorEvidence:
        self.asked.append(anchor.checkpoint)
        if not self.reachable:
            raise lc.LedgerUnreachable("the explorer did not answer")
        tx = str(anchor.receipt["tx"])
        if tx not in self.seen:
            raise lc.AnchorCheckError(f"the explorer knows no transaction {tx}")
        return lc.AnchorEvidence(self.seen[tx], f"tx {tx} seen by the explorer")


def _checker_is_an_anchor_checker(checker: ExplorerChecker) -> lc.AnchorChecker:
    return checker  # mypy checks the protocol here; at run time it is duck-typed


def _anchored_bundle(write_bundle: Callable[[lc.Bundle], Path]) -> tuple[Path, list[lc.Verifier]]:
    maker = BundleMaker()
    bundle = maker.build([maker.reading("ph-1") for _ in range(12)], [6, 12], anchor=False)
    receipts = []
    for note in bundle.checkpoints:
        checkpoint = lc.Checkpoint.parse(split_note(note)[0])
        receipts.append(
            lc.AnchorReceipt(
                checkpoint.size,
                CHAIN,
                checkpoint.digest(),
                "final",
                {"tx": f"0x{checkpoint.size:02x}"},
            )
        )
    bundle = dataclasses.replace(bundle, anchors=tuple(receipts))
    trusted = [lc.Verifier.from_vkey(key.vkey) for key in bundle.keys]
    return write_bundle(bundle), trusted


def verify(path: Path, trusted: list[lc.Verifier], checker: ExplorerChecker) -> lc.Report:
    return lc.verify_source(
        path, trusted, now=NOW, anchor_checkers=[_checker_is_an_anchor_checker(checker)], jobs=1
    )


def test_a_confirming_third_party_checker_makes_the_bundle_verified(
    write_bundle: Callable[[lc.Bundle], Path],
) -> None:
    path, trusted = _anchored_bundle(write_bundle)
    block_time = datetime(2026, 5, 1, 9, tzinfo=UTC)
    checker = ExplorerChecker({"0x06": block_time, "0x0c": block_time})
    report = verify(path, trusted, checker)
    assert report.ok, report.failures
    assert report.level is lc.Level.VERIFIED
    assert sorted(checker.asked) == [6, 12]
    assert all(isinstance(a, lc.AnchorResult) and a.verified for a in report.anchors)
    assert {a.detail for a in report.anchors} == {
        "tx 0x06 seen by the explorer",
        "tx 0x0c seen by the explorer",
    }
    assert [(r.first, r.last) for r in report.recorded_by] == [(0, 11)]


def test_its_contradiction_or_silence_fails_the_bundle(
    write_bundle: Callable[[lc.Bundle], Path],
) -> None:
    path, trusted = _anchored_bundle(write_bundle)
    unknown = verify(path, trusted, ExplorerChecker({"0x06": datetime(2026, 5, 1, tzinfo=UTC)}))
    assert unknown.level is lc.Level.FAILED
    assert [(f.check, f.checkpoint) for f in unknown.failures] == [("anchors", 12)]
    assert "knows no transaction 0x0c" in unknown.failures[0].reason

    offline = verify(path, trusted, ExplorerChecker({}, reachable=False))
    assert offline.level is lc.Level.FAILED
    assert {f.checkpoint for f in offline.failures} == {6, 12}
    assert all("did not answer" in f.reason for f in offline.failures)

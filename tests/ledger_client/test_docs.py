"""docs/bundle-format.md stays true: its example verifies and its checklist is ours."""

from __future__ import annotations

import re
from pathlib import Path

from lc_bundles import NOW, doc_example

from ledger_client.bundle import Bundle
from ledger_client.verify import LOCAL_STATUS, STEPS, verify_bundle

DOC = Path(__file__).resolve().parents[2] / "docs" / "bundle-format.md"


def _example() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- example-bundle:start -->")[1].split("<!-- example-bundle:end -->")[0]
    return block.strip().removeprefix("```json").removesuffix("```").strip() + "\n"


def test_the_worked_example_verifies() -> None:
    bundle = Bundle.loads(_example())
    report = verify_bundle(bundle, now=NOW)
    assert report.verified, [str(f) for f in report.failures]
    assert report.entries == 4
    assert [a.status for a in report.anchors] == [LOCAL_STATUS]


def test_the_worked_example_is_what_the_code_makes() -> None:
    assert _example() == doc_example().dumps()


def test_the_documented_checklist_is_the_verifiers() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## 9. Verification checklist")[1].split("## 10.")[0]
    steps = re.findall(r"^(\d)\. \*\*(\w+)\.\*\*", section, flags=re.MULTILINE)
    assert steps == [(str(i), name) for i, name in enumerate(STEPS, start=1)]

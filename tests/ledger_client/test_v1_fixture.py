"""The committed v1 fixture (tests/fixtures/v1) keeps verifying, unchanged.

The fixture files were written once by the 0.1.0 gateway and must never be
regenerated: their SHA-256 is pinned here. Expected counts are derived from
the files themselves with plain ``json``, independently of ledger_client.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import Bundle
from ledger_client.canonical import canonical_bytes
from ledger_client.cli import main
from ledger_client.trust import parse_trust
from ledger_client.verify import verify_bundle

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
TRUST = FIXTURE / "trust.txt"
BUNDLES = ["bundle.json", "bundle-partial.json"]

PINNED_SHA256 = {
    "bundle.json": "4588c0963e5282b86d38daeda0282ee840d71def0b5f77f69ba1b25f0f5f813a",
    "bundle-partial.json": "485ec84f9b421e948380e31252e561c377695f6462d0a0f8c2db1634559a16fc",
    "trust.txt": "cc6bc8ef12de2e97720b762892d52aaea9ce5825bee3d1d0a4d3c6689840cc3a",
}


def _doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURE / name).read_text(encoding="utf-8"))
    return doc


def _expected(doc: dict[str, Any]) -> dict[str, Any]:
    """What a verifier must report, read straight from the file."""
    recs = [json.loads(e["entry"])["rec"] for e in doc["entries"]]
    sensors: dict[str, dict[str, Any]] = {}
    for rec in recs:
        if rec["kind"] not in ("reading", "gap"):
            continue
        counts = sensors.setdefault(
            rec["sensor"],
            {
                "readings": 0,
                "gaps": 0,
                "first": None,
                "last": None,
                "unsynced": 0,
                "qc": {},
                "late": 0,  # the 0.1.0 gateway logged every node's messages in order
                "gap_spans": [],
                "gap_spans_more": 0,
            },
        )
        counts["unsynced"] += rec["clock"] != "synced"
        if rec["kind"] == "gap":
            counts["gaps"] += 1
            spans = counts["gap_spans"]
            last = spans[-1] if spans else None
            if last and last["reason"] == rec["reason"] and rec["from"] <= last["to"]:
                last["to"] = max(last["to"], rec["to"])
                last["records"] += 1
            else:
                spans.append(
                    {"from": rec["from"], "to": rec["to"], "reason": rec["reason"], "records": 1}
                )
            continue
        counts["readings"] += 1
        counts["first"] = min(counts["first"] or rec["time"], rec["time"])
        counts["last"] = max(counts["last"] or rec["time"], rec["time"])
        for value in rec["values"]:
            if "qc" in value:
                flag = str(value["qc"]["flag"])
                counts["qc"][flag] = counts["qc"].get(flag, 0) + 1
    return {
        "entries": len(doc["entries"]),
        "first_index": doc["entries"][0]["index"],
        "last_index": doc["entries"][-1]["index"],
        "checkpoints": [int(note.split("\n")[1]) for note in doc["checkpoints"]],
        "sensors": sensors,
        "events": Counter(r["kind"] for r in recs)["event"],
        "anchors": [a["checkpoint"] for a in doc["anchors"]],
        "device": doc["device"],
        "origin": doc["origin"],
    }


@pytest.mark.parametrize("name", sorted(PINNED_SHA256))
def test_the_fixture_is_byte_identical_to_the_committed_one(name: str) -> None:
    digest = hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest()
    assert digest == PINNED_SHA256[name], (
        f"tests/fixtures/v1/{name} changed: it must never be regenerated "
        "(see tests/fixtures/v1/README.md); restore it from git"
    )


def test_the_fixture_covers_what_it_claims() -> None:
    """A sanity check of the fixture's shape, so the tests below test something."""
    full, partial = _expected(_doc("bundle.json")), _expected(_doc("bundle-partial.json"))
    assert full["entries"] >= 500
    assert len(full["sensors"]) == 3
    assert sum(c["gaps"] for c in full["sensors"].values()) >= 1
    assert full["events"] >= 1
    assert len(full["checkpoints"]) >= 3
    assert full["anchors"]
    assert partial["first_index"] > 0
    assert partial["last_index"] < full["last_index"]


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_bundle_accepts_the_fixture(name: str) -> None:
    want = _expected(_doc(name))
    bundle = Bundle.loads((FIXTURE / name).read_bytes())
    now = datetime.now(UTC)
    for trusted in (parse_trust(TRUST.read_bytes()), None):
        report = verify_bundle(bundle, trusted, now=now)
        assert report.ok, [str(f) for f in report.failures]
        assert report.keys_trusted is (trusted is not None)
        assert report.entries == want["entries"]
        assert (report.first_index, report.last_index) == (want["first_index"], want["last_index"])
        assert list(report.checkpoints) == want["checkpoints"]
        assert {s: c.to_json() for s, c in report.sensors.items()} == want["sensors"]
        assert report.events == want["events"]
        assert [a.checkpoint for a in report.anchors] == want["anchors"]
        assert all(a.status == "local, not independent" for a in report.anchors)


@pytest.mark.parametrize("name", BUNDLES)
def test_ledger_verify_json_with_trust_exits_3_not_dated(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    want = _expected(_doc(name))
    rc = main([str(FIXTURE / name), "--trust", str(TRUST), "--json"])
    out, err = capsys.readouterr()
    assert (rc, err) == (3, "")  # trusted keys, only local anchors
    got = json.loads(out)
    assert got["verified"] is False and got["level"] == "authentic-undated"
    assert got["failures"] == []
    assert got["keys_trusted"] is True
    assert got["ignored_keys"] == []
    for member in (
        "entries",
        "first_index",
        "last_index",
        "checkpoints",
        "sensors",
        "events",
        "device",
        "origin",
    ):
        assert got[member] == want[member], member
    assert [a["checkpoint"] for a in got["anchors"]] == want["anchors"]
    assert all(step["ok"] for step in got["steps"])


@pytest.mark.parametrize("name", BUNDLES)
def test_ledger_verify_human_output_exits_3(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    want = _expected(_doc(name))
    rc = main([str(FIXTURE / name), "--trust", str(TRUST)])
    out, _ = capsys.readouterr()
    assert rc == 3, out
    assert out.splitlines()[-1].startswith(
        f"AUTHENTIC, NOT INDEPENDENTLY DATED: {want['entries']} entries from device "
        f"{want['device']}, "
    )
    assert "NOT independently trusted" not in out


@pytest.mark.parametrize("name", BUNDLES)
def test_a_changed_reading_in_a_copy_fails_naming_its_entry(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _doc(name)
    # The middle reading of the bundle: its first value moves by 0.5, re-encoded
    # canonically, its signature kept.
    readings = [
        i
        for i, e in enumerate(doc["entries"])
        if json.loads(e["entry"])["rec"]["kind"] == "reading"
        and json.loads(e["entry"])["rec"]["values"][0]["v"] is not None
    ]
    pos = readings[len(readings) // 2]
    entry = json.loads(doc["entries"][pos]["entry"])
    entry["rec"]["values"][0]["v"] += 0.5
    doc["entries"][pos]["entry"] = canonical_bytes(entry).decode("utf-8")
    index = doc["entries"][pos]["index"]
    altered = tmp_path / name
    altered.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    rc = main([str(altered), "--trust", str(TRUST), "--json"])
    out, _ = capsys.readouterr()
    assert rc == 1
    got = json.loads(out)
    assert got["verified"] is False
    assert got["failures"]
    assert {f["entry"] for f in got["failures"]} == {index}
    assert {f["check"] for f in got["failures"]} >= {"signature", "inclusion"}

    rc = main([str(altered), "--trust", str(TRUST)])
    out, _ = capsys.readouterr()
    assert rc == 1
    assert re.search(rf"entry {index} \(.*\): signature:", out), out
    assert out.splitlines()[-1].startswith("FAILED: ")
    # The original is untouched.
    assert hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest() == PINNED_SHA256[name]

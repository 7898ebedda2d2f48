"""ledger-verify: exit codes, human output, --json, and python -m ledger_client."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import Bundle
from ledger_client.cli import MAX_PRINTED_FAILURES, main
from ledger_client.note import Signer
from tests.ledger_client.lc_bundles import ORIGIN, OTHER_SEED, BundleMaker

Write = Callable[[Any], Path]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_good_bundle_without_trust_is_untrusted_key_exit_4(
    bundle: Bundle, write_bundle: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    """No trust file: nothing is wrong, but the keys prove nothing (exit 4, never 0)."""
    rc, out, err = run(capsys, write_bundle(bundle))
    assert rc == 4, out
    assert err == ""
    lines = out.splitlines()
    for number, name in enumerate(
        [
            "keys",
            "record",
            "signature",
            "inclusion",
            "checkpoint",
            "consistency",
            "anchors",
            "completeness",
        ],
        start=1,
    ):
        assert any(line.startswith(f" {number} ✓ {name}") for line in lines), name
    assert lines[-1].startswith(
        "UNTRUSTED KEY: 62 entries from device rs-0a1b2c, 2026-03-01T00:00:20.000000Z to "
        "2026-03-01T00:20:40.000000Z, consistent under the bundle's own keys, which are NOT "
        "independently trusted"
    )
    assert "local, not independent" in out


def test_json_verdict(
    bundle: Bundle, write_bundle: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, write_bundle(bundle), "--json")
    assert rc == 4
    doc = json.loads(out)
    assert doc["verified"] is False
    assert doc["level"] == "untrusted-key" and doc["verdict"] == "UNTRUSTED KEY"
    assert doc["entries"] == 62
    assert doc["failures"] == []
    assert doc["keys_trusted"] is False
    assert [s["name"] for s in doc["steps"]][:3] == ["keys", "record", "signature"]
    assert doc["sensors"]["do-1"]["readings"] == 20
    assert doc["sensors"]["do-1"]["gaps"] == 1
    assert doc["anchors"][0]["status"] == "local, not independent"


def test_trust_file(
    bundle: Bundle,
    maker: BundleMaker,
    write_bundle: Write,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trust = tmp_path / "trust.txt"
    trust.write_text(f"# our station\nkey {maker.signer.verifier().to_vkey()}\n")
    rc, out, _ = run(capsys, write_bundle(bundle), "--trust", trust)
    assert rc == 3  # trusted, but only a local anchor: not independently dated
    assert out.splitlines()[-1].startswith("AUTHENTIC, NOT INDEPENDENTLY DATED: 62 entries")
    assert "from your trust file" in out
    assert "NOT independently trusted" not in out
    rc, out, _ = run(capsys, write_bundle(bundle), "--trust", trust, "--json")
    doc = json.loads(out)
    assert doc["keys_trusted"] is True and doc["level"] == "authentic-undated"
    assert doc["verified"] is False


def test_a_wrong_trust_key_exits_1(
    bundle: Bundle, write_bundle: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = tmp_path / "trust.txt"
    trust.write_text(f"key {Signer.from_seed(ORIGIN, OTHER_SEED).verifier().to_vkey()}\n")
    rc, out, _ = run(capsys, write_bundle(bundle), "--trust", trust)
    assert rc == 1
    assert " 3 ✗ signature" in out
    assert out.splitlines()[-1].startswith("FAILED: ")
    total = int(out.splitlines()[-1].split()[1])
    assert total > MAX_PRINTED_FAILURES
    assert f"  … and {total - MAX_PRINTED_FAILURES} more" in out  # printing is capped


def _tampered(bundle: Bundle, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = bundle.to_json()
    edit(doc)
    return doc


def _change_value(doc: dict[str, Any]) -> None:
    text = doc["entries"][17]["entry"]
    at = text.rindex('"v":') + 4  # the reading's value (the record's "v" sorts before "values")
    doc["entries"][17]["entry"] = text[:at] + "1" + text[at:]


def _delete(doc: dict[str, Any]) -> None:
    del doc["entries"][17]


def _swap(doc: dict[str, Any]) -> None:
    doc["entries"][17], doc["entries"][18] = doc["entries"][18], doc["entries"][17]


def _other_signature(doc: dict[str, Any]) -> None:
    other = Signer.from_seed(ORIGIN, OTHER_SEED)
    text = doc["entries"][17]["entry"]
    rec = text[len('{"rec":') : text.rindex(',"sig":')].encode()
    sig = base64.b64encode(other.sign(rec)).decode()
    doc["entries"][17]["entry"] = f'{{"rec":{rec.decode()},"sig":"{sig}"}}'


def _checkpoint_root(doc: dict[str, Any]) -> None:
    origin, size, root, rest = doc["checkpoints"][0].split("\n", 3)
    raw = bytearray(base64.b64decode(root))
    raw[31] ^= 1
    doc["checkpoints"][0] = "\n".join([origin, size, base64.b64encode(raw).decode(), rest])


def _truncate_proof(doc: dict[str, Any]) -> None:
    doc["entries"][17]["inclusion"].pop()


@pytest.mark.parametrize(
    ("edit", "check"),
    [
        (_change_value, "signature"),
        (_delete, "completeness"),
        (_swap, "completeness"),
        (_other_signature, "signature"),
        (_checkpoint_root, "inclusion"),
        (_truncate_proof, "inclusion"),
    ],
    ids=["value-changed", "deleted", "swapped", "other-key", "checkpoint-root", "proof-truncated"],
)
def test_tampering_exits_1_and_names_entry_17(
    bundle: Bundle,
    write_bundle: Write,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], None],
    check: str,
) -> None:
    path = write_bundle(_tampered(bundle, edit))
    rc, out, _ = run(capsys, path)
    assert rc == 1
    assert re.search(rf"^  entry 17( \([^)]*\))?: {check}: ", out, re.M), out
    assert out.splitlines()[-1].startswith("FAILED: ")
    rc, out, _ = run(capsys, path, "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["verified"] is False
    assert any(f["entry"] == 17 and f["check"] == check for f in doc["failures"])
    assert set(doc["failures"][0]) == {
        "entry",
        "checkpoint",
        "sensor",
        "time",
        "values",
        "check",
        "reason",
    }


def test_a_changed_checkpoint_root_names_the_checkpoint(
    bundle: Bundle, write_bundle: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, write_bundle(_tampered(bundle, _checkpoint_root)))
    assert rc == 1
    assert "checkpoint 20: checkpoint: " in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"format": "something-else", "version": 1}', "format"),
        (b'{"format": "riverseal-bundle", "version": 2}', "version 2"),
        (b'{"format": "riverseal-bundle", "version": 1}', "missing"),
    ],
)
def test_unreadable_input_exits_2(
    write_bundle: Write, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = write_bundle(content)
    rc, out, err = run(capsys, path)
    assert rc == 2
    assert out == ""
    assert err.startswith("ledger-verify: ")
    assert message in err
    assert err.count("\n") == 1  # one line a person can act on
    rc, out, err = run(capsys, path, "--json")
    assert rc == 2
    assert json.loads(out)["verified"] is False


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, tmp_path / "nope.json")
    assert rc == 2
    assert "cannot read bundle" in err
    assert "No such file" in err


def test_a_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, tmp_path)
    assert rc == 2
    assert "cannot read bundle" in err


def test_bad_trust_files_exit_2(
    bundle: Bundle, write_bundle: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_bundle(bundle)
    rc, _, err = run(capsys, path, "--trust", tmp_path / "missing.txt")
    assert rc == 2
    assert "cannot read trust file" in err
    bad = tmp_path / "bad.txt"
    bad.write_text("# fine\nkey garbage\n")
    rc, _, err = run(capsys, path, "--trust", bad)
    assert rc == 2
    assert "line 2" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    rc, _, err = run(capsys, path, "--trust", empty)
    assert rc == 2


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    capsys.readouterr()


def test_many_failures_are_capped(
    bundle: Bundle, write_bundle: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = bundle.to_json()
    doc["device"] = "rs-someone-else"
    rc, out, _ = run(capsys, write_bundle(doc))
    assert rc == 1
    printed = [line for line in out.splitlines() if line.startswith("  entry ")]
    assert len(printed) == MAX_PRINTED_FAILURES
    assert f"  … and {62 - MAX_PRINTED_FAILURES} more" in out
    assert out.splitlines()[-1] == "FAILED: 62 problems"


@pytest.mark.parametrize(
    "how",
    [
        ["-m", "ledger_client"],
        ["-c", "from ledger_client.cli import main; raise SystemExit(main())"],
    ],
)
def test_runs_as_a_module(bundle: Bundle, write_bundle: Write, how: list[str]) -> None:
    path = write_bundle(bundle)
    done = subprocess.run(
        [sys.executable, *how, str(path), "--json"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["level"] == "untrusted-key"
    done = subprocess.run(
        [sys.executable, *how, str(path) + ".missing"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("ledger-verify: cannot read bundle")


def test_output_survives_a_non_utf8_terminal(bundle: Bundle, write_bundle: Write) -> None:
    path = write_bundle(bundle)
    done = subprocess.run(
        [sys.executable, "-m", "ledger_client", str(path)],
        capture_output=True,
        check=False,
        env={"PYTHONIOENCODING": "ascii", "PATH": ""},
    )
    assert done.returncode == 4, done.stderr
    assert b"UNTRUSTED KEY" in done.stdout


def test_a_gnu_tar_is_refused_as_not_posix_ustar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tar file in GNU tar's own format is not read as JSON: the message says what to make."""
    (tmp_path / "riverseal-bundle.json").write_text("{}")
    bundle = tmp_path / "gnu.tar"
    subprocess.run(
        ["tar", "--format=gnu", "-cf", str(bundle), "-C", str(tmp_path), "riverseal-bundle.json"],
        check=True,
    )
    assert main([str(bundle), "--json"]) == 2
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["failure_count"] == 0 and doc["failures"] == [] and doc["verified"] is False
    assert "GNU tar header" in doc["error"] and "POSIX ustar" in doc["error"]
    assert out.err.startswith("ledger-verify: ") and out.err.count("\n") == 1


def test_csv_and_html_reports_from_the_command_line(
    bundle: Bundle,
    maker: BundleMaker,
    write_bundle: Write,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trust = tmp_path / "trust.txt"
    trust.write_text(f"key {maker.signer.verifier().to_vkey()}\n")
    csv_path, html_path = tmp_path / "r.csv", tmp_path / "r.html"
    path = write_bundle(bundle)
    rc, out, err = run(capsys, path, "--trust", trust, "--csv", csv_path, "--html", html_path)
    assert rc == 3, err
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("index,sensor,time,quantity,unit,value,qartod_flag,waterml_quality")
    assert len(rows) == 1 + 60  # one value per reading: 20 each of ph-1, do-1, temp-1
    assert f"wrote {csv_path}: 60 verified reading value(s)" in out
    assert "<svg" in html_path.read_text()
    # Without a trust file nothing is proven about who made the readings: no CSV.
    csv_path.unlink()
    rc, out, err = run(capsys, path, "--csv", csv_path)
    assert rc == 4 and not csv_path.exists()
    assert "--csv" in err and "no CSV written" in err
    # An unwritable place is a usage problem, exit 2, before anything is checked.
    rc, _, err = run(capsys, path, "--csv", tmp_path / "no" / "such" / "dir.csv")
    assert rc == 2 and err.startswith("ledger-verify: --csv ")

"""docs/bundle-format.md and the code agree on hex case (§1) and on units (§4.2).

§1: hex is lower-case, two digits a byte, no prefix. Where the spec says hex,
anything else — upper case above all — is refused, the message names the
member, and the refusal lands where the checklist (§9) puts it:

- a record's ``key`` (§4.2: "exactly 8 lower-case hex digits"): the entry
  fails step 2 "record", and step 3 does not check it;
- ``\\u00xx`` escapes in an entry (§4.1: lower-case hex): not canonical, step 2;
- an anchor's ``digest`` (§7): hex that does not decode as §1 hex makes the
  source unreadable (exit status 2), in a v1 bundle, a v2 manifest and an
  evidence file alike;
- a vkey's key ID (§3): a bundle key fails step 1 "keys"; in a trust file the
  line is an error (exit status 2).

Where the spec allows any case — an ``evm-sender`` address (§10) — it is taken.

§4.2: units are SenML/UCUM-style, ``"mg/l"``. Every driver writes dissolved
oxygen as ``mg/l``, the unit the built-in QC limits are written in, so its QC
tests are evaluated (not flag 2) whichever driver read it.

docs/operations.md works out the silence allowance of gateway/silence.py for
the default timeouts and retries; the gateway agrees.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.config.qc import DEFAULT_LIMITS
from gateway.daemon import sensor_expectations
from gateway.drivers.ezo.protocol import parse_reading
from gateway.drivers.modbus.profile import load_profile, shipped_profiles
from gateway.drivers.mqtt.payload import decode
from gateway.drivers.mqtt.senml import QUANTITY_UNITS
from gateway.qc import FAIL, NOT_EVALUATED, PASS, QcEngine
from ledger_client.bundle import AnchorReceipt, Bundle
from ledger_client.checkpoint import Checkpoint
from ledger_client.cli import main as ledger_verify
from ledger_client.errors import MalformedBundle, MalformedNote
from ledger_client.evidence import Evidence, parse_evidence, verify_evidence
from ledger_client.note import Signer, Verifier, split_note
from ledger_client.records import make_entry
from ledger_client.trust import MalformedTrust, parse_trust
from ledger_client.verify import Report, verify_bundle
from ledger_client.verify_stream import verify_source
from simulators.mqtt_node import QUANTITIES as NODE_QUANTITIES
from simulators.sdi12 import SDI12_QUANTITIES
from tests.ledger_client.lc_bundles import DOC_DEVICE, DOC_ORIGIN, DOC_SEED, NOW, T0_NS, BundleMaker
from tests.ledger_client.v2_bundles import manifest_for, notes_for, v2_members, write_container

KEY_ID = "c3f374b2"
"""The key ID of box A's test key (docs/bundle-format.md §12)."""


def doc_maker() -> BundleMaker:
    """Box A's key, device and origin (docs/bundle-format.md §12)."""
    m = BundleMaker(
        signer=Signer.from_seed(DOC_ORIGIN, DOC_SEED), origin=DOC_ORIGIN, device=DOC_DEVICE
    )
    assert m.signer.key_id.hex() == KEY_ID
    return m


def entries_of(m: BundleMaker) -> tuple[list[dict[str, Any]], list[bytes]]:
    """A boot event and two readings, signed as the gateway signs them."""
    records = [m.event("boot", {"version": "0.1.0"}), m.reading("ph-1"), m.reading("ph-1")]
    return records, [m.sign(r, i) for i, r in enumerate(records)]


def boot_signed_as(m: BundleMaker, records: Sequence[dict[str, Any]], key: str) -> bytes:
    """Entry 0 (the boot event) with ``key`` as its ``key`` member, properly signed."""
    rec = {"v": 1, "device": m.device, "key": key, "index": 0, **records[0]}
    return make_entry(rec, m.signer.signing_key)


def only_failures(report: Report) -> list[tuple[str, int | None, str]]:
    return [(f.check, f.entry, f.reason) for f in report.failures]


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = ledger_verify([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def v2_file(tmp_path: Path, m: BundleMaker, entries: list[bytes], name: str) -> Path:
    notes = notes_for(m.signer, m.origin, entries, [len(entries)])
    manifest = manifest_for(m.signer, m.origin, m.device, notes)
    return write_container(tmp_path / name, v2_members(entries, manifest, len(entries)))


# --- a record's key: step 2 ----------------------------------------------------------------


def test_a_record_key_in_upper_case_fails_step_2_and_is_not_checked_in_step_3() -> None:
    m = doc_maker()
    records, entries = entries_of(m)
    good = m.build(records, [3])
    assert verify_bundle(good, [m.signer.verifier()], now=NOW).ok

    entries[0] = boot_signed_as(m, records, KEY_ID.upper())
    report = verify_bundle(m.build(records, [3], entries=entries), [m.signer.verifier()], now=NOW)
    assert only_failures(report) == [
        ("record", 0, "field 'key' is not 8 lower-case hex digits"),
    ]
    steps = {s.name: (s.passed, s.failed, s.skipped) for s in report.steps}
    assert steps["record"] == (2, 1, 0)
    assert steps["signature"] == (2, 0, 1)  # the unreadable record is not checked
    assert steps["inclusion"] == (3, 0, 0)  # its bytes are still in the tree


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_ledger_verify_names_the_record_key_in_either_bundle_version(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = doc_maker()
    records, entries = entries_of(m)
    entries[0] = boot_signed_as(m, records, "C3F374B2")
    if version == "v1":
        path = tmp_path / "bundle.json"
        path.write_text(m.build(records, [3], entries=entries).dumps(), encoding="utf-8")
    else:
        path = v2_file(tmp_path, m, entries, "bundle.tar")
    trust = tmp_path / "trust.txt"
    trust.write_text(f"key {m.signer.verifier().to_vkey()}\n")
    rc, out, _ = cli(capsys, path, "--trust", trust)
    assert rc == 1, out
    assert " 2 ✗ record        2 passed, 1 failed" in out
    assert "record: field 'key' is not 8 lower-case hex digits" in out


def test_an_upper_case_escape_in_an_entry_is_not_canonical() -> None:
    """§4.1: control characters are escaped ``\\u00xx`` with lower-case hex. The record
    parses to the same value either way, so its signature still verifies: only the
    canonical-form check of step 2 stands between the two byte strings."""
    m = doc_maker()
    records, entries = entries_of(m)
    records[1]["raw"] = "7.31\x1f"
    entries[1] = m.sign(records[1], 1)
    assert b"\\u001f" in entries[1]
    entries[1] = entries[1].replace(b"\\u001f", b"\\u001F")
    report = verify_bundle(m.build(records, [3], entries=entries), [m.signer.verifier()], now=NOW)
    assert only_failures(report) == [("record", 1, "entry is not in RFC 8785 canonical form")]


# --- an anchor's digest: unreadable ----------------------------------------------------------


def anchored(m: BundleMaker) -> Bundle:
    records, _ = entries_of(m)
    return m.build(records, [3])


BAD_DIGESTS: dict[str, Callable[[str], str]] = {
    "upper case": str.upper,
    "a 0x prefix": lambda d: "0x" + d,
    "spaces between bytes": lambda d: " ".join(d[i : i + 2] for i in range(0, len(d), 2)),
    "an odd digit": lambda d: d[:-1],
}


@pytest.mark.parametrize("how", BAD_DIGESTS)
def test_an_anchor_digest_that_is_not_lower_case_hex_makes_a_v1_bundle_unreadable(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = anchored(doc_maker()).to_json()
    digest = doc["anchors"][0]["digest"]
    assert Bundle.from_json(doc).anchors[0].digest.hex() == digest  # the control
    doc["anchors"][0]["digest"] = BAD_DIGESTS[how](digest)
    with pytest.raises(MalformedBundle, match=r"^anchors\[0\]: digest .* is not lower-case hex"):
        Bundle.from_json(doc)

    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    rc, out, err = cli(capsys, path)  # the streaming reader ledger-verify uses
    assert (rc, out) == (2, "")
    assert "anchors[0]: digest" in err
    assert "is not lower-case hex" in err


def test_a_digest_of_the_wrong_length_is_readable_and_fails_step_7() -> None:
    """Hex that decodes is readable; that it is 32 bytes is step 7's check."""
    m = doc_maker()
    doc = anchored(m).to_json()
    doc["anchors"][0]["digest"] = doc["anchors"][0]["digest"][:-2]
    report = verify_bundle(Bundle.from_json(doc), [m.signer.verifier()], now=NOW)
    assert [(f.check, f.checkpoint) for f in report.failures] == [("anchors", 3)]
    assert "31 bytes, not 32" in report.failures[0].reason


def test_an_upper_case_digest_makes_a_v2_manifest_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = doc_maker()
    _, entries = entries_of(m)
    notes = notes_for(m.signer, m.origin, entries, [len(entries)])
    cp = Checkpoint.parse(split_note(notes[-1])[0])
    receipt = {"journal": "anchors-local.sqlite", "seq": 1, "time": "2026-03-01T00:01:00Z"}
    anchor = AnchorReceipt(cp.size, "local", cp.digest(), "final", receipt)
    manifest = manifest_for(m.signer, m.origin, m.device, notes)
    doc = json.loads(manifest.dumps())
    doc["anchors"] = [anchor.to_json()]
    members = v2_members(entries, manifest, len(entries))

    def write(name: str) -> Path:
        data = json.dumps(doc).encode()
        edited = [(n, data if n == "riverseal-bundle.json" else d) for n, d in members]
        return write_container(tmp_path / name, edited)

    assert verify_source(write("good.tar"), [m.signer.verifier()], now=NOW, jobs=1).ok
    doc["anchors"][0]["digest"] = cp.digest().hex().upper()
    rc, out, err = cli(capsys, write("upper.tar"))
    assert (rc, out) == (2, "")
    assert "manifest.anchors[0]: digest" in err
    assert "is not lower-case hex" in err


def evidence_of(bundle: Bundle, index: int) -> Evidence:
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


def with_extra(data: bytes, edit: Any) -> bytes:
    """The evidence file with its ``extra`` object edited by ``edit(extra)``."""
    lines = data.split(b"\n")
    extra = json.loads(base64.b64decode(lines[1].removeprefix(b"extra ")))
    edit(extra)
    lines[1] = b"extra " + base64.b64encode(json.dumps(extra).encode())
    return b"\n".join(lines)


def test_an_upper_case_digest_makes_evidence_unreadable() -> None:
    m = doc_maker()
    data = evidence_of(anchored(m), 1).dumps()
    assert parse_evidence(data).anchors  # the control: an anchor, in lower case

    def upper(extra: dict[str, Any]) -> None:
        extra["anchors"][0]["digest"] = extra["anchors"][0]["digest"].upper()

    with pytest.raises(MalformedBundle, match=r"anchors\[0\]: digest .* is not lower-case hex"):
        parse_evidence(with_extra(data, upper))


# --- a vkey's key ID: step 1, or a trust file error ----------------------------------------


def test_a_vkey_key_id_in_upper_case_is_refused() -> None:
    vkey = doc_maker().signer.verifier().to_vkey()
    assert f"+{KEY_ID}+" in vkey
    with pytest.raises(MalformedNote, match="key ID 'C3F374B2' is not 8 lower-case hex digits"):
        Verifier.from_vkey(vkey.replace(KEY_ID, KEY_ID.upper()))


def test_a_bundle_key_with_an_upper_case_key_id_fails_step_1() -> None:
    m = doc_maker()
    doc = anchored(m).to_json()
    doc["keys"][0]["vkey"] = doc["keys"][0]["vkey"].replace(KEY_ID, KEY_ID.upper())
    report = verify_bundle(Bundle.from_json(doc), [m.signer.verifier()], now=NOW)
    assert only_failures(report) == [
        (
            "keys",
            None,
            f"keys[0]: verifier key '{DOC_ORIGIN}': key ID 'C3F374B2' is not 8 lower-case "
            "hex digits",
        )
    ]
    # Without a trust file that key was the only one: nothing is in force.
    alone = verify_bundle(Bundle.from_json(doc), None, now=NOW)
    assert {f.check for f in alone.failures} >= {"keys", "signature", "checkpoint"}


def test_an_evidence_key_with_an_upper_case_key_id_fails_step_1() -> None:
    m = doc_maker()
    data = evidence_of(anchored(m), 1).dumps()

    def upper(extra: dict[str, Any]) -> None:
        extra["keys"][0]["vkey"] = extra["keys"][0]["vkey"].replace(KEY_ID, KEY_ID.upper())

    report = verify_evidence(
        parse_evidence(with_extra(data, upper)), [m.signer.verifier()], now=NOW
    )
    assert [(f.check, "is not 8 lower-case hex digits" in f.reason) for f in report.failures] == [
        ("keys", True)
    ]


def test_a_trust_file_key_with_an_upper_case_key_id_is_an_error_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vkey = doc_maker().signer.verifier().to_vkey()
    text = f"# box A\nkey {vkey.replace(KEY_ID, KEY_ID.upper())}\n"
    with pytest.raises(MalformedTrust, match=r"^line 2: .*key ID 'C3F374B2' is not 8 lower-case"):
        parse_trust(text)
    trust = tmp_path / "trust.txt"
    trust.write_text(text)
    bundle = tmp_path / "bundle.json"
    bundle.write_text(anchored(doc_maker()).dumps(), encoding="utf-8")
    rc, out, err = cli(capsys, bundle, "--trust", trust)
    assert (rc, out) == (2, "")
    assert "line 2:" in err


def test_an_evm_sender_address_may_be_in_any_case() -> None:
    """§10: ``0x`` + 40 hex, any case (EIP-55 checksummed addresses are mixed case)."""
    vkey = doc_maker().signer.verifier().to_vkey()
    mixed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    trust = parse_trust(f"key {vkey}\nevm-sender 1 {mixed}\n")
    assert trust.evm_senders_for(1) == {mixed.lower()}


# --- units: dissolved oxygen is evaluated whichever driver read it ----------------------------


def do_units() -> dict[str, str]:
    """The unit each driver writes dissolved oxygen in (its ``q`` is ``do`` in all)."""
    units: dict[str, str] = {}
    (ezo,) = [v for v in parse_reading("do", ("mg",), "8.93", sensor="do-1") if v.quantity == "do"]
    units["ezo"] = ezo.unit
    for name in sorted(shipped_profiles()):
        for spec in load_profile(name).values:
            if spec.quantity == "do":
                units[f"modbus {name}"] = spec.unit
    pack = b'[{"bt":1772323200,"n":"oxygen","u":"g/l","v":0.00893}]'
    senml = decode("senml", pack, sensor="n", max_bytes=65536, received_ns=T0_NS)
    (value,) = senml.samples[0].values
    units["mqtt senml"] = value.unit
    assert QUANTITY_UNITS["do"] == value.unit
    # The JSON contract and SDI-12 log the unit they are given: the simulated
    # nodes and sondes (what sensor-sim station configures) give these.
    units["mqtt json (sensor-sim node)"] = NODE_QUANTITIES["do"].unit
    units["sdi12 (sensor-sim sonde)"] = SDI12_QUANTITIES["do"].unit
    return units


def test_every_driver_writes_dissolved_oxygen_in_mg_per_l() -> None:
    units = do_units()
    assert {"ezo", "modbus hach-ldo-aq", "modbus ysi-odo-rtu", "mqtt senml"} <= set(units)
    assert set(units.values()) == {"mg/l"}, units
    assert DEFAULT_LIMITS["do"].units == ("mg/l",)


@pytest.mark.parametrize(
    "unit", sorted({*do_units().values(), "mg/L"})
)  # mg/L: what a JSON node might send
def test_the_qc_tests_of_dissolved_oxygen_are_evaluated_in_that_unit(unit: str) -> None:
    qc = QcEngine()
    first = qc.check("do-1", "do", unit, T0_NS, 8.93)
    assert first.flag == PASS
    assert first.tests[0] == PASS  # gross range: evaluated, not 2
    beyond = qc.check("do-2", "do", unit, T0_NS, 30.0)  # above the sensor span (0-25)
    assert (beyond.flag, beyond.tests[0]) == (FAIL, FAIL)
    # The control: a unit the limits are not written in is not evaluated at all.
    other = QcEngine().check("do-3", "do", "ppm", T0_NS, 8.93)
    assert other.tests == (NOT_EVALUATED,) * 4


# --- the silence allowance of docs/operations.md is gateway/silence.py's ---------------------

DEFAULTS_CONFIG = """
[device]
[mqtt]
[[sensor]]
id = "ph-1"
driver = "ezo"
circuit = "ph"
port = "/dev/ttyUSB0"
interval_s = 10
[[sensor]]
id = "odo-1"
driver = "modbus"
port = "/dev/rs485"
slave = 1
profile = "ysi-odo-rtu"
interval_s = 60
[[sensor]]
id = "sonde-1"
driver = "sdi12"
port = "/dev/ttyUSB1"
address = "0"
quantities = [["temperature", "Cel"]]
interval_s = 60
[[sensor]]
id = "node-1"
driver = "mqtt"
topic = "river/node-1"
"""


def test_the_allowances_operations_md_works_out_are_the_gateways() -> None:
    """docs/operations.md, "Silence and gap records": with default timeouts and retries,
    an EZO circuit read every 10 s is silent after 15 s, a sensor of any driver
    expected every 60 s after 90 s; a new gap at most once per max(interval, 60 s)."""
    cfg = parse_config(DEFAULTS_CONFIG, Path("/etc/riverseal/gateway.toml"))
    exp = sensor_expectations(cfg)
    s = 1_000_000_000
    assert {k: (e.allowance_ns // s, e.repeat_ns // s) for k, e in exp.items()} == {
        "ph-1": (15, 60),
        "odo-1": (90, 60),
        "sonde-1": (90, 60),
        "node-1": (90, 60),
    }
    ops = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    said = " ".join(ops.split())
    assert "`max(interval_s / 2, timeout_s × (retries + 1))`" in said
    assert "every 10 s is silent after 15 s" in said
    assert "expected every 60 s after 90 s" in said

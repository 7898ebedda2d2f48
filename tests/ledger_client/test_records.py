"""Record rules, entry encoding and time parsing."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_client import errors
from ledger_client.canonical import canonical_bytes
from ledger_client.note import Signer
from ledger_client.records import format_time, make_entry, parse_entry, parse_time

SIGNER = Signer.from_seed("riverseal.example/gw/test", bytes(32))
KEY = SIGNER.key_id.hex()
T = "2026-03-01T00:00:20.000000Z"
BASE: dict[str, Any] = {
    "v": 1,
    "device": "rs-test",
    "key": KEY,
    "index": 7,
    "time": T,
    "clock": "synced",
}
READING: dict[str, Any] = {
    **BASE,
    "kind": "reading",
    "sensor": "ph-1",
    "seq": 3,
    "values": [{"q": "pH", "v": 7.12, "u": "pH"}],
    "sensor_time": T,
    "src_seq": 104,
    "raw": "7.12",
    "qc": {"range": 1},
}
GAP: dict[str, Any] = {
    **BASE,
    "kind": "gap",
    "sensor": "ph-1",
    "seq": 4,
    "reason": "timeout",
    "from": T,
    "to": "2026-03-01T00:01:00.000000Z",
    "src_seq_from": 105,
    "src_seq_to": 106,
}
EVENT: dict[str, Any] = {**BASE, "kind": "event", "event": "boot", "detail": "riverseal 0.1.0"}


@pytest.mark.parametrize("rec", [READING, GAP, EVENT], ids=["reading", "gap", "event"])
def test_entries_round_trip(rec: dict[str, Any]) -> None:
    raw = make_entry(rec, SIGNER.signing_key)
    entry = parse_entry(raw)
    assert entry.rec == rec
    assert entry.signed == canonical_bytes(rec)
    assert (
        raw == b'{"rec":' + entry.signed + b',"sig":"' + base64.b64encode(entry.signature) + b'"}'
    )
    assert entry.verify_signature(SIGNER.verifier())
    assert entry.index == 7
    assert entry.key == KEY


def _qc(flag: Any, tests: Any) -> dict[str, Any]:
    return {"q": "pH", "v": 7.12, "u": "pH", "qc": {"flag": flag, "tests": tests}}


QC_VALUE = _qc(1, "1121")
MISSING_VALUE = {"q": "pH", "v": None, "u": "pH", "qc": {"flag": 9, "tests": "9999"}}


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([QC_VALUE], id="flags"),
        pytest.param([MISSING_VALUE], id="missing-null"),
        pytest.param([{**MISSING_VALUE, "v": 7.12}], id="missing-with-number"),
        pytest.param([_qc(4, "4")], id="one-test"),
        pytest.param([_qc(3, "12349")], id="five-tests"),
        pytest.param([QC_VALUE, {"q": "Cel", "v": 12.5, "u": "Cel"}], id="mixed"),
        pytest.param([{**QC_VALUE, "qc": {**QC_VALUE["qc"], "note": "x"}}], id="qc-extra-member"),
    ],
)
def test_values_with_qc_flags_round_trip(values: list[dict[str, Any]]) -> None:
    rec = {**READING, "values": values}
    entry = parse_entry(make_entry(rec, SIGNER.signing_key))
    assert entry.rec == rec


def _without(rec: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != name}


BAD_RECORDS = [
    pytest.param({**READING, "v": 2}, id="version"),
    pytest.param({**READING, "kind": "note"}, id="kind"),
    pytest.param({**READING, "key": "ABCDEF01"}, id="key-upper-case"),
    pytest.param({**READING, "key": "abcdef0"}, id="key-short"),
    pytest.param({**READING, "index": -1}, id="index-negative"),
    pytest.param({**READING, "index": True}, id="index-bool"),
    pytest.param({**READING, "index": 1.5}, id="index-float"),
    pytest.param({**READING, "time": "2026-03-01 00:00:20Z"}, id="time-space"),
    pytest.param({**READING, "time": "2026-03-01T00:00:20+00:00"}, id="time-offset"),
    pytest.param({**READING, "time": "2026-02-30T00:00:20Z"}, id="time-unreal"),
    pytest.param({**READING, "clock": "ntp"}, id="clock"),
    pytest.param({**READING, "values": []}, id="no-values"),
    pytest.param({**READING, "values": [{"q": "pH", "v": "7", "u": "pH"}]}, id="value-string"),
    pytest.param({**READING, "values": [{"q": "pH", "v": True, "u": "pH"}]}, id="value-bool"),
    pytest.param({**READING, "values": [{"q": "pH", "v": 7}]}, id="value-no-unit"),
    pytest.param({**READING, "values": [7]}, id="value-not-object"),
    pytest.param({**READING, "values": [{**QC_VALUE, "v": None}]}, id="value-null-not-missing"),
    pytest.param({**READING, "values": [{"q": "pH", "v": None, "u": "pH"}]}, id="value-null"),
    pytest.param({**READING, "values": [{**QC_VALUE, "qc": 1}]}, id="qc-not-object"),
    pytest.param({**READING, "values": [{**QC_VALUE, "qc": {"flag": 1}}]}, id="qc-no-tests"),
    pytest.param({**READING, "values": [{**QC_VALUE, "qc": {"tests": "1"}}]}, id="qc-no-flag"),
    pytest.param({**READING, "values": [_qc(5, "1")]}, id="qc-flag-5"),
    pytest.param({**READING, "values": [_qc(0, "1")]}, id="qc-flag-0"),
    pytest.param({**READING, "values": [_qc(True, "1")]}, id="qc-flag-bool"),
    pytest.param({**READING, "values": [_qc(1.5, "1")]}, id="qc-flag-fraction"),
    pytest.param({**READING, "values": [_qc(1, "1171")]}, id="qc-test-flag-7"),
    pytest.param({**READING, "values": [_qc(1, "")]}, id="qc-tests-empty"),
    pytest.param({**READING, "values": [_qc(1, "1 21")]}, id="qc-tests-space"),
    pytest.param({**READING, "values": [_qc(1, [1, 1])]}, id="qc-tests-list"),
    pytest.param({**READING, "values": [_qc(1, {"spike": 1})]}, id="qc-tests-object"),
    pytest.param({**READING, "values": [_qc(1, "١١")]}, id="qc-tests-arabic-digits"),
    pytest.param({**READING, "sensor_time": "yesterday"}, id="sensor-time"),
    pytest.param({**READING, "src_seq": -3}, id="src-seq"),
    pytest.param(_without(READING, "sensor"), id="reading-no-sensor"),
    pytest.param(_without(READING, "seq"), id="reading-no-seq"),
    pytest.param(_without(READING, "device"), id="no-device"),
    pytest.param({**GAP, "to": "2026-03-01T00:00:00.000000Z"}, id="gap-backwards"),
    pytest.param(_without(GAP, "src_seq_to"), id="gap-half-src-range"),
    pytest.param({**GAP, "src_seq_to": 100}, id="gap-src-range-backwards"),
    pytest.param(_without(GAP, "reason"), id="gap-no-reason"),
    pytest.param(_without(EVENT, "event"), id="event-no-event"),
]


@pytest.mark.parametrize("rec", BAD_RECORDS)
def test_record_rules(rec: dict[str, Any]) -> None:
    with pytest.raises(errors.RecordError):
        parse_entry(make_entry(rec, SIGNER.signing_key))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'{"rec":{}}', id="no-sig"),
        pytest.param(b'{"rec":{},"sig":"","x":1}', id="extra-member"),
        pytest.param(b'{"rec":1,"sig":""}', id="rec-not-object"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[" * 100_000, id="deep"),
    ],
)
def test_unparseable_entries(raw: bytes) -> None:
    with pytest.raises(errors.RecordError):
        parse_entry(raw)


def test_non_canonical_entries_are_rejected() -> None:
    raw = make_entry(READING, SIGNER.signing_key)
    doc = json.loads(raw)
    for variant in [
        json.dumps(doc).encode(),  # whitespace
        json.dumps({"sig": doc["sig"], "rec": doc["rec"]}, separators=(",", ":")).encode(),
        json.dumps(
            {"rec": dict(reversed(doc["rec"].items())), "sig": doc["sig"]}, separators=(",", ":")
        ).encode(),
        raw.replace(b'"v":7.12', b'"v":7.120'),
        raw.replace(b'"index":7', b'"index":7.0'),
        raw.replace(b'"sig":"', b'"sig": "'),
        raw[:-2] + b'=="}',
    ]:
        with pytest.raises(errors.RecordError):
            parse_entry(variant)


def test_signature_must_be_64_bytes_of_base64() -> None:
    raw = make_entry(READING, SIGNER.signing_key)
    body = raw[: raw.index(b',"sig":')]
    for sig in [b"AAAA", b"not base64!", b"\\u00e9"]:
        with pytest.raises(errors.RecordError):
            parse_entry(body + b',"sig":"' + sig + b'"}')


def test_large_integral_doubles_round_trip() -> None:
    # make_entry writes 1e20 as 100000000000000000000 (RFC 8785); it must read back.
    for v in [1e20, 2.0**53, -1e17, 1e300, 5e-324]:
        rec = {**READING, "values": [{"q": "EC", "v": v, "u": "uS/cm"}]}
        entry = parse_entry(make_entry(rec, SIGNER.signing_key))
        assert entry.rec["values"][0]["v"] == v
        assert entry.verify_signature(SIGNER.verifier())
    raw = make_entry(READING, SIGNER.signing_key).replace(b'"index":7', b'"index":9007199254740993')
    with pytest.raises(errors.RecordError):
        parse_entry(raw)


def test_format_time() -> None:
    assert format_time(1_772_323_200 * 10**9 + 123_456_789) == "2026-03-01T00:00:00.123456Z"
    assert parse_time(format_time(1_772_323_200 * 10**9)) == datetime(2026, 3, 1, tzinfo=UTC)


_REFERENCE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z", re.ASCII)


def _reference_parse_time(text: str) -> datetime | None:
    """The original strptime-based parser, as a reference for the faster one."""
    if not _REFERENCE_RE.fullmatch(text):
        return None
    whole, _, frac = text[:-1].partition(".")
    try:
        dt = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return dt.replace(microsecond=int((frac + "000000")[:6]))


times = st.builds(
    lambda y, mo, d, h, mi, s, frac, z: (
        f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{z}"
    ),
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,10}", fullmatch=True)),
    st.sampled_from(["Z", "z", "", "+00:00"]),
)


@settings(max_examples=1000)
@given(st.one_of(times, st.text(max_size=30)))
def test_parse_time_agrees_with_the_reference(text: str) -> None:
    want = _reference_parse_time(text)
    if want is None:
        with pytest.raises(errors.RecordError):
            parse_time(text)
    else:
        assert parse_time(text) == want


@pytest.mark.parametrize("text", ["٢٠٢٦-03-01T00:00:00Z", "2026-03-01T00:00:00.１Z", 20260301])
def test_parse_time_is_ascii_only(text: Any) -> None:
    with pytest.raises(errors.RecordError):
        parse_time(text)

"""The verifier's fast paths decide exactly as the exact paths they stand in for.

parse_entry proves an entry canonical with json's C encoder when the text allows
it, and checks a plain reading without per-field messages; both must accept and
refuse exactly what the exact RFC 8785 re-encoding and the full record checks do.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_client.canonical import CanonicalizationError, canonical_bytes, is_canonical
from ledger_client.errors import RecordError
from ledger_client.records import _check_record_exactly, parse_entry

SIG = base64.b64encode(bytes(64)).decode()

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([7.0, 0.0, -0.0, 1e-7, 1e21, 1e16, 123.456, 2.0**53, 1e20, 5e-324])
    | st.text(max_size=8)
    | st.sampled_from(["é", "\u2028", "\U0001f600", "\x00", '"', "\\", "\ue000"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
records = st.dictionaries(st.text(max_size=6), values, max_size=6)


def _entry(rec_text: str) -> bytes:
    return ('{"rec":' + rec_text + ',"sig":"' + SIG + '"}').encode("utf-8", "surrogatepass")


def _outcome(raw: bytes) -> str:
    """'canonical' or 'refused' by parse_entry's canonical-form check (record shape aside)."""
    try:
        parse_entry(raw)
    except RecordError as exc:
        text = str(exc)
        if "canonical" in text or "not JSON" in text:
            return "refused"
        return "canonical"  # got past the form checks to the record rules
    return "canonical"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(records)
def test_python_json_text_is_accepted_exactly_when_it_is_rfc8785(rec: dict[str, Any]) -> None:
    # json.dumps's compact sorted text: the form the fast path compares against.
    text = json.dumps(rec, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    raw = _entry(text)
    exact = is_canonical(raw)  # the exact RFC 8785 check, big integers read as doubles
    assert (_outcome(raw) == "canonical") == exact, text


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(records)
def test_rfc8785_text_is_always_accepted(rec: dict[str, Any]) -> None:
    try:
        body = canonical_bytes(rec)
    except CanonicalizationError:
        return
    raw = b'{"rec":' + body + b',"sig":"' + SIG.encode() + b'"}'
    assert _outcome(raw) == "canonical", body


reading = {
    "v": 1,
    "kind": "reading",
    "device": "rs-1",
    "key": "0a1b2c3d",
    "index": 5,
    "time": "2026-03-01T00:00:40.000000Z",
    "clock": "synced",
    "sensor": "ph-1",
    "seq": 3,
    "src_seq": 9,
    "sensor_time": "2026-03-01T00:00:39.5Z",
    "values": [{"q": "ph", "v": 7.2, "u": "pH", "qc": {"flag": 1, "tests": "1121"}}],
}
fields = st.sampled_from([*sorted(reading), "values.q", "values.v", "values.u", "values.qc"])
QC_ODD = [{"flag": 1, "tests": "5"}, {"flag": 9, "tests": "9"}, {"flag": True, "tests": "1"}]
odd = st.sampled_from(
    [
        None,
        True,
        False,
        -1,
        0,
        1,
        2,
        1.5,
        "",
        "x",
        "0A1B2C3D",
        "2026-02-30T00:00:00Z",
        [],
        {},
        *QC_ODD,
    ]
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(fields, odd | st.just("<delete>")), max_size=3))
def test_the_quick_reading_check_agrees_with_the_full_one(edits: list[tuple[str, Any]]) -> None:
    rec: dict[str, Any] = json.loads(json.dumps(reading))
    for name, value in edits:
        target: Any = rec
        key = name
        if name.startswith("values."):
            vals = rec.get("values")
            if not isinstance(vals, list) or not vals or not isinstance(vals[0], dict):
                continue
            target, key = vals[0], name[len("values.") :]
        if value == "<delete>":
            target.pop(key, None)
        else:
            target[key] = value
    raw = b'{"rec":' + canonical_bytes(rec) + b',"sig":"' + SIG.encode() + b'"}'
    try:
        _check_record_exactly(rec)
        expected = None
    except RecordError as exc:
        expected = str(exc)
    if expected is None:
        parse_entry(raw)
    else:
        with pytest.raises(RecordError) as caught:
            parse_entry(raw)
        assert str(caught.value) == expected

"""The pure payload layer: SenML resolution, units, names, and property tests for both formats."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.drivers.mqtt.payload import Decoded, PayloadError, Sample, decode
from gateway.drivers.mqtt.senml import SenmlError, parse_senml, short_name
from gateway.pipeline import Value

NOW_NS = 1_795_237_796_123_000_000  # 2026-11-21T05:09:56.123Z
BT = 1_767_225_600  # 2026-01-01T00:00:00Z


def senml(doc: object, names: dict[str, str] | None = None) -> Decoded:
    return decode(
        "senml",
        json.dumps(doc).encode(),
        sensor="s1",
        max_bytes=65536,
        received_ns=NOW_NS,
        names=names,
    )


def test_reference_pack_resolves_base_name_time_and_units() -> None:
    pack = [
        {"bn": "urn:dev:mac:b827eb01:site1:", "bt": BT, "n": "temp", "u": "Cel", "v": 18.42},
        {"n": "ph", "u": "pH", "v": 7.61},
        {"n": "cond", "u": "S/m", "v": 0.0412},
        {"n": "do", "u": "mg/l", "v": 8.93},
        {"n": "turb", "u": "NTU", "v": 12.4, "t": 0},
    ]
    out = senml(pack)
    assert out.text == json.dumps(pack)
    (sample,) = out.samples
    assert sample.time == "2026-01-01T00:00:00.000000Z"
    assert sample.seq is None
    assert sample.values == (
        Value("temperature", 18.42, "Cel"),
        Value("ph", 7.61, "pH"),
        Value("ec", 412.0, "uS/cm"),
        Value("do", 8.93, "mg/l"),
        Value("turbidity", 12.4, "NTU"),
    )
    assert sample.dedup_key.startswith("senml:2026-01-01T00:00:00.000000Z:")
    assert senml(pack).samples[0].dedup_key == sample.dedup_key  # a re-sent pack is a duplicate


def test_records_at_different_times_become_separate_samples() -> None:
    pack = [
        {"bn": "n1:", "bt": BT, "bu": "Cel", "n": "temperature", "v": 10.0, "t": -60},
        {"n": "ph", "u": "pH", "v": 7.0, "t": -60},
        {"n": "temperature", "v": 10.5},
        {"n": "ph", "u": "pH", "v": 7.1, "t": 0.25},
    ]
    out = senml(pack)
    assert [(s.time, s.values) for s in out.samples] == [
        (
            "2025-12-31T23:59:00.000000Z",
            (Value("temperature", 10.0, "Cel"), Value("ph", 7.0, "pH")),
        ),
        ("2026-01-01T00:00:00.000000Z", (Value("temperature", 10.5, "Cel"),)),
        ("2026-01-01T00:00:00.250000Z", (Value("ph", 7.1, "pH"),)),
    ]
    assert len({s.dedup_key for s in out.samples}) == 3


def test_relative_times_are_taken_from_the_receive_time() -> None:
    out = senml([{"n": "ph", "u": "pH", "v": 7.0}, {"n": "temp", "u": "Cel", "v": 9, "t": -2.5}])
    assert [s.time for s in out.samples] == [  # oldest first, whatever the records' order
        "2026-11-21T05:09:53.623000Z",
        "2026-11-21T05:09:56.123000Z",
    ]


def test_base_value_and_base_unit_apply_until_changed() -> None:
    out = senml(
        [
            {"bn": "a/", "bt": BT, "bu": "Cel", "bv": 10, "n": "temp", "v": 0.5},
            {"bn": "b/", "n": "temp", "v": -0.5, "t": 1},
            {"bu": "NTU", "bv": 0, "n": "turb", "v": 3, "t": 2},
        ]
    )
    assert [s.values for s in out.samples] == [
        (Value("temperature", 10.5, "Cel"),),
        (Value("temperature", 9.5, "Cel"),),
        (Value("turbidity", 3.0, "NTU"),),
    ]


@pytest.mark.parametrize(
    ("unit", "sent", "quantity", "logged", "logged_unit"),
    [
        ("K", 288.15, "temp", 15.0, "Cel"),
        ("S/m", 0.03501, "ec", 350.1, "uS/cm"),
        ("V", 0.2501, "orp", 250.1, "mV"),
        ("mV", 250.1, "orp", 250.1, "mV"),
        ("kg/m3", 0.00893, "do", 8.93, "mg/l"),
        ("g/l", 0.00893, "do", 8.93, "mg/l"),
        ("ug/l", 8930, "do", 8.93, "mg/l"),
        ("/", 0.953, "do_sat", 95.3, "/100"),
        ("/100", 95.3, "do_sat", 95.3, "/100"),
        ("mg/l", 0.0123, "chl", 12.3, "ug/l"),
    ],
)
def test_units_are_converted_to_the_logged_unit(
    unit: str, sent: float, quantity: str, logged: float, logged_unit: str
) -> None:
    out = senml([{"bt": BT, "n": quantity, "u": unit, "v": sent}])
    (value,) = out.samples[0].values
    assert (value.value, value.unit) == (logged, logged_unit)


def test_names_overrides_then_defaults_then_the_short_name_itself() -> None:
    pack = [
        {"bn": "urn:dev:mac:b827eb01:", "bt": BT, "n": "t1", "u": "Cel", "v": 12},
        {"n": "x9", "u": "/100", "v": 96},
        {"n": "TURB", "u": "NTU", "v": 4},
        {"n": "battery", "u": "V", "v": 3.7},
    ]
    names = {"urn:dev:mac:b827eb01:t1": "temperature", "x9": "do_sat"}
    assert senml(pack, names).samples[0].values == (
        Value("temperature", 12.0, "Cel"),
        Value("do_sat", 96.0, "/100"),
        Value("turbidity", 4.0, "NTU"),
        Value("battery", 3.7, "V"),  # unknown names are logged as sent, never dropped
    )
    assert short_name("urn:dev:ow:10e2073a01080063:temp") == "temp"
    assert short_name("3303/0/5700") == "5700"
    assert short_name("a:") == "a:"


def test_string_bool_data_and_sum_records_are_skipped() -> None:
    out = senml(
        [
            {"bn": "n1:", "bt": BT},
            {"n": "status", "vs": "ok"},
            {"n": "door", "vb": False},
            {"n": "blob", "vd": "AAEC"},
            {"n": "rain", "u": "m", "s": 0.02},
            {"n": "ph", "u": "pH", "v": 7.2, "ext": "ignored"},
        ]
    )
    assert out.samples[0].values == (Value("ph", 7.2, "pH"),)


@pytest.mark.parametrize(
    ("pack", "problem"),
    [
        ({"n": "ph"}, "must be a JSON array, got dict"),
        ([], "pack is empty"),
        ([7], "records[0] must be an object, got int"),
        ([{"n": "ph", "u": "pH", "v": "7"}], "records[0].v must be a number, got str"),
        ([{"n": "ph", "u": "pH", "v": True}], "records[0].v must be a number, got bool"),
        ([{"n": "ph", "u": "pH", "v": 1, "t": "now"}], "records[0].t must be a number"),
        ([{"n": 3, "u": "pH", "v": 1}], "records[0].n must be a string, got int"),
        ([{"n": "ph", "u": 1, "v": 1}], "records[0].u must be a string"),
        ([{"n": "ph", "u": "pH", "vb": "yes"}], "records[0].vb must be true or false"),
        ([{"n": "ph", "u": "pH", "v": 1, "vs": "x"}], "more than one value (v, vs)"),
        ([{"n": "ph", "u": "pH"}], "records[0] has no value"),
        ([{"u": "pH", "v": 1}], "records[0] has no name"),
        ([{"n": "-ph", "u": "pH", "v": 1}], "records[0].n: name '-ph' breaks"),
        ([{"n": "p h", "u": "pH", "v": 1}], "breaks the RFC 8428 name rules"),
        ([{"n": "ph", "v": 7}], "records[0] (ph) has no unit"),
        ([{"n": "ph", "u": "", "v": 7}], "records[0].u '' must be 1 to 64"),
        ([{"n": "ph", "u": "Cel", "v": 7}], "records[0].u 'Cel' does not fit quantity 'ph'"),
        ([{"n": "do_sat", "u": "%", "v": 95}], "'%' is ambiguous in SenML: send '/100'"),
        ([{"n": "ph", "u": "pH", "v": 7, "foo_": 1}], "records[0].foo_ is a must-understand"),
        ([{"bver": 11, "n": "ph", "u": "pH", "v": 7}], "bver 11 is newer than SenML version 10"),
        ([{"bver": 0, "n": "ph", "u": "pH", "v": 7}], "bver must be a positive integer"),
        ([{"n": "ph", "u": "pH", "v": 1e308, "bv": 1e308}], "plus the base value is not a finite"),
        ([{"n": "ph", "u": "pH", "v": 10**400}], "records[0].v is not a finite number"),
        ([{"n": "ph", "u": "pH", "v": 7, "bt": 1e13}], "outside 1970..9999"),
        ([{"n": "ph", "u": "pH", "v": 7, "bt": -2_000_000_000}], "outside 1970..9999"),
        (
            [{"bt": BT, "n": "ph", "u": "pH", "v": 7}, {"n": "ph", "u": "pH", "v": 7.1}],
            "records[1] (ph) repeats quantity 'ph' at 2026-01-01",
        ),
        ([{"n": "status", "vs": "ok"}], "has no numeric record"),
        ([{"bn": "x", "bt": BT}], "has no numeric record"),
    ],
)
def test_bad_packs_are_refused_naming_the_record(pack: object, problem: str) -> None:
    with pytest.raises(SenmlError) as info:
        parse_senml(pack, NOW_NS)
    assert problem in str(info.value)
    with pytest.raises(PayloadError) as wrapped:
        decode("senml", json.dumps(pack).encode(), sensor="s9", max_bytes=65536, received_ns=NOW_NS)
    assert wrapped.value.reason == "bad-senml"
    assert wrapped.value.sensor == "s9"
    assert problem in wrapped.value.problem


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "not-utf8"),
        (b"[{", "not-json"),
        (b'[{"n":"ph","n":"x"}]', "not-json"),
        (b'[{"n":"ph","u":"pH","v":NaN}]', "not-json"),
        (b"[" + b" " * 70_000 + b"]", "too-large"),
    ],
)
def test_senml_shares_the_byte_level_checks(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode("senml", payload, sensor="s1", max_bytes=65536, received_ns=NOW_NS)
    assert info.value.reason == reason


def test_json_contract_through_decode() -> None:
    body = b'{"seq":4,"time":"2026-11-21T05:09:56Z","values":[{"q":"ph","v":7,"u":"pH"}]}'
    out = decode("json", body, sensor="s1", max_bytes=4096, received_ns=NOW_NS)
    assert out == Decoded(
        (
            Sample(
                "2026-11-21T05:09:56.000000Z",
                (Value("ph", 7.0, "pH"),),
                4,
                "src_seq:4@2026-11-21T05:09:56.000000Z",
            ),
        ),
        body.decode(),
    )


# -- properties: nothing but PayloadError ever escapes -----------------------------------

REASONS = {"too-large", "not-utf8", "not-json", "bad-payload", "bad-senml"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=20,
)
LABELS = ["bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"]
record_values = (
    st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["ph", "Cel", "S/m", "%", "temp", "urn:x:", "/", ""])
    | st.booleans()
    | st.none()
)
senml_like = st.lists(
    st.dictionaries(st.sampled_from([*LABELS, "x_", "extra"]), record_values, max_size=6),
    max_size=6,
)


def check(fmt: Any, payload: bytes) -> None:
    try:
        out = decode(fmt, payload, sensor="s", max_bytes=2048, received_ns=NOW_NS)
    except PayloadError as exc:
        rejected = exc
    else:
        rejected = None
    if rejected is not None:
        assert rejected.reason in REASONS
        assert rejected.problem
        return
    assert out.samples
    for sample in out.samples:
        assert sample.values
        assert sample.time.endswith("Z")
        assert sample.dedup_key


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(["json", "senml"]))
def test_arbitrary_bytes_never_raise_anything_else(payload: bytes, fmt: str) -> None:
    check(fmt, payload)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(["json", "senml"]))
def test_arbitrary_json_never_raises_anything_else(doc: object, fmt: str) -> None:
    check(fmt, json.dumps(doc).encode())


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(senml_like)
def test_senml_shaped_packs_never_raise_anything_else(pack: list[dict[str, object]]) -> None:
    check("senml", json.dumps(pack).encode())


def test_a_time_in_non_ascii_digits_is_refused() -> None:
    """Arabic-Indic digits are digits to Unicode, not to RFC 3339: the payload is refused,
    never signed as a sensor_time no verifier can read."""
    stamp = "٢٠٢٦-11-21T05:09:56Z"
    body = json.dumps(
        {"seq": 4, "time": stamp, "values": [{"q": "ph", "v": 7, "u": "pH"}]}, ensure_ascii=False
    ).encode()
    with pytest.raises(PayloadError) as info:
        decode("json", body, sensor="s1", max_bytes=4096, received_ns=NOW_NS)
    assert "time" in str(info.value)

"""canonical.py against the independent ``rfc8785`` package."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_client.canonical import (
    CanonicalizationError,
    canonical_bytes,
    format_number,
    is_canonical,
    number_from_int,
)

SAFE = 2**53 - 1

floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(-SAFE, SAFE)
# Any Unicode except lone surrogates (which have no UTF-8 form).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | ints | floats | text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500)
@given(floats)
def test_floats_match_rfc8785(x: float) -> None:
    assert canonical_bytes(x) == rfc8785.dumps(x)


@settings(max_examples=300)
@given(ints)
def test_ints_match_rfc8785(x: int) -> None:
    assert canonical_bytes(x) == rfc8785.dumps(x)


@settings(max_examples=300)
@given(st.dictionaries(text, scalars, max_size=8))
def test_unicode_keys_sort_like_rfc8785(d: dict[str, Any]) -> None:
    assert canonical_bytes(d) == rfc8785.dumps(d)


@settings(max_examples=300)
@given(values)
def test_nested_values_match_rfc8785(value: Any) -> None:
    out = canonical_bytes(value)
    assert out == rfc8785.dumps(value)
    assert is_canonical(out)
    assert canonical_bytes(json.loads(out, parse_int=number_from_int)) == out


@pytest.mark.parametrize(
    ("x", "want"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (412.0, "412"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.1, "0.1"),
        (-7.25, "-7.25"),
        (2**53 - 1, "9007199254740991"),
    ],
)
def test_known_numbers(x: float, want: str) -> None:
    assert format_number(x) == want


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        2**53,
        -(2**53),
        "\ud800",
        {"\udc00": 1},
        {1: "a"},
        {"a": object()},
        b"bytes",
    ],
)
def test_values_without_a_canonical_form(value: Any) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_bytes(value)


def test_strings_escape_as_ecmascript() -> None:
    s = '"\\\b\f\n\r\t\x00\x1f\x7f\u2028é😀/'
    assert canonical_bytes(s) == rfc8785.dumps(s)
    assert (
        canonical_bytes(s)
        == b'"\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\xe2\x80\xa8\xc3\xa9\xf0\x9f\x98\x80/"'
    )


@pytest.mark.parametrize(
    "data",
    [b'{"b":1,"a":2}', b'{"a": 1}', b"[1.0]", b'{"a":1,"a":1}', b"NaN", b"\xff", b"[1e400]"],
)
def test_is_canonical_rejects(data: bytes) -> None:
    assert not is_canonical(data)

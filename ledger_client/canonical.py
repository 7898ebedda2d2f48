"""RFC 8785 JSON Canonicalization Scheme, for the values riverseal records hold.

Objects have their keys sorted by UTF-16 code units, there is no whitespace,
strings are escaped as ECMAScript's JSON.stringify escapes them, and numbers
are written as ECMAScript's Number.prototype.toString writes them (so 412.0
becomes ``412`` and 1e-7 becomes ``1e-7``). Integers outside ±2^53 and
non-finite floats have no interoperable form and are refused.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring
from typing import Any

__all__ = ["CanonicalizationError", "canonical_bytes", "format_number", "is_canonical"]

_MAX_SAFE_INT = 2**53 - 1
# json's C string escaper with ensure_ascii off: the escapes ECMAScript's
# JSON.stringify writes (\" \\ \b \f \n \r \t, other controls as \u00xx).
_encode_str = encode_basestring


class CanonicalizationError(ValueError):
    """The value has no RFC 8785 form."""


def format_number(x: float | int) -> str:
    """ECMAScript Number::toString of ``x``."""
    if isinstance(x, bool):
        raise CanonicalizationError("a bool is not a number")
    if isinstance(x, int):
        if abs(x) > _MAX_SAFE_INT:
            raise CanonicalizationError(f"integer {x} is outside ±2^53")
        return str(x)
    if not math.isfinite(x):
        raise CanonicalizationError(f"{x} has no JSON form")
    if x == 0:
        return "0"
    r = repr(x)
    # Fast path: Python writes 1e-4 <= |x| < 1e16 in plain notation with the same
    # shortest digits ECMAScript uses there; only integral values differ ("412.0").
    if "e" not in r and not r.endswith(".0"):
        return r
    # repr gives the shortest round-trip digits; re-lay them out per ECMA-262 7.1.12.1.
    sign = "-" if x < 0 else ""
    digits, exp = _shortest_digits(abs(x))
    k = len(digits)
    n = exp + 1  # position of the decimal point relative to the digits
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        e_text = f"e+{e}" if e >= 0 else f"e-{-e}"
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + e_text
    return sign + out


def _shortest_digits(x: float) -> tuple[str, int]:
    """The shortest round-trip decimal digits of ``x`` > 0 and its decimal exponent."""
    r = repr(x)
    if "e" in r:
        mant, _, e = r.partition("e")
        exp = int(e)
    else:
        mant, exp = r, 0
    if "." in mant:
        whole, frac = mant.split(".")
    else:
        whole, frac = mant, ""
    if frac == "0":
        frac = ""
    digits = whole + frac
    exp += len(whole) - 1
    stripped = digits.lstrip("0")
    exp -= len(digits) - len(stripped)
    return stripped.rstrip("0") or "0", exp


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


def _sorted_keys(obj: dict[Any, Any]) -> list[str]:
    for key in obj:
        if not isinstance(key, str):
            raise CanonicalizationError(f"object key {key!r} is not a string")
    keys: list[str] = sorted(obj)
    # Code point order equals UTF-16 code unit order unless a key holds a
    # character beyond the BMP; only then is the slower key needed.
    if not "".join(keys).isascii():
        keys.sort(key=_utf16_key)
    return keys


def _encode(value: Any, out: list[str]) -> None:
    t = type(value)
    if t is str:
        out.append(_encode_str(value))
    elif t is int or t is float:
        out.append(format_number(value))
    elif t is dict:
        _encode_dict(value, out)
    elif t is list or t is tuple:
        _encode_list(value, out)
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    # Subclasses (str enums, OrderedDict, ...) take the same paths, just later.
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, int | float):
        out.append(format_number(value))
    elif isinstance(value, dict):
        _encode_dict(value, out)
    elif isinstance(value, list | tuple):
        _encode_list(value, out)
    else:
        raise CanonicalizationError(f"{type(value).__name__} has no JSON form")


def _encode_dict(value: dict[Any, Any], out: list[str]) -> None:
    out.append("{")
    first = True
    for key in _sorted_keys(value):
        if not first:
            out.append(",")
        first = False
        out.append(_encode_str(key))
        out.append(":")
        _encode(value[key], out)
    out.append("}")


def _encode_list(value: list[Any] | tuple[Any, ...], out: list[str]) -> None:
    out.append("[")
    for i, item in enumerate(value):
        if i:
            out.append(",")
        _encode(item, out)
    out.append("]")


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 UTF-8 bytes of ``value``."""
    out: list[str] = []
    _encode(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError("string holds a lone surrogate") from exc


def is_canonical(data: bytes) -> bool:
    """True when ``data`` parses as JSON and is already in canonical form."""
    try:
        value = json.loads(data, parse_constant=_reject_constant)
        try:
            return canonical_bytes(value) == data
        except CanonicalizationError:
            # An integral double beyond 2^53 is written without a fraction
            # ("1e20" as 100000000000000000000); read such literals as doubles.
            value = json.loads(data, parse_constant=_reject_constant, parse_int=number_from_int)
            return canonical_bytes(value) == data
    except (ValueError, RecursionError):
        return False


def number_from_int(literal: str) -> int | float:
    """A JSON integer literal as RFC 8785 reads it: an int inside ±(2^53 - 1), else a double.

    RFC 8785 writes an integral double such as 1e20 as ``100000000000000000000``;
    json.loads alone would read that back as an int that has no canonical form.
    Give this to ``json.loads(parse_int=...)`` to read such text back as the
    double it came from (the canonical check then rejects any literal that is
    not exactly a double's shortest form).
    """
    value = int(literal)
    return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else float(literal)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")

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
from typing import Any

__all__ = ["CanonicalizationError", "canonical_bytes", "format_number", "is_canonical"]

_MAX_SAFE_INT = 2**53 - 1
_encode_str = json.JSONEncoder(ensure_ascii=False).encode


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
    return s.encode("utf-16-be")


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        _check_str(value)
        out.append(_encode_str(value))
    elif isinstance(value, int | float):
        out.append(format_number(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key in sorted(value, key=_utf16_key):
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} is not a string")
            if not first:
                out.append(",")
            first = False
            _check_str(key)
            out.append(_encode_str(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise CanonicalizationError(f"{type(value).__name__} has no JSON form")


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError("string holds a lone surrogate") from exc


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 UTF-8 bytes of ``value``."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def is_canonical(data: bytes) -> bool:
    """True when ``data`` parses as JSON and is already in canonical form."""
    try:
        value = json.loads(data, parse_constant=_reject_constant)
        return canonical_bytes(value) == data
    except (ValueError, RecursionError):
        return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")

"""Wire bytes as text a technician can read, one way for every driver."""

from __future__ import annotations

__all__ = ["escape"]

_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\"}


def escape(data: bytes, *, utf8: bool = False) -> str:
    """``data`` as printable text: CR, LF, tab and backslash as ``\\r``, ``\\n``, ``\\t``,
    ``\\\\``; any other byte that is not printable ASCII as ``\\xNN``.

    With ``utf8`` (MQTT payloads are text), printable non-ASCII characters are
    kept and only bytes that are not valid UTF-8 are written as ``\\xNN``.
    """
    text = data.decode("utf-8", "surrogateescape") if utf8 else data.decode("latin-1")
    out: list[str] = []
    for c in text:
        code = ord(c)
        if c in _NAMED:
            out.append(_NAMED[c])
        elif 0x20 <= code < 0x7F or (utf8 and code > 0x7F and c.isprintable()):
            out.append(c)
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, surrogate-escaped
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)

"""Signed log records: what a log entry is, how it is signed, and the rules it obeys.

An entry is the RFC 8785 bytes of ``{"rec": <record>, "sig": <base64 Ed25519
signature over the RFC 8785 bytes of the record>}``. Because "rec" sorts
before "sig", the signed bytes appear verbatim inside the entry. Record kinds
and fields are listed in docs/bundle-format.md; ``parse_entry`` enforces them.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.scanner
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii  # what json.dumps(str) uses
from typing import Any, NamedTuple

import nacl.signing

from .canonical import CanonicalizationError, canonical_bytes, number_from_int
from .errors import RecordError
from .note import Verifier

__all__ = [
    "CLOCK_STATES",
    "KINDS",
    "QC_FLAGS",
    "RECORD_VERSION",
    "Entry",
    "format_time",
    "make_entry",
    "parse_entry",
    "parse_time",
]

RECORD_VERSION = 1
KINDS = ("reading", "gap", "event")
CLOCK_STATES = ("synced", "unsynced", "unknown")
QC_FLAGS = frozenset({1, 2, 3, 4, 9})
"""IOOS QARTOD flags: pass, not evaluated, suspect, fail, missing."""
_QC_MISSING = 9
_QC_DIGITS = frozenset("12349")
# re.ASCII: \d must not match other scripts' digits, which int() would accept.
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z", re.ASCII)
_HEX8 = re.compile(r"[0-9a-f]{8}")


def format_time(ns: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-21T05:09:56.123456Z``."""
    secs, rem = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem // 1000:06d}Z"


def parse_time(text: str) -> datetime:
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise RecordError(f"time {text!r} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.f]Z)")
    # The regex fixed the shape; fromisoformat checks the date is real and keeps
    # the first six fraction digits (truncating, as the format's microseconds do).
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise RecordError(f"time {text!r} is not a real date") from exc


def make_entry(record: Mapping[str, Any], signing_key: nacl.signing.SigningKey) -> bytes:
    """Sign ``record`` and return the entry bytes that go into the log."""
    body = canonical_bytes(record)
    sig = base64.b64encode(signing_key.sign(body).signature)
    return b'{"rec":' + body + b',"sig":"' + sig + b'"}'


class Entry(NamedTuple):
    """A parsed entry. ``rec`` is the record as decoded JSON.

    A NamedTuple, not a dataclass: one is made per entry on the verifier's hot path.
    """

    raw: bytes
    rec: Mapping[str, Any]
    signed: bytes
    signature: bytes

    @property
    def kind(self) -> str:
        return str(self.rec["kind"])

    @property
    def index(self) -> int:  # type: ignore[override]  # shadows tuple.index, deliberately
        return int(self.rec["index"])

    @property
    def key(self) -> str:
        return str(self.rec["key"])

    @property
    def sensor(self) -> str | None:
        s = self.rec.get("sensor")
        return None if s is None else str(s)

    @property
    def seq(self) -> int | None:
        s = self.rec.get("seq")
        return None if s is None else int(s)

    def verify_signature(self, verifier: Verifier) -> bool:
        return verifier.verify(self.signed, self.signature)


def _need(rec: Mapping[str, Any], name: str, typ: type | tuple[type, ...]) -> Any:
    if name not in rec:
        raise RecordError(f"field {name!r} is missing")
    value = rec[name]
    if not isinstance(value, typ) or (isinstance(value, bool) and bool not in _as_tuple(typ)):
        raise RecordError(f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _as_tuple(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def _nonneg(rec: Mapping[str, Any], name: str) -> int:
    value: int = _need(rec, name, int)
    if value < 0:
        raise RecordError(f"field {name!r} is negative")
    return value


def _qc_flag(value: Any, what: str) -> int:
    if type(value) is not int or value not in QC_FLAGS:
        raise RecordError(f"{what} {value!r} is not a QARTOD flag (1, 2, 3, 4 or 9)")
    return value


def _check_qc(qc: Any) -> int:
    """A value's ``qc``: ``{"flag": f, "tests": "ffff"}``, one digit per test; returns
    the flag."""
    if not isinstance(qc, dict):
        raise RecordError("a value's 'qc' is not an object")
    flag = _qc_flag(_need(qc, "flag", int), "qc flag")
    tests = _need(qc, "tests", str)
    if not tests or not set(tests) <= _QC_DIGITS:
        raise RecordError(f"qc tests {tests!r} are not QARTOD flag digits (1, 2, 3, 4, 9)")
    return flag


_good_keys: set[str] = set()  # key IDs already seen well-formed (a handful per log)


_good_minutes: dict[str, None] = {}  # "YYYY-MM-DDTHH:MM" prefixes already seen valid


def _time_ok(text: Any) -> bool:
    """``parse_time`` would accept ``text``: its shape, and a real date, hour and minute
    (remembered per minute, as readings of one minute share them) and second."""
    if type(text) is not str or not _TIME_RE.fullmatch(text):
        return False
    minute = text[:16]
    if minute in _good_minutes:
        return text[17:19] < "60"  # the regex made it two ASCII digits
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    if len(_good_minutes) >= 4096:
        _good_minutes.clear()
    _good_minutes[minute] = None
    return True


_good_tests: set[str] = set()  # qc "tests" strings already seen to be flag digits


def _qc_digits(tests: str) -> bool:
    if not tests or not set(tests) <= _QC_DIGITS:
        return False
    if len(_good_tests) < 256:
        _good_tests.add(tests)
    return True


def _reading_ok(rec: Mapping[str, Any]) -> bool:
    """The checks of ``_check_record`` for a plain reading, without building messages.

    True only where ``_check_record`` would pass; anything unusual returns False
    and gets the full checks and their precise message.
    """
    try:
        key, index, seq, values = rec["key"], rec["index"], rec["seq"], rec["values"]
        if key not in _good_keys:
            if type(key) is not str or not _HEX8.fullmatch(key):
                return False
            if len(_good_keys) < 64:
                _good_keys.add(key)
        if (
            rec["v"] != RECORD_VERSION
            or type(rec["v"]) is not int
            or type(rec["device"]) is not str
            or type(index) is not int
            or index < 0
            or type(seq) is not int
            or seq < 0
            or type(rec["sensor"]) is not str
            or rec["clock"] not in CLOCK_STATES
            or type(values) is not list
            or not values
            or not _time_ok(rec["time"])
        ):
            return False
        for v in values:
            if type(v) is not dict or type(v["q"]) is not str or type(v["u"]) is not str:
                return False
            x = v["v"]
            if type(x) is not float and type(x) is not int:
                return False
            if "qc" in v:
                qc = v["qc"]
                if type(qc) is not dict:
                    return False
                flag, tests = qc["flag"], qc["tests"]
                if (
                    type(flag) is not int
                    or flag not in QC_FLAGS
                    or type(tests) is not str
                    or (tests not in _good_tests and not _qc_digits(tests))
                ):
                    return False
    except (KeyError, TypeError):
        return False
    if "sensor_time" in rec and not _time_ok(rec["sensor_time"]):
        return False
    if "src_seq" in rec:
        src = rec["src_seq"]
        return type(src) is int and src >= 0
    return True


def _check_record(rec: Mapping[str, Any]) -> None:
    if rec.get("kind") == "reading" and _reading_ok(rec):
        return
    _check_record_exactly(rec)


def _check_record_exactly(rec: Mapping[str, Any]) -> None:
    """Every rule of docs/bundle-format.md §4.2, each failure with its own message."""
    if _need(rec, "v", int) != RECORD_VERSION:
        raise RecordError(f"record version {rec['v']} is not {RECORD_VERSION}")
    kind = _need(rec, "kind", str)
    if kind not in KINDS:
        raise RecordError(f"record kind {kind!r} is not one of {', '.join(KINDS)}")
    _need(rec, "device", str)
    if not _HEX8.fullmatch(_need(rec, "key", str)):
        raise RecordError("field 'key' is not 8 lower-case hex digits")
    _nonneg(rec, "index")
    parse_time(_need(rec, "time", str))
    if _need(rec, "clock", str) not in CLOCK_STATES:
        raise RecordError(f"field 'clock' is not one of {', '.join(CLOCK_STATES)}")
    if kind in ("reading", "gap"):
        _need(rec, "sensor", str)
        _nonneg(rec, "seq")
    if kind == "reading":
        values = _need(rec, "values", list)
        if not values:
            raise RecordError("a reading has no values")
        for v in values:
            if not isinstance(v, dict):
                raise RecordError("a value is not an object")
            _need(v, "q", str)
            _need(v, "u", str)
            flag = _check_qc(v["qc"]) if "qc" in v else None
            if v.get("v", 0) is None and flag == _QC_MISSING:
                continue  # a missing value: null, flagged 9
            _need(v, "v", (int, float))
        if "sensor_time" in rec:
            parse_time(rec["sensor_time"])
        if "src_seq" in rec:
            _nonneg(rec, "src_seq")
    elif kind == "gap":
        _need(rec, "reason", str)
        start, end = parse_time(_need(rec, "from", str)), parse_time(_need(rec, "to", str))
        if end < start:
            raise RecordError("a gap ends before it starts")
        if ("src_seq_from" in rec) != ("src_seq_to" in rec):
            raise RecordError("a gap names src_seq_from without src_seq_to or the reverse")
        if "src_seq_from" in rec and _nonneg(rec, "src_seq_to") < _nonneg(rec, "src_seq_from"):
            raise RecordError("a gap's src_seq_to is below its src_seq_from")
    else:
        _need(rec, "event", str)


_SIG_MARK = b',"sig":"'


def _make_dumps() -> Callable[[Any], str]:
    """json's C encoder with sorted keys and no spaces, called without the Python
    wrapper around it (this is on the verifier's per-entry path)."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
    encode = c_make_encoder(
        None, None, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
    return lambda value: "".join(encode(value, 0))


_dumps = _make_dumps()


class _Unusual(Exception):
    """A number whose Python repr may differ from its RFC 8785 form: take the exact path."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _plain_float(text: str) -> float:
    # Python's float repr and ECMAScript's Number::toString differ only for
    # integral values ("7.0") and where Python writes an exponent.
    if "e" in text or "E" in text or text.endswith(".0"):
        raise _Unusual
    return float(text)


# Digits to "0", anything else to " ": a run of 16 zeros is an integer that may lie
# beyond 2^53, where RFC 8785 reads a double (cheaper than a hook per integer).
_DIGIT_RUNS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 16

_decoder = json.JSONDecoder(parse_float=_plain_float, parse_constant=_reject_constant)
_scan = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]  # typeshed: a decoder


def _decode_plain(text: str) -> Any:
    """JSON text with no whitespace around it (an entry has none), scanned directly."""
    try:
        value, end = _scan(text, 0)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at character {exc.value}") from None
    if end != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


_SIG_TAIL = len(_SIG_MARK) + 88 + 2  # ,"sig":" + base64 of 64 bytes + "}


def _parse_framed(raw: bytes) -> Entry | None:
    """The entry as riverseal writes it, checked without parsing the frame: the
    record between ``{"rec":`` and an 88-character signature. None: take the
    general path (which decides, and words any refusal).

    json's C encoder, with sorted keys and no spaces, writes RFC 8785 text when
    keys sort the same by code point as by UTF-16 unit (so: ASCII text) and every
    number's repr is its ECMAScript form (``_decode_plain`` lets only such
    numbers in; 16-digit integers are caught after): then re-encoding the record
    and comparing proves it canonical at C speed.
    """
    if (
        len(raw) <= 7 + _SIG_TAIL
        or raw[:7] != b'{"rec":'
        or raw[-_SIG_TAIL:-90] != _SIG_MARK
        or raw[-2:] != b'"}'
        or not raw.isascii()
    ):
        return None
    signed = raw[7:-_SIG_TAIL]
    text = signed.decode("ascii")
    try:
        rec = _decode_plain(text)
    except (_Unusual, ValueError, RecursionError):
        return None
    try:
        same = type(rec) is dict and _dumps(rec) == text
    except RecursionError:  # decoded, but too deep to encode again: the general path says so
        return None
    if not same or _LONG_RUN in signed.translate(_DIGIT_RUNS):
        return None
    # _finish_entry refuses the signature unless it is base64 of 64 bytes.
    return _finish_entry(raw, rec, signed, raw[-90:-2].decode("ascii"))


_TOO_DEEP = "entry nests arrays and objects too deeply to be checked"


def parse_entry(raw: bytes) -> Entry:
    """Parse and check an entry's shape; the signature is checked by the caller."""
    framed = _parse_framed(raw)
    if framed is not None:
        return framed
    # Anything else (other framing, non-ASCII text, numbers whose repr is not their
    # RFC 8785 form): the exact check, by re-encoding.
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise RecordError(f"entry is not JSON: {exc}") from exc
    except RecursionError:
        raise RecordError(_TOO_DEEP) from None
    if not isinstance(doc, dict) or set(doc) != {"rec", "sig"}:
        raise RecordError('entry is not an object with exactly "rec" and "sig"')
    rec, sig_text = doc["rec"], doc["sig"]
    if not isinstance(rec, dict) or not isinstance(sig_text, str):
        raise RecordError('entry "rec" is not an object or "sig" is not a string')
    try:
        signed = canonical_bytes(rec)
    except CanonicalizationError as exc:
        # Perhaps an integral double beyond 2^53 (make_entry writes 1e20 as
        # 100000000000000000000): read integer literals as RFC 8785 does and retry.
        try:
            rec = json.loads(raw, parse_int=number_from_int)["rec"]
            signed = canonical_bytes(rec)
        except (CanonicalizationError, ValueError, RecursionError):
            raise RecordError(f"entry has no canonical form: {exc}") from exc
    except RecursionError:
        # json read it, but it nests too deeply to be encoded again (a record of
        # hundreds of levels): no canonical form can be checked, so none is accepted.
        raise RecordError(_TOO_DEEP) from None
    # "rec" sorts before "sig", so the canonical entry is this concatenation.
    if raw != b'{"rec":' + signed + b',"sig":' + encode_basestring_ascii(sig_text).encode() + b"}":
        raise RecordError("entry is not in RFC 8785 canonical form")
    return _finish_entry(raw, rec, signed, sig_text)


def _finish_entry(raw: bytes, rec: dict[str, Any], signed: bytes, sig_text: str) -> Entry:
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RecordError("signature is not base64") from exc
    if len(signature) != 64:
        raise RecordError(f"signature is {len(signature)} bytes, not 64")
    _check_record(rec)
    return Entry(raw, rec, signed, signature)

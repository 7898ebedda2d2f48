"""Read a v1 bundle (docs/bundle-format.md) from a file in bounded memory.

``Bundle.loads`` holds the whole document, and every entry object, at once;
this reader holds the bundle's small members and one entry at a time, so a
bundle of millions of entries is read in memory that does not grow with it::

    header, entries = read_v1(path)
    for entry in entries():          # each call reads the entries afresh
        ...

``read_v1(path)`` returns the ``V1Header`` (every member but ``entries``) and a
function that opens the file again and yields its ``BundleEntry`` objects one
at a time, in file order. The file is read in chunks (``CHUNK_BYTES``) into a
sliding text buffer, each array element is decoded on its own with
``json.JSONDecoder.raw_decode``, and what has been consumed is dropped.

Order of members. Members may come in any order. When every header member
(``exporter`` included) comes before ``entries`` — as riverseal writes them —
``read_v1`` stops at ``entries``, and the entries iterator reads the rest of
the document after the last entry: the file is parsed once. Otherwise
``read_v1`` reads the whole document, stepping over the entries (checking
their JSON, not keeping them), and the iterator seeks back to them.

**Strictness.** Everything ``Bundle.from_json`` refuses is refused here, with
its messages (``keys[0]: field 'vkey' is missing``, ...), and more, each as a
``MalformedBundle`` naming the member or entry position (``entries[17]``) and
the byte offset where it helps:

- a document that is not one JSON object, or has anything but whitespace
  after it; bytes that are not UTF-8 (a leading byte order mark is skipped,
  as ``json.loads`` does for bytes); ``NaN`` and ``Infinity``, which are not
  JSON;
- a member name repeated in any object, at the top level or inside an entry,
  key, anchor or consistency proof: a reader keeping the first copy and one
  keeping the last must never see different bundles;
- a ``format`` other than ``"riverseal-bundle"``; a ``version`` other than the
  integer 1 (``true``, ``1.0`` and ``"1"`` are refused); a missing member;
- nesting of arrays and objects deeper than ``MAX_NESTING`` (64, the top-level
  object counting 1) anywhere: refused, never a ``RecursionError``;
- a single value (one entry, one key, a non-array member) longer than
  ``MAX_VALUE_CHARS`` characters: refused, so that memory stays bounded.

**When errors surface.** ``read_v1`` raises for anything wrong before
``entries`` (and, on the two-pass path, anywhere in the document). The
iterator raises ``MalformedBundle`` for a malformed entry when it reaches it,
and — on the one-pass path — for anything wrong after the last entry (a
repeated member, trailing garbage) once the entries are exhausted. A consumer
must therefore run the iterator to its end and treat a ``MalformedBundle``
from it as "the bundle is unreadable", discarding anything concluded so far.
The iterator also raises ``MalformedBundle`` if the file is no longer the one
``read_v1`` read (device, inode, size or modification time changed).
``OSError`` from reading the file is not caught.

**Memory.** One chunk plus the value being decoded (at most
``MAX_VALUE_CHARS``) plus the header's objects. The header (keys, checkpoints,
consistency proofs, anchors) is kept whole: it grows with the number of
checkpoints, not of entries.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .bundle import (
    BUNDLE_FORMAT,
    MAX_NESTING,
    AnchorReceipt,
    BundleEntry,
    ConsistencyProof,
    DeviceKey,
    check_version,
    nesting_exceeds,
    object_without_duplicates,
)
from .errors import MalformedBundle

__all__ = ["CHUNK_BYTES", "MAX_NESTING", "MAX_VALUE_CHARS", "V1Header", "read_v1"]

CHUNK_BYTES = 1024**2
"""How much of the file is read at a time."""

MAX_VALUE_CHARS = 64 * 1024**2
"""The longest single value decoded at once: an entry, a key, an anchor, a non-array member."""


@dataclass(frozen=True)
class V1Header:
    """Everything in a v1 bundle except its entries, checked as ``Bundle.from_json`` checks it."""

    origin: str
    device: str
    keys: tuple[DeviceKey, ...]
    checkpoints: tuple[str, ...]
    consistency: tuple[ConsistencyProof, ...]
    anchors: tuple[AnchorReceipt, ...]
    exported: str
    exporter: str
    """``""`` when the bundle has no ``exporter`` member (it is optional)."""


def read_v1(
    path: Path, *, chunk_bytes: int = CHUNK_BYTES
) -> tuple[V1Header, Callable[[], Iterator[BundleEntry]]]:
    """The header of the v1 bundle at ``path``, and a function that streams its entries.

    See the module documentation for what is refused, and when.
    """
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be at least 1")
    with path.open("rb") as f:
        identity = _identity(os.fstat(f.fileno()))
        r = _Reader(f, 0, chunk_bytes)
        r.skip_bom()
        c = r.peek()
        if c != "{":
            if not c:
                raise MalformedBundle("bundle is empty: not a JSON object")
            raise r.error("bundle", f"not JSON, or not a JSON object: it starts with {c!r}")
        r.advance()
        got: dict[str, Any] = {}
        seen: set[str] = set()
        entries_at: int | None = None
        entries_end: int | None = None
        one_pass = False
        for name in r.members(after_value=False, previous=""):
            if name in seen:
                raise MalformedBundle(f"bundle: duplicate member name {name!r} {r.at()}")
            seen.add(name)
            if name != "entries":
                _member(r, name, got)
                continue
            if r.peek() != "[":
                r.value("bundle: member 'entries'", 1)
                raise MalformedBundle("bundle: field 'entries' has the wrong type")
            entries_at = r.offset()
            if seen.issuperset(_HEADER):
                one_pass = True  # the rest is read after the last entry
                break
            for _ in r.array("entries", 2):
                pass
            entries_end = r.offset()
        if not one_pass:
            r.end()
        for name in _REQUIRED:
            if name not in seen:
                raise MalformedBundle(f"bundle: field {name!r} is missing")
    assert entries_at is not None
    header = V1Header(
        origin=got["origin"],
        device=got["device"],
        keys=got["keys"],
        checkpoints=got["checkpoints"],
        consistency=got["consistency"],
        anchors=got["anchors"],
        exported=got["exported"],
        exporter=got.get("exporter", ""),
    )
    seen_before = frozenset(seen)
    start = entries_at

    def entries() -> Iterator[BundleEntry]:
        with path.open("rb") as f:
            if _identity(os.fstat(f.fileno())) != identity:
                raise MalformedBundle(f"{path} changed since its header was read")
            r = _Reader(f, start, chunk_bytes)
            if r.peek() != "[":
                raise MalformedBundle(f"{path} changed since its header was read")
            for i, obj in enumerate(r.array("entries", 2)):
                yield BundleEntry.from_json(obj, f"entries[{i}]")
            if not one_pass:
                if r.offset() != entries_end:
                    raise MalformedBundle(f"{path} changed since its header was read")
                return
            seen = set(seen_before)
            for name in r.members(after_value=True, previous="entries"):
                if name in seen:
                    raise MalformedBundle(f"bundle: duplicate member name {name!r} {r.at()}")
                seen.add(name)
                _member(r, name, {})  # every known member was seen: this one is ignored
            r.end()

    return header, entries


# --- members ---------------------------------------------------------------------------------

_HEADER = frozenset(
    {
        "format",
        "version",
        "origin",
        "device",
        "exported",
        "exporter",
        "keys",
        "checkpoints",
        "consistency",
        "anchors",
    }
)
_REQUIRED = (
    "format",
    "version",
    "origin",
    "device",
    "exported",
    "keys",
    "checkpoints",
    "consistency",
    "anchors",
    "entries",
)
_STRINGS = frozenset({"origin", "device", "exported"})


def _checkpoint(obj: Any, where: str) -> str:
    if not isinstance(obj, str):
        raise MalformedBundle(f"{where}: checkpoints must be signed-note strings")
    return obj


_ELEMENTS: dict[str, Callable[[Any, str], Any]] = {
    "keys": DeviceKey.from_json,
    "checkpoints": _checkpoint,
    "consistency": ConsistencyProof.from_json,
    "anchors": AnchorReceipt.from_json,
}


def _member(r: _Reader, name: str, got: dict[str, Any]) -> None:
    """Read the value of top-level member ``name`` (not ``entries``); keep it in ``got``."""
    is_array = r.peek() == "["
    parse = _ELEMENTS.get(name)
    if parse is not None and is_array:
        got[name] = tuple(parse(obj, f"{name}[{i}]") for i, obj in enumerate(r.array(name, 2)))
        return
    if name not in _HEADER and is_array:  # an unknown array: stepped over element by element
        for _ in r.array(name, 2):
            pass
        return
    value = r.value(f"bundle: member {name!r}", 1)
    if name not in _HEADER:
        return  # unknown members are ignored (§2)
    if name == "format":
        if value != BUNDLE_FORMAT:
            raise MalformedBundle(f"format is {value!r}, not {BUNDLE_FORMAT!r}")
    elif name == "version":
        check_version(value)
    elif name == "exporter":
        got[name] = str(value)  # informational: read as Bundle.from_json reads it
    elif name in _STRINGS and isinstance(value, str):
        got[name] = value
    else:
        raise MalformedBundle(f"bundle: field {name!r} has the wrong type")


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


# --- the chunked reader ----------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _maybe_cut(exc: json.JSONDecodeError, length: int) -> bool:
    """Whether more text might mend this error: it is at the end of the buffer.

    A value cut by the end of the buffer fails within a token's length of it
    (``tru``, ``1e``, half a ``\\uXXXX`` pair), or as an unterminated string;
    an error further back is in the text itself.
    """
    return exc.pos >= length - _LONGEST_TOKEN or exc.msg.startswith("Unterminated string")


_LONGEST_TOKEN = 32
_DECODER = json.JSONDecoder(
    object_pairs_hook=object_without_duplicates, parse_constant=_refuse_constant
)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


class _Reader:
    """JSON text from a byte offset of a binary file, through a sliding buffer.

    ``_buf[_pos:]`` is what has been read and not consumed; ``_base`` is the
    byte offset of ``_buf[0]`` in the file.
    """

    def __init__(self, f: BinaryIO, offset: int, chunk_bytes: int) -> None:
        f.seek(offset)
        self._f = f
        self._chunk = chunk_bytes
        # Bytes that are not UTF-8 become lone surrogates (which no UTF-8 text
        # holds), so that the value holding them is named when it is read.
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._buf = ""
        self._pos = 0
        self._base = offset
        self._read = offset
        self._eof = False
        self._where = "bundle"

    # position

    def offset(self, pos: int | None = None) -> int:
        """The byte offset in the file of ``_buf[pos]`` (default: the next unconsumed)."""
        p = self._pos if pos is None else pos
        return self._base + len(self._buf[:p].encode("utf-8", "surrogateescape"))

    def at(self, pos: int | None = None) -> str:
        p = self._pos if pos is None else pos
        if p >= len(self._buf) and self._eof:
            return "(at the end of the file)"
        return f"(byte {self.offset(p)})"

    def advance(self) -> None:
        self._pos += 1

    def error(self, where: str, what: str, pos: int | None = None) -> MalformedBundle:
        """``where: what (byte N)`` for a problem at ``pos``; or, if the text up to
        there holds bytes that are not UTF-8, that."""
        p = self._pos if pos is None else pos
        bad = _NOT_UTF8.search(self._buf, self._pos, p + 1)
        if bad is not None:
            return MalformedBundle(
                f"{where}: not JSON: not valid UTF-8 (byte {self.offset(bad.start())})"
            )
        return MalformedBundle(f"{where}: {what} {self.at(p)}")

    # reading

    def _fill(self) -> None:
        """Drop what was consumed, and append one more chunk of the file."""
        if self._pos:
            self._base += len(self._buf[: self._pos].encode("utf-8", "surrogateescape"))
            self._buf = self._buf[self._pos :]
            self._pos = 0
        data = self._f.read(self._chunk)
        self._eof = not data
        self._buf += self._utf8.decode(data, final=self._eof)

    def _more(self, where: str) -> None:
        """Read on until what is unconsumed doubles (a value that did not fit)."""
        have = len(self._buf) - self._pos
        if have >= MAX_VALUE_CHARS:
            raise MalformedBundle(
                f"{where}: a single value longer than {MAX_VALUE_CHARS} characters, "
                f"or not JSON {self.at()}"
            )
        # Never read past the limit for one value: what does not fit by then is refused.
        want = min(max(2 * have, have + self._chunk), MAX_VALUE_CHARS)
        while not self._eof and len(self._buf) - self._pos < want:
            self._fill()

    def skip_bom(self) -> None:
        self.peek()
        if self._buf.startswith("\ufeff", self._pos):
            self._pos += 1

    def peek(self) -> str:
        """The next character that is not whitespace (consumed up to it); "" at the end."""
        while True:
            m = _WHITESPACE.match(self._buf, self._pos)
            assert m is not None  # the pattern matches the empty string
            self._pos = m.end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if self._eof:
                return ""
            self._fill()

    def end(self) -> None:
        """Nothing but whitespace may follow the top-level object."""
        if self.peek():
            raise self.error("bundle", "data after the top-level object")

    def value(self, where: str, depth: int) -> Any:
        """Decode one JSON value inside a container at nesting ``depth`` (top level: 1)."""
        self._where = where
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if not self._eof and _maybe_cut(exc, len(self._buf)):
                    self._more(where)  # the value may go on in the next chunk
                    continue
                raise self.error(where, f"not JSON: {exc.msg}", exc.pos) from None
            except RecursionError:
                raise MalformedBundle(
                    f"{where}: nests arrays and objects deeper than {MAX_NESTING} {self.at()}"
                ) from None
            except MalformedBundle as exc:  # a repeated member name
                raise MalformedBundle(f"{where}: {exc} {self.at()}") from None
            except ValueError as exc:  # NaN, Infinity, an integer of too many digits
                raise MalformedBundle(f"{where}: not JSON: {exc} {self.at()}") from None
            if end == len(self._buf) and not self._eof:
                self._more(where)  # a number may go on in the next chunk
                continue
            break
        if end - self._pos > MAX_VALUE_CHARS:  # it fitted in the last chunk read, just
            raise MalformedBundle(
                f"{where}: a single value longer than {MAX_VALUE_CHARS} characters {self.at()}"
            )
        bad = _NOT_UTF8.search(self._buf, self._pos, end)
        if bad is not None:
            raise MalformedBundle(
                f"{where}: not JSON: not valid UTF-8 (byte {self.offset(bad.start())})"
            )
        room = MAX_NESTING - depth
        # A value holding no more openings than ``room`` cannot be deeper (the usual case).
        openings = self._buf.count("[", self._pos, end) + self._buf.count("{", self._pos, end)
        if openings > room and nesting_exceeds(value, room):
            raise MalformedBundle(
                f"{where}: nests arrays and objects deeper than {MAX_NESTING} {self.at()}"
            )
        self._pos = end
        return value

    def members(self, *, after_value: bool, previous: str) -> Iterator[str]:
        """The member names of the top-level object, each yielded with the reader at its value.

        The caller consumes each value before asking for the next name. With
        ``after_value``, the reader is just past the value of ``previous``.
        """
        c = self.peek()
        if not after_value and c == "}":
            self._pos += 1
            return
        while True:
            if after_value:
                if c == "}":
                    self._pos += 1
                    return
                if c != ",":
                    raise self.error("bundle", f"expected ',' or '}}' after member {previous!r}")
                self._pos += 1
                c = self.peek()
            if c != '"':
                raise self.error("bundle", "expected a member name")
            name = self.value("bundle: a member name", 1)
            if self.peek() != ":":
                raise self.error("bundle", f"expected ':' after member name {name!r}")
            self._pos += 1
            self.peek()
            yield name
            previous, after_value = name, True
            c = self.peek()

    def array(self, name: str, depth: int) -> Iterator[Any]:
        """The elements of the array at the reader (``[``), one at a time.

        ``depth`` is the nesting depth of the array itself (a top-level member: 2).
        """
        self._pos += 1
        if self.peek() == "]":
            self._pos += 1
            return
        i = 0
        while True:
            yield self.value(f"{name}[{i}]", depth)
            c = self.peek()
            if c == ",":
                self._pos += 1
                i += 1
            elif c == "]":
                self._pos += 1
                return
            else:
                raise self.error(name, f"expected ',' or ']' after {name}[{i}]")

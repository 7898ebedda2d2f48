"""The bundle v2 container: a plain POSIX ustar archive, written and read in a stream.

Only what docs/bundle-format.md §15 allows: regular-file members with ustar
headers (no pax or GNU extensions, no directories or links), names of at most
100 bytes, each name once, ended by two zero blocks. The writer needs no
seeking; the reader indexes the headers (seeking past the data) and reads a
member's bytes only when asked, so memory does not grow with the archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from .errors import MalformedBundle

__all__ = ["BLOCK", "ContainerReader", "ContainerWriter", "Member", "is_container"]

BLOCK = 512
_MAGIC = b"ustar\x0000"
_MAX_MEMBER = 256 * 1024**2  # the manifest may reach tens of MiB; entry bundles stay under 17


def is_container(head: bytes) -> bool:
    """Whether the first 512 bytes of a file look like a ustar header."""
    return len(head) >= BLOCK and head[257:265] == _MAGIC


def _octal(value: int, width: int) -> bytes:
    text = f"{value:0{width - 1}o}".encode()
    if len(text) > width - 1:
        raise ValueError(f"{value} does not fit a {width}-byte tar field")
    return text + b"\0"


def _header(name: str, size: int, mtime: int) -> bytes:
    raw = name.encode("ascii")
    if not raw or len(raw) > 100:
        raise ValueError(f"member name {name!r} is not 1–100 ASCII bytes")
    h = bytearray(BLOCK)
    h[0 : len(raw)] = raw
    h[100:108] = _octal(0o644, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = _octal(size, 12)
    h[136:148] = _octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:265] = _MAGIC
    h[148:156] = _octal(sum(h), 7) + b" "
    return bytes(h)


class ContainerWriter:
    """Append members to a binary stream; ``close`` writes the end-of-archive blocks."""

    def __init__(self, out: BinaryIO, *, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._names: set[str] = set()
        self.bytes_written = 0

    def add(self, name: str, data: bytes) -> None:
        if name in self._names:
            raise ValueError(f"member {name!r} written twice")
        self._names.add(name)
        pad = -len(data) % BLOCK
        chunk = _header(name, len(data), self._mtime) + data + b"\0" * pad
        self._out.write(chunk)
        self.bytes_written += len(chunk)

    def close(self) -> None:
        self._out.write(b"\0" * (2 * BLOCK))
        self.bytes_written += 2 * BLOCK

    def __enter__(self) -> ContainerWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    offset: int  # of the data, in the file
    size: int


def _parse_octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text or any(c not in b"01234567" for c in text):
        raise MalformedBundle(f"container: {what} field {field!r} is not octal")
    return int(text, 8)


class ContainerReader:
    """An index of a container's members, read from a seekable file.

    Structural problems (a bad header checksum, a member type other than a
    regular file, a name twice, a truncated archive) raise MalformedBundle:
    such a file is not a bundle this verifier can read.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = os.fspath(path)
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self.members: dict[str, Member] = {}
        self.order: list[str] = []
        try:
            self._index()
        except BaseException:
            self._file.close()
            raise

    def _index(self) -> None:
        f = self._file
        total = os.fstat(f.fileno()).st_size
        at = 0
        while True:
            f.seek(at)
            h = f.read(BLOCK)
            if len(h) < BLOCK:
                raise MalformedBundle(
                    f"container: cut short at byte {at} (no end-of-archive blocks)"
                )
            if h == bytes(BLOCK):
                rest = f.read(BLOCK)
                if rest != bytes(BLOCK):
                    raise MalformedBundle(f"container: a lone zero block at byte {at}")
                return
            where = f"member header at byte {at}"
            if h[257:265] != _MAGIC:
                kind = "a GNU tar" if h[257:265] == b"ustar  \0" else "not a POSIX ustar"
                raise MalformedBundle(
                    f"container: {where} is {kind} header; a riverseal bundle is a POSIX "
                    "ustar archive (tar --format=ustar)"
                )
            stored = _parse_octal(h[148:156], f"{where}: checksum")
            if stored != sum(h[:148]) + 8 * 32 + sum(h[156:]):
                raise MalformedBundle(f"container: {where} has a wrong checksum")
            if h[156:157] not in (b"0", b"\0"):
                raise MalformedBundle(
                    f"container: {where} is of type {h[156:157]!r}; only regular files may "
                    "be in a bundle"
                )
            if h[345:500].strip(b"\0"):
                raise MalformedBundle(f"container: {where} uses a ustar name prefix")
            raw_name = h[0:100].split(b"\0", 1)[0]
            try:
                name = raw_name.decode("ascii")
            except UnicodeDecodeError as exc:
                raise MalformedBundle(f"container: {where} has a non-ASCII name") from exc
            size = _parse_octal(h[124:136], f"{where}: size")
            if size > _MAX_MEMBER:
                raise MalformedBundle(f"container: member {name!r} is {size} bytes, too large")
            data_at = at + BLOCK
            if data_at + size > total:
                raise MalformedBundle(f"container: member {name!r} is cut short")
            if name in self.members:
                raise MalformedBundle(f"container: member {name!r} appears twice")
            self.members[name] = Member(name, data_at, size)
            self.order.append(name)
            at = data_at + size + (-size % BLOCK)

    def read(self, name: str) -> bytes:
        m = self.members[name]
        self._file.seek(m.offset)
        data = self._file.read(m.size)
        if len(data) != m.size:
            raise MalformedBundle(f"container: member {name!r} is cut short")
        return data

    def get(self, name: str) -> bytes | None:
        return self.read(name) if name in self.members else None

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

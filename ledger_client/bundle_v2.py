"""Bundle format version 2: a tlog-tiles tree in a ustar container, with a manifest.

docs/bundle-format.md §14–§16 is the normative description. A v2 bundle is
the log's own published files (hash tiles and entry bundles, C2SP
tlog-tiles) for one stretch of the tree, plus ``riverseal-bundle.json``: the
device keys, the signed checkpoints the stretch is checked against, anchor
receipts and what was selected. The same manifest sits beside a published
tiles directory (a mirror), so one reader serves both.

Reading checks shape only; what is true is the verifier's job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .bundle import (
    BUNDLE_FORMAT,
    MAX_NESTING,
    AnchorReceipt,
    DeviceKey,
    nesting_exceeds,
    object_without_duplicates,
)
from .checkpoint import Checkpoint
from .errors import LedgerClientError, MalformedBundle
from .note import split_note
from .records import parse_time

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "SELECTED_PREFIX",
    "Manifest",
    "Selection",
    "decode_selected",
    "encode_selected",
    "read_entries",
]

MANIFEST_NAME = "riverseal-bundle.json"
MANIFEST_VERSION = 2
CHECKPOINT_NAME = "checkpoint"
SELECTED_PREFIX = "riverseal/selected/"
MAX_MANIFEST_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class Selection:
    """What the exporter was asked for: entries received in [since, until], of
    ``sensors`` (None: all), which lie at indexes ``first``–``last``."""

    first: int
    last: int
    since: str | None = None
    until: str | None = None
    sensors: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "last": self.last,
            "since": self.since,
            "until": self.until,
            "sensors": None if self.sensors is None else list(self.sensors),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Selection:
        where = "manifest.selection"
        if not isinstance(obj, dict):
            raise MalformedBundle(f"{where}: expected an object or null")
        first, last = _int(obj, "first", where), _int(obj, "last", where)
        since, until = obj.get("since"), obj.get("until")
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                if not isinstance(value, str):
                    raise MalformedBundle(f"{where}.{name}: expected a time or null")
                try:
                    parse_time(value)
                except LedgerClientError as exc:
                    raise MalformedBundle(f"{where}.{name}: {exc}") from exc
        sensors = obj.get("sensors")
        if sensors is not None and (
            not isinstance(sensors, list)
            or not sensors
            or not all(isinstance(s, str) and s for s in sensors)
            or len(set(sensors)) != len(sensors)
        ):
            raise MalformedBundle(f"{where}.sensors: expected null or distinct sensor ids")
        if not 0 <= first <= last:
            raise MalformedBundle(f"{where}: first {first} and last {last} are not a range")
        return cls(first, last, since, until, None if sensors is None else tuple(sensors))


def strict_json_loads(data: bytes, what: str) -> Any:
    """JSON with no repeated member names and at most MAX_NESTING levels (as v1 bundles)."""
    try:
        value = json.loads(data, object_pairs_hook=object_without_duplicates)
    except RecursionError as exc:
        raise MalformedBundle(f"{what} nests deeper than {MAX_NESTING} levels") from exc
    except MalformedBundle as exc:
        raise MalformedBundle(f"{what}: {exc}") from exc
    except ValueError as exc:
        raise MalformedBundle(f"{what} is not JSON: {exc}") from exc
    if nesting_exceeds(value, MAX_NESTING):
        raise MalformedBundle(f"{what} nests deeper than {MAX_NESTING} levels")
    return value


def _int(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if type(value) is not int or value < 0:
        raise MalformedBundle(f"{where}: field {name!r} is not a non-negative integer")
    return value


def _str(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise MalformedBundle(f"{where}: field {name!r} is missing or not a string")
    return value


def _list(obj: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise MalformedBundle(f"{where}: field {name!r} is missing or not an array")
    return value


@dataclass(frozen=True)
class Manifest:
    origin: str
    device: str
    keys: tuple[DeviceKey, ...]
    checkpoints: tuple[str, ...]
    anchors: tuple[AnchorReceipt, ...]
    start: int
    selection: Selection | None
    exported: str
    exporter: str = "riverseal"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "version": MANIFEST_VERSION,
            "origin": self.origin,
            "device": self.device,
            "exported": self.exported,
            "exporter": self.exporter,
            "keys": [k.to_json() for k in self.keys],
            "start": self.start,
            "selection": None if self.selection is None else self.selection.to_json(),
            "checkpoints": list(self.checkpoints),
            "anchors": [a.to_json() for a in self.anchors],
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def loads(cls, data: bytes) -> Manifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise MalformedBundle(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        doc = strict_json_loads(data, "manifest")
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        where = "manifest"
        if not isinstance(doc, dict):
            raise MalformedBundle("manifest is not a JSON object")
        if doc.get("format") != BUNDLE_FORMAT:
            raise MalformedBundle(f"format is {doc.get('format')!r}, not {BUNDLE_FORMAT!r}")
        version = doc.get("version")
        if type(version) is not int or version != MANIFEST_VERSION:
            raise MalformedBundle(
                f"manifest version {version!r} is not the integer {MANIFEST_VERSION}"
            )
        checkpoints = _list(doc, "checkpoints", where)
        if not checkpoints or not all(isinstance(c, str) for c in checkpoints):
            raise MalformedBundle("manifest: checkpoints must be one or more signed notes")
        selection = doc.get("selection")
        if "selection" not in doc:
            raise MalformedBundle("manifest: field 'selection' is missing")
        exporter = doc.get("exporter", "")
        return cls(
            origin=_str(doc, "origin", where),
            device=_str(doc, "device", where),
            keys=tuple(
                DeviceKey.from_json(k, f"manifest.keys[{i}]")
                for i, k in enumerate(_list(doc, "keys", where))
            ),
            checkpoints=tuple(checkpoints),
            anchors=tuple(
                AnchorReceipt.from_json(a, f"manifest.anchors[{i}]")
                for i, a in enumerate(_list(doc, "anchors", where))
            ),
            start=_int(doc, "start", where),
            selection=None if selection is None else Selection.from_json(selection),
            exported=_str(doc, "exported", where),
            exporter=exporter if isinstance(exporter, str) else "",
        )


def encode_selected(entries: list[tuple[int, bytes]]) -> bytes:
    """A ``riverseal/selected/<N>`` member: (position in tile, entry) pairs, ascending.

    Each is one byte of position (0–255), a big-endian uint16 length, the entry.
    """
    out = bytearray()
    last = -1
    for pos, data in entries:
        if not last < pos < 256 or len(data) > 0xFFFF:
            raise ValueError(f"selected entry at position {pos} out of order or too large")
        out.append(pos)
        out += len(data).to_bytes(2, "big") + data
        last = pos
    return bytes(out)


def decode_selected(data: bytes, width: int, what: str) -> list[tuple[int, bytes]]:
    """The (position, entry) pairs of a selected-entries member of a tile ``width`` wide."""
    out: list[tuple[int, bytes]] = []
    at, end, last = 0, len(data), -1
    while at < end:
        if at + 3 > end:
            raise MalformedBundle(f"{what}: cut short at byte {at}")
        pos, n = data[at], (data[at + 1] << 8) | data[at + 2]
        at += 3
        if not last < pos < width:
            raise MalformedBundle(f"{what}: position {pos} is out of order or beyond the tile")
        if at + n > end:
            raise MalformedBundle(f"{what}: entry at position {pos} is cut short")
        out.append((pos, data[at : at + n]))
        at += n
        last = pos
    if not out:
        raise MalformedBundle(f"{what}: holds no entry")
    return out


def read_entries(path: os.PathLike[str] | str) -> Iterator[tuple[int, bytes]]:
    """(index, entry bytes) of every entry a v2 bundle carries in full, in index order.

    Reads one member at a time; checks nothing (``ledger-verify`` does): for tools
    and tests that look inside a bundle already verified.
    """
    from .container import ContainerReader
    from .tiles import ENTRIES, TILE_WIDTH, decode_entry_bundle, tile_path

    with ContainerReader(path) as reader:
        manifest = Manifest.loads(reader.read(MANIFEST_NAME))
        size = Checkpoint.parse(split_note(manifest.checkpoints[-1])[0]).size
        for t in range(manifest.start // TILE_WIDTH, (size - 1) // TILE_WIDTH + 1):
            width = min(TILE_WIDTH, size - t * TILE_WIDTH)
            data = reader.get(tile_path(ENTRIES, t, width))
            if data is not None:
                for i, raw in enumerate(decode_entry_bundle(data, width)):
                    yield t * TILE_WIDTH + i, raw
                continue
            selected = reader.get(SELECTED_PREFIX + tile_path(0, t)[len("tile/0/") :])
            if selected is not None:
                for pos, raw in decode_selected(selected, width, f"tile {t}"):
                    yield t * TILE_WIDTH + pos, raw

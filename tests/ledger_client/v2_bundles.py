"""Writing v2 bundles and tile mirrors purely, for verifier tests (no gateway).

``write_v2`` lays out docs/bundle-format.md §15 from a list of entries, a signer
and checkpoint sizes; ``write_mirror`` lays out §16.1 as a directory. Both take
the tiles from ``ledger_client.tiles.TileBuilder``; the tiles themselves are
checked against independent references in test_tiles_independent.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ledger_client.bundle import DeviceKey
from ledger_client.bundle_v2 import Manifest, Selection, encode_selected
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.container import ContainerWriter
from ledger_client.merkle import leaf_hash
from ledger_client.note import Signer
from ledger_client.tiles import (
    ENTRIES,
    TILE_WIDTH,
    TileBuilder,
    encode_entry_bundle,
    left_context,
    tile_path,
)


def all_tiles(entries: Sequence[bytes], size: int) -> dict[str, bytes]:
    """Every hash tile of the tree of the first ``size`` entries, by path."""
    b = TileBuilder()
    out: dict[str, bytes] = {}
    for e in entries[:size]:
        b.append(leaf_hash(e))
        for level, index, data in b.take_full_tiles():
            out[tile_path(level, index)] = data
    for ref, data in b.partials():
        out[ref.path] = data
    return out


def notes_for(
    signer: Signer, origin: str, entries: Sequence[bytes], sizes: Sequence[int]
) -> list[str]:
    b = TileBuilder()
    notes = []
    wanted = sorted(sizes)
    for i, e in enumerate(entries[: wanted[-1]]):
        b.append(leaf_hash(e))
        if i + 1 in wanted:
            notes.append(sign_checkpoint(Checkpoint(origin, i + 1, b.root()), signer))
    return notes


def sensor_of(entry: bytes) -> str | None:
    rec = json.loads(entry)["rec"]
    sensor = rec.get("sensor")
    return sensor if isinstance(sensor, str) else None


def manifest_for(
    signer: Signer,
    origin: str,
    device: str,
    notes: Sequence[str],
    *,
    start: int = 0,
    selection: Selection | None = None,
) -> Manifest:
    return Manifest(
        origin=origin,
        device=device,
        keys=(DeviceKey(signer.verifier().to_vkey()),),
        checkpoints=tuple(notes),
        anchors=(),
        start=start,
        selection=selection,
        exported="2026-06-01T00:00:00.000000Z",
        exporter="tests",
    )


def v2_members(
    entries: Sequence[bytes],
    manifest: Manifest,
    size: int,
    *,
    sensors: Sequence[str] | None = None,
) -> list[tuple[str, bytes]]:
    """The members of a v2 bundle, in the order riverseal writes them."""
    tiles = all_tiles(entries, size)
    members = [("riverseal-bundle.json", manifest.dumps())]
    members.append(("checkpoint", manifest.checkpoints[-1].encode()))
    for ref in left_context(manifest.start, size):
        members.append((ref.path, tiles[ref.path]))
    for t in range(manifest.start // TILE_WIDTH, (size - 1) // TILE_WIDTH + 1):
        width = min(TILE_WIDTH, size - t * TILE_WIDTH)
        chunk = entries[t * TILE_WIDTH : t * TILE_WIDTH + width]
        if sensors is None:
            members.append((tile_path(ENTRIES, t, width), encode_entry_bundle(chunk)))
        else:
            members.append((tile_path(0, t, width), tiles[tile_path(0, t, width)]))
            chosen = [(i, e) for i, e in enumerate(chunk) if sensor_of(e) in sensors]
            if chosen:
                name = "riverseal/selected/" + tile_path(0, t)[len("tile/0/") :]
                members.append((name, encode_selected(chosen)))
    return members


def write_container(path: Path, members: Sequence[tuple[str, bytes]]) -> Path:
    with path.open("wb") as f, ContainerWriter(f) as w:
        for name, data in members:
            w.add(name, data)
    return path


def write_mirror(root: Path, entries: Sequence[bytes], manifest: Manifest, size: int) -> Path:
    """A published mirror of the tree of ``size``: every tile and entry bundle,
    the manifest, and the checkpoint (the manifest's last note)."""
    files = dict(all_tiles(entries, size))
    for t in range((size - 1) // TILE_WIDTH + 1):
        width = min(TILE_WIDTH, size - t * TILE_WIDTH)
        chunk = entries[t * TILE_WIDTH : t * TILE_WIDTH + width]
        files[tile_path(ENTRIES, t, width)] = encode_entry_bundle(chunk)
    files["riverseal-bundle.json"] = manifest.dumps()
    files["checkpoint"] = manifest.checkpoints[-1].encode()
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def ustar_member(name: str, data: bytes, *, typeflag: bytes = b"0") -> bytes:
    """One ustar member (header, data, padding) built by hand, without the checks of
    ContainerWriter: for containers the reader must refuse (a name twice, a directory)."""
    h = bytearray(512)
    raw = name.encode("ascii")
    h[0 : len(raw)] = raw
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = f"{len(data):011o}\0".encode()
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h) + data + bytes(-len(data) % 512)


def write_raw_container(path: Path, members: Sequence[tuple[str, bytes]]) -> Path:
    """A container of exactly these members, duplicates and all, ended by two zero blocks."""
    path.write_bytes(b"".join(ustar_member(n, d) for n, d in members) + bytes(1024))
    return path

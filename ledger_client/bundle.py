"""The riverseal bundle, format version 1: one JSON document a regulator verifies offline.

docs/bundle-format.md is the normative description; this module reads and
writes it. Reading checks only shape (types, required fields, version);
whether anything in it is *true* is the verifier's job.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import MalformedBundle

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "MAX_NESTING",
    "AnchorReceipt",
    "Bundle",
    "BundleEntry",
    "ConsistencyProof",
    "DeviceKey",
    "check_version",
    "nesting_exceeds",
    "object_without_duplicates",
]

BUNDLE_FORMAT = "riverseal-bundle"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 2 * 1024**3  # a limit on what we agree to parse, not on what we export
MAX_NESTING = 64
"""The deepest nesting of arrays and objects a bundle may have; the top-level object is 1.

A v1 bundle as written is 4 deep (bundle → entries → entry → inclusion); anchor
receipts add a few levels. Deeper input is refused as malformed, by every
reader alike, and never surfaces as a RecursionError.
"""
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
"""Hex as docs/bundle-format.md §1 writes it: lower-case, two digits a byte, nothing else."""


def object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json``: the object, refused if a member name repeats.

    A parser that keeps the first copy of a repeated name and one that keeps
    the last would read different bundles from the same bytes; a bundle with a
    repeated name is therefore not read at all.
    """
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise MalformedBundle(f"duplicate member name {name!r} in an object")
            seen.add(name)
    return obj


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests arrays and objects deeper than ``limit``.

    A scalar is 0 deep, ``[]`` and ``{}`` are 1. Iterative: never a RecursionError.
    """
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        for c in v.values() if isinstance(v, dict) else v:
            if isinstance(c, dict | list):
                stack.append((c, depth + 1))
    return False


def _b64(items: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in items]


def _unb64(items: Any, where: str) -> list[bytes]:
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise MalformedBundle(f"{where}: expected a list of base64 strings")
    try:
        return [base64.b64decode(s, validate=True) for s in items]
    except (binascii.Error, ValueError) as exc:
        raise MalformedBundle(f"{where}: not valid base64") from exc


def _get(obj: Any, name: str, typ: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict):
        raise MalformedBundle(f"{where}: expected an object")
    if name not in obj:
        raise MalformedBundle(f"{where}: field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
        raise MalformedBundle(f"{where}: field {name!r} has the wrong type")
    return value


@dataclass(frozen=True)
class DeviceKey:
    """A device signing key (C2SP vkey string) and when it was in use."""

    vkey: str
    valid_from: str | None = None
    valid_until: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"vkey": self.vkey, "valid_from": self.valid_from, "valid_until": self.valid_until}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> DeviceKey:
        vkey = _get(obj, "vkey", str, where)
        vf, vu = obj.get("valid_from"), obj.get("valid_until")
        if not isinstance(vf, str | None) or not isinstance(vu, str | None):
            raise MalformedBundle(f"{where}: validity times must be strings or null")
        return cls(vkey, vf, vu)


@dataclass(frozen=True)
class BundleEntry:
    """A log entry, with the inclusion proof that puts it under a checkpoint."""

    index: int
    entry: bytes
    checkpoint: int
    inclusion: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "entry": self.entry.decode("utf-8"),
            "checkpoint": self.checkpoint,
            "inclusion": _b64(self.inclusion),
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> BundleEntry:
        text = _get(obj, "entry", str, where)
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedBundle(f"{where}: entry text is not valid Unicode") from exc
        return cls(
            _get(obj, "index", int, where),
            raw,
            _get(obj, "checkpoint", int, where),
            tuple(_unb64(_get(obj, "inclusion", list, where), f"{where}.inclusion")),
        )


@dataclass(frozen=True)
class ConsistencyProof:
    size1: int
    size2: int
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"size1": self.size1, "size2": self.size2, "proof": _b64(self.proof)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> ConsistencyProof:
        return cls(
            _get(obj, "size1", int, where),
            _get(obj, "size2", int, where),
            tuple(_unb64(_get(obj, "proof", list, where), f"{where}.proof")),
        )


@dataclass(frozen=True)
class AnchorReceipt:
    """Evidence that a checkpoint digest was committed to a ledger."""

    checkpoint: int
    backend: str
    digest: bytes
    state: str
    receipt: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "backend": self.backend,
            "digest": self.digest.hex(),
            "state": self.state,
            "receipt": dict(self.receipt),
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> AnchorReceipt:
        digest_hex = _get(obj, "digest", str, where)
        # bytes.fromhex would also take upper case and spaces; §1 allows neither.
        if not _HEX.fullmatch(digest_hex):
            raise MalformedBundle(
                f"{where}: digest {digest_hex[:80]!r} is not lower-case hex (two digits a byte)"
            )
        return cls(
            _get(obj, "checkpoint", int, where),
            _get(obj, "backend", str, where),
            bytes.fromhex(digest_hex),
            _get(obj, "state", str, where),
            _get(obj, "receipt", dict, where),
        )


def check_version(version: Any) -> None:
    """Refuse any ``version`` but the integer 1 (not ``true``, ``1.0`` or ``"1"``)."""
    if type(version) is not int:
        raise MalformedBundle(
            f"bundle version {version!r} is not the integer {BUNDLE_VERSION} "
            "(a JSON number without fraction or exponent)"
        )
    if version != BUNDLE_VERSION:
        raise MalformedBundle(
            f"bundle version {version!r} is not {BUNDLE_VERSION}; a newer ledger-verify may read it"
        )


@dataclass(frozen=True)
class Bundle:
    origin: str
    device: str
    keys: tuple[DeviceKey, ...]
    entries: tuple[BundleEntry, ...]
    checkpoints: tuple[str, ...]
    consistency: tuple[ConsistencyProof, ...]
    anchors: tuple[AnchorReceipt, ...]
    exported: str
    exporter: str = "riverseal"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "origin": self.origin,
            "device": self.device,
            "exported": self.exported,
            "exporter": self.exporter,
            "keys": [k.to_json() for k in self.keys],
            "checkpoints": list(self.checkpoints),
            "consistency": [c.to_json() for c in self.consistency],
            "anchors": [a.to_json() for a in self.anchors],
            "entries": [e.to_json() for e in self.entries],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def loads(cls, data: str | bytes) -> Bundle:
        if len(data) > MAX_BUNDLE_BYTES:
            raise MalformedBundle(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes")
        too_deep = f"bundle nests arrays and objects deeper than {MAX_NESTING}"
        try:
            doc = json.loads(data, object_pairs_hook=object_without_duplicates)
        except MalformedBundle as exc:
            raise MalformedBundle(f"bundle: {exc}") from exc
        except RecursionError:  # json's own guard, far deeper than MAX_NESTING
            raise MalformedBundle(too_deep) from None
        except ValueError as exc:
            raise MalformedBundle(f"bundle is not JSON: {exc}") from exc
        if nesting_exceeds(doc, MAX_NESTING):
            raise MalformedBundle(too_deep)
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: Any) -> Bundle:
        if not isinstance(doc, dict):
            raise MalformedBundle("bundle is not a JSON object")
        if doc.get("format") != BUNDLE_FORMAT:
            raise MalformedBundle(f"format is {doc.get('format')!r}, not {BUNDLE_FORMAT!r}")
        check_version(doc.get("version"))

        def items(name: str) -> list[Any]:
            value: list[Any] = _get(doc, name, list, "bundle")
            return value

        checkpoints = items("checkpoints")
        if not all(isinstance(c, str) for c in checkpoints):
            raise MalformedBundle("bundle: checkpoints must be signed-note strings")
        return cls(
            origin=_get(doc, "origin", str, "bundle"),
            device=_get(doc, "device", str, "bundle"),
            keys=tuple(DeviceKey.from_json(k, f"keys[{i}]") for i, k in enumerate(items("keys"))),
            entries=tuple(
                BundleEntry.from_json(e, f"entries[{i}]") for i, e in enumerate(items("entries"))
            ),
            checkpoints=tuple(checkpoints),
            consistency=tuple(
                ConsistencyProof.from_json(c, f"consistency[{i}]")
                for i, c in enumerate(items("consistency"))
            ),
            anchors=tuple(
                AnchorReceipt.from_json(a, f"anchors[{i}]") for i, a in enumerate(items("anchors"))
            ),
            exported=_get(doc, "exported", str, "bundle"),
            exporter=str(doc.get("exporter", "")),
        )

"""One reading as evidence: a C2SP tlog-proof@v1 file (docs/bundle-format.md §16.2).

The file proves a single log entry: its index, the RFC 9162 inclusion hashes
up to a signed checkpoint, and that checkpoint's note, in the C2SP
``tlog-proof`` text form. riverseal's ``extra`` line carries what a regulator
needs besides: the device, its key(s), the entry itself and the anchor
receipts of the checkpoint (``extra`` is not authenticated, and nothing in it
is trusted: the entry is checked by its signature and its leaf hash, the keys
only stand in when no trust list is given, and the receipts are checked like
any others).

``parse_evidence`` reads the bytes strictly and raises MalformedBundle naming
the line at fault. ``verify_evidence`` is pure and runs the same numbered
checklist as ``verify_bundle`` (by handing it the evidence as a one-entry,
one-checkpoint bundle); steps 6 (consistency) and 8 (completeness) are about
more than one reading and are reported as not applying.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .anchors import AnchorChecker
from .bundle import AnchorReceipt, Bundle, BundleEntry, DeviceKey
from .bundle_v2 import strict_json_loads
from .checkpoint import Checkpoint
from .errors import LedgerClientError, MalformedBundle
from .lineage import KeptCheckpoint
from .merkle import HASH_SIZE
from .note import Verifier, split_note
from .trust import TrustedKey, TrustList
from .verify import Report, StepResult, verify_bundle

__all__ = [
    "EVIDENCE_FORMAT",
    "EVIDENCE_VERSION",
    "PROOF_HEADER",
    "Evidence",
    "parse_evidence",
    "verify_evidence",
]

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
EVIDENCE_FORMAT = "riverseal-evidence"
EVIDENCE_VERSION = 1
MAX_EVIDENCE_BYTES = 16 * 1024**2
"""What ``parse_evidence`` agrees to read: an entry is at most 64 KiB, receipts a few KiB."""
MAX_PROOF_HASHES = 64
"""An inclusion proof in a tree of fewer than 2**64 leaves has at most 64 hashes."""

NOT_APPLICABLE = {
    "consistency": "consistency (step 6) does not apply to a single reading: "
    "the evidence holds one checkpoint",
    "completeness": "completeness (step 8) does not apply to a single reading: "
    "it proves that one entry, not that none is missing around it",
}


@dataclass(frozen=True)
class Evidence:
    """A parsed evidence file: one entry, its inclusion hashes and checkpoint.

    ``checkpoint`` is the signed note exactly as in the file; ``tree`` is its
    body, parsed (not yet verified). ``device``, ``keys``, ``entry`` and
    ``anchors`` come from the ``extra`` line.
    """

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    device: str
    keys: tuple[DeviceKey, ...]
    entry: bytes
    anchors: tuple[AnchorReceipt, ...] = ()

    @property
    def tree(self) -> Checkpoint:
        text, _ = split_note(self.checkpoint)
        return Checkpoint.parse(text)

    def extra_json(self) -> dict[str, Any]:
        return {
            "format": EVIDENCE_FORMAT,
            "version": EVIDENCE_VERSION,
            "device": self.device,
            "keys": [k.to_json() for k in self.keys],
            "entry": self.entry.decode("utf-8"),
            "anchors": [a.to_json() for a in self.anchors],
        }

    def dumps(self) -> bytes:
        """The tlog-proof@v1 text of this evidence, as written to a file."""
        extra = json.dumps(self.extra_json(), ensure_ascii=False, separators=(",", ":"))
        lines = [
            PROOF_HEADER,
            "extra " + base64.b64encode(extra.encode("utf-8")).decode("ascii"),
            f"index {self.index}",
            *(base64.b64encode(h).decode("ascii") for h in self.hashes),
            "",
        ]
        return ("\n".join(lines) + "\n" + self.checkpoint).encode("utf-8")


def _strict_b64(text: str, what: str) -> bytes:
    """Standard base64 with padding, canonical (what encoding it again gives back)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedBundle(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedBundle(f"{what} is not canonical base64")
    return raw


def _decimal(text: str, what: str) -> int:
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > 20
        or (text != "0" and text.startswith("0"))
    ):
        raise MalformedBundle(f"{what}: {text!r} is not a decimal without leading zeros")
    return int(text)


def _extra(text: str, line: int) -> dict[str, Any]:
    where = f"evidence line {line} (extra)"
    doc = strict_json_loads(_strict_b64(text, where), where)
    if not isinstance(doc, dict):
        raise MalformedBundle(f"{where}: not a JSON object")
    if doc.get("format") != EVIDENCE_FORMAT:
        raise MalformedBundle(f"{where}: format is {doc.get('format')!r}, not {EVIDENCE_FORMAT!r}")
    version = doc.get("version")
    if type(version) is not int or version != EVIDENCE_VERSION:
        raise MalformedBundle(f"{where}: version {version!r} is not the integer {EVIDENCE_VERSION}")
    for name, typ in (("device", str), ("keys", list), ("entry", str), ("anchors", list)):
        if not isinstance(doc.get(name), typ):
            kind = "a string" if typ is str else "an array"
            raise MalformedBundle(f"{where}: field {name!r} is missing or not {kind}")
    return doc


def parse_evidence(data: bytes) -> Evidence:
    """Read a tlog-proof@v1 evidence file; MalformedBundle (naming the line) if it is not one.

    The shape is exact: the header line, an ``extra`` line (required here:
    it carries the entry), ``index N``, zero or more base64 32-byte hashes,
    one blank line, then a signed note whose text is a checkpoint body.
    """
    if len(data) > MAX_EVIDENCE_BYTES:
        raise MalformedBundle(f"evidence is larger than {MAX_EVIDENCE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBundle(f"evidence is not UTF-8 (byte {exc.start})") from exc
    at = 0
    lineno = 0

    def next_line() -> str:
        nonlocal at, lineno
        lineno += 1
        end = text.find("\n", at)
        if end < 0:
            raise MalformedBundle(
                f"evidence line {lineno}: the file ends before the checkpoint"
                + (" (no newline)" if at < len(text) else "")
            )
        line, at = text[at:end], end + 1
        return line

    header = next_line()
    if header != PROOF_HEADER:
        raise MalformedBundle(f"evidence line 1: expected {PROOF_HEADER!r}, not {header[:40]!r}")
    line = next_line()
    if not line.startswith("extra "):
        raise MalformedBundle(
            f"evidence line 2: expected 'extra <base64>' (riverseal evidence carries the entry "
            f"there), not {line[:40]!r}"
        )
    extra = _extra(line[len("extra ") :], lineno)
    line = next_line()
    if not line.startswith("index "):
        raise MalformedBundle(f"evidence line {lineno}: expected 'index <N>', not {line[:40]!r}")
    index = _decimal(line[len("index ") :], f"evidence line {lineno}")
    hashes: list[bytes] = []
    while (line := next_line()) != "":
        if len(hashes) == MAX_PROOF_HASHES:
            raise MalformedBundle(
                f"evidence line {lineno}: more than {MAX_PROOF_HASHES} inclusion hashes"
            )
        h = _strict_b64(line, f"evidence line {lineno}")
        if len(h) != HASH_SIZE:
            raise MalformedBundle(
                f"evidence line {lineno}: a hash of {len(h)} bytes, not {HASH_SIZE}"
            )
        hashes.append(h)
    note = text[at:]
    where = f"evidence line {lineno + 1} (the checkpoint)"
    if not note:
        raise MalformedBundle(f"{where}: missing")
    try:
        body, _ = split_note(note)
        Checkpoint.parse(body)
    except LedgerClientError as exc:
        raise MalformedBundle(f"{where}: {exc}") from exc

    where = "evidence line 2 (extra)"
    entry_text: str = extra["entry"]
    try:
        entry = entry_text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedBundle(f"{where}: the entry is not valid Unicode") from exc
    return Evidence(
        index=index,
        hashes=tuple(hashes),
        checkpoint=note,
        device=extra["device"],
        keys=tuple(
            DeviceKey.from_json(k, f"{where}: keys[{i}]") for i, k in enumerate(extra["keys"])
        ),
        entry=entry,
        anchors=tuple(
            AnchorReceipt.from_json(a, f"{where}: anchors[{i}]")
            for i, a in enumerate(extra["anchors"])
        ),
    )


def verify_evidence(
    ev: Evidence,
    trusted: TrustList | Iterable[TrustedKey | Verifier] | None = None,
    *,
    now: datetime,
    anchor_checkers: Sequence[AnchorChecker] = (),
    kept: Sequence[KeptCheckpoint] = (),
) -> Report:
    """Check one entry's evidence with the checklist of ``verify_bundle``; pure.

    Steps 1–5 and 7 are those of a bundle holding just this entry and this
    checkpoint: the keys; the record (canonical, this device, this index);
    its signature and the key's validity window; the inclusion hashes from
    its leaf hash to the checkpoint's root (the checkpoint must be the one
    the entry names, i.e. larger than the index); the checkpoint's signature
    under the keys in force; the anchors of that checkpoint. Steps 6 and 8
    pass with no items and a note that they do not apply. ``trusted``,
    ``now`` and ``anchor_checkers`` mean what they mean to ``verify_bundle``.
    """
    tree = ev.tree
    bundle = Bundle(
        # The checkpoint's own origin: evidence names no other (and the trust is in the keys).
        origin=tree.origin,
        device=ev.device,
        keys=ev.keys,
        entries=(BundleEntry(ev.index, ev.entry, tree.size, ev.hashes),),
        checkpoints=(ev.checkpoint,),
        consistency=(),
        anchors=ev.anchors,
        exported="",
        exporter="",
    )
    report = verify_bundle(bundle, trusted, now=now, anchor_checkers=anchor_checkers, kept=kept)
    # Neither step can find anything in one entry and one checkpoint that steps 4 and 5
    # have not (an index at or above the tree size fails inclusion); they are dropped.
    failures = tuple(f for f in report.failures if f.check not in NOT_APPLICABLE)
    steps = tuple(
        StepResult(s.number, s.name, 0, 0) if s.name in NOT_APPLICABLE else s for s in report.steps
    )
    return replace(
        report,
        failures=failures,
        failure_count=len(failures),  # one entry: never more than a report keeps
        steps=steps,
        notes=(*report.notes, *NOT_APPLICABLE.values()),
    )

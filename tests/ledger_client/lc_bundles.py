"""Building riverseal bundles purely, for tests.

``BundleMaker`` builds a riverseal bundle the way the gateway does, without the
gateway: signed records (records.make_entry), an in-memory MerkleTree, signed
checkpoints, consistency proofs between consecutive checkpoints, inclusion
proofs against the smallest covering checkpoint, and a local anchor receipt.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger_client.bundle import AnchorReceipt, Bundle, BundleEntry, ConsistencyProof, DeviceKey
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer, split_note
from ledger_client.records import format_time, make_entry

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"

ORIGIN = "riverseal.example/gw/0a1b2c"
DEVICE = "rs-0a1b2c"
T0_NS = 1_772_323_200 * 10**9  # 2026-03-01T00:00:00Z
NOW = datetime(2026, 6, 1, tzinfo=UTC)
SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
SENSORS = ("ph-1", "do-1", "temp-1")
QUANTITIES = {"ph-1": ("pH", "pH", 7.2), "do-1": ("DO", "mg/L", 8.9), "temp-1": ("T", "Cel", 11.5)}


@dataclass
class BundleMaker:
    """Builds records and bundles. Records are plain dicts without index/key/device;
    ``build`` fills those in, signs, logs and proves them."""

    signer: Signer = field(default_factory=lambda: Signer.from_seed(ORIGIN, SEED))
    origin: str = ORIGIN
    device: str = DEVICE
    seq: dict[str, int] = field(default_factory=dict)
    src_seq: dict[str, int] = field(default_factory=dict)
    tick: int = 0

    def _time(self) -> str:
        self.tick += 1
        return format_time(T0_NS + self.tick * 20 * 10**9)

    def _next_seq(self, sensor: str) -> int:
        self.seq[sensor] = self.seq.get(sensor, -1) + 1
        return self.seq[sensor]

    def reading(
        self, sensor: str, value: float | None = None, *, skip_src: int = 0
    ) -> dict[str, Any]:
        q, unit, base = QUANTITIES.get(sensor, ("X", "1", 1.0))
        src = self.src_seq.get(sensor, 99) + 1 + skip_src
        self.src_seq[sensor] = src
        time = self._time()
        v = base + (self.tick % 7) / 100 if value is None else value
        return {
            "kind": "reading",
            "time": time,
            "clock": "synced",
            "sensor": sensor,
            "seq": self._next_seq(sensor),
            "values": [{"q": q, "v": round(v, 3), "u": unit}],
            "sensor_time": time,
            "src_seq": src,
            "qc": {"range": 1},
        }

    def gap(
        self, sensor: str, reason: str = "dropped", src: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        time = self._time()
        rec: dict[str, Any] = {
            "kind": "gap",
            "time": time,
            "clock": "synced",
            "sensor": sensor,
            "seq": self._next_seq(sensor),
            "reason": reason,
            "from": format_time(T0_NS + (self.tick - 1) * 20 * 10**9),
            "to": time,
        }
        if src is not None:
            rec["src_seq_from"], rec["src_seq_to"] = src
        return rec

    def event(self, name: str, detail: Any = None) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "kind": "event",
            "time": self._time(),
            "clock": "synced",
            "event": name,
        }
        if detail is not None:
            rec["detail"] = detail
        return rec

    def standard_records(self) -> list[dict[str, Any]]:
        """62 records: a boot event, readings from 3 sensors round-robin, and one
        dropped do-1 reading explained by a gap record covering its src_seq."""
        recs = [self.event("boot", {"software": "riverseal 0.1.0"})]
        for i in range(20):
            for sensor in SENSORS:
                if sensor == "do-1" and i == 12:
                    # src_seq 112 is lost on the wire: a gap record says so, then 113 follows.
                    recs.append(self.gap("do-1", "timeout", (self.src_seq["do-1"] + 1,) * 2))
                    recs.append(self.reading("do-1", skip_src=1))
                else:
                    recs.append(self.reading(sensor))
        return recs

    def sign(self, rec: Mapping[str, Any], index: int, signer: Signer | None = None) -> bytes:
        signer = signer or self.signer
        full = {"v": 1, "device": self.device, "key": signer.key_id.hex(), "index": index, **rec}
        return make_entry(full, signer.signing_key)

    def build(
        self,
        records: Sequence[Mapping[str, Any]],
        checkpoint_sizes: Iterable[int] | None = None,
        *,
        first: int = 0,
        anchor: bool = True,
        entries: Sequence[bytes] | None = None,
    ) -> Bundle:
        """Sign and log ``records`` (or use ``entries`` as given) and export them all.

        ``first`` > 0 logs that many filler events before the bundle's range
        (they are in the tree, not in the bundle).
        """
        raw_records = [self.event("filler") for _ in range(first)] + list(records)
        raws = [self.sign(r, i) for i, r in enumerate(raw_records)]
        if entries is not None:
            raws[first:] = entries
        tree = MerkleTree(raws)
        total = tree.size
        sizes = sorted(set(checkpoint_sizes or [max(1, total // 3), max(1, 2 * total // 3), total]))
        notes = [
            sign_checkpoint(Checkpoint(self.origin, s, tree.root(s)), self.signer) for s in sizes
        ]
        bundle_entries = []
        for i in range(first, total):
            size = next(s for s in sizes if s > i)
            bundle_entries.append(
                BundleEntry(i, raws[i], size, tuple(tree.inclusion_proof(i, size)))
            )
        consistency = [
            ConsistencyProof(a, b, tuple(tree.consistency_proof(a, b)))
            for a, b in itertools.pairwise(sizes)
        ]
        anchors = []
        if anchor:
            last = Checkpoint(self.origin, sizes[-1], tree.root(sizes[-1]))
            anchors.append(
                AnchorReceipt(
                    sizes[-1],
                    "local",
                    last.digest(),
                    "final",
                    {"journal": "anchors.sqlite", "seq": 1, "time": format_time(T0_NS + 10**13)},
                )
            )
        return Bundle(
            origin=self.origin,
            device=self.device,
            keys=(DeviceKey(self.signer.verifier().to_vkey(), format_time(T0_NS), None),),
            entries=tuple(bundle_entries),
            checkpoints=tuple(notes),
            consistency=tuple(consistency),
            anchors=tuple(anchors),
            exported=format_time(T0_NS + 2 * 10**13),
            exporter="riverseal tests",
        )


def doc_example() -> Bundle:
    """The worked example of docs/bundle-format.md §9: four entries, two checkpoints."""
    m = BundleMaker()
    records = [
        m.event("boot", {"software": "riverseal 0.1.0"}),
        m.reading("ph-1"),
        m.gap("ph-1", "timeout", (101, 101)),
        m.reading("ph-1", skip_src=1),
    ]
    return dataclasses.replace(m.build(records, [2, 4]), exporter="riverseal 0.1.0")


def bundle_doc(bundle: Bundle) -> dict[str, Any]:
    """A deep copy of the bundle's JSON document, to edit."""
    return copy.deepcopy(bundle.to_json())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the worked example of docs/bundle-format.md §12, as the gateway writes it -------------

DOC_SEED = bytes(range(32))
"""Box A's test key seed (bytes 00 01 … 1f): never use it for anything real."""
DOC_PUBLIC_KEY = Signer.from_seed("riverseal/x", DOC_SEED).public_key
DOC_DEVICE = "rs-" + hashlib.sha256(DOC_PUBLIC_KEY).hexdigest()[:12]
"""How the gateway names a device: rs- and 12 hex digits of SHA-256(public key)."""
DOC_ORIGIN = f"riverseal/{DOC_DEVICE}"
DOC_CONFIG_SHA256 = "6393a49bea8895f3c00bf0d41c1fa0aac1d5bae81d7a5dfd9723c8600804345e"
"""SHA-256 of box A's gateway.toml (CONFIG_A in tests/gateway/test_docs_v2.py)."""
DOC_QC_TESTS = "gross_range,spike,rate_of_change,flat_line"


def _doc_node7(seq: int, sent: str, received: str, ph: float, temp: float) -> dict[str, Any]:
    """A reading of box A's MQTT node as the gateway's Log writes it (src_seq, raw, qc)."""
    raw = (
        f'{{"seq":{seq},"time":"{sent[:23]}Z","values":[{{"q":"ph","v":{ph},"u":"pH"}},'
        f'{{"q":"temperature","v":{temp},"u":"Cel"}}]}}'
    )
    tests = "1222" if seq == 100 else "1221"  # what QARTOD can say with no, or one, value before
    return {
        "kind": "reading",
        "time": received,
        "clock": "synced",
        "sensor": "node-7",
        "seq": 0 if seq == 100 else 1,
        "values": [
            {"q": "ph", "v": ph, "u": "pH", "qc": {"flag": 1, "tests": tests}},
            {"q": "temperature", "v": temp, "u": "Cel", "qc": {"flag": 1, "tests": tests}},
        ],
        "sensor_time": sent,
        "src_seq": seq,
        "raw": raw,
    }


def gateway_doc_example() -> Bundle:
    """The §12 example, built purely: box A of tests/gateway/test_docs_v2.py.

    A boot event, a reading of MQTT node ``node-7`` (its message 100), reading 102,
    which shows 101 missing, and the gap record the gateway writes when 101 is still
    missing as its reorder window (30 s) closes; checkpoints at 2 and 4, both anchored
    in the box's local
    journal; exported with ``gateway export --format v1`` one minute after the
    start. Records are written here literally, as gateway.log.Log writes them
    (per-value QARTOD flags, quantity ``ph`` in unit ``pH``, the boot event's
    ``detail``); tests/gateway/test_docs_v2.py checks that the real gateway
    exports this very text.
    """
    t = [format_time(T0_NS + s) for s in (0, 5_000_000_000, 5_040_000_000, 25_000_000_000)]
    t += [format_time(T0_NS + s) for s in (25_040_000_000, 55_040_000_000)]
    t += [format_time(T0_NS + s) for s in (6_040_000_000, 56_040_000_000)]
    start, sent1, got1, sent2, got2, lost, anchored2, anchored4 = t
    boot = {
        "kind": "event",
        "time": start,
        "clock": "synced",
        "event": "boot",
        "detail": {
            "version": "0.1.0",
            "config_sha256": DOC_CONFIG_SHA256,
            "pid": 4242,
            "qc_tests": DOC_QC_TESTS,
        },
    }
    gap = {
        "kind": "gap",
        "time": lost,
        "clock": "synced",
        "sensor": "node-7",
        "seq": 2,
        "reason": "source sequence gap",
        "from": got1,
        "to": got2,
        "src_seq_from": 101,
        "src_seq_to": 101,
    }
    records = [
        boot,
        _doc_node7(100, sent1, got1, 7.22, 11.4),
        _doc_node7(102, sent2, got2, 7.24, 11.41),
        gap,
    ]
    m = BundleMaker(
        signer=Signer.from_seed(DOC_ORIGIN, DOC_SEED), origin=DOC_ORIGIN, device=DOC_DEVICE
    )
    built = m.build(records, [2, 4], anchor=False)
    anchors = []
    for seq, (note, when) in enumerate(
        zip(built.checkpoints, (anchored2, anchored4), strict=True), start=1
    ):
        cp = Checkpoint.parse(split_note(note)[0])
        receipt = {"journal": "anchors-local.sqlite", "seq": seq, "time": when}
        anchors.append(AnchorReceipt(cp.size, "local", cp.digest(), "final", receipt))
    return dataclasses.replace(
        built,
        anchors=tuple(anchors),
        exported=format_time(T0_NS + 60 * 10**9),
        exporter="riverseal 0.1.0",
    )

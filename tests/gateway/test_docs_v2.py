"""The worked examples of docs/bundle-format.md (§12 and §17) are what the gateway writes.

Two small boxes are run here with the gateway's own code — ``load_config``,
``Gateway._boot_detail``, the EZO reply parser, ``MqttSource`` (which writes
the gap record for a lost MQTT message), ``Log``, ``Store``, ``Anchorer`` with
a ``LocalJournal``, ``export_bundle`` (v1), ``export_bundle_v2``,
``build_evidence`` and ``publish`` — with fixed test keys, a fake clock and a
fixed process id, so every byte is reproducible:

- box A (v1, §12): a boot event, an MQTT node's reading, its next reading, and
  the gap record for the message lost between them (once the reorder window
  closed); checkpoints at 2 and 4, 4 anchored locally; exported with
  ``--format v1``.
- box B (v2, §17): 300 entries from an EZO pH circuit and an MQTT node, one
  pH spike, one lost MQTT message; a checkpoint at 200 (anchored locally), the
  export seals 300; the whole log exported as v2, the spike reading's
  evidence, and the log published to a directory.

Every generated block of the document sits between ``<!-- NAME:start -->``
and ``<!-- NAME:end -->``; the tests compare each with what the code emits
now, and the files under docs/examples/ byte for byte. After a deliberate
change of what the gateway writes, regenerate them (and review the diff):

    .venv/bin/python -m tests.gateway.test_docs_v2 --write
    .venv/bin/python -m tests.ledger_client.test_docs --write

(the second refreshes the §12 blocks derived from the bundle; if box A
changed, tests/ledger_client/lc_bundles.py:gateway_doc_example, which builds
the same bundle without the gateway, must follow).

The hashes worked by hand in §17 are computed here with hashlib alone (RFC
9162 §2.1 written out), not with ledger_client, and must come out as the
roots the gateway signed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import aiomqtt
import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.local import LocalJournal
from gateway.config import GatewayConfig, load_config
from gateway.daemon import Gateway
from gateway.drivers.ezo.protocol import parse_reading
from gateway.drivers.mqtt.source import MqttSource
from gateway.evidence import build_evidence
from gateway.export import export_bundle
from gateway.export_v2 import export_bundle_v2
from gateway.keys import DeviceKey, device_id_for
from gateway.log import Event, Log
from gateway.pipeline import Gap, Reading
from gateway.publish import DirTarget, publish
from gateway.qc import QcEngine
from gateway.store import Store
from ledger_client.cli import main as ledger_verify
from ledger_client.cli import print_report
from ledger_client.note import Signer, split_note
from ledger_client.tiles import decode_entry_bundle
from ledger_client.trust import parse_trust
from ledger_client.verify_stream import verify_source

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bundle-format.md"
EXAMPLES = ROOT / "docs" / "examples"
SHOWN = "docs/examples"
"""How the document names the examples folder (commands are run from the repository root)."""

SEED_A = bytes(range(0x20))
SEED_B = bytes(range(0x20, 0x40))
"""Test key seeds (bytes 00 01 … 1f and 20 21 … 3f): never use them for anything real."""
T0 = 1_772_323_200 * 10**9  # 2026-03-01T00:00:00Z
S = 10**9
MS = 10**6
PID = 4242
NOW = datetime(2026, 6, 1, tzinfo=UTC)
"""The verification time of the shown reports (the human report does not print it)."""

CONFIG_A = """\
# box A of docs/bundle-format.md §12
[device]
key_file = "device.key"
data_dir = "data"

[log]
checkpoint_every_entries = 2

[mqtt]
host = "127.0.0.1"

[[sensor]]
id = "node-7"
driver = "mqtt"
topic = "river/weir/node-7"
interval_s = 10
"""

CONFIG_B = """\
# box B of docs/bundle-format.md §17
[device]
key_file = "device.key"
data_dir = "data"

[log]
checkpoint_every_entries = 200
checkpoint_every_seconds = 3600

[mqtt]
host = "127.0.0.1"

[[sensor]]
id = "ph-1"
driver = "ezo"
circuit = "ph"
port = "/dev/serial/by-id/usb-FTDI_FT230X_Basic_UART_D30A1B2C-if00-port0"
interval_s = 10

[[sensor]]
id = "node-7"
driver = "mqtt"
topic = "river/weir/node-7"
interval_s = 10
"""


def device_key(seed: bytes) -> DeviceKey:
    """The key ``gateway init`` would have made from this seed: named riverseal/<device id>."""
    device = device_id_for(Signer.from_seed("riverseal/x", seed).public_key)
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", seed))


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


class LogSink:
    """The Sink a source writes to: each reading and gap appended to the Log at once."""

    def __init__(self, log: Log) -> None:
        self.log = log

    async def submit(self, reading: Reading) -> bool:
        return (await self.log.append([reading]))[0] is not None

    async def submit_gap(self, gap: Gap) -> None:
        await self.log.append([gap])

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        raise AssertionError(f"the example sent {sensor} something it rejects: {reason} {detail}")


@dataclass
class Box:
    """A configured box in a directory, its log open, its sources ready."""

    cfg: GatewayConfig
    key: DeviceKey
    clock: FakeClock
    log: Log
    anchorer: Anchorer
    journal: LocalJournal
    mqtt: MqttSource

    async def boot(self) -> None:
        with mock.patch("gateway.daemon.os.getpid", return_value=PID):
            detail = Gateway(self.cfg)._boot_detail()
        await self.log.append([Event("boot", self.clock(), detail)])

    async def node_message(self, seq: int, sent_ns: int, values: str, mid: int) -> None:
        """node-7 sends at ``sent_ns`` (its clock, in the payload); it arrives 40 ms later."""
        stamp = datetime.fromtimestamp(sent_ns / S, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        payload = f'{{"seq":{seq},"time":"{stamp}Z","values":[{values}]}}'.encode()
        self.clock.now_ns = sent_ns + 40 * MS
        message = aiomqtt.Message("river/weir/node-7", payload, 1, False, mid, None)
        for job in self.mqtt._handle(message, LogSink(self.log)):
            await job

    async def reorder_window_closes(self, now_ns: int) -> None:
        """The MQTT source's tick at ``now_ns``: numbers still missing are declared lost."""
        self.clock.now_ns = now_ns
        for gap in self.mqtt._expire(now_ns):
            await LogSink(self.log).submit_gap(gap)

    async def ph_reply(self, text: str, received_ns: int) -> None:
        """ph-1 (an EZO pH circuit, polled) answers ``text`` to ``R``."""
        self.clock.now_ns = received_ns
        values = parse_reading("ph", (), text, sensor="ph-1")
        await self.log.append([Reading("ph-1", values, received_ns, raw=text)])

    async def checkpoint_if_due(self) -> None:
        """What the daemon's ingest does: sign every ``checkpoint_every_entries``, then anchor."""
        if self.log.size - self.log.checkpointed_size >= self.cfg.log.checkpoint_every_entries:
            await self.log.checkpoint()
            self.clock.now_ns += S
            await self.anchorer.step()


async def open_box(
    work: Path, config: str, seed: bytes, run: Callable[[Box], Awaitable[None]]
) -> None:
    """Set up a box in ``work`` (key, config, empty log), ``run`` it, close its journal."""
    key = device_key(seed)
    work.mkdir(parents=True, exist_ok=True)
    (work / "device.key").write_text(key.signer.to_skey())
    (work / "device.key").chmod(0o600)
    (work / "gateway.toml").write_text(config)
    cfg = load_config(work / "gateway.toml")
    cfg.data_dir.mkdir()
    clock = FakeClock(T0)
    async with Store(cfg.db_path) as store:
        log = Log(store, key, clock=clock, clock_state=lambda: "synced", qc=QcEngine(cfg.qc))
        await log.open()
        journal = LocalJournal(cfg.anchor_journal_path, clock=clock)
        anchorer = Anchorer(store, [journal], clock=clock, monotonic=lambda: 0.0)
        assert cfg.mqtt is not None
        mqtt = MqttSource(
            cfg.mqtt,
            [s for s in cfg.sensors if s.driver == "mqtt"],
            device_id=key.device_id,
            clock=clock,
        )
        box = Box(cfg, key, clock, log, anchorer, journal, mqtt)
        try:
            await run(box)
        finally:
            await journal.aclose()


# --- box A: the v1 example ------------------------------------------------------------------


def node7_values(ph: float, temp: float) -> str:
    return f'{{"q":"ph","v":{ph},"u":"pH"}},{{"q":"temperature","v":{temp},"u":"Cel"}}'


async def box_a(work: Path) -> bytes:
    """Box A's log, exported as v1: the bytes of the bundle file."""
    out: list[bytes] = []

    async def run(box: Box) -> None:
        await box.boot()  # entry 0
        await box.node_message(100, T0 + 5 * S, node7_values(7.22, 11.4), 1)  # 1
        await box.checkpoint_if_due()  # size 2
        # Message 101 (sent at 00:00:15) never arrives; 102 shows it missing (entry 2), and
        # when the reorder window (30 s) closes with 101 still missing, a gap record says
        # it was lost (entry 3).
        await box.node_message(102, T0 + 25 * S, node7_values(7.24, 11.41), 2)
        await box.reorder_window_closes(T0 + 55 * S + 40 * MS)
        await box.checkpoint_if_due()  # size 4, anchored
        box.clock.now_ns = T0 + 60 * S
        bundle = await export_bundle(box.log, clock=box.clock)
        out.append(bundle.dumps().encode("utf-8"))

    await open_box(work, CONFIG_A, SEED_A, run)
    return out[0]


# --- box B: the v2 example ------------------------------------------------------------------

ENTRIES_B = 300
SPIKE_ROUND = 61  # ph-1 reads 7.712 once: spike and rate of change suspect (flag 3)
LOST_ROUND = 97  # node-7's message of this round never arrives: a gap record
EVIDENCE_INDEX = 123  # the spike reading


@dataclass
class ExampleB:
    bundle: bytes
    evidence: bytes
    mirror: dict[str, bytes]


async def box_b(work: Path) -> ExampleB:
    """Box B's log, exported whole as v2, one reading's evidence, and a published mirror."""
    made: list[ExampleB] = []

    async def run(box: Box) -> None:
        await box.boot()
        k = 0
        while box.log.size < ENTRIES_B:
            t = T0 + k * 10 * S
            ph = 7.712 if k == SPIKE_ROUND else round(7.31 + 0.05 * math.sin(k / 11), 3)
            await box.ph_reply(f"{ph:.3f}", t + 2 * S)
            await box.checkpoint_if_due()
            if box.log.size < ENTRIES_B and k != LOST_ROUND:
                temp = round(11.4 + 0.3 * math.sin(k / 23), 2)
                ph7 = round(7.28 + 0.04 * math.sin(k / 17), 2)
                await box.node_message(4000 + k, t + 5 * S, node7_values(ph7, temp), k + 1)
                await box.checkpoint_if_due()
            k += 1
        box.clock.now_ns = T0 + 50 * 60 * S
        path = work / "bundle-v2.tar"
        await export_bundle_v2(box.log, path, clock=box.clock)  # seals checkpoint 300
        evidence = (await build_evidence(box.log, EVIDENCE_INDEX)).dumps()
        box.clock.now_ns += 60 * S
        mirror = work / "mirror"
        await publish(box.log, DirTarget(mirror), clock=box.clock)
        files = {
            str(p.relative_to(mirror)): p.read_bytes()
            for p in sorted(mirror.rglob("*"))
            if p.is_file()
        }
        made.append(ExampleB(path.read_bytes(), evidence, files))

    await open_box(work, CONFIG_B, SEED_B, run)
    return made[0]


# --- what the document shows ----------------------------------------------------------------


def trust_text(seed: bytes, box: str) -> str:
    return (
        f"# box {box} of docs/bundle-format.md (a test key: never trust it for anything real)\n"
        f"key {device_key(seed).vkey}\n"
    )


@dataclass
class Generated:
    files: dict[str, bytes]
    """docs/examples/<name> → bytes."""
    blocks: dict[str, str]
    """Block name → the text between its markers."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 over leaf hashes, with hashlib only (no ledger_client)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def fenced(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text.rstrip(chr(10))}\n```"


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    """(name, data) of each member, read with the standard library's tarfile."""
    import tarfile

    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def tar_listing(path: Path, shown: str) -> str:
    """``TZ=UTC tar tvf <shown>`` as GNU tar prints it (needs tar)."""
    done = subprocess.run(
        ["tar", "tvf", str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
    )
    return f"$ TZ=UTC tar tvf {shown}\n{done.stdout}"


def report_text(path: Path, shown: str, trust: str) -> str:
    report = verify_source(path, parse_trust(trust.encode()), now=NOW, jobs=1)
    out = io.StringIO()
    print_report(report, shown, out)
    return out.getvalue()


def blocks_b(ex: ExampleB, path: Path) -> dict[str, str]:
    shown = f"{SHOWN}/bundle-v2.tar"
    members = dict(tar_members(path))
    manifest = members["riverseal-bundle.json"]
    bundle0 = members["tile/entries/000"]
    bundle1 = members["tile/entries/001.p/44"]
    entries = decode_entry_bundle(bundle0, 256) + decode_entry_bundle(bundle1, 44)
    leaves = [sha256(b"\x00" + e) for e in entries]
    doc = json.loads(manifest)
    notes = {int(n.split("\n")[1]): n for n in doc["checkpoints"]}
    roots = {size: base64.b64decode(n.split("\n")[2]) for size, n in notes.items()}
    key = device_key(SEED_B)
    blocks: dict[str, str] = {}

    blocks["example-v2-key"] = fenced(
        f"device id      {key.device_id}\n"
        f"origin         {key.origin}\n"
        f"verifier key   {key.vkey}\n"
        f"public key     {key.signer.public_key.hex()}\n"
        f"key ID         {key.key_id_hex}"
    )
    blocks["example-v2-members"] = fenced(tar_listing(path, shown))
    blocks["example-v2-manifest"] = fenced(manifest.decode("utf-8"), "json")
    blocks["example-v2-checkpoint"] = fenced(members["checkpoint"].decode("utf-8"))

    n0 = len(entries[0])
    first = (
        f"$ tar xOf {shown} tile/entries/000 | head -c 2 | od -An -tx1\n"
        f" {bundle0[0]:02x} {bundle0[1]:02x}\n"
        f"$ tar xOf {shown} tile/entries/000 | head -c {n0 + 2} | tail -c +3\n"
        f"{entries[0].decode('utf-8')}\n"
        f"$ {{ printf '\\0'; tar xOf {shown} tile/entries/000 | head -c {n0 + 2} | tail -c +3; }}"
        " | sha256sum\n"
        f"{leaves[0].hex()}  -"
    )
    assert (bundle0[0] << 8) | bundle0[1] == n0
    blocks["example-v2-entry0"] = fenced(first)

    # What the prose of §17 says about the log.
    recs = [json.loads(e)["rec"] for e in entries]
    gaps = [i for i, r in enumerate(recs) if r["kind"] == "gap"]
    # 4097 is declared lost 30 s after 4098 showed it missing: as 4101 arrives.
    assert gaps == [203] and recs[203]["src_seq_from"] == recs[203]["src_seq_to"] == 4097
    assert recs[204]["src_seq"] == 4101
    flagged = [(i, v["qc"]["flag"]) for i, r in enumerate(recs) for v in r.get("values", [])]
    assert [(i, f) for i, f in flagged if f != 1] == [(EVIDENCE_INDEX, 3), (125, 3)]
    assert recs[EVIDENCE_INDEX]["values"][0]["v"] == 7.712
    assert recs[-1]["time"] < "2026-03-01T00:25" and doc["exported"].startswith("2026-03-01T00:50")
    assert [a["checkpoint"] for a in doc["anchors"]] == [200] and sorted(notes) == [200, 300]

    def record(i: int) -> str:
        """The signed bytes of entry i: its JCS record, verbatim (§4.1)."""
        text = entries[i].decode("utf-8")
        assert text.startswith('{"rec":')
        return text[len('{"rec":') : text.rindex(',"sig":"')]

    blocks["example-v2-records"] = fenced(
        "\n".join(f"{i}: {record(i)}" for i in (1, 2, EVIDENCE_INDEX, gaps[0]))
    )

    # The tree, one SHA-256 a line: each node from the two lines it names.
    rows: list[tuple[str, str, bytes]] = []
    named: dict[tuple[int, int], bytes] = {}

    def leaf(i: int) -> None:
        rows.append((f"[{i}, {i + 1})", f"SHA-256(00 ‖ entry {i})", leaves[i]))
        named[(i, i + 1)] = leaves[i]

    def node(lo: int, mid: int, hi: int) -> None:
        h = sha256(b"\x01" + named[(lo, mid)] + named[(mid, hi)])
        assert h == mth(leaves[lo:hi])
        rows.append((f"[{lo}, {hi})", f"H([{lo}, {mid}), [{mid}, {hi}))", h))
        named[(lo, hi)] = h

    def perfect(lo: int, hi: int) -> None:
        named[(lo, hi)] = mth(leaves[lo:hi])
        rows.append((f"[{lo}, {hi})", f"MTH of leaves {lo}–{hi - 1}", named[(lo, hi)]))

    leaf(0)
    leaf(1)
    node(0, 1, 2)
    perfect(0, 128)
    perfect(128, 192)
    perfect(192, 200)
    node(128, 192, 200)
    node(0, 128, 200)
    perfect(128, 256)
    node(0, 128, 256)
    perfect(256, 288)
    perfect(288, 296)
    perfect(296, 300)
    node(288, 296, 300)
    node(256, 288, 300)
    node(0, 256, 300)
    assert named[(0, 200)] == roots[200] and named[(0, 300)] == roots[300]
    assert named[(0, 2)] == mth(leaves[:2])
    width = max(len(a) for a, _, _ in rows)
    how = max(len(b) for _, b, _ in rows)
    blocks["example-v2-tree"] = fenced(
        "\n".join(f"{a:<{width}}  {b:<{how}}  {h.hex()}" for a, b, h in rows)
    )

    body = {s: split_note(n)[0].encode() for s, n in notes.items()}
    digest = sha256(body[200]).hex()
    assert [a["digest"] for a in doc["anchors"]] == [digest]
    sig200 = notes[200].split("\n")[4].split(" ")[2]
    blocks["example-v2-roots"] = fenced(
        f"root of size 200  {roots[200].hex()}\n"
        f"  base64          {base64.b64encode(roots[200]).decode()}   (line 3 of checkpoint 200)\n"
        f"root of size 300  {roots[300].hex()}\n"
        f"  base64          {base64.b64encode(roots[300]).decode()}   (line 3 of checkpoint 300)\n"
        f"signature line    {sig200[:6]}… = base64 of {key.key_id_hex} ‖ Ed25519 signature\n"
        f"digest of checkpoint 200 = SHA-256(body) = {digest}   (the local anchor's digest)"
    )
    blocks["example-v2-verify"] = fenced(
        f"$ ledger-verify {shown} --trust {SHOWN}/trust-v2.txt\n"
        + report_text(path, shown, trust_text(SEED_B, "B"))
    )

    lines = ex.evidence.decode("utf-8").split("\n")
    extra = lines[1].removeprefix("extra ")
    assert lines[2] == f"index {EVIDENCE_INDEX}" and lines[3 + 8] == "" and lines[13] == "200"
    shortened = f"extra {extra[:44]}… ({len(extra)} characters in all)"
    blocks["example-v2-evidence"] = fenced("\n".join([lines[0], shortened, *lines[2:]]))
    blocks["example-v2-evidence-extra"] = fenced(
        json.dumps(json.loads(base64.b64decode(extra)), indent=1, ensure_ascii=False), "json"
    )

    # The mirror: the tiles the bundle reader computes, the same entry bundles.
    mirror = ex.mirror
    assert mirror["tile/0/000"][:32] == leaves[0]
    assert mirror["tile/1/000.p/1"] == named[(0, 256)]
    assert mirror["tile/entries/000"] == bundle0 and mirror["tile/entries/001.p/44"] == bundle1
    assert mirror["checkpoint"] == members["checkpoint"]
    theirs = json.loads(mirror["riverseal-bundle.json"])
    assert {k: v for k, v in theirs.items() if k != "exported"} == {
        k: v for k, v in doc.items() if k != "exported"
    }
    sizes = "\n".join(
        f"{len(data):>7}  {name}"
        for name, data in sorted(mirror.items(), key=lambda kv: _publish_order(kv[0]))
    )
    blocks["example-v2-mirror"] = fenced(sizes)
    return blocks


def _publish_order(name: str) -> tuple[int, str]:
    """The order gateway publish writes files in: tiles, entry bundles, manifest, checkpoint."""
    rank = {"riverseal-bundle.json": 2, "checkpoint": 3}.get(name)
    if rank is None:
        rank = 1 if name.startswith("tile/entries/") else 0
    return rank, name


def blocks_a(bundle: bytes) -> dict[str, str]:
    """The §12 JSON block (tests/ledger_client/test_docs.py checks the rest of §12)."""
    return {"example-bundle": fenced(bundle.decode("utf-8"), "json")}


def generate() -> Generated:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a = asyncio.run(box_a(work / "a"))
        b = asyncio.run(box_b(work / "b"))
        files = {
            "bundle-v1.json": a,
            "trust-v1.txt": trust_text(SEED_A, "A").encode(),
            "bundle-v2.tar": b.bundle,
            "trust-v2.txt": trust_text(SEED_B, "B").encode(),
            f"entry-{EVIDENCE_INDEX}.tlog-proof": b.evidence,
        }
        path = work / "b" / "bundle-v2.tar"
        blocks = {**blocks_a(a), **blocks_b(b, path)}
    return Generated(files, blocks)


# --- reading and writing the document -------------------------------------------------------

_BLOCK = re.compile(r"<!-- ([a-z0-9-]+):start -->\n(?:(.*?)\n)?<!-- \1:end -->", re.DOTALL)


def doc_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) or "" for m in _BLOCK.finditer(text)}


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    missing = set(blocks) - set(doc_blocks(text))
    if missing:
        raise SystemExit(f"{DOC}: no markers for {sorted(missing)}")

    def swap(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in blocks:
            return m.group(0)
        return f"<!-- {name}:start -->\n{blocks[name]}\n<!-- {name}:end -->"

    return _BLOCK.sub(swap, text)


def write() -> None:
    made = generate()
    EXAMPLES.mkdir(exist_ok=True)
    for name, data in made.files.items():
        (EXAMPLES / name).write_bytes(data)
    DOC.write_text(replace_blocks(DOC.read_text(encoding="utf-8"), made.blocks), encoding="utf-8")
    print(f"wrote {DOC} and {EXAMPLES}/: {', '.join(sorted(made.files))}")


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> Generated:
    return generate()


def test_the_example_files_are_what_the_gateway_writes(generated: Generated) -> None:
    for name, data in generated.files.items():
        assert (EXAMPLES / name).read_bytes() == data, (
            f"docs/examples/{name} is not what the gateway writes now: run "
            ".venv/bin/python -m tests.gateway.test_docs_v2 --write and review the diff"
        )


def test_the_documents_blocks_are_what_the_gateway_writes(generated: Generated) -> None:
    shown = doc_blocks(DOC.read_text(encoding="utf-8"))
    for name, text in generated.blocks.items():
        assert shown.get(name) == text, (
            f"docs/bundle-format.md block {name!r} is not what the gateway writes now: run "
            ".venv/bin/python -m tests.gateway.test_docs_v2 --write and review the diff"
        )


def test_the_examples_verify_under_their_trust_files(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the commands as the document gives them
    for args in (
        ["docs/examples/bundle-v1.json", "--trust", "docs/examples/trust-v1.txt"],
        ["docs/examples/bundle-v2.tar", "--trust", "docs/examples/trust-v2.txt"],
        [
            f"docs/examples/entry-{EVIDENCE_INDEX}.tlog-proof",
            "--trust",
            "docs/examples/trust-v2.txt",
        ],
        ["docs/examples/bundle-v2.tar", "--trust", "docs/examples/trust-v2.txt", "--jobs", "2"],
    ):
        # Exit 3: authentic under the trust file, but the examples anchor only in the
        # box's local journal, so nothing dates them independently.
        assert ledger_verify([*args, "--json"]) == 3, args
        doc = json.loads(capsys.readouterr().out)
        assert doc["level"] == "authentic-undated"
        assert doc["failure_count"] == 0 and doc["keys_trusted"]
    # The other box's key is not trusted for this bundle.
    assert (
        ledger_verify(["docs/examples/bundle-v2.tar", "--trust", "docs/examples/trust-v1.txt"]) == 1
    )


def test_the_shell_commands_of_section_17_run_as_written() -> None:
    """The tar/od/sha256sum lines of the entry-0 block, run by bash from the repository root."""
    if shutil.which("bash") is None or shutil.which("tar") is None:
        pytest.skip("needs bash and tar")
    block = doc_blocks(DOC.read_text(encoding="utf-8"))["example-v2-entry0"]
    lines = block.strip("`\n").split("\n")
    commands = [(i, line[2:]) for i, line in enumerate(lines) if line.startswith("$ ")]
    for n, (i, command) in enumerate(commands):
        end = commands[n + 1][0] if n + 1 < len(commands) else len(lines)
        expected = "\n".join(lines[i + 1 : end]) + "\n"
        done = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, capture_output=True, check=True, text=True
        )
        # (the entry has no newline of its own: the next prompt would follow it)
        assert done.stdout.rstrip("\n") == expected.rstrip("\n"), command


def test_the_tree_is_worked_with_hashlib_alone(generated: Generated) -> None:
    """Each line of the tree block is MTH of its leaves (hashlib only), read from the file."""
    members = dict(tar_members(EXAMPLES / "bundle-v2.tar"))
    entries = decode_entry_bundle(members["tile/entries/000"], 256) + decode_entry_bundle(
        members["tile/entries/001.p/44"], 44
    )
    leaves = [sha256(b"\x00" + e) for e in entries]
    rows = re.findall(
        r"^\[(\d+), (\d+)\) .*  ([0-9a-f]{64})$", generated.blocks["example-v2-tree"], re.M
    )
    assert len(rows) == 16
    for lo, hi, h in rows:
        assert mth(leaves[int(lo) : int(hi)]).hex() == h, (lo, hi)


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__)
        return 2
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


# --- docs/operations.md: the export, publish and verify commands, as written ---------------

OPERATIONS = ROOT / "docs" / "operations.md"
PASSWORD = "only-for-this-test"


def _section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _code(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", section, flags=re.M | re.S)


def test_the_operations_commands_run_as_written(tmp_path: Path) -> None:
    """Box B's log; the nginx server block of docs/operations.md (its location as written,
    on a local port without TLS); then every command of the export, publish and verify
    sections, run by bash with the box's paths in place of /etc/riverseal and the
    server's URL in place of https://mirror.example.org."""
    from tests.servers.web_server import NginxMissing, WebServer

    text = OPERATIONS.read_text(encoding="utf-8")
    export = _section(text, "Exporting for the regulator")
    publishing = _section(text, "Publishing the log (a mirror)")
    verifying = _section(text, "Verifying a bundle, evidence or mirror")
    (server,) = _code(publishing, "nginx")
    location = re.search(r"^    location /riverseal/ \{\n.*?^    \}\n", server, re.M | re.S)
    assert location is not None
    assert "dav_methods PUT;" in server and "create_full_put_path on;" in server

    box = tmp_path / "box"
    asyncio.run(box_b(box))
    key = device_key(SEED_B)
    users = tmp_path / "publishers"
    users.write_text(f"{key.device_id}:{{PLAIN}}{PASSWORD}\n")
    auth = tmp_path / "publish.auth"
    auth.write_bytes(base64.b64encode(f"{key.device_id}:{PASSWORD}".encode()))

    class DocServer(WebServer):
        def _write_config(self) -> None:
            super()._write_config()
            conf = self.conf.read_text()
            head, _, _ = conf.partition("        location / {")
            block = location.group(0).replace("/etc/nginx/riverseal-publishers", str(users))
            self.conf.write_text(head + block.replace("\n    ", "\n        ") + "    }\n}\n")

    try:
        web = DocServer(tmp_path / "nginx")
        web.start()
    except NginxMissing as exc:
        pytest.fail(str(exc))
    try:
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        swaps = {
            "/etc/riverseal/gateway.toml": str(box / "gateway.toml"),
            "/etc/riverseal/publish.auth": str(auth),
            "/srv/riverseal": str(tmp_path / "srv"),
            "https://mirror.example.org": web.url,
            "trust.txt": str(EXAMPLES / "trust-v2.txt"),
        }
        work = tmp_path / "work"
        work.mkdir()
        outputs = {}
        for block in _code(export, "sh") + _code(publishing, "sh") + _code(verifying, "sh"):
            for command in block.splitlines():
                for old, new in swaps.items():
                    command = command.replace(old, new)
                done = subprocess.run(
                    ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True
                )
                # ledger-verify exits 3 on these: local anchors date nothing independently.
                want = 3 if command.startswith("ledger-verify") else 0
                assert done.returncode == want, (command, done.stdout, done.stderr)
                outputs[command] = done.stdout
        # What the sections say these commands print.
        said = re.search(r"`(wrote bundle\.tar: [^`]*)`", " ".join(export.split()))
        assert said is not None
        assert said.group(1) + "\n" in outputs.values()
        said = re.search(r"`(published checkpoint [^`]*)`", " ".join(publishing.split()))
        assert said is not None
        assert said.group(1).replace("https://mirror.example.org", web.url) + "\n" in (
            outputs.values()
        )
        # Anyone reads; only a box with the password writes.
        import httpx

        url = f"{web.url}/riverseal/{key.device_id}/checkpoint"
        assert httpx.get(url).status_code == 200
        assert httpx.put(url, content=b"x").status_code == 401
    finally:
        web.stop()

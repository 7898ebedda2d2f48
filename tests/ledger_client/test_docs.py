"""docs/bundle-format.md stays true: its §12 example verifies, is what the code makes, and
its hand-worked numbers and ledger-verify report are those of the example; its checklist
is ours.

The §12 blocks between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` are generated:
``example-bundle`` (the bundle, lc_bundles.gateway_doc_example(), which
tests/gateway/test_docs_v2.py checks against the real gateway's export), and from it
``example-bundle-worked`` and ``example-bundle-verify``. After a deliberate change,
regenerate the bundle with tests/gateway/test_docs_v2.py, then the two derived blocks with

    .venv/bin/python -m tests.ledger_client.test_docs --write
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from pathlib import Path

from ledger_client import merkle
from ledger_client.bundle import Bundle
from ledger_client.checkpoint import Checkpoint
from ledger_client.cli import print_report
from ledger_client.note import split_note
from ledger_client.trust import parse_trust
from ledger_client.verify import LOCAL_STATUS, STEPS, verify_bundle
from ledger_client.verify_stream import verify_source
from tests.ledger_client.lc_bundles import DOC_ORIGIN, NOW, gateway_doc_example

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bundle-format.md"
EXAMPLE_FILE = ROOT / "docs" / "examples" / "bundle-v1.json"
TRUST_FILE = ROOT / "docs" / "examples" / "trust-v1.txt"

_BLOCK = re.compile(r"<!-- ([a-z0-9-]+):start -->\n(?:(.*?)\n)?<!-- \1:end -->", re.DOTALL)


def _blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) or "" for m in _BLOCK.finditer(text)}


def _example() -> str:
    block = _blocks(DOC.read_text(encoding="utf-8"))["example-bundle"]
    return block.strip().removeprefix("```json").removesuffix("```").strip() + "\n"


def _hex(h: bytes) -> str:
    return h.hex()


def _short(h: bytes) -> str:
    return f"`{h.hex()[:8]}…{h.hex()[-4:]}`"


def worked(bundle: Bundle) -> str:
    """The "working through it by hand" bullets of §12, with the example's numbers."""
    key = bundle.keys[0].vkey
    name, key_id, b64key = key.split("+", 2)
    public = base64.b64decode(b64key)[1:]
    entries = [e.entry for e in bundle.entries]
    leaves = [merkle.leaf_hash(e) for e in entries]
    n01 = merkle.node_hash(leaves[0], leaves[1])
    n23 = merkle.node_hash(leaves[2], leaves[3])
    root4 = merkle.node_hash(n01, n23)
    notes = {Checkpoint.parse(split_note(n)[0]).size: n for n in bundle.checkpoints}
    body4 = split_note(notes[4])[0]
    assert Checkpoint.parse(body4).root == root4
    assert Checkpoint.parse(split_note(notes[2])[0]).root == n01
    record1 = entries[1].decode()[len('{"rec":') :].split(',"sig":"')[0]
    sig_b64 = notes[4].split("\n")[4].split(" ")[2]
    sig = base64.b64decode(sig_b64)
    digest = Checkpoint.parse(body4).digest()
    anchored = {a.checkpoint: a.digest for a in bundle.anchors}
    assert anchored[4] == digest
    root2_b64 = base64.b64encode(n01).decode()
    body4_text = body4.replace("\n", "\\n")
    src = [json.loads(e)["rec"].get("src_seq") for e in entries]
    return f"""\
- **Key.** The vkey's base64 decodes to 0x01 ‖ the Ed25519 public key
  `{public.hex()}`;
  SHA-256(`{name}` ‖ 0x0A ‖ 0x01 ‖ public key) starts
  `{key_id}`, the key ID that every record names in `key`. (The gateway names
  a device `rs-` and the first 12 hex digits of SHA-256(public key), here
  `{bundle.device}`, and its log `riverseal/<device>`; verifiers do not check
  that.)
- **Entry 1** (a reading of MQTT node `node-7`). The signed bytes are the JCS
  record:

  ```
  {record1}
  ```

  and the Ed25519 signature over them is the base64 in `sig`. The entry is
  the `entry` string's UTF-8 (one level of JSON escaping less than the bundle
  file shows); its leaf hash SHA-256(0x00 ‖ entry) is
  `{_hex(leaves[1])}`.
- **Leaves** 0–3: {", ".join(_short(h) for h in leaves)}.
  Node(0,1) = SHA-256(0x01 ‖ leaf0 ‖ leaf1) =
  `{_hex(n01)}` — the root
  of checkpoint 2 (`{root2_b64[:6]}…{root2_b64[-4:]}` in base64). Node(2,3) =
  `{_hex(n23)}`, and the
  root of checkpoint 4 is SHA-256(0x01 ‖ node01 ‖ node23) =
  `{_hex(root4)}`.
- **Inclusion.** Entry 1 names checkpoint 2 (the smallest size > 1); its proof
  is [leaf0]: index 1 is odd, so r = H(0x01 ‖ leaf0 ‖ leaf1) = root of size 2.
  Entry 2 names checkpoint 4; its proof is [leaf3, node01].
- **Consistency** 2 → 4: size1 = 2 is a power of two, so root1 is prepended to
  the proof [node23]; the result is fr = root1 and sr = H(0x01 ‖ root1 ‖ node23)
  = root of size 4.
- **Checkpoint** 4's body is
  `{body4_text}`;
  its signature line's base64 decodes to {len(sig)} bytes: the key ID
  {" ".join(f"{b:02x}" for b in sig[:4])}, then the Ed25519 signature over the body. Its
  digest SHA-256(body) =
  `{_hex(digest)}`, which the
  second local anchor commits to (the first commits to checkpoint 2's).
- **Completeness.** Sensor node-7 has seq 0 (reading), 1 (reading), 2 (gap);
  `src_seq` jumps from {src[1]} to {src[2]}, and the gap record after them covers
  {src[1] + 1} (`src_seq_from` = `src_seq_to` = {src[1] + 1}): the gateway waited
  for it to arrive late, then declared it lost."""


def verify_output() -> str:
    trust = parse_trust(TRUST_FILE.read_bytes())
    report = verify_source(EXAMPLE_FILE, trust, now=NOW, jobs=1)
    out = io.StringIO()
    shown = "docs/examples/bundle-v1.json"
    print_report(report, shown, out)
    command = f"$ ledger-verify {shown} --trust docs/examples/trust-v1.txt\n"
    return f"```\n{command}{out.getvalue().rstrip()}\n```"


def derived_blocks() -> dict[str, str]:
    bundle = Bundle.loads(_example())
    return {"example-bundle-worked": worked(bundle), "example-bundle-verify": verify_output()}


def test_the_worked_example_verifies() -> None:
    bundle = Bundle.loads(_example())
    report = verify_bundle(bundle, now=NOW)
    assert report.ok, [str(f) for f in report.failures]
    assert report.entries == 4
    assert [a.status for a in report.anchors] == [LOCAL_STATUS, LOCAL_STATUS]
    assert bundle.origin == DOC_ORIGIN


def test_the_worked_example_is_what_the_code_makes() -> None:
    assert _example() == gateway_doc_example().dumps()
    assert EXAMPLE_FILE.read_text(encoding="utf-8") == _example()
    trusted = f"key {gateway_doc_example().keys[0].vkey}"
    assert TRUST_FILE.read_text(encoding="utf-8").splitlines()[-1] == trusted
    # §10's example trust file starts with this key (valid from the log's creation).
    section = DOC.read_text(encoding="utf-8").split("## 10. Trust files")[1]
    first = next(line for line in section.splitlines() if line.startswith("key "))
    assert first == f"{trusted} 2026-03-01T00:00:00Z"


def test_the_hand_worked_numbers_and_the_report_are_the_examples() -> None:
    shown = _blocks(DOC.read_text(encoding="utf-8"))
    for name, text in derived_blocks().items():
        assert shown[name] == text, (
            f"docs/bundle-format.md block {name!r} is stale: run "
            ".venv/bin/python -m tests.ledger_client.test_docs --write and review the diff"
        )


def test_the_documented_checklist_is_the_verifiers() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## 9. Verification checklist")[1].split("## 10.")[0]
    steps = re.findall(r"^(\d)\. \*\*(\w+)\.\*\*", section, flags=re.MULTILINE)
    assert steps == [(str(i), name) for i, name in enumerate(STEPS, start=1)]


def _write() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = derived_blocks()

    def swap(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in blocks:
            return m.group(0)
        return f"<!-- {name}:start -->\n{blocks[name]}\n<!-- {name}:end -->"

    DOC.write_text(_BLOCK.sub(swap, text), encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    _write()

"""Random damage to a valid bundle never crashes ledger-verify and never verifies.

Each example damages the bundle file (a bit flip) or its JSON document (a
replaced, deleted, duplicated or swapped value), runs the CLI on it and
requires exit 1 or 2 — or, when nothing failed (exit 4: no trust file here), that
nothing the verifier vouches for changed (only unverified metadata such as
"exporter", base64 padding bits that decode to the same bytes, or receipts left
out).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_client.bundle import Bundle
from ledger_client.cli import main
from ledger_client.errors import LedgerClientError
from ledger_client.note import Verifier, split_note
from tests.ledger_client.lc_bundles import BundleMaker

MAKER = BundleMaker()
GOOD = MAKER.build(MAKER.standard_records(), [20, 45, 62])
GOOD_TEXT = GOOD.dumps().encode()
GOOD_DOC = json.loads(GOOD_TEXT)


def _key(vkey: str) -> Any:
    try:
        v = Verifier.from_vkey(vkey)
    except LedgerClientError:
        return vkey
    return (v.name, v.public_key)


def _note(note: str) -> Any:
    try:
        return split_note(note)
    except LedgerClientError:
        return note


def vouched(b: Bundle) -> Any:
    """Everything the verifier vouches for, independent of how it was encoded."""
    return (
        b.origin,
        b.device,
        tuple(_key(k.vkey) for k in b.keys),
        b.entries,
        tuple(_note(c) for c in b.checkpoints),
        b.consistency,
        tuple((a.checkpoint, a.backend, a.digest, a.state) for a in b.anchors),
    )


GOOD_VOUCHED = vouched(GOOD)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check(data: bytes, workdir: Path) -> None:
    path = workdir / "bundle.json"
    path.write_bytes(data)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main([str(path)])
    assert rc in (1, 2, 4)  # no trust file: never VERIFIED (0), never FORKED (5)
    if rc == 4:  # nothing failed under the bundle's own keys
        got = vouched(Bundle.loads(data))
        entries = got[3]
        # A v1 bundle may hold any contiguous run of the log (a partial export does),
        # so entries cut off at either end are a smaller true claim, not a false one
        # (docs/bundle-format.md §9, 8). Anything else must be exactly the original.
        first = GOOD.entries.index(entries[0]) if entries and entries[0] in GOOD.entries else 0
        assert entries == GOOD.entries[first : first + len(entries)], "a damaged bundle verified"
        assert got[:3] + got[4:6] == GOOD_VOUCHED[:3] + GOOD_VOUCHED[4:6], (
            "a damaged bundle verified"
        )
        # Receipts left out are a smaller claim (the verdict says how little is dated);
        # any receipt that remains must be one of the originals.
        assert set(got[6]) <= set(GOOD_VOUCHED[6]), "a damaged bundle verified"


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(GOOD_TEXT) - 1), st.integers(0, 7))
def test_bit_flips(workdir: Path, position: int, bit: int) -> None:
    data = bytearray(GOOD_TEXT)
    data[position] ^= 1 << bit
    check(bytes(data), workdir)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(GOOD_TEXT) - 1), st.binary(max_size=3)), max_size=4))
def test_byte_splices(workdir: Path, splices: list[tuple[int, bytes]]) -> None:
    data = bytearray(GOOD_TEXT)
    for position, replacement in splices:
        data[position : position + len(replacement)] = replacement
    check(bytes(data), workdir)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(GOOD_DOC)[1:]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "AAAA", "=" * 4, "00" * 32, "2026-03-01T00:00:00Z", "local"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(PATHS), st.sampled_from(["set", "delete", "dup", "swap"]), json_values
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_json_edits(workdir: Path, edits: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    doc = json.loads(GOOD_TEXT)
    for path, op, value in edits:
        try:
            parent = _parent(doc, path)
            key = path[-1]
            if op == "set":
                parent[key] = value
            elif op == "delete":
                del parent[key]
            elif isinstance(parent, list) and op == "dup":
                parent.insert(key, json.loads(json.dumps(parent[key])))
            elif isinstance(parent, list) and op == "swap" and len(parent) > 1:
                other = (key + 1) % len(parent)
                parent[key], parent[other] = parent[other], parent[key]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed this path
    check(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"), workdir)


def test_the_unedited_bundle_verifies(workdir: Path) -> None:
    check(GOOD_TEXT, workdir)

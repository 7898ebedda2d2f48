"""Issue 4, acceptance 1: one station anchored on a real chain node and a real TSA at once.

A gateway anchors its checkpoints on anvil (EVM JSON-RPC) and with an openssl
RFC 3161 TSA; both reach final; the regulator's ``ledger-verify --rpc …
--tsa-roots … --trust …`` confirms every receipt against the independent
ledgers and dates every entry by the earliest of them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from gateway.cli import main as gateway_cli
from gateway.keys import create_anchor_key
from ledger_client.bundle_v2 import read_entries
from ledger_client.cli import main as ledger_verify
from tests.anchoring.test_evm_station import (
    Ticker,
    anchor_rows,
    make_station,
    running_station,
    wait_until,
    write_trust,
)
from tests.servers.anvil_node import AnvilNode, evm_toml
from tests.servers.tsa_server import TestTsa, rfc3161_toml


def test_a_station_anchored_on_a_chain_and_a_tsa_verifies_against_both(
    anvil: AnvilNode, tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = create_anchor_key(tmp_path / "anchor.key")
    anvil.fund(key.address)
    cfg = make_station(tmp_path, evm_toml(anvil, poll_seconds=0.25) + rfc3161_toml(tsa))

    async def go() -> None:
        async with running_station(cfg, Ticker("water-temp")) as gw:
            assert gw.anchorer is not None
            status = gw.anchorer.status

            def both_final() -> bool:
                return all(
                    name in status and status[name].last_final is not None
                    for name in ("evm:anvil", "rfc3161:test-tsa")
                )

            await wait_until("a final anchor on both ledgers", both_final)

    asyncio.run(go())
    evm_rows = asyncio.run(anchor_rows(cfg, "evm:anvil"))
    tsa_rows = asyncio.run(anchor_rows(cfg, "rfc3161:test-tsa"))
    assert any(r.state == "final" for r in evm_rows)
    assert tsa_rows and all(r.state == "final" for r in tsa_rows)
    # No checkpoint is anchored twice on either ledger.
    for rows in (evm_rows, tsa_rows):
        sizes = [r.checkpoint for r in rows]
        assert len(sizes) == len(set(sizes))
    last_block = max(json.loads(r.receipt).get("block", 0) for r in evm_rows)
    anvil.wait_for_block(last_block + 3)  # every exported EVM anchor final on the node

    bundle_path = tmp_path / "bundle.json"
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(bundle_path)]) == 0
    trust = write_trust(cfg, [f"evm-sender {anvil.chain_id} {key.address}"])
    capsys.readouterr()
    rc = ledger_verify(
        [
            str(bundle_path),
            "--rpc",
            anvil.url,
            "--tsa-roots",
            str(tsa.roots),
            "--trust",
            str(trust),
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    doc = json.loads(out)
    assert doc["verified"] and doc["keys_trusted"]
    by_backend: dict[str, set[str]] = {}
    for a in doc["anchors"]:
        by_backend.setdefault(a["backend"].split(":")[0], set()).add(a["status"])
    assert by_backend["evm"] == {"verified"}
    assert by_backend["rfc3161"] == {"verified"}
    # Every entry up to the largest anchored checkpoint has a "no later than" time.
    first_index = next(read_entries(bundle_path))[0]
    ranges = doc["recorded_by"]
    assert ranges and ranges[0]["first"] == first_index
    for a, b in itertools.pairwise(ranges):
        assert b["first"] == a["last"] + 1
    anchored = {a["checkpoint"] for a in doc["anchors"] if a["status"] == "verified"}
    assert ranges[-1]["last"] == max(anchored) - 1

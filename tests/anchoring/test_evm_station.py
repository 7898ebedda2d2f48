"""Whole stations anchoring to real anvil nodes (issue 4's acceptance tests, EVM half).

The Gateway runs in-process with a software source (readings handed to the real
ingest → log → checkpoint → anchorer path); the station is configured with an
``[[anchor.evm]]`` table exactly as on a box (``make_station`` takes the anchor
tables as TOML text, so a station anchoring to several ledgers is one more
table). Bundles are exported with ``gateway export`` and checked with
``ledger-verify --rpc --trust`` against the node.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as gateway_cli
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.keys import AnchorKey, create_anchor_key, create_device_key, load_device_key
from gateway.pipeline import Reading, Sink, Value
from gateway.store import AnchorRow, Store
from ledger_client.cli import main as ledger_verify
from ledger_client.evm import parse_anchor_calldata
from tests.servers.anvil_node import AnvilNode, evm_toml, running_anvil

BASE = """\
[device]
key_file = "device.key"
data_dir = "data"

[log]
checkpoint_every_entries = 25
checkpoint_every_seconds = 0.3

[anchor]
retry_max_seconds = 1.0
"""


class Ticker:
    """A software source: one reading every ``period_s`` until ``quiet`` is set."""

    def __init__(self, name: str, period_s: float = 0.01) -> None:
        self.name = name
        self.period_s = period_s
        self.quiet = asyncio.Event()
        self.sent = 0

    async def run(self, sink: Sink) -> None:
        while not self.quiet.is_set():
            value = Value("temperature", 10 + self.sent % 50 / 10, "Cel")
            await sink.submit(Reading(self.name, (value,), time.time_ns(), src_seq=self.sent))
            self.sent += 1
            await asyncio.sleep(self.period_s)
        await asyncio.Event().wait()


def make_station(tmp_path: Path, anchors: str) -> Path:
    """A station directory with a device key and a config with these anchor tables."""
    create_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(BASE + anchors)
    return cfg


def evm_station(tmp_path: Path, node: AnvilNode, **settings: Any) -> tuple[Path, AnchorKey]:
    """A station anchoring to ``node`` with a funded key, and the regulator's trust file."""
    key = create_anchor_key(tmp_path / "anchor.key")
    node.fund(key.address)
    return make_station(tmp_path, evm_toml(node, poll_seconds=0.25, **settings)), key


def write_trust(cfg: Path, lines: list[str]) -> Path:
    """The regulator's trust file: the device key and these lines."""
    device = load_device_key(load_config(cfg).key_file)
    path = cfg.parent / "trust.txt"
    path.write_text("\n".join([f"key {device.vkey}", *lines]) + "\n")
    return path


@asynccontextmanager
async def running_station(cfg: Path, source: Ticker) -> AsyncIterator[Gateway]:
    gw = Gateway(load_config(cfg), sources=[source], status_every_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop), name="test.gateway")
    try:
        async with asyncio.timeout(15):
            await gw.started.wait()
        yield gw
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


async def wait_until(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def anchor_rows(cfg: Path, backend: str = "evm:anvil") -> list[AnchorRow]:
    async with Store(load_config(cfg).db_path) as store:
        return await store.anchors(backend)


def onchain_sizes(node: AnvilNode, key: AnchorKey) -> list[int]:
    txs = node.transactions_from(key.address)
    return [parse_anchor_calldata(bytes.fromhex(t["input"][2:]))[1] for t in txs]


def test_a_station_anchors_on_anvil_and_its_bundle_verifies_against_the_node(
    anvil: AnvilNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, key = evm_station(tmp_path, anvil)
    finals: list[int] = []

    async def go() -> None:
        async with running_station(cfg, Ticker("water-temp")) as gw:
            assert gw.anchorer is not None
            st = gw.anchorer.status["evm:anvil"]

            def two_finals() -> bool:
                if st.last_final is not None and st.last_final not in finals:
                    finals.append(st.last_final)
                return len(finals) >= 2

            await wait_until("two final anchors", two_finals)

    asyncio.run(go())
    rows = asyncio.run(anchor_rows(cfg))
    assert [r.checkpoint for r in rows] == sorted({r.checkpoint for r in rows})
    assert [r.checkpoint for r in rows if r.state == "final"][:2] == finals[:2]
    assert onchain_sizes(anvil, key) == [r.checkpoint for r in rows if r.state != "pending"]
    # The regulator verifies later, when every exported anchor's block is final on its node.
    last_block = max(json.loads(r.receipt).get("block", 0) for r in rows)
    anvil.wait_for_block(last_block + 3)

    bundle = tmp_path / "bundle.json"
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(bundle)]) == 0
    trust = write_trust(cfg, [f"evm-sender {anvil.chain_id} {key.address}"])
    capsys.readouterr()
    args = [str(bundle), "--rpc", anvil.url, "--trust", str(trust)]
    assert ledger_verify([*args, "--json"]) == 0, capsys.readouterr().out[-3000:]
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"]
    evm = [a for a in doc["anchors"] if a["backend"] == "evm:anvil"]
    assert len(evm) >= 2
    assert all(a["ok"] and a["status"] == "verified" for a in evm)
    assert doc["recorded_by"] and all(r["backend"] == "evm:anvil" for r in doc["recorded_by"])
    # Offline, the same receipts are present but unchecked, and nothing is claimed for them.
    assert ledger_verify([str(bundle), "--trust", str(trust), "--json"]) == 3  # not dated
    offline = json.loads(capsys.readouterr().out)
    assert {a["status"] for a in offline["anchors"] if a["backend"] == "evm:anvil"} == {
        "present but unchecked (offline)"
    }
    # With the daemon gone, `gateway status` reads the ledgers' state from the store. (The
    # daemon ran inside this test process, whose pid lives on: give its status.json the pid
    # of a process that has exited, as after `gateway run` stops.)
    status_json = load_config(cfg).data_dir / "status.json"
    last = json.loads(status_json.read_text())
    assert last["pid"] == os.getpid()
    exited = subprocess.Popen(["true"])
    exited.wait()
    status_json.write_text(json.dumps({**last, "pid": exited.pid}))
    assert gateway_cli(["status", "--config", str(cfg), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is False
    assert status["anchors"]["evm:anvil"]["last_final"] == max(
        r.checkpoint for r in rows if r.state == "final"
    )
    assert gateway_cli(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "not running" in out
    assert "anchor:      evm:anvil" in out
    assert "last final: checkpoint" in out


@pytest.mark.slow
def test_a_ledger_outage_never_stops_ingest_and_the_newest_checkpoint_is_anchored_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_anvil(tmp_path / "node") as node:  # its own chain: stopped mid-run
        cfg, key = evm_station(tmp_path, node)
        source = Ticker("water-temp", period_s=0.005)

        async def go() -> dict[str, Any]:
            async with running_station(cfg, source) as gw:
                assert gw.anchorer is not None and gw.ingest is not None
                st = gw.anchorer.status["evm:anvil"]
                log = gw.ingest.log
                await wait_until("a first final anchor", lambda: st.last_final is not None)
                node.stop()  # SIGTERM: anvil writes its chain to --state and exits
                size_down = log.size
                cp_down = log.last_checkpoint.size if log.last_checkpoint else 0
                await wait_until("the anchorer to notice", lambda: st.failures >= 2)
                await wait_until("ingest to go on", lambda: log.size > size_down + 200)
                assert log.last_checkpoint is not None and log.last_checkpoint.size > cp_down
                during = await asyncio.to_thread(
                    gateway_cli, ["status", "--config", str(cfg), "--json"]
                )
                assert during == 0
                live = json.loads(capsys.readouterr().out)
                node.start()  # the same port, the same chain
                cp_up = log.last_checkpoint.size
                await wait_until(
                    "the newest checkpoint anchored after recovery",
                    lambda: (st.last_final or 0) >= cp_up,
                )
                source.quiet.set()  # a quiet river: the tail gets its checkpoint and anchor
                await wait_until(
                    "the last checkpoint anchored",
                    lambda: (
                        log.last_checkpoint is not None
                        and st.last_final == log.last_checkpoint.size
                        and log.last_checkpoint.size == log.size
                    ),
                )
                return live

        live = asyncio.run(go())
        rows = asyncio.run(anchor_rows(cfg))
        # The checkpoint signed at shutdown (over the stop event) is anchored once as the
        # daemon leaves: its transaction is sent then and mined a block later.
        deadline = time.monotonic() + 10
        while (sizes := onchain_sizes(node, key))[-1:] != [rows[-1].checkpoint]:
            assert time.monotonic() < deadline, "the shutdown's anchor was never mined"
            time.sleep(0.1)
    assert live["running"] is True
    anchors = live["anchors"]["evm:anvil"]
    assert anchors["last_error"] and "no JSON-RPC endpoint answered" in anchors["last_error"]
    assert anchors["failures"] >= 1
    # No checkpoint was anchored twice, and the chain holds exactly what the store says.
    assert len(sizes) == len(set(sizes))
    assert sizes == sorted(sizes)
    assert sizes == [r.checkpoint for r in rows]
    assert {r.state for r in rows[:-1]} == {"final"}  # the shutdown's is settled at next start

    # One anchor after the outage covered everything logged during it: no backlog replay.
    async def checkpoints() -> list[int]:
        async with Store(load_config(cfg).db_path) as store:
            return [c.size for c in await store.checkpoints()]

    all_cps = asyncio.run(checkpoints())
    assert len(all_cps) > len(sizes) + 3
    assert sizes[-1] == all_cps[-1]

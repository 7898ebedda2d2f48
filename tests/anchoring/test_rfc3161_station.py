"""A whole station anchoring to the real openssl TSA over HTTP.

The Gateway runs in-process with a software source (a Source that hands
readings to the real ingest → log → checkpoint → anchorer path); the station
is configured with ``[[anchor.rfc3161]]`` tables exactly as on a box. The
bundle is exported with ``gateway export`` and checked with ``ledger-verify
--tsa-roots``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as gateway_cli
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.keys import create_device_key, load_device_key
from gateway.pipeline import Reading, Sink, Value
from gateway.store import AnchorRow, Store
from ledger_client.cli import main as ledger_verify
from tests.servers.tsa_server import TestTsa, rfc3161_toml

READINGS = 40
BASE = """\
[device]
key_file = "device.key"
data_dir = "data"

[log]
checkpoint_every_entries = 10
checkpoint_every_seconds = 0.2

[anchor]
retry_max_seconds = 0.2
"""


class Thermometer:
    """A software source: ``n`` readings 10 ms apart, then quiet until cancelled."""

    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.n = n

    async def run(self, sink: Sink) -> None:
        for i in range(self.n):
            value = Value("temperature", 10 + i / 10, "Cel")
            await sink.submit(Reading(self.name, (value,), time.time_ns(), src_seq=i))
            await asyncio.sleep(0.01)
        await asyncio.Event().wait()


def _trust(cfg: Path) -> Path:
    """The regulator's trust file: the station's device key."""
    path = cfg.parent / "trust.txt"
    path.write_text(f"key {load_device_key(load_config(cfg).key_file).vkey}\n")
    return path


def make_station(tmp_path: Path, anchors: str) -> Path:
    create_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(BASE + anchors)
    return cfg


async def run_station(
    cfg: Path, done: Callable[[Gateway], bool], timeout_s: float = 30.0
) -> tuple[Gateway, dict[str, list[AnchorRow]]]:
    """Run the station until ``done`` holds (and all readings are in), then stop it."""
    gw = Gateway(load_config(cfg), sources=[Thermometer("water-temp", READINGS)])
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop), name="test.gateway")
    async with asyncio.timeout(timeout_s):
        await gw.started.wait()
        while not (gw.ingest and gw.ingest.log.size > READINGS and done(gw)):
            await asyncio.sleep(0.05)
    stop.set()
    await task
    rows: dict[str, list[AnchorRow]] = {}
    async with Store(gw.config.db_path) as store:
        for row in await store.anchors():
            rows.setdefault(row.backend, []).append(row)
    return gw, rows


def final_of(gw: Gateway, backend: str) -> int | None:
    assert gw.anchorer is not None
    return gw.anchorer.status[backend].last_final


def test_a_station_anchors_to_two_tsas_and_its_bundle_verifies(
    tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_station(
        tmp_path, rfc3161_toml(tsa, "tsa-a") + rfc3161_toml(tsa, "tsa-b", required=False)
    )
    gw, rows = asyncio.run(
        run_station(cfg, lambda g: all(final_of(g, f"rfc3161:{n}") for n in ("tsa-a", "tsa-b")))
    )
    assert gw.ingest is not None
    size = gw.ingest.log.size
    for name in ("rfc3161:tsa-a", "rfc3161:tsa-b"):
        assert rows[name], name
        assert {r.state for r in rows[name]} == {"final"}  # a token is final on receipt
        for r in rows[name]:
            receipt = json.loads(r.receipt)
            assert receipt["tsa"] == name.split(":")[1]
            assert receipt["url"] == tsa.url()
            assert receipt["token"]
        assert max(r.checkpoint for r in rows[name]) == size  # the last checkpoint too
        status: dict[str, Any] = gw.status()["anchors"][name]
        assert status["last_error"] is None
        assert status["last_final"] == size

    bundle = tmp_path / "bundle.json"
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(bundle)]) == 0
    capsys.readouterr()
    trust = _trust(cfg)
    args = [str(bundle), "--tsa-roots", str(tsa.roots), "--trust", str(trust)]
    assert ledger_verify([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] and doc["level"] == "verified", doc["failures"]
    tsa_anchors = [a for a in doc["anchors"] if a["backend"].startswith("rfc3161:")]
    assert tsa_anchors
    assert all(a["ok"] and a["status"] == "verified" for a in tsa_anchors)
    # every entry is dated by the earliest TSA genTime of a checkpoint covering it
    receipts = {
        (r.backend, r.checkpoint): json.loads(r.receipt)["gen_time"]
        for name in ("rfc3161:tsa-a", "rfc3161:tsa-b")
        for r in rows[name]
    }
    covered = {i for r in doc["recorded_by"] for i in range(r["first"], r["last"] + 1)}
    assert covered == set(range(size))
    for r in doc["recorded_by"]:
        assert r["backend"].startswith("rfc3161:")
        assert r["time"] == min(t for (_, cp), t in receipts.items() if cp > r["last"])

    # the human report says the same
    assert ledger_verify(args) == 0
    out = capsys.readouterr().out
    first = doc["recorded_by"][0]
    assert (
        f"recorded    entries {first['first']}–{first['last']} no later than {first['time']} "
        f"({first['backend']})"
    ) in out
    assert out.splitlines()[-1].startswith("VERIFIED: ")
    # Without the regulator's trust file the same receipts date an untrusted bundle: exit 4.
    assert ledger_verify([str(bundle), "--tsa-roots", str(tsa.roots)]) == 4
    capsys.readouterr()


def test_an_optional_tsa_that_fails_blocks_nothing_and_records_nothing(
    tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_station(
        tmp_path,
        rfc3161_toml(tsa, "good") + rfc3161_toml(tsa, "bad", fault="untrusted", required=False),
    )
    gw, rows = asyncio.run(run_station(cfg, lambda g: bool(final_of(g, "rfc3161:good"))))
    assert gw.ingest is not None
    size = gw.ingest.log.size
    assert gw.ingest.log.size == READINGS + 2  # the boot event, every reading, the stop event
    assert max(r.checkpoint for r in rows["rfc3161:good"]) == size
    assert {r.state for r in rows["rfc3161:good"]} == {"final"}
    assert {r.state for r in rows["local"]} == {"final"}
    assert all(r.state != "final" for r in rows.get("rfc3161:bad", []))
    assert all("token" not in json.loads(r.receipt) for r in rows.get("rfc3161:bad", []))
    status = gw.status()["anchors"]["rfc3161:bad"]
    assert status["last_final"] is None
    assert status["last_error"].startswith(f"TSA bad ({tsa.url('untrusted')}): ")
    assert "does not verify (unable to get local issuer certificate)" in status["last_error"]
    assert gw.status()["anchors"]["rfc3161:good"]["last_error"] is None
    # the export carries no receipt of it, and the bundle verifies on the good TSA alone
    bundle = tmp_path / "bundle.json"
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(bundle)]) == 0
    capsys.readouterr()
    assert ledger_verify([str(bundle), "--tsa-roots", str(tsa.roots), "--json"]) == 4
    doc = json.loads(capsys.readouterr().out)
    assert doc["failure_count"] == 0  # no trust file here: UNTRUSTED KEY, nothing wrong
    assert {a["backend"] for a in doc["anchors"]} == {"local", "rfc3161:good"}
    covered = {i for r in doc["recorded_by"] for i in range(r["first"], r["last"] + 1)}
    assert covered == set(range(size))

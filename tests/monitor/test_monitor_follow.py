"""The monitor's pure core (riverseal_monitor.follow) and its SQLite state, fast.

A small box is made here from the verifier's own primitives (signed records,
C2SP tiles written to a directory as a box's uplink lays them out, signed
checkpoints); the follower reads them through a fetcher of that directory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import AnchorReceipt, DeviceKey
from ledger_client.bundle_v2 import Manifest
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer
from ledger_client.records import make_entry
from ledger_client.tiles import ENTRIES, TILE_WIDTH, encode_entry_bundle, tile_path
from ledger_client.trust import TrustedKey
from riverseal_monitor.config import load_config
from riverseal_monitor.errors import MonitorConfigError
from riverseal_monitor.follow import Alert, BoxSpec, Follower
from riverseal_monitor.state_sqlite import SqliteState, read_alerts

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def at(s: float) -> str:
    return (T0 + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Box:
    """A box's log: signed records appended, published as tiles into a directory."""

    def __init__(self, root: Path, signer: Signer | None = None) -> None:
        self.signer = signer or Signer.generate("riverseal/rs-0a1b2c3d4e5f")
        self.device = self.signer.name.split("/")[1]
        self.root = root
        self.entries: list[bytes] = []
        self.seq: dict[str, int] = {}

    def add(self, rec: dict[str, Any]) -> None:
        full = {
            "v": 1,
            "device": self.device,
            "key": self.signer.key_id.hex(),
            "index": len(self.entries),
            "clock": "synced",
            **rec,
        }
        self.entries.append(make_entry(full, self.signer.signing_key))

    def boot(self, s: float, sensors: dict[str, float]) -> None:
        declared = {
            k: {"allowance_s": a, "interval_s": a, "repeat_s": 60} for k, a in sensors.items()
        }
        self.add({"kind": "event", "event": "boot", "time": at(s), "detail": {"sensors": declared}})

    def reading(self, s: float, sensor: str, value: float, flag: int = 1) -> None:
        seq = self.seq[sensor] = self.seq.get(sensor, -1) + 1
        qc = {"flag": flag, "tests": "1111"}
        values = [{"q": "pH", "u": "[pH]", "v": value, "qc": qc}]
        self.add({"kind": "reading", "sensor": sensor, "seq": seq, "time": at(s), "values": values})

    def publish(self) -> str:
        """Tiles and entry bundles of the current size (as the uplink does); the note."""
        size = len(self.entries)
        tree = MerkleTree(self.entries)
        for t in range((size - 1) // TILE_WIDTH + 1):
            width = min(TILE_WIDTH, size - t * TILE_WIDTH)
            chunk = self.entries[t * TILE_WIDTH : t * TILE_WIDTH + width]
            hashes = b"".join(tree.leaf(t * TILE_WIDTH + k) for k in range(width))
            for path, data in (
                (tile_path(ENTRIES, t, width), encode_entry_bundle(chunk)),
                (tile_path(0, t, width), hashes),
            ):
                (self.root / path).parent.mkdir(parents=True, exist_ok=True)
                (self.root / path).write_bytes(data)
        note = sign_checkpoint(Checkpoint(self.signer.name, size, tree.root()), self.signer)
        (self.root / "checkpoint").write_text(note)
        return note


class DirFetcher:
    """Reads a box's published files from a directory (as nginx would serve them)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: list[str] = []

    async def get(self, path: str) -> bytes | None:
        self.paths.append(path)
        p = self.root / path
        return p.read_bytes() if p.exists() else None


def spec_for(box: Box, **kw: Any) -> BoxSpec:
    keys = (TrustedKey(box.signer.verifier()),)
    return BoxSpec(box.signer.name, keys, "http://unused", checkpoint_interval_s=10, **kw)


def kinds(alerts: list[Alert]) -> list[str]:
    return [a.kind for a in alerts]


async def test_steps_verify_readings_and_raise_completeness_qc_and_silence(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    box.boot(0, {"a": 15, "b": 15})
    for i in range(10):
        box.reading(1 + i, "a", 7.0)
        box.reading(1 + i, "b", 7.1)
    note = box.publish()
    f = Follower(spec_for(box, qc_burst_count=3, qc_burst_window_s=60), None, now=100.0)
    fetch = DirFetcher(box.root)
    res = await f.step(note, fetch, now=100.0)
    assert res.advanced and res.alerts == [] and f.size == 21
    assert len(res.readings) == 20 and res.readings[0].values == (("pH", "[pH]", 7.0, 1),)
    assert fetch.paths == ["tile/entries/000.p/21", "tile/0/000.p/21"]

    # Three QC failures within a minute: one burst; a silence of 100 s with no gap: a gap.
    for i in range(3):
        box.reading(12 + i, "a", 14.5, flag=4)
    box.reading(120, "a", 7.0)
    res = await f.step(box.publish(), fetch, now=101.0)
    assert res.advanced and f.size == 25
    assert kinds(res.alerts) == ["qc-burst", "gap"], res.alerts
    assert res.alerts[0].sensor == "a" and res.alerts[0].detail == (
        ("failures", 3),
        ("window_s", 60.0),
    )
    assert "sensor a: silent from" in res.alerts[1].message and res.alerts[1].entry == 24
    assert len(f.completeness.seen) == 1  # compacted after each step: no bit per entry

    # b's last reading is at 10 s, a's at 120 s: b is silent beyond its allowance of 15 s.
    alerts, _ = f.tick(now=102.0)
    assert [(a.kind, a.sensor) for a in alerts] == [("silent", "b")]
    assert dict(alerts[0].detail)["allowance_s"] == 15
    # The same note again is not news; an older one neither.
    assert (await f.step(box.publish(), fetch, now=103.0)).alerts == []
    assert not (await f.step(note, fetch, now=103.0)).advanced


async def test_a_forged_entry_is_rejected_and_nothing_advances(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    box.boot(0, {"a": 15})
    for i in range(5):
        box.reading(1 + i, "a", 7.0)
    note = box.publish()
    path = box.root / "tile/entries/000.p/6"
    path.write_bytes(path.read_bytes().replace(b'"[pH]","v":7}', b'"[pH]","v":8}', 1))
    f = Follower(spec_for(box), None, now=0.0)
    res = await f.step(note, DirFetcher(box.root), now=0.0)
    assert not res.advanced and f.size == 0 and res.readings == []
    assert kinds(res.alerts) == ["forged"] and res.alerts[0].entry == 1
    assert "does not verify" in res.alerts[0].message and "its hash is not hash 1" in (
        res.alerts[0].message
    )
    # A note not signed by the box's key is forged too.
    other = Signer.generate(box.signer.name)
    bad = sign_checkpoint(Checkpoint(box.signer.name, 6, bytes(32)), other)
    res = await f.step(bad, DirFetcher(box.root), now=0.0)
    assert kinds(res.alerts) == ["forged"] and dict(res.alerts[0].detail)["what"] == "checkpoint"


async def test_another_history_signed_by_the_box_is_a_fork(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    box.boot(0, {"a": 15})
    box.reading(1, "a", 7.0)
    f = Follower(spec_for(box), None, now=0.0)
    assert (await f.step(box.publish(), DirFetcher(box.root), now=0.0)).advanced
    verified = f.verified
    # The box shows someone else a log whose first two entries differ, then grows it.
    twin = Box(tmp_path / "twin", box.signer)
    twin.boot(0, {"a": 15})
    twin.reading(1, "a", 6.0)
    twin.reading(2, "a", 6.0)
    res = await f.step(twin.publish(), DirFetcher(twin.root), now=1.0)
    assert kinds(res.alerts) == ["fork"] and not res.advanced and f.verified == verified
    assert dict(res.alerts[0].detail)["verified_size"] == 2
    # The true log goes on, verified from the same state, and resumed from the edge kept.
    box.reading(2, "a", 7.0)
    resumed = Follower(spec_for(box), verified, now=2.0)
    res = await resumed.step(box.publish(), DirFetcher(box.root), now=2.0)
    assert res.advanced and res.alerts == [] and [r.index for r in res.readings] == [2]


async def test_state_deduplicates_alerts_across_a_restart(tmp_path: Path) -> None:
    a = Alert("riverseal/rs-1", "silent", "silent:a", 1.0, "sensor a: …", sensor="a")
    async with SqliteState(tmp_path / "m.sqlite") as st:
        assert await st.raise_alert(a)
        assert not await st.raise_alert(a)
    async with SqliteState(tmp_path / "m.sqlite") as st:
        assert await st.open_alerts() == {("riverseal/rs-1", "silent:a")}
        assert not await st.raise_alert(a)
        assert await st.clear("riverseal/rs-1", ["silent:a", "box-silent"], 2.0) == ["silent:a"]
        assert await st.raise_alert(a)  # a new silence after the sensor came back
    rows = read_alerts(tmp_path / "m.sqlite")
    assert [(r["key"], r["cleared_s"]) for r in rows] == [("silent:a", 2.0), ("silent:a", None)]


def test_config_names_what_is_wrong(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    cfg = tmp_path / "monitor.toml"
    good = f'[[box]]\norigin = "{box.signer.name}"\nvkey = "{box.signer.verifier().to_vkey()}"\n'
    cfg.write_text(good + 'url = "http://127.0.0.1:1/b"\n')
    loaded = load_config(cfg)
    assert (
        loaded.boxes[0].url == "http://127.0.0.1:1/b"
        and loaded.state == tmp_path / "monitor.sqlite"
    )
    for text, message in (
        (good + 'url = "ftp://x"\n', "box[0].url"),
        (good + 'url = "http://x"\ncolour = 1\n', "unknown key(s) colour"),
        ('[monitor]\nwebhook = "x"\n' + good + 'url = "http://x"\n', "monitor.webhook"),
        ('[broker]\nhost = "h"\ngroup = "a/b"\n' + good + 'url = "http://x"\n', "broker.group"),
        ('[broker]\nhost = "h"\ntls_ca = "no-ca.pem"\n' + good + 'url = "http://x"\n', "tls_ca"),
    ):
        cfg.write_text(text)
        with pytest.raises(MonitorConfigError, match=re.escape(message)):
            load_config(cfg)
    assert json.loads(json.dumps(Alert("o", "fork", "k", 1.0, "m").to_json()))["kind"] == "fork"


def test_anchor_overdue_and_box_silent_on_the_monitors_clock(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    f = Follower(spec_for(box, anchor_overdue_s=100, box_silent_intervals=3), None, now=0.0)
    assert f.tick(now=29.0) == ([], [])
    alerts, _ = f.tick(now=31.0)
    assert kinds(alerts) == ["box-silent"] and dict(alerts[0].detail)["quiet_s"] == 31.0

    def manifest(anchored: list[int]) -> bytes:
        receipts = [
            AnchorReceipt(n, "rfc3161:tsa", bytes(32), "final", {}).to_json() for n in anchored
        ]
        return Manifest(
            box.signer.name,
            box.device,
            (DeviceKey(box.signer.verifier().to_vkey()),),
            ("note",),
            tuple(AnchorReceipt.from_json(r, "r") for r in receipts),
            0,
            None,
            at(0),
        ).dumps()

    assert f.manifest(manifest([]), now=50.0) == []
    alerts, _ = f.tick(now=101.0)
    assert kinds(alerts) == ["box-silent", "anchor-overdue"] and alerts[1].size == 0
    assert f.manifest(manifest([5, 12]), now=102.0) == ["anchor-overdue:0"]
    alerts, _ = f.tick(now=150.0)
    assert kinds(alerts) == ["box-silent"]  # anchored at 102: due again after 202
    alerts, _ = f.tick(now=203.0)
    assert [a.key for a in alerts] == ["box-silent", "anchor-overdue:12"]


async def test_silence_of_a_quiet_box_and_no_silence_while_catching_up(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    box.boot(0, {"a": 15})
    for i in range(10):
        box.reading(1 + i, "a", 7.0)
    note = box.publish()
    t0 = T0.timestamp()
    # Followed live: verified at t0 + 11, then nothing more comes (the box is quiet).
    live = Follower(spec_for(box), None, now=t0 + 11)
    assert (await live.step(note, DirFetcher(box.root), now=t0 + 11)).advanced
    # Silent once 15 s (allowance) + 10 s (interval) have passed since its last reading
    # at t0 + 10 (plus the 1 s before it was verified), the box's time moving on as ours.
    assert kinds(live.tick(now=t0 + 35.9)[0]) == []
    assert kinds(live.tick(now=t0 + 36.1)[0]) == ["silent"]
    # The same log caught up a day later: old readings are not a silence.
    late = Follower(spec_for(box, box_silent_intervals=10**6), None, now=t0 + 86_400)
    assert (await late.step(note, DirFetcher(box.root), now=t0 + 86_400)).advanced
    assert late.tick(now=t0 + 86_401) == ([], [])


def test_the_package_imports_without_the_network_stacks() -> None:
    code = "import sys, riverseal_monitor; print(sorted({'httpx', 'aiomqtt'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_qc_failures_spread_wider_than_the_window_are_no_burst(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    box.boot(0, {"a": 100})
    for s in (10, 50, 90, 130):  # any three span 80 s > 60 s
        box.reading(s, "a", 14.5, flag=4)
    f = Follower(spec_for(box, qc_burst_count=3, qc_burst_window_s=60), None, now=0.0)
    res = await f.step(box.publish(), DirFetcher(box.root), now=0.0)
    assert res.advanced and res.alerts == []
    box.reading(131, "a", 14.5, flag=4)  # the last three, 90 to 131, span 41 s
    res = await f.step(box.publish(), DirFetcher(box.root), now=1.0)
    assert [(a.kind, a.entry) for a in res.alerts] == [("qc-burst", 5)]


async def test_a_missing_file_is_alerted_until_the_box_is_verified_again(tmp_path: Path) -> None:
    box = Box(tmp_path / "box")
    box.boot(0, {"a": 15})
    box.reading(1, "a", 7.0)
    note = box.publish()
    (box.root / "tile/0/000.p/2").unlink()
    f = Follower(spec_for(box), None, now=0.0)
    res = await f.step(note, DirFetcher(box.root), now=0.0)
    assert [(a.kind, a.key) for a in res.alerts] == [("forged", "missing")] and f.size == 0
    assert dict(res.alerts[0].detail)["path"] == "tile/0/000.p/2"
    res = await f.step(box.publish(), DirFetcher(box.root), now=1.0)
    assert res.advanced and "missing" in res.cleared and f.size == 2

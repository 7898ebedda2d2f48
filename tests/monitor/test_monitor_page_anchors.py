"""Anchoring times on the monitor's page, and its cosignatures served (issue 12).

A box runs in this process on the gateway's own code: its ``Log``, an
``Anchorer`` with the ``local`` journal and a real RFC 3161 timestamp authority
(simulators/tsa.py, openssl), and an ``Uplink`` to a real nginx. A
``riverseal-monitor run`` process (SQLite state, a witness key, the page)
follows it by polling. The monitor reads the box's manifest, checks each
receipt offline and stores when each checkpoint was anchored; headless
Chromium sees the marks drawn, and more of them as the box anchors new
checkpoints while the page is open. ``/api/boxes/<origin>/checkpoint`` serves the
monitor's cosigned checkpoint. The SQLite and PostgreSQL states answer the
page alike, and ``AnchorBook``'s offline checks refuse what does not hold.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.evm import EvmBackend
from gateway.anchoring.local import LocalJournal
from gateway.anchoring.rfc3161 import Rfc3161Backend
from gateway.config.anchor_evm import EvmAnchorConfig
from gateway.config.uplink import UplinkConfig
from gateway.keys import create_anchor_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from gateway.uplink import Uplink
from ledger_client.bundle import AnchorReceipt
from ledger_client.bundle_v2 import Manifest
from ledger_client.checkpoint import Checkpoint
from ledger_client.evm import anchor_calldata
from ledger_client.note import Signer, open_note, sign_note
from ledger_client.tsa import load_tsa_roots
from ledger_client.witness import WitnessSigner, cosign, cosignatures
from riverseal_monitor.anchors import AnchorBook, AnchorMark, anchor_alerts
from riverseal_monitor.follow import Reading as MonitorReading
from riverseal_monitor.follow import Verified
from riverseal_monitor.state_postgres import PostgresState
from riverseal_monitor.state_sqlite import SCHEMA, SqliteState
from riverseal_monitor.web import PageServer, SqliteDisplay
from simulators.tsa import LocalTsa
from tests.gateway.test_mirror_verify import device_key
from tests.monitor.fleet_monitor import free_port, run_monitor
from tests.monitor.test_monitor_page import dump_dom
from tests.servers.anvil_node import AnvilNode
from tests.servers.postgres import Postgres
from tests.servers.web_server import WebServer

TSA = "rfc3161:local-tsa"
T1 = datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC).timestamp()


async def until(what: str, check: Callable[[], Awaitable[Any]], s: float, log: Path) -> Any:
    deadline = time.monotonic() + s
    while True:
        found = await check()
        if found:
            return found
        tail = log.read_text()[-3000:] if log.exists() else ""
        assert time.monotonic() < deadline, f"{what}: not within {s} s\n{tail}"
        await asyncio.sleep(0.2)


def monitor_config(folder: Path, port: int, origin: str, vkey: str, url: str) -> Path:
    folder.mkdir(parents=True)
    key = folder / "witness.key"
    key.write_text(WitnessSigner.generate("regulator.example/monitor").to_skey())
    key.chmod(0o600)
    cfg = folder / "monitor.toml"
    cfg.write_text(
        '[monitor]\nstate = "monitor.sqlite"\nwitness_key = "witness.key"\n'
        f'listen = "127.0.0.1:{port}"\npoll_interval_s = 0.5\nmanifest_interval_s = 0.5\n'
        "tick_s = 0.25\ncheckpoint_interval_s = 60\n"
        f'[[box]]\norigin = "{origin}"\nvkey = "{vkey}"\nurl = "{url}"\n'
    )
    return cfg


async def test_anchoring_marks_and_the_cosigned_checkpoint_on_the_page(
    tmp_path: Path, web_server: WebServer, procs: list[subprocess.Popen[bytes]]
) -> None:
    key = device_key(91)
    to = f"{web_server.url}/anchors-{uuid.uuid4().hex[:6]}"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    cfg = monitor_config(tmp_path / "monitor", port, key.origin, key.vkey, to)
    log_file = cfg.parent / "monitor.log"
    (tmp_path / "box").mkdir()
    async with (
        LocalTsa() as tsa,
        Store(tmp_path / "box" / "log.sqlite") as store,
        httpx.AsyncClient(timeout=15) as http,
    ):
        log = Log(store, key)
        await log.open()
        journal = LocalJournal(tmp_path / "box" / "journal.sqlite")
        stamps = Rfc3161Backend("local-tsa", tsa.url, load_tsa_roots([tsa.roots_pem]))
        anchorer = Anchorer(store, [journal, stamps])
        async with Uplink(log, UplinkConfig(to=to), poll_s=3600) as uplink:

            async def checkpoint() -> int:
                """Five readings up to now, a checkpoint, anchored by both, published."""
                now = time.time_ns()
                batch = [
                    Reading("ph-1", (Value("ph", 7.0 + i / 10, "pH"),), now - (4 - i) * 10**8)
                    for i in range(5)
                ]
                await log.append(batch, checkpoint=True)
                cp = log.last_checkpoint
                assert cp is not None
                await anchorer.step()  # the journal and the TSA answer final at once
                uplink.notify(cp)
                return cp.size

            async def series() -> dict[str, Any]:
                r = await http.get(f"{api}/series", params={"origin": key.origin})
                return dict(r.json())

            async def anchored(size: int) -> bool:
                try:
                    marks = (await series())["anchors"]
                except httpx.HTTPError:
                    return False  # the page is not served yet
                return {(a["checkpoint"], a["backend"]) for a in marks} >= {
                    (size, "local"),
                    (size, TSA),
                }

            runner = asyncio.create_task(uplink.run())
            producer: asyncio.Task[None] | None = None
            try:
                began = time.time()
                sizes = [await checkpoint() for _ in range(3)]
                assert sizes == [5, 10, 15]
                run_monitor(cfg, "monitor", procs)
                await until(
                    "checkpoint 15 anchored on the page", lambda: anchored(15), 30, log_file
                )
                doc = await series()
                ended = time.time()
                by = {(a["checkpoint"], a["backend"]): a for a in doc["anchors"]}
                assert sorted(by) == [(s, b) for s in sizes for b in ("local", TSA)]
                for (_, backend), a in by.items():
                    assert a["state"] == "final"
                    assert a["status"] == ("local" if backend == "local" else "unchecked")
                    # The journal's time, the token's genTime (whole seconds from openssl).
                    assert int(began) <= a["time_s"] <= ended, a

                # The cosigned checkpoint: the box's note, the monitor's valid cosignature.
                async def cosigned() -> httpx.Response | None:
                    r = await http.get(f"{api}/boxes/{key.origin}/checkpoint")
                    return r if r.status_code == 200 and r.text.split("\n")[1] == "15" else None

                served = await until("checkpoint 15 cosigned", cosigned, 10, log_file)
                assert served.headers["content-type"].startswith("text/plain")
                note = served.text
                cp = Checkpoint.parse(open_note(note, key.signer.verifier()))
                assert cp.origin == key.origin and cp.size >= 15
                signer_vkey = (cfg.parent / "witness.key").read_text()
                witness = WitnessSigner.from_skey(signer_vkey).key
                found, problems = cosignatures(note, [witness])
                assert len(found) == 1 and problems == [], problems
                encoded = await http.get(f"{api}/boxes/{quote(key.origin, safe='')}/checkpoint")
                assert encoded.text == note
                for missing in ("riverseal/rs-nobody", ""):
                    r = await http.get(f"{api}/boxes/{missing}/checkpoint")
                    assert r.status_code == 404, missing

                # The page, open while the box goes on anchoring: new marks appear.
                async def produce() -> None:
                    while True:
                        await checkpoint()
                        await asyncio.sleep(0.3)

                before = max(a["checkpoint"] for a in (await series())["anchors"])
                producer = asyncio.create_task(produce())
                dom = await asyncio.to_thread(
                    dump_dom, tmp_path, f"http://127.0.0.1:{port}/", 6_000
                )
            finally:
                for task in (producer, runner):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await journal.aclose()
                await stamps.aclose()

    lines = re.findall(
        r'<line class="anchor anchor-(local|ledger)"[^>]*data-backend="([^"]+)" '
        r'data-checkpoint="(\d+)"><title>([^<]*)</title>',
        dom,
    )
    assert lines, dom[:3000]
    drawn = {(b, int(n)) for _, b, n, _ in lines}
    local = {n for b, n in drawn if b == "local"}
    assert {5, 10, 15} <= local and {n for b, n in drawn if b == TSA} >= {5, 10, 15}
    assert all((kind == "local") == (b == "local") for kind, b, _, _ in lines)
    assert all(f"checkpoint {n} anchored by {b} (final) at " in t for _, b, n, t in lines)
    first = re.search(r'<body[^>]* data-first-anchored="(\d+)"', dom)
    now = re.search(r'<body[^>]* data-anchored="(\d+)"', dom)
    assert first is not None and now is not None, dom[:2000]
    # Marks for checkpoints anchored after the page was loaded were drawn without a reload.
    assert int(now[1]) == max(local) > max(int(first[1]), before), (now[1], first[1], before)
    legend = re.findall(r'<span class="anchor-label">([^<]*)</span>', dom)
    assert [x.strip() for x in legend] == [
        "anchored in the box's own journal",
        "anchored on a ledger (receipt checked offline)",
    ]
    assert re.search(r'class="note anchor-last">last anchored: checkpoint \d+ by ', dom)

    # A receipt on the web server that fails its offline check is a bad-anchor alert;
    # put right, the alert is cleared.
    manifest = web_server.root / to.rsplit("/", 1)[1] / "riverseal-bundle.json"
    genuine = manifest.read_bytes()
    doc = json.loads(genuine)
    (receipt,) = [a for a in doc["anchors"] if (a["checkpoint"], a["backend"]) == (5, "local")]
    receipt["receipt"]["seq"] = -1

    def replace(data: bytes) -> None:  # whole, never half-written under nginx
        (manifest.parent / "tmp").write_bytes(data)
        os.replace(manifest.parent / "tmp", manifest)

    def events(kind: str) -> list[dict[str, Any]]:
        out = cfg.parent / "monitor.jsonl"
        docs = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
        return [d for d in docs if d["event"] == kind and d["key"] == "bad-anchor:5:local"]

    async def seen(kind: str) -> list[dict[str, Any]]:
        return events(kind)

    replace(json.dumps(doc).encode())
    (alert,) = await until("a bad-anchor alert", lambda: seen("alert"), 10, log_file)
    assert alert["kind"] == "bad-anchor" and alert["size"] == 5
    assert alert["detail"] == {
        "backend": "local",
        "state": "final",
        "why": "the receipt's seq is not a non-negative integer",
    }
    assert "checkpoint 5: the local receipt fails its offline check" in alert["message"]
    replace(genuine)
    await until("the bad-anchor alert cleared", lambda: seen("cleared"), 10, log_file)
    assert len(events("alert")) == 1


async def test_an_evm_anchor_on_the_page_from_a_real_chain(
    tmp_path: Path, web_server: WebServer, anvil: AnvilNode, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A box anchoring on anvil: the page's mark carries the block's own time, and the
    receipt passes the monitor's offline checks (calldata against the checkpoint)."""
    key = device_key(93)
    to = f"{web_server.url}/evm-{uuid.uuid4().hex[:6]}"
    port = free_port()
    cfg = monitor_config(tmp_path / "monitor", port, key.origin, key.vkey, to)
    log_file = cfg.parent / "monitor.log"
    anchor_key = create_anchor_key(tmp_path / "anchor.key")
    anvil.fund(anchor_key.address)
    evm = EvmBackend(
        EvmAnchorConfig(
            name=str(anvil.chain_id),
            chain_id=anvil.chain_id,
            rpc=(anvil.url,),
            finality="confirmations",
            confirmations=2,
            timeout_seconds=5.0,
        ),
        anchor_key,
    )
    backend = f"evm:{anvil.chain_id}"
    (tmp_path / "box").mkdir()
    began = time.time()
    async with Store(tmp_path / "box" / "log.sqlite") as store, httpx.AsyncClient() as http:
        log = Log(store, key)
        await log.open()
        anchorer = Anchorer(store, [evm])
        now = time.time_ns()
        await log.append([Reading("ph-1", (Value("ph", 7.2, "pH"),), now)], checkpoint=True)
        cp = log.last_checkpoint
        assert cp is not None and cp.size == 1
        try:
            deadline = time.monotonic() + 30
            while not any(a.state == "final" for a in await store.anchors(backend)):
                assert time.monotonic() < deadline, await store.anchors(backend)
                await anchorer.step()
                await asyncio.sleep(0.3)
        finally:
            await evm.aclose()
        async with Uplink(log, UplinkConfig(to=to), poll_s=3600) as uplink:
            assert await uplink.step()
        (row,) = await store.anchors(backend)
        block = anvil.rpc("eth_getBlockByNumber", hex(json.loads(row.receipt)["block"]), False)
        block_s = int(block["timestamp"], 16)
        run_monitor(cfg, "monitor", procs)

        async def marked() -> list[dict[str, Any]]:
            try:
                r = await http.get(
                    f"http://127.0.0.1:{port}/api/series", params={"origin": key.origin}
                )
            except httpx.HTTPError:
                return []  # the page is not served yet
            return [a for a in r.json()["anchors"] if a["backend"] == backend]

        (mark,) = await until("the EVM anchor on the page", marked, 20, log_file)
    assert mark == {
        "checkpoint": 1,
        "backend": backend,
        "state": "final",
        "time_s": float(block_s),
        "status": "unchecked",
    }
    assert began - 2 <= block_s <= time.time() + 2


def _box(origin: str) -> tuple[Verified, MonitorReading]:
    reading = MonitorReading(
        origin, "ph-1", 0, "2026-12-06T00:00:00Z", 1.7969792e9, (("ph", "pH", 7.1, 1),)
    )
    return Verified(1, bytes(32), (bytes(32),), f"{origin}\n1\nroot\n"), reading


async def _page_answers(display: Any, origin: str) -> tuple[dict[str, Any], int, str, int]:
    """The series answer, and the status and body of the cosigned checkpoint URLs."""
    page = PageServer(display, "127.0.0.1", 0)
    server = asyncio.create_task(page.serve())
    await page.bound.wait()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{page.port}") as c:
            series = (await c.get("/api/series", params={"origin": origin})).json()
            known = await c.get(f"/api/boxes/{origin}/checkpoint")
            unknown = await c.get("/api/boxes/riverseal/rs-other/checkpoint")
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    return series, known.status_code, known.text, unknown.status_code


async def test_anchors_and_cosignatures_alike_in_sqlite_and_postgresql(
    tmp_path: Path, postgres: Postgres
) -> None:
    origin = "riverseal/rs-parity"
    verified, reading = _box(origin)
    marks = [
        AnchorMark(5, "local", "final", 1.7969792e9, "local"),
        AnchorMark(5, TSA, "final", 1.7969793e9, "unchecked"),
        AnchorMark(9, "evm:31337", "included", 1.7969794e9, "unchecked"),
        AnchorMark(9, "local", "final", None, "failed: the digest is not checkpoint 9's"),
    ]
    moved = AnchorMark(9, "evm:31337", "final", 1.7969794e9, "unchecked")
    answers = []
    witness = WitnessSigner.generate("regulator.example/monitor")
    sqlite = SqliteState(tmp_path / "monitor.sqlite")
    async with PostgresState(postgres.url) as pg:
        for state, display in ((sqlite, SqliteDisplay(sqlite.path)), (pg, pg)):
            await state.commit(origin, verified, [reading], [], None, 100.0)
            series, status, _, _ = await _page_answers(display, origin)
            assert status == 404  # verified, but not cosigned: no witness key
            await state.record_anchors(origin, marks, 101.0)
            await state.record_anchors(origin, marks, 102.0)  # read again: no new rows
            await state.record_anchors(origin, [moved], 103.0)  # included, then final
            cosigned = verified.note + cosign(witness, "body\n", 7)
            bigger = Verified(2, verified.root, verified.edge, verified.note)
            await state.commit(origin, bigger, [], [], cosigned, 104.0)
            answers.append(await _page_answers(display, origin))
    await sqlite.close()
    assert answers[0] == answers[1]
    series, status, text, unknown = answers[0]
    assert (status, text, unknown) == (200, cosigned, 404)
    assert series["anchors"] == [
        {"checkpoint": 5, "backend": "local", "state": "final", "time_s": 1.7969792e9,
         "status": "local"},
        {"checkpoint": 5, "backend": TSA, "state": "final", "time_s": 1.7969793e9,
         "status": "unchecked"},
        {"checkpoint": 9, "backend": "evm:31337", "state": "final", "time_s": 1.7969794e9,
         "status": "unchecked"},
        {"checkpoint": 9, "backend": "local", "state": "final", "time_s": None,
         "status": "failed: the digest is not checkpoint 9's"},
    ]  # fmt: skip


def test_anchor_book_checks_receipts_offline() -> None:
    key = device_key(92)
    origin = key.origin
    stranger = Signer.generate(origin)  # the box's name, a key the monitor does not trust

    def note(size: int, signer: Signer = key.signer) -> tuple[str, bytes]:
        body = f"{origin}\n{size}\n{base64.b64encode(bytes([size]) * 32).decode()}\n"
        return sign_note(body, signer), Checkpoint.parse(body).digest()

    n4, d4 = note(4)
    n8, d8 = note(8)
    n9, d9 = note(9, stranger)
    calldata = "0x" + anchor_calldata(d8, 8).hex()

    def manifest(anchors: list[AnchorReceipt]) -> bytes:
        return Manifest(
            origin, key.device_id, (), (n4, n8, n9), tuple(anchors), 0, None, "x", "t"
        ).dumps()

    good = [
        AnchorReceipt(4, "local", d4, "final", {"journal": "j", "seq": 1,
                                                "time": "2026-12-06T00:00:01Z"}),
        AnchorReceipt(8, "evm:31337", d8, "included", {"calldata": calldata,
                                                       "block_time": "2026-12-06T00:00:02Z"}),
        AnchorReceipt(8, "local", d8, "pending", {}),  # not anchored yet: left out
        AnchorReceipt(4, "x-ledger", d4, "final", {}),  # unknown here: no time
    ]  # fmt: skip
    bad = [
        AnchorReceipt(9, "local", d9, "final", {"journal": "j", "seq": 2, "time": "2026"}),
        AnchorReceipt(8, "rfc3161:t", d8, "final", {"token": "bm90IGEgdG9rZW4="}),
        AnchorReceipt(4, "evm:1", d4, "final", {"calldata": calldata}),  # commits to 8
        AnchorReceipt(8, "local", d4, "final", {"journal": "j", "seq": 3, "time": "x"}),
        AnchorReceipt(12, "local", d4, "final", {}),
    ]
    book = AnchorBook(origin, [key.signer.verifier()])
    marks = book.read(manifest(good + bad))
    by = {(m.checkpoint, m.backend): m for m in marks}
    assert by[(4, "local")] == AnchorMark(4, "local", "final", T1, "local")
    assert by[(8, "evm:31337")] == AnchorMark(8, "evm:31337", "included", T1 + 1, "unchecked")
    assert by[(4, "x-ledger")].time_s is None and by[(4, "x-ledger")].status == "unchecked"
    assert all(m.state != "pending" for m in marks)
    failures = {k: m.status for k, m in by.items() if m.status.startswith("failed")}
    assert set(failures) == {
        (9, "local"),
        (8, "rfc3161:t"),
        (4, "evm:1"),
        (8, "local"),
        (12, "local"),
    }
    assert "does not verify under the box's keys" in failures[(9, "local")]
    assert "token cannot be read" in failures[(8, "rfc3161:t")]
    assert "another digest or size" in failures[(4, "evm:1")]
    assert "not checkpoint 8's" in failures[(8, "local")]
    assert "not in the manifest" in failures[(12, "local")]
    assert all(by[k].time_s is None for k in failures)
    raised, passed = anchor_alerts(origin, marks, 7.0)
    assert {a.key: (a.kind, a.size, a.time_s) for a in raised} == {
        f"bad-anchor:{c}:{b}": ("bad-anchor", c, 7.0) for c, b in failures
    }
    assert sorted(passed) == sorted(f"bad-anchor:{c}:{b}" for c, b in set(by) - set(failures))
    evm = next(a for a in raised if a.key == "bad-anchor:4:evm:1")
    assert dict(evm.detail)["why"] == failures[(4, "evm:1")].removeprefix("failed: ")
    # Read again: nothing new; a receipt that moved on (included to final) is new.
    assert book.read(manifest(good + bad)) == []
    final = AnchorReceipt(8, "evm:31337", d8, "final", good[1].receipt)
    assert book.read(manifest([good[0], final])) == [
        AnchorMark(8, "evm:31337", "final", T1 + 1, "unchecked")
    ]
    book.forget([by[(4, "local")]])
    assert book.read(manifest([good[0], final])) == [by[(4, "local")]]


async def test_a_state_made_before_anchors_were_kept_gains_the_table(tmp_path: Path) -> None:
    """A state file of an older monitor (no ``anchors`` table): the page answers without
    anchors, and the next monitor start adds the table, keeping what was there."""
    path = tmp_path / "old.sqlite"
    old_schema = SCHEMA[: SCHEMA.index("CREATE TABLE IF NOT EXISTS anchors")]
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(old_schema)
        db.execute(
            "INSERT INTO boxes VALUES ('riverseal/rs-old', 3, x'00', x'', 'n', NULL, 1.0, 3)"
        )
        db.commit()
    display = SqliteDisplay(path)
    before = await display.series("riverseal/rs-old", 0.0, 10)
    assert before["anchors"] == [] and before["checkpoint"] == {"size": 3, "verified_s": 1.0}
    state = SqliteState(path)
    try:
        await state.record_anchors(
            "riverseal/rs-old", [AnchorMark(3, "local", "final", T1, "local")], 2.0
        )
    finally:
        await state.close()
    after = await display.series("riverseal/rs-old", 0.0, 10)
    assert after["checkpoint"] == before["checkpoint"]
    assert after["anchors"] == [
        {"checkpoint": 3, "backend": "local", "state": "final", "time_s": T1, "status": "local"}
    ]

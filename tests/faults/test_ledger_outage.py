"""Ledger and TSA outage under a real ``gateway run`` that keeps ingesting.

tests/anchoring/test_evm_station.py already stops an anvil node under an in-process
Gateway fed by a software source; this stops both kinds of ledger at once under a real
daemon fed by a real MQTT node. The station anchors every checkpoint to its own anvil
chain (tests/servers/anvil_node.py) and to its own openssl TSA (tests/servers/tsa_server.py,
served here on a fixed port so it can come back where the config points). With the first
anchors final, both are stopped: readings keep being committed and acknowledged at the
same pace, and ``/status`` shows each ledger failing with its error. Both come back:
the newest checkpoint is anchored on each without a restart, every acknowledged reading
is logged once, and ``ledger-verify --rpc --tsa-roots`` says VERIFIED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.keys import create_anchor_key, load_device_key
from tests.faults.publishers import Node, run_nodes
from tests.faults.verifying import export_and_verify
from tests.gateway.daemon_procs import GATEWAY, records, start, subscribed
from tests.servers.anvil_node import AnvilNode, evm_toml, running_anvil
from tests.servers.tsa_server import TestTsa, make_authority, rfc3161_toml

EVM, TSA = "evm:anvil", "rfc3161:test-tsa"
OUTAGE_S = 4.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StoppableTsa:
    """The test TSA's answers (``TestTsa.answer``: ``openssl ts -reply``) served on one
    port that it can leave and take again."""

    def __init__(self, tsa: TestTsa, port: int) -> None:
        self.tsa = tsa
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        tsa = self.tsa

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, ctype, body = tsa.answer(self.path, query)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
        self._server = None


@contextlib.contextmanager
def stoppable_tsa(folder: Path) -> Iterator[StoppableTsa]:
    port = _free_port()
    trusted = make_authority(folder / "trusted", "Riverseal Test TSA")
    untrusted = make_authority(folder / "untrusted", "Untrusted Test TSA")
    server = StoppableTsa(TestTsa(trusted, untrusted, f"http://127.0.0.1:{port}"), port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def http_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as reply:
        doc: dict[str, Any] = json.loads(reply.read())
        return doc


async def wait_for(what: str, check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while not (got := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return got


def station(
    tmp_path: Path, node: AnvilNode, tsa: StoppableTsa, broker: tuple[str, int], status: int
) -> tuple[Path, Path]:
    """The station's config, and the regulator's trust file (device key, anchor sender)."""
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    key = create_anchor_key(tmp_path / "anchor.key")
    node.fund(key.address)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_seconds = 0.5\ncommit_window_s = 0.02\n"
        f'[status]\nlisten = "127.0.0.1:{status}"\n'
        "[anchor]\nretry_max_seconds = 1.0\n"
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "outage-gw"\n'
        '[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "outage/node-1"\ninterval_s = 1\n'
        + evm_toml(node, poll_seconds=0.25)
        + rfc3161_toml(tsa.tsa)
    )
    device = load_device_key(tmp_path / "device.key")
    trust = tmp_path / "regulator-trust.txt"
    trust.write_text(f"key {device.vkey}\nevm-sender {node.chain_id} {key.address}\n")
    return cfg, trust


@pytest.mark.slow
async def test_ledgers_down_ingest_goes_on_and_anchors_catch_up(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    status_port = _free_port()
    with (
        running_anvil(tmp_path / "chain") as node,
        stoppable_tsa(tmp_path / "tsa") as tsa,
    ):
        cfg, trust = station(tmp_path, node, tsa, mosquitto, status_port)
        db = tmp_path / "data" / "log.sqlite"
        daemon = start(cfg, procs)
        await wait_for("the status server", lambda: _status_or_none(status_port))
        await subscribed(cfg, daemon)
        publisher = Node("node-1", "outage/node-1")
        stop_node = asyncio.Event()
        publishing = asyncio.create_task(
            run_nodes([publisher], mosquitto[0], mosquitto[1], 50.0, stop_node)
        )

        def anchors() -> dict[str, Any]:
            doc: dict[str, Any] = http_status(status_port)["anchors"]
            return doc

        def finals() -> bool:
            a = anchors()
            return all(a.get(n, {}).get("last_final") is not None for n in (EVM, TSA))

        await wait_for("a first final anchor on both", finals)
        node.stop()
        tsa.stop()
        down_at = time.monotonic()
        acked_down = len(publisher.acked)

        def failing() -> dict[str, Any] | None:
            a = anchors()
            ok = all(a[n]["failures"] >= 1 and a[n]["last_error"] for n in (EVM, TSA))
            return a if ok else None

        during = await wait_for("both ledgers to show failing", failing, within=20)
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        outage_s = time.monotonic() - down_at
        acked_during = len(publisher.acked) - acked_down
        # Ingest did not wait for the ledgers: the node's 50/s were acknowledged throughout.
        assert acked_during >= 0.8 * 50 * outage_s, (acked_during, outage_s)
        cp_down = last_checkpoint(db)
        node.start()
        tsa.start()

        def caught_up() -> bool:
            a = anchors()
            return all((a[n]["last_final"] or 0) > cp_down for n in (EVM, TSA))

        await wait_for("anchors after the outage", caught_up, within=40)
        stop_node.set()
        await publishing
        await asyncio.sleep(0.5)  # a PUBACKed reading is committed already; margin for status
        assert daemon.poll() is None  # no restart needed
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        node.wait_for_block(node.block_number() + 3)  # the shutdown's anchor final too

        returncode, report = export_and_verify(
            cfg, trust, "--rpc", node.url, "--tsa-roots", str(tsa.tsa.roots)
        )
    assert report["failure_count"] == 0, report["failures"]
    assert (returncode, report["level"]) == (0, "verified"), report["level"]
    statuses = Counter((a["backend"], a["status"]) for a in report["anchors"])
    assert statuses[(EVM, "verified")] >= 2 and statuses[(TSA, "verified")] >= 2, statuses

    got = Counter(r["src_seq"] for r in records(db) if r["kind"] == "reading")
    assert max(got.values()) == 1
    assert not [s for s in publisher.acked if s not in got]
    for name in (EVM, TSA):
        print(f"{name} during the outage: {during[name]['last_error']}")


def _status_or_none(port: int) -> dict[str, Any] | None:
    try:
        return http_status(port)
    except OSError:
        return None


def last_checkpoint(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return int(c.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0])

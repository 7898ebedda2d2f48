"""The witness service over real HTTP (httpx against asyncio streams, SQLite state)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer
from ledger_client.witness import AddCheckpoint, parse_cosign_response
from riverseal_monitor.errors import WitnessConfigError
from riverseal_monitor.witness import Witness, WitnessConfig, load_key
from tests.monitor.witness_server import running_witness, witness_files

ORIGIN = "riverseal.example/gw/5e55"
REPO = Path(__file__).resolve().parents[2]


def log_key() -> Signer:
    return Signer.from_seed(ORIGIN, bytes(range(1, 33)))


def body(t: MerkleTree, old: int, new: int, key: Signer) -> bytes:
    note = sign_checkpoint(Checkpoint(ORIGIN, new, t.root(new)), key)
    return AddCheckpoint(old, tuple(t.consistency_proof(old, new)) if old else (), note).encode()


async def test_add_checkpoint_over_http(tmp_path: Path) -> None:
    key = log_key()
    config, signer = witness_files(tmp_path, "witness.test/w1", {ORIGIN: [key.verifier()]})
    t = MerkleTree(b"r%d" % i for i in range(50))
    async with running_witness(config) as w, httpx.AsyncClient(base_url=w.url) as http:
        r = await http.post("/add-checkpoint", content=body(t, 0, 20, key))
        assert r.status_code == 200
        note = sign_checkpoint(Checkpoint(ORIGIN, 20, t.root(20)), key)
        assert parse_cosign_response(r.content, note, signer.key).witness == signer.key
        # the same connection, kept alive: stale old size -> 409 with the size held
        r = await http.post("/add-checkpoint", content=body(t, 0, 50, key))
        assert r.status_code == 409
        assert r.headers["content-type"] == "text/x.tlog.size"
        assert r.content == b"20\n"
        r = await http.post("/add-checkpoint", content=body(t, 20, 50, key))
        assert r.status_code == 200
        # the monitoring read: the checkpoint with log signature and cosignature
        digest = hashlib.sha256(ORIGIN.encode()).hexdigest()
        r = await http.get(f"/{digest}/checkpoint")
        assert r.status_code == 200 and r.text.startswith(f"{ORIGIN}\n50\n")
        assert r.text.count("\u2014 ") == 2
        r = await http.get("/add-checkpoint")
        assert r.status_code == 405
        held = w.state(ORIGIN)
        assert held is not None and held.size == 50
    # persisted: a new process on the same state continues from 50
    async with running_witness(config) as w, httpx.AsyncClient(base_url=w.url) as http:
        r = await http.post("/add-checkpoint", content=body(t, 20, 50, key))
        assert (r.status_code, r.content) == (409, b"50\n")


async def test_refusals_over_http(tmp_path: Path) -> None:
    key = log_key()
    config, _ = witness_files(tmp_path, "witness.test/w1", {ORIGIN: [key.verifier()]})
    honest = MerkleTree(b"r%d" % i for i in range(30))
    forked = MerkleTree(b"f%d" % i for i in range(30))
    async with running_witness(config) as w, httpx.AsyncClient(base_url=w.url) as http:
        assert (await http.post("/add-checkpoint", content=body(honest, 0, 10, key))).is_success
        r = await http.post("/add-checkpoint", content=body(forked, 10, 30, key))
        assert r.status_code == 422
        stranger = Signer.from_seed("elsewhere.example/log", bytes(32))
        note = sign_checkpoint(Checkpoint("elsewhere.example/log", 3, honest.root(3)), stranger)
        r = await http.post("/add-checkpoint", content=AddCheckpoint(0, (), note).encode())
        assert r.status_code == 404
        impostor = Signer.from_seed(ORIGIN, bytes(32))
        r = await http.post("/add-checkpoint", content=body(honest, 10, 30, impostor))
        assert r.status_code == 403
        r = await http.post("/add-checkpoint", content=b"old 10\n")
        assert r.status_code == 400
        r = await http.post("/add-checkpoint", content=b"x" * (config.max_body_bytes + 1))
        assert r.status_code == 413
        held = w.state(ORIGIN)
        assert held is not None and (held.size, held.root) == (10, honest.root(10))
        assert [(o, s) for o, s, _ in w.refusals()] == [(ORIGIN, 422)]


async def test_racing_requests_cannot_both_advance(tmp_path: Path) -> None:
    """Many requests from the same old size at once: exactly one advances the state."""
    key = log_key()
    config, _ = witness_files(tmp_path, "witness.test/w1", {ORIGIN: [key.verifier()]})
    t = MerkleTree(b"r%d" % i for i in range(64))
    async with running_witness(config) as w:
        async with httpx.AsyncClient(base_url=w.url) as http:
            assert (await http.post("/add-checkpoint", content=body(t, 0, 8, key))).is_success
            replies = await asyncio.gather(
                *(http.post("/add-checkpoint", content=body(t, 8, n, key)) for n in range(9, 64, 3))
            )
        codes = sorted(r.status_code for r in replies)
        assert codes.count(200) == 1 and set(codes) == {200, 409}
        winner = next(n for n, r in zip(range(9, 64, 3), replies, strict=True) if r.is_success)
        held = w.state(ORIGIN)
        assert held is not None and held.size == winner


async def test_slow_client_is_cut_off(tmp_path: Path) -> None:
    key = log_key()
    config, _ = witness_files(tmp_path, "witness.test/w1", {ORIGIN: [key.verifier()]})
    config = WitnessConfig(**{**config.__dict__, "read_timeout_s": 0.3})
    async with running_witness(config) as w:
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        writer.write(b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: 100\r\n\r\nold")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 408 ")


def test_key_file_must_be_private(tmp_path: Path) -> None:
    config, signer = witness_files(tmp_path, "witness.test/w1", {ORIGIN: [log_key().verifier()]})
    assert load_key(config.key_file).key == signer.key
    os.chmod(config.key_file, 0o644)
    with pytest.raises(WitnessConfigError, match="0644"):
        load_key(config.key_file)
    with pytest.raises(WitnessConfigError, match="0644"):
        Witness(config)


def test_cli_keygen_and_serve(tmp_path: Path) -> None:
    """The console script: keygen writes a 0600 key; serve answers until SIGTERM."""
    exe = [sys.executable, "-m", "riverseal_monitor"]
    key = tmp_path / "w.key"
    out = subprocess.run(
        [*exe, "keygen", "witness.test/cli", "--key", str(key)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=30,
    )
    vkey = out.stdout.strip()
    assert vkey.startswith("witness.test/cli+") and (key.stat().st_mode & 0o777) == 0o600
    again = subprocess.run(
        [*exe, "keygen", "witness.test/cli", "--key", str(key)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert again.returncode == 2 and "cannot create" in again.stderr
    logs = tmp_path / "logs.txt"
    logs.write_text(f"log {ORIGIN} {log_key().verifier().to_vkey()}\n")
    proc = subprocess.Popen(
        [
            *exe,
            "serve",
            "--key",
            str(key),
            "--logs",
            str(logs),
            "--db",
            str(tmp_path / "s.sqlite"),
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while not line.startswith("riverseal-witness: listening on"):
            assert line, "the witness exited before listening"
            line = proc.stderr.readline()
        url = line.split("listening on ")[1].split(" ")[0]
        assert line.rstrip().endswith(vkey)
        t = MerkleTree(b"r%d" % i for i in range(5))
        r = httpx.post(url + "/add-checkpoint", content=body(t, 0, 5, log_key()))
        assert r.status_code == 200 and r.text.startswith("\u2014 witness.test/cli ")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        proc.stderr.close()
    bad = subprocess.run(
        [
            *exe,
            "serve",
            "--key",
            str(key),
            "--logs",
            str(tmp_path / "missing"),
            "--db",
            str(tmp_path / "s.sqlite"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert bad.returncode == 2 and "log list" in bad.stderr

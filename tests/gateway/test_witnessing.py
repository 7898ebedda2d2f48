"""The box asks real witness services to cosign its checkpoints (gateway/witnessing.py).

The Gateway runs in-process with a software source (the real ingest → log →
checkpoint path); the witnesses are real ``riverseal_monitor`` services on
local ports, spoken to over HTTP. Bundles are made by ``gateway export`` and
checked by ``ledger-verify`` with witness lines in the trust file.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli import main as gateway_cli
from gateway.config import load_config
from gateway.config.witnesses import WitnessConfig as GatewayWitness
from gateway.daemon import Gateway
from gateway.keys import create_device_key, load_device_key
from gateway.pipeline import Reading, Sink, Value
from gateway.store import CheckpointRow, Store
from gateway.witnessing import Witnessing
from ledger_client.checkpoint import Checkpoint
from ledger_client.cli import EXIT_FAILED, EXIT_UNDATED
from ledger_client.cli import main as ledger_verify
from ledger_client.note import Verifier, split_note
from ledger_client.witness import WitnessKey, WitnessSigner, cosign, cosignatures
from riverseal_monitor.witness import Witness, WitnessConfig
from tests.monitor.witness_server import running_witness, witness_files

BASE = """\
[device]
key_file = "device.key"
data_dir = "data"

[log]
checkpoint_every_entries = 10
checkpoint_every_seconds = 0.2
"""


class Thermometer:
    """A software source: ``n`` readings in rounds of ten submitted together (so a
    round is one commit whatever the commit window), then quiet until cancelled."""

    def __init__(self, n: int) -> None:
        self.name = "water-temp"
        self.n = n

    async def run(self, sink: Sink) -> None:
        for start in range(0, self.n, 10):
            await asyncio.gather(
                *(
                    sink.submit(
                        Reading(
                            self.name,
                            (Value("temperature", 10 + i / 10, "Cel"),),
                            time.time_ns(),
                            src_seq=i,
                        )
                    )
                    for i in range(start, min(start + 10, self.n))
                )
            )
            await asyncio.sleep(0.05)
        await asyncio.Event().wait()


def witness_toml(url: str, key: WitnessKey) -> str:
    return f'[[witnesses]]\nurl = "{url}"\nvkey = "{key.to_vkey()}"\nretry_max_seconds = 0.3\n'


def make_box(folder: Path) -> tuple[Path, Verifier]:
    folder.mkdir(parents=True, exist_ok=True)
    key = create_device_key(folder / "device.key")
    cfg = folder / "gateway.toml"
    cfg.write_text(BASE)
    return cfg, Verifier.from_vkey(key.vkey)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


def cosigned_sizes(gw: Gateway) -> dict[str, int | None]:
    assert gw.witnessing is not None
    return {s.name: s.cosigned for s in gw.witnessing.status.values()}


async def run_box(cfg: Path, readings: int, done: Callable[[Gateway], bool]) -> Gateway:
    """Run the box until all readings are in and ``done(gw)`` holds, then stop it."""
    gw = Gateway(load_config(cfg), sources=[Thermometer(readings)], status_every_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop), name="test.gateway")
    await until(lambda: task.done() or gw.started.is_set())
    await until(
        lambda: (
            task.done() or (gw.ingest is not None and gw.ingest.log.size > readings and done(gw))
        )
    )
    stop.set()
    await task
    return gw


def test_checkpoints_are_cosigned_exported_and_required(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, device = make_box(tmp_path / "box")
    origin = load_device_key(tmp_path / "box" / "device.key").origin
    w1_cfg, w1 = witness_files(tmp_path / "w1", "witness.regulator.example/w1", {origin: [device]})
    w2_cfg, w2 = witness_files(tmp_path / "w2", "witness.ngo.example/w2", {origin: [device]})

    async def scenario() -> Gateway:
        async with running_witness(w1_cfg) as a, running_witness(w2_cfg) as b:
            cfg.write_text(BASE + witness_toml(a.url, w1.key) + witness_toml(b.url, w2.key))

            def all_cosigned(gw: Gateway) -> bool:
                cp = gw.ingest.log.last_checkpoint if gw.ingest else None
                sizes = cosigned_sizes(gw).values()
                return cp is not None and all(s == cp.size for s in sizes)

            gw = await run_box(cfg, 40, all_cosigned)
            assert gw.ingest is not None
            final = gw.ingest.log.size  # the stop event's checkpoint, cosigned by finish()
            for w in (a, b):
                held = w.state(origin)
                assert held is not None and held.size == final
            return gw

    asyncio.run(scenario())

    async def stored() -> list[str]:
        async with Store(load_config(cfg).db_path) as store:
            return [c.note for c in await store.checkpoints()]

    notes = asyncio.run(stored())
    assert len(notes) >= 4
    newest = notes[-1]
    found, problems = cosignatures(newest, [w1.key, w2.key])
    assert {c.witness for c in found} == {w1.key, w2.key} and problems == []
    assert Checkpoint.parse(split_note(newest)[0]).size == max(
        Checkpoint.parse(split_note(n)[0]).size for n in notes
    )

    trust = tmp_path / "trust.txt"
    trust.write_text(
        f"key {device.to_vkey()}\nwitness {w1.key.to_vkey()}\nwitness {w2.key.to_vkey()}\n"
        "witness-policy 2\n"
    )
    v2 = tmp_path / "bundle.tar"
    v1 = tmp_path / "bundle.json"
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(v2)]) == 0
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(v1), "--format", "v1"]) == 0
    with tarfile.open(v2) as tar:
        member = tar.extractfile("checkpoint")
        assert member is not None
        assert member.read().decode().count("\u2014 ") == 3  # the box and both witnesses
    mirror = tmp_path / "mirror"
    assert gateway_cli(["publish", "--config", str(cfg), "--to", str(mirror)]) == 0
    assert (mirror / "checkpoint").read_text() == newest
    capsys.readouterr()
    proof = tmp_path / "entry-5.tlog-proof"
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(proof), "--proof", "5"]) == 0
    capsys.readouterr()
    for bundle in (v2, v1, mirror, proof):
        assert ledger_verify([str(bundle), "--trust", str(trust)]) == EXIT_UNDATED, bundle
        capsys.readouterr()

    # A regulator that also requires a witness this box never asked: FAILED, naming it.
    w3 = WitnessSigner.generate("witness.third.example/w3")
    strict = tmp_path / "strict.txt"
    strict.write_text(trust.read_text() + f"witness {w3.key.to_vkey()}\n")
    strict.write_text(strict.read_text().replace("witness-policy 2", "witness-policy 3"))
    assert ledger_verify([str(v2), "--trust", str(strict)]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert w3.key.to_vkey() in out and w1.key.to_vkey() not in out.split("missing:")[1]
    size = Checkpoint.parse(split_note(newest)[0]).size
    assert f"checkpoint {size} has 2 valid witness cosignature(s)" in out


def test_a_witness_down_holds_nothing_up_and_catches_up(tmp_path: Path) -> None:
    cfg, device = make_box(tmp_path / "box")
    origin = load_device_key(tmp_path / "box" / "device.key").origin
    port = free_port()
    w_cfg, w = witness_files(tmp_path / "w", "witness.regulator.example/w1", {origin: [device]})
    w_cfg = WitnessConfig(**{**w_cfg.__dict__, "port": port})
    cfg.write_text(BASE + witness_toml(f"http://127.0.0.1:{port}", w.key))

    async def scenario() -> None:
        gw = Gateway(load_config(cfg), sources=[Thermometer(60)], status_every_s=60)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop), name="test.gateway")
        await until(lambda: gw.ingest is not None and gw.ingest.log.size > 60)
        assert gw.witnessing is not None and gw.ingest is not None
        cosigned_hook: list[int] = []
        gw.witnessing.on_cosigned.append(cosigned_hook.append)
        log = gw.ingest.log
        # every reading is in and checkpointed while no witness answers
        await until(lambda: log.checkpointed_size == log.size)
        [status] = gw.witnessing.status.values()
        assert status.cosigned is None and status.failures >= 1
        assert status.last_error is not None and "ConnectError" in status.last_error
        async with Witness(w_cfg) as witness:
            serving = asyncio.create_task(witness.serve(stop), name="test.witness")
            size = log.checkpointed_size
            await until(lambda: status.cosigned == size, timeout_s=20)
            healthy: tuple[int, str | None] = (status.failures, status.last_error)
            assert healthy == (0, None)
            held = witness.state(origin)
            assert held is not None and held.size == size
            assert cosigned_hook == [size]  # once: the newest, not every checkpoint missed
            stop.set()
            await task
            await serving

    asyncio.run(scenario())


def test_a_forked_history_is_refused_by_the_witness(tmp_path: Path) -> None:
    """Split-view defence: the same key signs a second history; the witness will not cosign."""
    cfg, device = make_box(tmp_path / "box")
    origin = load_device_key(tmp_path / "box" / "device.key").origin
    w_cfg, w = witness_files(tmp_path / "w", "witness.regulator.example/w1", {origin: [device]})
    # The fork: the same key file in a second box with a log of its own.
    (tmp_path / "fork").mkdir()
    shutil.copy2(tmp_path / "box" / "device.key", tmp_path / "fork" / "device.key")
    fork_cfg = tmp_path / "fork" / "gateway.toml"

    async def scenario() -> Gateway:
        async with running_witness(w_cfg) as witness:
            cfg.write_text(BASE + witness_toml(witness.url, w.key))
            fork_cfg.write_text(BASE + witness_toml(witness.url, w.key))

            def cosigned(gw: Gateway) -> bool:
                cp = gw.ingest.log.last_checkpoint if gw.ingest else None
                return cp is not None and cosigned_sizes(gw)[w.name] == cp.size

            honest = await run_box(cfg, 10, cosigned)
            assert honest.ingest is not None
            held = witness.state(origin)
            assert held is not None and held.size == honest.ingest.log.size

            def refused(gw: Gateway) -> bool:
                assert gw.witnessing is not None
                [s] = gw.witnessing.status.values()
                return s.last_error is not None and "HTTP 422" in s.last_error

            forked = await run_box(fork_cfg, 40, refused)
            assert forked.witnessing is not None
            assert cosigned_sizes(forked) == {w.name: None}
            after = witness.state(origin)
            assert after is not None and (after.size, after.root) == (held.size, held.root)
            assert {status for _, status, _ in witness.refusals()} == {422}
            return forked

    forked = asyncio.run(scenario())

    async def fork_notes() -> list[str]:
        async with Store(load_config(fork_cfg).db_path) as store:
            return [c.note for c in await store.checkpoints()]

    for note in asyncio.run(fork_notes()):
        assert cosignatures(note, [w.key]) == ([], [])  # no cosignature kept for the fork
    assert forked.ingest is not None and forked.ingest.log.size > 40  # ingest went on


def test_publish_rewrites_a_checkpoint_that_gained_a_cosignature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = make_box(tmp_path / "box")
    asyncio.run(run_box(cfg, 10, lambda gw: True))
    mirror = tmp_path / "mirror"
    assert gateway_cli(["publish", "--config", str(cfg), "--to", str(mirror)]) == 0
    before = (mirror / "checkpoint").read_text()
    w = WitnessSigner.generate("witness.regulator.example/w1")
    body = split_note(before)[0]
    line = cosign(w, body, int(time.time()))

    async def add() -> None:  # what Witnessing stores after a 200 reply
        async with Store(load_config(cfg).db_path) as store:
            await store.add_cosignature(Checkpoint.parse(body).size, w.key.to_vkey(), line)

    asyncio.run(add())
    assert gateway_cli(["publish", "--config", str(cfg), "--to", str(mirror)]) == 0
    assert (mirror / "checkpoint").read_text() == before + line
    found, _ = cosignatures((mirror / "checkpoint").read_text(), [w.key])
    assert [c.witness for c in found] == [w.key]
    capsys.readouterr()


async def test_a_store_error_is_retried_never_fatal(tmp_path: Path) -> None:
    """The witnessing task runs in the daemon's TaskGroup: a failing store (here one
    already closed) must back off like a failing witness, not end the task."""
    async with Store(tmp_path / "log.sqlite") as store:
        pass
    w = GatewayWitness(
        url="http://127.0.0.1:9",
        vkey=WitnessSigner.generate("witness.example/w1").key,
        retry_max_seconds=0.1,
    )
    witnessing = Witnessing(store, [w], base_s=0.05)
    witnessing.notify(CheckpointRow(5, bytes(32), "unused\n", 0))
    task = asyncio.create_task(witnessing.run(), name="test.witnessing")
    [status] = witnessing.status.values()
    await until(lambda: task.done() or status.failures >= 3, timeout_s=10)
    assert not task.done()
    assert status.last_error is not None and "not open" in status.last_error
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

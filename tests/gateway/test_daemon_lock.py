"""One gateway per data directory: real ``gateway run`` processes, one MQTT node on the
session's Mosquitto, and the lock on ``<data_dir>/gateway.lock`` (gateway/lock.py).

A second ``gateway run`` on the same data directory (through the same config or another
config naming the same directory), ``rotate-key`` and ``reset-history`` are refused at
once, naming the running daemon's pid, while the first keeps logging. After ``kill -9``
the kernel has dropped the lock: a new daemon starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.keys import create_device_key, load_device_key
from gateway.lock import LOCK_NAME, DataDirInUse, hold_data_dir, lock_holder
from tests.gateway.daemon_procs import GATEWAY, records, start

TOPIC = "daemon-lock/node-1"


def config_text(broker: tuple[str, int], data_dir: str, client: str) -> str:
    return (
        f'[device]\nkey_file = "device.key"\ndata_dir = "{data_dir}"\n'
        "[log]\ncheckpoint_every_entries = 50\ncheckpoint_every_seconds = 0.5\n"
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "{client}"\n'
        f'[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "{TOPIC}"\ninterval_s = 0.5\n'
    )


def readings(db: Path) -> int:
    return sum(r["kind"] == "reading" for r in records(db))


async def until(what: str, check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


def boots(db: Path) -> list[dict[str, Any]]:
    return [r for r in records(db) if r.get("event") == "boot"]


@contextlib.asynccontextmanager
async def node_publishing(broker: tuple[str, int]) -> AsyncIterator[None]:
    """One node publishes a reading every 0.1 s, QoS 1, until the block ends."""

    async def publish(client: aiomqtt.Client) -> None:
        seq = 0
        while True:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            values = [{"q": "turbidity", "v": 3.0 + seq % 7, "u": "NTU"}]
            body = {"seq": seq, "time": now, "values": values}
            await client.publish(TOPIC, json.dumps(body), qos=1)
            seq += 1
            await asyncio.sleep(0.1)

    async with aiomqtt.Client(broker[0], broker[1], identifier="daemon-lock-node") as client:
        task = asyncio.create_task(publish(client))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_cli(*args: str) -> tuple[int, str, float]:
    began = time.monotonic()
    done = subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=30)
    return done.returncode, done.stderr, time.monotonic() - began


async def test_a_second_daemon_on_the_data_dir_is_refused_and_a_killed_one_leaves_no_lock(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    create_device_key(tmp_path / "device.key")
    key_before = (tmp_path / "device.key").read_bytes()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(config_text(mosquitto, "data", "daemon-lock-gw"))
    data = tmp_path / "data"
    db = data / "log.sqlite"
    # Another station's config (another folder, another client id) naming the same data dir.
    other = tmp_path / "other"
    other.mkdir()
    (other / "device.key").write_bytes(key_before)
    (other / "device.key").chmod(0o600)
    other_cfg = other / "gateway.toml"
    other_cfg.write_text(config_text(mosquitto, str(data), "daemon-lock-other"))

    async with node_publishing(mosquitto):
        first = start(cfg, procs)
        await until("the first daemon logs readings", lambda: readings(db) >= 3)
        holder = lock_holder(data)
        assert holder is not None
        assert (holder.pid, holder.command) == (first.pid, "gateway run")
        assert holder.started is not None
        assert json.loads((data / LOCK_NAME).read_text())["config"] == str(cfg)

        for config in (cfg, other_cfg):
            code, err, took = run_cli("run", "--config", str(config))
            assert code == 1, err
            assert f"another gateway (pid {first.pid}, gateway run, started " in err
            assert f"is running on {data}: stop it first (systemctl stop" in err
            assert "Traceback" not in err
            assert took < 15  # at once: no connect, no database, no retry loop
        # The offline commands that write the data directory are refused too.
        code, err, _ = run_cli("rotate-key", "--config", str(cfg))
        assert code == 1
        assert f"pid {first.pid}" in err
        assert "stop the service first" in err
        assert (tmp_path / "device.key").read_bytes() == key_before
        code, err, _ = run_cli("reset-history", "--config", str(cfg), "--reason", "test")
        assert code == 1
        assert f"pid {first.pid}" in err
        assert not list(data.glob("log.sqlite.*"))  # nothing moved aside

        # The first daemon kept running and logging through all of it.
        assert first.poll() is None
        after = readings(db)
        await until("the first daemon still logs", lambda: readings(db) >= after + 3)
        assert len(boots(db)) == 1

        # kill -9: the kernel drops the lock with the process; a new daemon starts at once.
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert lock_holder(data) is None
        second = start(cfg, procs)
        await until("the new daemon boots", lambda: len(boots(db)) == 2)
        assert boots(db)[1]["detail"]["previous"]["stop"] == "unclean"
        assert boots(db)[1]["detail"]["pid"] == second.pid
        n = readings(db)
        await until("the new daemon logs", lambda: readings(db) >= n + 3)
        holder = lock_holder(data)
        assert holder is not None
        assert holder.pid == second.pid
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    assert lock_holder(data) is None
    log_text = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log_text
    assert "UNIQUE constraint" not in log_text
    assert load_device_key(tmp_path / "device.key").device_id


def test_a_held_lock_refuses_gateway_run_before_it_touches_the_data_dir(tmp_path: Path) -> None:
    create_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(config_text(("127.0.0.1", 9), "data", "daemon-lock-held"))
    data = tmp_path / "data"
    with hold_data_dir(data, "gateway reset-history", cfg):
        code, err, _ = run_cli("run", "--config", str(cfg))
    assert code == 1
    assert f"another gateway process (pid {os.getpid()}, gateway reset-history, started " in err
    assert "wait for it to finish" in err
    assert sorted(p.name for p in data.iterdir()) == [LOCK_NAME]  # no database, nothing else
    assert lock_holder(data) is None
    # Re-entrant within one process, exclusive between processes.
    with hold_data_dir(data, "gateway run"), hold_data_dir(data, "gateway run"):
        assert lock_holder(data) is not None
        code, err, _ = run_cli("rotate-key", "--config", str(cfg))
        assert code == 1
        assert "is running on" in err
    assert lock_holder(data) is None


def test_the_refusal_names_the_holder_and_says_what_to_do(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from gateway.lock import hold_data_dir\n"
            "with hold_data_dir(Path(sys.argv[1]), 'gateway run'):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(DataDirInUse) as refused, hold_data_dir(tmp_path, "gateway run"):
            pass
        exc = refused.value
        assert exc.holder.pid == holder.pid
        assert str(exc).startswith(f"another gateway (pid {holder.pid}, gateway run, started ")
        assert "one gateway per data directory" in exc.diagnostics()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with hold_data_dir(tmp_path, "gateway run"):  # the kill freed it
        pass

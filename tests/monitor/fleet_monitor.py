"""Helpers for tests running ``sensor-sim fleet`` boxes under ``riverseal-monitor run`` processes.

``start_fleet`` runs a fleet process (real gateway log and uplink code) publishing
to a real web server and announcing on a real broker, and waits for its banner;
``monitor_toml`` writes a monitor.toml following its boxes; ``run_monitor``
starts a monitor process. Every process is appended to a list the caller kills
at the end (see ``killed_at_end``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "MONITOR",
    "Box",
    "boxes_of",
    "free_port",
    "killed_at_end",
    "monitor_toml",
    "run_monitor",
    "start_fleet",
]

MONITOR = [sys.executable, "-m", "riverseal_monitor.monitor_cli"]
FLEET = [sys.executable, "-m", "simulators.cli", "fleet"]

Box = tuple[str, Path, str]
"""(origin, trust file, URL prefix) of a fleet box."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def killed_at_end() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def start_fleet(
    procs: list[subprocess.Popen[bytes]],
    *,
    to: str,
    data: Path,
    broker: tuple[str, int],
    boxes: int,
    seed: int,
    checkpoint_every: float = 1.0,
    rate: float = 1.0,
) -> subprocess.Popen[bytes]:
    """A running ``sensor-sim fleet``, once it says every box runs."""
    data.mkdir(parents=True, exist_ok=True)
    out = data / "fleet.out"
    with out.open("wb") as o, (data / "fleet.log").open("wb") as e:
        p = subprocess.Popen(
            [
                *FLEET,
                *("--boxes", str(boxes), "--to", to, "--data", str(data)),
                *("--broker", f"{broker[0]}:{broker[1]}", "--seed", str(seed)),
                *("--rate", str(rate), "--commit-every", "0.5"),
                *("--checkpoint-every", str(checkpoint_every)),
            ],
            stdout=o,
            stderr=e,
        )
    procs.append(p)
    deadline = time.monotonic() + 60
    while b"boxes running" not in out.read_bytes():
        if p.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"fleet did not start:\n{(data / 'fleet.log').read_text()[-3000:]}"
            )
        time.sleep(0.1)
    return p


def boxes_of(data: Path, to: str) -> list[Box]:
    """The boxes of the fleet whose stores are in ``data``, by device id."""
    devices = sorted(p.stem for p in (data / "trust").glob("*.txt"))
    return [(f"riverseal/{d}", data / "trust" / f"{d}.txt", f"{to}/{d}") for d in devices]


def monitor_toml(
    path: Path,
    state: str,
    boxes: list[Box],
    broker: tuple[str, int],
    extra: str = "",
    box_extra: str = "",
) -> Path:
    """A monitor.toml: ``state``, the boxes (each with ``box_extra`` lines), the broker
    (group "regulator"), ``extra`` lines in [monitor]; checkpoints expected every second,
    a quarter-second tick."""
    tables = "".join(
        f'[[box]]\norigin = "{o}"\ntrust = "{t}"\nurl = "{u}"\n{box_extra}' for o, t, u in boxes
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[monitor]\nstate = "{state}"\npoll_interval_s = 5\ntick_s = 0.25\n'
        f"checkpoint_interval_s = 1\nbox_silent_intervals = 3\n{extra}"
        f'[broker]\nhost = "{broker[0]}"\nport = {broker[1]}\ngroup = "regulator"\n'
        f"{tables}"
    )
    return path


def run_monitor(
    cfg: Path, name: str, procs: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """``riverseal-monitor run -v``: alerts to ``<name>.jsonl``, log to ``<name>.log``."""
    with (
        (cfg.parent / f"{name}.jsonl").open("ab") as o,
        (cfg.parent / f"{name}.log").open("ab") as e,
    ):
        p = subprocess.Popen([*MONITOR, "run", "--config", str(cfg), "-v"], stdout=o, stderr=e)
    procs.append(p)
    return p

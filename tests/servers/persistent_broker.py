"""A Mosquitto with persistence, which tests stop and start again on the same port.

It saves sessions, subscriptions and queued QoS 1 messages when it stops and
loads them when it starts. ``NO_LOSS`` holds the further settings
docs/operations.md gives for running one for no loss: a save every 10 s, no cap
on the messages queued for a disconnected persistent session, and room for the
gateway's acknowledgements in flight.
"""

from __future__ import annotations

import getpass
import subprocess
from pathlib import Path

from tests.servers.broker import MOSQUITTO, spawn_mosquitto
from tests.servers.broker import _free_port as free_port

__all__ = ["MOSQUITTO", "NO_LOSS", "PersistentBroker"]

NO_LOSS = "autosave_interval 10\nmax_queued_messages 0\nmax_inflight_messages 1000\n"


class PersistentBroker:
    """``settings``: further mosquitto.conf lines (``NO_LOSS``, and what a test adds)."""

    def __init__(self, workdir: Path, settings: str = "") -> None:
        self.workdir = workdir
        self.settings = settings
        self.host = "127.0.0.1"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            # Run as root, Mosquitto would switch to user "mosquitto", who cannot write here.
            f"user {getpass.getuser()}\nlog_dest stderr\n" + self.settings
        )
        self.process = spawn_mosquitto(conf, (self.host, self.port))

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file as it exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a power cut: what it acknowledged since its last save is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop (it saves) and start again; it must have saved something."""
        self.stop()
        assert (self.workdir / "mosquitto.db").exists(), "the broker saved nothing"
        self.start()

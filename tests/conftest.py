"""Fixtures shared by every test package.

``mosquitto``: one real Mosquitto broker for the whole session, on a free
127.0.0.1 port, with a throwaway config (anonymous, no persistence). Yields
``(host, port)``. Tests that need their own broker (to stop and restart it)
override this fixture closer to them (see tests/simulators/conftest.py).
Tests on the shared broker use client ids and topics of their own.

``mosquitto_tls``: one real Mosquitto with TLS listeners for the session
(see tests/servers/broker.py ``TlsBroker``): certificates made with
openssl in the test, a password file made with ``mosquitto_passwd``.

``tsa``: one real RFC 3161 timestamp authority for the session (see
tests/servers/tsa_server.py): ``tsa.url(fault)``, ``tsa.roots``.

``anvil``: one real anvil node for the session (see tests/servers/anvil_node.py):
a block every 0.5 s, ``finalized`` = head − 2. Tests that stop, reorg or stall
a chain start their own with ``running_anvil``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monitor.fleet_monitor import killed_at_end
from tests.servers.anvil_node import AnvilMissing, AnvilNode, anvil_binary, running_anvil
from tests.servers.broker import Broker, TlsBroker
from tests.servers.postgres import Postgres, PostgresMissing, running_postgres
from tests.servers.tsa_server import TestTsa, running_tsa
from tests.servers.web_server import NginxMissing, WebServer, running_web_server

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run scripts/setup --dev")
    workdir = tmp_path_factory.mktemp("mosquitto")
    host, port = "127.0.0.1", _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {host}\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
    )
    log_path = workdir / "mosquitto.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mosquitto exited early:\n{log_path.read_text()}")
            try:
                socket.create_connection((host, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start listening") from None
                time.sleep(0.02)
        yield host, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestTsa]:
    """A real RFC 3161 TSA (``openssl ts -reply`` over HTTP); see tests/servers/tsa_server.py."""
    with running_tsa(tmp_path_factory.mktemp("tsa")) as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run scripts/setup --dev")
    broker = TlsBroker(tmp_path_factory.mktemp("mosquitto-tls"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    try:
        anvil_binary()
    except AnvilMissing as exc:
        pytest.fail(str(exc))
    with running_anvil(tmp_path_factory.mktemp("anvil")) as node:
        yield node


# ``gateway run`` (or monitor) processes a test started; killed at its end.
procs = pytest.fixture(killed_at_end, name="procs")


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster (tests/servers/postgres.py)."""
    try:
        with running_postgres() as pg:
            yield pg
    except PostgresMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[WebServer]:
    """A real nginx taking PUTs into its own document root (tests/servers/web_server.py)."""
    try:
        with running_web_server(tmp_path / "nginx") as server:
            yield server
    except NginxMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture
def announce_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of the test's own, which it may stop and start (checkpoint announcements)."""
    work = tmp_path / "announce-broker"
    work.mkdir()
    broker = Broker(work)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()

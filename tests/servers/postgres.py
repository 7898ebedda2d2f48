"""A throw-away PostgreSQL cluster (Debian's ``postgresql``, installed by ``scripts/setup --dev``).

``running_postgres()`` runs ``initdb`` and ``pg_ctl`` from
/usr/lib/postgresql/<version>/bin (or $PG_BIN) into a fresh directory under the
system's temp directory, listening on a free 127.0.0.1 port and on a unix
socket in that directory; trust authentication, no fsync (the data is thrown
away). PostgreSQL refuses to run as root: when we are root, the cluster runs as
``nobody`` (through ``runuser``) and the directory is handed to it (not under
pytest's tmp_path: pytest keeps its root 0700, which ``nobody`` cannot cross).
Yields a ``Postgres`` with ``url`` (``postgresql://…``); the cluster is stopped
(immediate mode) and its directory removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Postgres", "PostgresMissing", "pg_bin", "running_postgres"]


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed (the fixture turns this into a failure)."""


def pg_bin() -> Path:
    """$PG_BIN, else the newest /usr/lib/postgresql/<version>/bin holding initdb."""
    env = os.environ.get("PG_BIN")
    candidates = [Path(env)] if env else []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        candidates += [v / "bin" for v in reversed(versions)]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise PostgresMissing("PostgreSQL is not installed: run scripts/setup --dev")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    socket_dir: Path
    data: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A fresh cluster, stopped and removed on exit."""
    bindir = pg_bin()
    workdir = Path(tempfile.mkdtemp(prefix="riverseal-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    data = workdir / "data"
    log = workdir / "postgres.log"
    port = _free_port()
    made = subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-N"],
        capture_output=True,
        cwd=workdir,
    )
    if made.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{made.stderr.decode(errors='replace')[-2000:]}")
    options = f"-F -p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c max_connections=200"
    ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log)]
    try:
        subprocess.run(
            [*ctl, "-o", options, "-w", "-t", "30", "start"],
            check=True,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not listen:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield Postgres("127.0.0.1", port, workdir, data)
    finally:
        subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], capture_output=True, cwd=workdir)
        shutil.rmtree(workdir, ignore_errors=True)

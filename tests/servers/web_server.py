"""A real nginx (Debian's package, installed by ``scripts/setup --dev``) for the tests.

Started as the current user, not as a service: its configuration, document
root, pid file, logs and temp directories all live in one work directory,
and it listens on a free 127.0.0.1 port. It takes WebDAV ``PUT`` (creating
parent directories) and serves what was put with ``GET``, as a static host
of a published log would. ``/readonly/`` takes no PUT (405), for tests of a
server that refuses. The access log has one line per request:
``METHOD URI STATUS BYTES``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = ["NginxMissing", "WebServer", "nginx_binary", "running_web_server"]


class NginxMissing(RuntimeError):
    """nginx is not installed (the fixture turns this into a test failure)."""


def nginx_binary() -> str:
    """$NGINX, then nginx on $PATH, then Debian's /usr/sbin/nginx."""
    for candidate in (os.environ.get("NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return candidate
    raise NginxMissing("nginx is not installed: run scripts/setup --dev")


_SYNC = "/.requests-logged-up-to/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CONFIG = """\
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
{user}
events {{ worker_connections 256; }}

http {{
    log_format requests '$request_method $uri $status $request_length';
    access_log {work}/access.log requests;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;

    server {{
        listen 127.0.0.1:{port};
        root {root};
        client_max_body_size 64m;

        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
        location /readonly/ {{
        }}
    }}
}}
"""


class WebServer:
    """One nginx process; ``start``/``stop`` may be repeated and the port stays.

    ``root`` is the document root: what was PUT can be read there directly.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root = workdir / "www"
        self.port = _free_port()
        self.conf = workdir / "nginx.conf"
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._syncs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _write_config(self) -> None:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "readonly").mkdir(parents=True, exist_ok=True)
        user = ""
        if os.geteuid() == 0:  # as root, nginx's workers would drop to nobody: keep them ours
            user = (
                f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
            )
        self.conf.write_text(
            _CONFIG.format(work=self.workdir, root=self.root, port=self.port, user=user)
        )

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._write_config()
        binary = nginx_binary()
        with (self.workdir / "nginx.out").open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.error_log)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited early:\n{self._logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start listening:\n{self._logs()}") from None
                time.sleep(0.02)

    def _logs(self) -> str:
        parts = []
        for p in (self.workdir / "nginx.out", self.error_log):
            if p.exists():
                parts.append(p.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGQUIT (graceful shutdown), SIGKILL if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def requests(self, method: str | None = None) -> list[tuple[str, str, int]]:
        """(method, path, status) of each request so far, from the access log.

        nginx logs a request just after answering it, so a client can be
        ahead of the log: while it runs, a marker request is made first and
        awaited in the log (one worker process logs in order).
        """
        if self.running:
            self._syncs += 1
            marker = f"{_SYNC}{self._syncs}"
            httpx.get(self.url + marker, timeout=5)
            deadline = time.monotonic() + 5
            while not self.access_log.exists() or f" {marker} " not in self.access_log.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not log {marker}")
                time.sleep(0.005)
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            verb, uri, status, _ = line.split(" ")
            if not uri.startswith(_SYNC) and (method is None or verb == method):
                out.append((verb, uri, int(status)))
        return out

    def files(self) -> dict[str, bytes]:
        """Every file under the document root (but the empty /readonly/), by relative path."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


@contextlib.contextmanager
def running_web_server(workdir: Path) -> Iterator[WebServer]:
    """A started WebServer, stopped on exit whatever happened."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = WebServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()

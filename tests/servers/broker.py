"""Throwaway Mosquitto brokers on free localhost ports (used by the conftest files):
``Broker`` (plain, stop/start) and ``TlsBroker`` (TLS, passwords, client certificates)."""

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_mosquitto(conf: Path, *listeners: tuple[str, int]) -> subprocess.Popen[bytes]:
    """Mosquitto on ``conf``, its output appended to mosquitto.log beside it, once it
    listens on every (host, port); RuntimeError with that log if it exits first."""
    log_file = conf.with_name("mosquitto.log")
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 10
    waiting = list(listeners)
    while waiting:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited early:\n{log_file.read_text(errors='replace')}")
        try:
            socket.create_connection(waiting[0], timeout=0.2).close()
            waiting.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"mosquitto did not start listening on {waiting[0]}") from None
            time.sleep(0.02)
    return process


@dataclass
class Broker:
    """A Mosquitto process that tests can stop and start again on the same port."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
        )
        self.process = spawn_mosquitto(conf, (self.host, self.port))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(workdir: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (certificate, key) made with the openssl CLI."""
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key.name, "-out", cert.name, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=workdir,
    )  # fmt: skip
    return cert, key


def issue(workdir: Path, ca: tuple[Path, Path], name: str, extensions: str) -> tuple[Path, Path]:
    """A certificate for ``name`` signed by ``ca`` with the given X.509 v3 extensions."""
    cert, key, csr = workdir / f"{name}.pem", workdir / f"{name}.key", workdir / f"{name}.csr"
    ext = workdir / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key.name, "-out", csr.name, "-subj", f"/CN={name}",
        cwd=workdir,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", cert.name, "-days", "2", "-extfile", ext.name,
        cwd=workdir,
    )  # fmt: skip
    return cert, key


@dataclass
class TlsBroker:
    """Mosquitto with two TLS listeners and a password file, certificates made by openssl.

    ``port``: TLS, username/password. ``mtls_port``: TLS, username/password and a
    client certificate signed by ``ca``. ``rogue_ca`` signed nothing the broker uses.
    The server certificate names 127.0.0.1 and localhost.
    """

    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=_free_port)
    mtls_port: int = field(default_factory=_free_port)
    other_name_port: int = field(default_factory=_free_port)
    """TLS on 127.0.0.2, a name the server certificate does not carry."""
    username: str = "gateway"
    password: str = "s3cret-river"
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def rogue_ca(self) -> Path:
        return self.workdir / "rogue.pem"

    @property
    def client_cert(self) -> tuple[Path, Path]:
        return self.workdir / "client.pem", self.workdir / "client.key"

    def start(self) -> None:
        d = self.workdir
        ca = make_ca(d, "ca")
        make_ca(d, "rogue")
        server = issue(
            d,
            ca,
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        issue(d, ca, "client", "extendedKeyUsage=clientAuth\n")
        passwd = d / "passwd"
        subprocess.run(
            [MOSQUITTO_PASSWD, "-c", "-b", str(passwd), self.username, self.password],
            check=True,
            capture_output=True,
        )
        passwd.chmod(0o600)
        tls = f"cafile {ca[0]}\ncertfile {server[0]}\nkeyfile {server[1]}\n"
        conf = d / "mosquitto-tls.conf"
        conf.write_text(
            # Stay the current user: as root, mosquitto would drop to a user that
            # cannot read the test's private directory.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            f"per_listener_settings false\nallow_anonymous false\npassword_file {passwd}\n"
            "persistence false\nlog_dest stderr\n"
            f"listener {self.port} {self.host}\n{tls}require_certificate false\n"
            f"listener {self.mtls_port} {self.host}\n{tls}require_certificate true\n"
            f"listener {self.other_name_port} 127.0.0.2\n{tls}require_certificate false\n"
        )
        self.process = spawn_mosquitto(
            conf,
            (self.host, self.port),
            (self.host, self.mtls_port),
            ("127.0.0.2", self.other_name_port),
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

"""A real RFC 3161 timestamp authority for the tests: ``openssl ts -reply`` behind HTTP.

Test-only. Three authorities are made with openssl in a temporary folder
(ledger-and-proofs.md §7.2): the *trusted* one (a root CA and a TSA
certificate with a critical id-kp-timeStamping EKU) whose root a station and
a regulator are given, and an *untrusted* one built the same way from a
second, unrelated root. Neither has a ``certs =`` line, so their tokens embed
the signer's certificate alone. The third, *chained*, is a TSA configured as
OpenSSL's sample configuration is, and as TSAs in the field are: its
certificate is issued by an intermediate CA under the trusted root, and a
``certs =`` line embeds that intermediate and the root. OpenSSL writes the
token's certificates SET OF in insertion order, not in DER order
(openssl/openssl#13142); the chain file lists the two CA certificates in
descending order of their DER encodings, so that SET is never in DER order.
``openssl ts -verify`` accepts those tokens; a strict DER parser does not.

Every token is made by ``openssl ts -reply``; the HTTP handler around it is a
few lines of the standard library and exists only here. The first path
segment picks what the TSA does, so one server serves every test without
shared mutable modes:

    /tsa             a correct reply from the trusted authority
    /untrusted       a correct reply signed by the untrusted authority
    /http500         HTTP 500
    /garbage         HTTP 200 with bytes that are no TimeStampResp
    /other-imprint   a token (trusted signer, our nonce) for another imprint
    /other-nonce     a token (trusted signer, our imprint) with another nonce
    /rejection       a well-formed reply with PKIStatus "rejection"
    /slow            a correct reply after SLOW_S seconds
    /chain           a correct reply from the chained authority (trusted root,
                     certificates SET OF not in DER order)

``/<fault>/<n>/<key>`` applies the fault to the first ``n`` requests made
under ``key`` (choose a key per test), then answers correctly: a TSA that
misbehaves for a while and recovers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = [
    "FAULTS",
    "SLOW_S",
    "Authority",
    "TestTsa",
    "make_authority",
    "make_chained_authority",
    "rfc3161_toml",
    "running_tsa",
]

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
SLOW_S = 2.0
FAULTS = (
    "tsa",
    "untrusted",
    "http500",
    "garbage",
    "other-imprint",
    "other-nonce",
    "rejection",
    "slow",
    "chain",
)
_MAX_QUERY = 4096

_CNF = """\
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_tsa ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir                    = {dir}
serial                 = $dir/tsaserial
crypto_device          = builtin
signer_cert            = $dir/tsa.crt
signer_key             = $dir/tsa.key
signer_digest          = sha256
default_policy         = 1.3.6.1.4.1.55555.1.1
other_policies         = 1.3.6.1.4.1.55555.1.2
digests                = sha256, sha384, sha512
accuracy               = secs:1
clock_precision_digits = 0
ordering               = yes
tsa_name               = yes
ess_cert_id_chain      = no
ess_cert_id_alg        = sha256
"""


@dataclasses.dataclass(frozen=True)
class Authority:
    """One root CA and the TSA certificate it issued, as openssl files."""

    dir: Path
    name: str

    @property
    def cnf(self) -> Path:
        return self.dir / "tsa.cnf"

    @property
    def root(self) -> Path:
        """The root certificate (PEM): what a station and a regulator trust."""
        return self.dir / "ca.crt"

    @property
    def tsa_cert(self) -> Path:
        return self.dir / "tsa.crt"


def _openssl(*args: str, cwd: Path, data: bytes | None = None) -> bytes:
    done = subprocess.run([OPENSSL, *args], cwd=cwd, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} {args[1]} failed: {done.stderr.decode()}")
    return done.stdout


def make_authority(folder: Path, name: str) -> Authority:
    """A root CA "<name> Root" and a TSA certificate "<name>" under it, in ``folder``."""
    if not Path(OPENSSL).exists():
        raise RuntimeError("openssl is not installed: the test TSA needs it")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tsa.cnf").write_text(_CNF.format(dir=folder))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", f"/CN={name} Root", "-config", "tsa.cnf", "-extensions", "v3_ca",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-keyout", "tsa.key", "-out", "tsa.csr",
        "-subj", f"/CN={name}", "-config", "tsa.cnf",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "tsa.crt", "-days", "3650",
        "-extfile", "tsa.cnf", "-extensions", "v3_tsa",
        cwd=folder,
    )  # fmt: skip
    (folder / "tsaserial").write_text("01\n")
    return Authority(folder, name)


def make_chained_authority(folder: Path, parent: Authority, name: str) -> Authority:
    """A TSA certificate "<name>" issued by an intermediate CA "<name> CA" under
    ``parent``'s root, configured with ``certs =`` (the intermediate and the root).

    The chain file lists the two CA certificates in descending order of their
    DER encodings, so the token's certificates (the signer's, then the file's,
    in that order) are never in DER order. ``root`` is ``parent``'s root.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tsa.cnf").write_text(_CNF.format(dir=folder) + "certs = $dir/chain.pem\n")
    shutil.copyfile(parent.root, folder / "ca.crt")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    for key, subject, issuer, issuer_key, extensions in (
        ("inter", f"{name} CA", parent.root, parent.dir / "ca.key", "v3_ca"),
        ("tsa", name, folder / "inter.crt", folder / "inter.key", "v3_tsa"),
    ):
        _openssl(
            "req", "-new", *ec, "-keyout", f"{key}.key", "-out", f"{key}.csr",
            "-subj", f"/CN={subject}", "-config", "tsa.cnf",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{key}.csr", "-CA", str(issuer), "-CAkey", str(issuer_key),
            "-CAserial", f"{key}.srl", "-CAcreateserial", "-out", f"{key}.crt", "-days", "3650",
            "-extfile", "tsa.cnf", "-extensions", extensions,
            cwd=folder,
        )  # fmt: skip
    chain = [folder / "inter.crt", folder / "ca.crt"]
    der = {p: _openssl("x509", "-in", str(p), "-outform", "DER", cwd=folder) for p in chain}
    chain.sort(key=der.__getitem__, reverse=True)
    (folder / "chain.pem").write_bytes(b"".join(p.read_bytes() for p in chain))
    (folder / "tsaserial").write_text("01\n")
    return Authority(folder, name)


# --- the few DER edits the fault paths need (a TimeStampReq is tiny and fixed-shape) ---


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``at``."""
    tag, first = data[at], data[at + 1]
    if first < 0x80:
        return tag, at + 2, at + 2 + first
    n = first & 0x7F
    length = int.from_bytes(data[at + 2 : at + 2 + n], "big")
    return tag, at + 2 + n, at + 2 + n + length


def _flip_imprint(query: bytes) -> bytes:
    """The same request for another imprint (last byte of the hashed message flipped)."""
    _, body, _ = _tlv(query, 0)
    _, _, after_version = _tlv(query, body)
    _, imprint_body, _ = _tlv(query, after_version)
    _, _, after_algorithm = _tlv(query, imprint_body)
    tag, _, end = _tlv(query, after_algorithm)
    assert tag == 0x04, "hashedMessage"
    return query[: end - 1] + bytes([query[end - 1] ^ 0x01]) + query[end:]


def _flip_nonce(query: bytes) -> bytes:
    """The same request with another nonce (its last byte flipped)."""
    _, body, _ = _tlv(query, 0)
    _, _, at = _tlv(query, body)  # version
    _, _, at = _tlv(query, at)  # messageImprint
    tag, _, end = _tlv(query, at)
    if tag == 0x06:  # reqPolicy
        tag, _, end = _tlv(query, end)
    assert tag == 0x02, "the request carries no nonce"
    return query[: end - 1] + bytes([query[end - 1] ^ 0x01]) + query[end:]


def _der(tag: int, content: bytes) -> bytes:
    assert len(content) < 0x80
    return bytes([tag, len(content)]) + content


# TimeStampResp { status PKIStatusInfo { rejection (2), statusString { "not today, sadly" } } }
_REJECTION = _der(
    0x30, _der(0x30, _der(0x02, b"\x02") + _der(0x30, _der(0x0C, b"not today, sadly")))
)


class TestTsa:
    """A running test TSA; ``url(fault)`` is where a backend should post."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        trusted: Authority,
        untrusted: Authority,
        base_url: str,
        chained: Authority | None = None,
    ) -> None:
        self.trusted = trusted
        self.untrusted = untrusted
        self.chained = chained
        """The ``/chain`` authority (its root is the trusted root)."""
        self.base_url = base_url
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @property
    def roots(self) -> Path:
        """The trusted root certificate (PEM)."""
        return self.trusted.root

    @property
    def untrusted_roots(self) -> Path:
        """The second, unrelated root (PEM): a token it vouches for must be refused."""
        return self.untrusted.root

    def url(self, fault: str = "tsa", *, first: int | None = None, key: str = "") -> str:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        if first is None:
            return f"{self.base_url}/{fault}"
        if not key or "/" in key:
            raise ValueError("a recovering fault needs a key of its own (no '/')")
        return f"{self.base_url}/{fault}/{first}/{key}"

    def stamp(self, query: bytes, authority: Authority | None = None) -> bytes:
        """``openssl ts -reply`` for a DER TimeStampReq; the DER TimeStampResp."""
        authority = authority or self.trusted
        with self._lock:  # openssl bumps the serial file: one at a time
            return _openssl(
                "ts", "-reply", "-config", str(authority.cnf), "-queryfile", "/dev/stdin",
                "-out", "/dev/stdout",
                cwd=authority.dir, data=query,
            )  # fmt: skip

    def answer(self, path: str, query: bytes) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for a request to ``path``."""
        parts = path.strip("/").split("/")
        fault = parts[0]
        if len(parts) == 3:
            n, key = int(parts[1]), parts[2]
            with self._lock:
                self.hits[key] += 1
                if self.hits[key] > n:
                    fault = "tsa"
        elif len(parts) != 1 or fault not in FAULTS:
            return 404, "text/plain", b"no such TSA\n"
        reply = "application/timestamp-reply"
        if fault == "http500":
            return 500, "text/plain", b"internal error\n"
        if fault == "garbage":
            return 200, reply, b"<html>this is a captive portal, not a TSA</html>\n"
        if fault == "rejection":
            return 200, reply, _REJECTION
        if fault == "untrusted":
            return 200, reply, self.stamp(query, self.untrusted)
        if fault == "chain":
            if self.chained is None:
                return 404, "text/plain", b"no chained authority\n"
            return 200, reply, self.stamp(query, self.chained)
        if fault == "other-imprint":
            return 200, reply, self.stamp(_flip_imprint(query))
        if fault == "other-nonce":
            return 200, reply, self.stamp(_flip_nonce(query))
        if fault == "slow":
            time.sleep(SLOW_S)
        return 200, reply, self.stamp(query)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tsa: TestTsa


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if self.headers.get("Content-Type") != "application/timestamp-query":
            self._send(415, "text/plain", b"expected application/timestamp-query\n")
            return
        if not 0 < length <= _MAX_QUERY:
            self._send(400, "text/plain", b"bad length\n")
            return
        try:
            self._send(*self.server.tsa.answer(self.path, self.rfile.read(length)))
        except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
            self._send(400, "text/plain", f"{exc}\n".encode())

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: pytest shows failures, not every request


@contextlib.contextmanager
def running_tsa(folder: Path) -> Iterator[TestTsa]:
    """Make the three authorities in ``folder`` and serve them on a free 127.0.0.1 port."""
    trusted = make_authority(folder / "trusted", "Riverseal Test TSA")
    untrusted = make_authority(folder / "untrusted", "Untrusted Test TSA")
    chained = make_chained_authority(folder / "chained", trusted, "Riverseal Chained TSA")
    server = _Server(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    server.tsa = tsa = TestTsa(trusted, untrusted, f"http://{host!s}:{port}", chained)
    thread = threading.Thread(target=server.serve_forever, name="test-tsa", daemon=True)
    thread.start()
    try:
        yield tsa
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def rfc3161_toml(
    tsa: TestTsa,
    name: str = "test-tsa",
    *,
    fault: str = "tsa",
    required: bool = True,
    timeout_s: float = 5.0,
    first: int | None = None,
    key: str = "",
) -> str:
    """An ``[[anchor.rfc3161]]`` table for a station config (append it to the TOML).

    For combined tests (EVM + TSA): ``cfg.write_text(base + rfc3161_toml(tsa))``.
    """
    return (
        "\n[[anchor.rfc3161]]\n"
        f'name = "{name}"\n'
        f'url = "{tsa.url(fault, first=first, key=key)}"\n'
        f'roots = "{tsa.roots}"\n'
        f"required = {'true' if required else 'false'}\n"
        f"timeout_s = {timeout_s}\n"
    )

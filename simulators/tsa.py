"""A local RFC 3161 timestamp authority: ``openssl ts -reply`` behind HTTP on 127.0.0.1.

A software stand-in for an independent timestamp authority, as the other
simulators stand in for probes: the demo anchors its checkpoints to it so
that the whole path (request, token, check against roots, a regulator's
``ledger-verify --tsa-roots``) runs for real on one machine. It proves nothing
about time to anyone else: whoever runs it holds its key. A real deployment
anchors to a TSA (or a chain) that the box's owner does not control.

On start it makes, with the ``openssl`` command line in a temporary folder, a
root CA (P-256, "<name> Root") and a TSA certificate under it whose
extendedKeyUsage is id-kp-timeStamping, marked critical (RFC 3161 §2.3). Each
``POST`` of an ``application/timestamp-query`` is answered with
``openssl ts -reply``'s ``application/timestamp-reply``. The configuration
has no ``certs =`` line: OpenSSL would embed the chain as an unsorted SET
(openssl/openssl#13142), which a strict DER reader refuses; with a request's
certReq the token still carries the TSA certificate itself.

    with LocalTsa() as tsa:            # or: async with LocalTsa() as tsa
        post(tsa.url, query)           # → DER TimeStampResp
        tsa.roots_pem                  # the root a station and a regulator trust

Leaving the block stops the server and removes the folder (keys included):
copy ``roots_pem`` first if it must outlive the authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

__all__ = ["MAX_QUERY_BYTES", "LocalTsa", "OpensslMissing", "TsaSetupError"]

MAX_QUERY_BYTES = 4096
"""A TimeStampReq is about a hundred bytes; a larger body is refused unread."""
_POLICY = "2.25.181613598546227345393716101361327453537"
"""The TSA policy OID: a UUID OID (ITU-T X.667), needing no registration."""
_QUERY = "application/timestamp-query"
_REPLY = "application/timestamp-reply"

_CNF = """\
[ req ]
distinguished_name = req_dn
prompt             = no

[ req_dn ]

[ v3_root ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[ v3_tsa ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, nonRepudiation
extendedKeyUsage       = critical, timeStamping
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer

[ tsa ]
default_tsa = local_tsa

[ local_tsa ]
dir               = .
serial            = $dir/serial
signer_cert       = $dir/tsa.crt
signer_key        = $dir/tsa.key
signer_digest     = sha256
default_policy    = {policy}
digests           = sha256, sha384, sha512
accuracy          = secs:1
ess_cert_id_chain = no
ess_cert_id_alg   = sha256
"""


class TsaSetupError(RuntimeError):
    """The authority could not be made (an openssl command failed)."""


class OpensslMissing(TsaSetupError):
    """There is no ``openssl`` command line to make the authority with."""


class LocalTsa:
    """A running local TSA while inside its ``with`` / ``async with`` block."""

    def __init__(self, name: str = "riverseal local TSA", *, openssl: str | None = None) -> None:
        self.name = name
        self._openssl = openssl
        self._dir: Path | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # openssl bumps the serial file: one reply at a time
        self.url = ""
        """Where to POST a query, ``http://127.0.0.1:<port>/`` (set on start)."""

    @property
    def roots_pem(self) -> Path:
        """The root certificate (PEM) that the TSA's certificate chains to."""
        return self._folder / "root.crt"

    @property
    def tsa_cert_pem(self) -> Path:
        """The TSA's own signing certificate (PEM)."""
        return self._folder / "tsa.crt"

    @property
    def _folder(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the local TSA is not running")
        return self._dir

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Make the root and TSA certificates and start serving on a free port."""
        if self._server is not None:
            raise RuntimeError("the local TSA is already running")
        openssl = self._openssl or shutil.which("openssl")
        if openssl is None or not Path(openssl).exists():
            raise OpensslMissing(
                "the local timestamp authority needs the openssl command line, which is not "
                "installed (Debian: apt-get install openssl; scripts/demo installs it)"
            )
        self._openssl = openssl
        self._dir = Path(tempfile.mkdtemp(prefix="riverseal-tsa-"))
        try:
            self._make_certificates()
            server = _Server(("127.0.0.1", 0), _Handler)
            server.tsa = self
            host, port = server.server_address[:2]
            self._server = server
            self.url = f"http://{host!s}:{port}/"
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="local-tsa",
                daemon=True,
            )
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop serving and remove the folder; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
                self._thread.join(timeout=5)
            server.server_close()
        self._thread = None
        folder, self._dir = self._dir, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        self.url = ""

    def __enter__(self) -> LocalTsa:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> LocalTsa:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # --- openssl -----------------------------------------------------------------------

    def _run(self, *args: str, data: bytes | None = None) -> bytes:
        assert self._openssl is not None
        done = subprocess.run(  # noqa: S603 - openssl, with this module's own arguments
            [self._openssl, *args],
            cwd=self._folder,
            input=data,
            capture_output=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()
            raise TsaSetupError(f"openssl {' '.join(args[:2])} failed: {said}")
        return done.stdout

    def _make_certificates(self) -> None:
        folder = self._folder
        (folder / "tsa.cnf").write_text(_CNF.format(policy=_POLICY), encoding="ascii")
        (folder / "serial").write_text("01\n", encoding="ascii")
        p256 = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
        self._run(
            "req", "-x509", *p256, "-keyout", "root.key", "-out", "root.crt",
            "-days", "3650", "-subj", f"/CN={self.name} Root",
            "-config", "tsa.cnf", "-extensions", "v3_root",
        )  # fmt: skip
        self._run(
            "req", "-new", *p256, "-keyout", "tsa.key", "-out", "tsa.csr",
            "-subj", f"/CN={self.name}", "-config", "tsa.cnf",
        )  # fmt: skip
        self._run(
            "x509", "-req", "-in", "tsa.csr", "-CA", "root.crt", "-CAkey", "root.key",
            "-CAcreateserial", "-out", "tsa.crt", "-days", "3650",
            "-extfile", "tsa.cnf", "-extensions", "v3_tsa",
        )  # fmt: skip

    def stamp(self, query: bytes) -> bytes:
        """The DER TimeStampResp ``openssl ts -reply`` gives for a DER TimeStampReq.

        A query that is no TimeStampReq gets openssl's own answer, a TimeStampResp
        with status "rejection" (badDataFormat), as from any TSA. Raises
        TsaSetupError only when openssl itself fails.
        """
        with self._lock:
            return self._run(
                "ts", "-reply", "-config", "tsa.cnf",
                "-queryfile", "/dev/stdin", "-out", "/dev/stdout",
                data=query,
            )  # fmt: skip


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tsa: LocalTsa


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        if self.path != "/":
            self._send(404, b"no timestamp authority here; POST to /\n")
            return
        if self.headers.get("Content-Type") != _QUERY:
            self._send(415, f"expected Content-Type {_QUERY}\n".encode())
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_QUERY_BYTES:
            self._send(400, f"a query is 1 to {MAX_QUERY_BYTES} bytes\n".encode())
            return
        query = self.rfile.read(length)
        try:
            reply = self.server.tsa.stamp(query)
        except (TsaSetupError, RuntimeError, subprocess.TimeoutExpired) as exc:
            self._send(500, f"openssl could not answer: {exc}\n".encode())
            return
        self._send(200, reply, _REPLY)

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: the demo prints what matters

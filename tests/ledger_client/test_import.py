"""``import ledger_client`` pulls in the standard library and PyNaCl only.

A regulator installs riverseal without the gateway extras, so nothing the
verifier imports may need aiosqlite, pyserial, aiomqtt, paho or httpx — and it
needs no asyncio or sqlite either.
"""

from __future__ import annotations

import json
import subprocess
import sys

ALLOWED = {"ledger_client", "nacl", "_sodium", "_cffi_backend"}
FORBIDDEN = {
    "aiosqlite",
    "serial",
    "aiomqtt",
    "paho",
    "httpx",
    "gateway",
    "simulators",
    "asyncio",
    "sqlite3",
}

PROBE = """
import json, sys
before = set(sys.modules)
import ledger_client, ledger_client.cli, ledger_client.verify, ledger_client.trust
new = {m.split(".")[0] for m in set(sys.modules) - before}
print(json.dumps(sorted(new)))
print(json.dumps(sorted(m for m in new if m not in sys.stdlib_module_names)))
"""


def test_import_pulls_in_stdlib_and_pynacl_only() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
    )
    new_modules, third_party = (json.loads(line) for line in done.stdout.splitlines())
    assert not FORBIDDEN & set(new_modules), sorted(FORBIDDEN & set(new_modules))
    assert set(third_party) <= ALLOWED, third_party
    # -X importtime lists every module imported, with its package path.
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()[1:]}
    assert not FORBIDDEN & imported

"""Package-level checks, run in a fresh interpreter.

A subprocess started in the repository root sees the package exactly as an
installed user does, whatever the test process has already imported.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "simulators"


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return result.stdout


def test_all_lists_exactly_the_public_names() -> None:
    out = run_python(
        "import json, types, simulators\n"
        "assert simulators.__file__.endswith('simulators/__init__.py')\n"
        "public = [n for n in dir(simulators) if not n.startswith('_')\n"
        "          and not isinstance(getattr(simulators, n), types.ModuleType)]\n"
        "print(json.dumps([simulators.__all__, public]))\n"
    )
    exported, public = json.loads(out)
    assert sorted(exported) == sorted(public)
    assert len(exported) == len(set(exported))


def test_importing_the_package_loads_no_mqtt_serial_or_gateway_code() -> None:
    out = run_python(
        "import sys, simulators, simulators.cli\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(roots & {'aiomqtt', 'paho', 'serial', 'gateway', 'ledger_client'}))\n"
    )
    assert out.strip() == "[]"


def test_sources_import_nothing_from_gateway_or_ledger_client() -> None:
    # But fleet.py, whose boxes run the gateway's real log and uplink (imported only
    # by `sensor-sim fleet`, as the test above shows).
    sources = [p for p in PACKAGE_DIR.glob("*.py") if p.name != "fleet.py"]
    assert len(sources) >= 6
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"gateway", "ledger_client"}, (path, name)

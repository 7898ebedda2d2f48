"""The driver table: every row's home keeps the convention its lazy methods rely on, and
a box without MQTT sensors never imports the MQTT stack."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import gateway.drivers
from gateway.drivers import DRIVERS
from gateway.tools import SCANNERS


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda d: d.name)
def test_each_row_is_its_folder_and_its_folder_has_the_rows_functions(driver: object) -> None:
    assert isinstance(driver, gateway.drivers.Driver)
    folder = Path(gateway.drivers.__file__).parent / driver.name
    assert (folder / "__init__.py").is_file()
    assert importlib.import_module(driver.home).DRIVER is driver
    source = importlib.import_module(f"{driver.home}.source")
    tools = importlib.import_module(f"{driver.home}.tools")
    assert list(inspect.signature(source.build_sources).parameters) == [
        "sensors",
        "config",
        "device_id",
    ]
    assert list(inspect.signature(tools.probe).parameters) == ["sensor", "config"]
    assert inspect.iscoroutinefunction(tools.probe)
    if driver.scan_share:
        assert list(inspect.signature(tools.scan).parameters)[:2] == ["port", "budget_s"]
        assert SCANNERS[driver.name][1] == driver.scan_share
    else:
        assert not hasattr(tools, "scan")
        assert driver.name not in SCANNERS


async def test_a_family_that_is_not_serial_refuses_to_scan() -> None:
    (mqtt,) = [d for d in DRIVERS if not d.scan_share]
    with pytest.raises(TypeError, match="not a serial family"):
        await mqtt.scan("/dev/null", 1.0)


def test_a_box_without_mqtt_sensors_never_imports_the_mqtt_stack(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[device]\nkey_file = "device.key"\n'
        '[[sensor]]\nid = "ph-1"\ndriver = "ezo"\ncircuit = "ph"\nport = "/dev/ttyUSB0"\n'
    )
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gateway.config import load_config\n"
        "from gateway.drivers import build_sources\n"
        f"sources = build_sources(load_config(Path({str(config)!r})), 'rs-test')\n"
        "print(type(sources[0]).__name__)\n"
        "heavy = ('aiomqtt', 'paho', 'pymodbus', 'gateway.drivers.mqtt.source')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
        "print('gateway.drivers.mqtt.config' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    # The table (each family's row and config) is imported; no family's heavy modules.
    assert out.splitlines() == ["EzoSource", "[]", "True"]

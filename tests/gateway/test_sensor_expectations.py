"""What the silence tracker expects of each configured sensor."""

from __future__ import annotations

from pathlib import Path

from gateway.config import parse_config
from gateway.daemon import sensor_expectations

NS = 1_000_000_000

CONFIG = """
[device]
[mqtt]
[[sensor]]
id = "odo-1"
driver = "modbus"
port = "/dev/rs485"
slave = 1
profile = "ysi-odo-rtu"
interval_s = 10
timeout_s = 2
retries = 2
[[sensor]]
id = "ph-1"
driver = "ezo"
circuit = "ph"
port = "/dev/ttyUSB0"
interval_s = 10
timeout_s = 3
[[sensor]]
id = "weir-{id}"
driver = "mqtt"
topic = "river/{id}/json"
interval_s = 60
[[sensor]]
id = "node-1"
driver = "mqtt"
topic = "river/node-1"
interval_s = 60
"""


def test_grace_covers_retries_and_templates_are_not_watched() -> None:
    cfg = parse_config(CONFIG, Path("/etc/riverseal/gateway.toml"))
    exp = sensor_expectations(cfg)
    assert set(exp) == {"odo-1", "ph-1", "node-1"}
    # A silent Modbus slave costs timeout x (retries + 1) = 6 s > interval / 2.
    assert exp["odo-1"].allowance_ns == 16 * NS
    assert exp["ph-1"].allowance_ns == 15 * NS  # half the interval beats a 3 s timeout
    assert exp["node-1"].allowance_ns == 90 * NS

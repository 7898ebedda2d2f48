"""``[[sensor]]`` tables: the fields every driver shares, then the driver's own.

Each driver keeps its settings and their parser in its own folder
(``gateway/drivers/<family>/config.py``); the driver table in
``gateway.drivers`` is the one place that lists them.
"""

from __future__ import annotations

from gateway.drivers import SensorConfig, driver_named
from gateway.errors import ConfigError
from gateway.toml_table import Table

__all__ = ["SensorConfig", "parse_sensor"]


def parse_sensor(t: Table) -> SensorConfig | None:
    """One ``[[sensor]]`` table; None when it has a problem that stops its parsing there
    (recorded in ``t``, or raised when ``t`` does not collect problems)."""
    try:
        sid = t.get("id", str, required=True)
        t.check(
            "id",
            sid,
            lambda s: bool(s) and s.isprintable() and " " not in s,
            "is not a valid id (printable, no spaces)",
        )
        site = t.optional("site", str)
        name = t.get("driver", str, required=True)
        sensor: SensorConfig = driver_named(name, f"{t.where}.driver").parse(t, sid, site)
    except ConfigError as exc:
        # Keys after the one at fault were never read: unknown-key checks would be wrong.
        t.record(exc)
        return None
    t.done()
    return sensor

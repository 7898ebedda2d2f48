"""The ``[mqtt]`` broker connection and ``driver = "mqtt"`` sensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .table import Table, positive

__all__ = ["MqttConfig", "MqttSensorConfig", "parse_mqtt", "parse_mqtt_sensor"]


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    """Persistent-session identity; default riverseal-<device id>."""
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    max_payload_bytes: int = 65_536
    """Larger payloads are rejected and counted, never parsed."""


@dataclass(frozen=True)
class MqttSensorConfig:
    id: str
    topic: str
    interval_s: float = 60.0
    site: str | None = None
    driver: Literal["mqtt"] = "mqtt"


def parse_mqtt(t: Table | None) -> MqttConfig | None:
    if t is None:
        return None
    d = MqttConfig()
    port = t.get("port", int, d.port)
    cfg = MqttConfig(
        host=t.get("host", str, d.host),
        port=t.check("port", port, lambda p: 0 < p < 65536, "is not a TCP port"),
        client_id=t.get("client_id", str, ""),
        username=t.optional("username", str),
        password=t.optional("password", str),
        keepalive=t.check(
            "keepalive", t.get("keepalive", int, d.keepalive), positive, "must be > 0"
        ),
        max_payload_bytes=t.check(
            "max_payload_bytes",
            t.get("max_payload_bytes", int, d.max_payload_bytes),
            positive,
            "must be > 0",
        ),
    )
    t.done()
    return cfg


def parse_mqtt_sensor(t: Table, sid: str, site: str | None) -> MqttSensorConfig:
    topic = t.get("topic", str, required=True)
    t.check(
        "topic",
        topic,
        lambda s: bool(s) and "#" not in s and "+" not in s,
        "must be a plain topic",
    )
    interval = t.get("interval_s", float, 60.0)
    return MqttSensorConfig(
        id=sid,
        topic=topic,
        interval_s=t.check("interval_s", interval, positive, "must be > 0"),
        site=site,
    )

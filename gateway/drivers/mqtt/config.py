"""The ``[mqtt]`` broker connection and ``driver = "mqtt"`` sensors.

TLS is on when ``tls_ca`` is set: the broker's certificate must chain to that
CA and name the host the gateway connects to (certificate and hostname checks
cannot be turned off; there is deliberately no ``tls_insecure``). Add
``tls_cert`` and ``tls_key`` for mutual TLS. TLS file paths must be absolute.

A sensor's ``topic`` is an MQTT filter (``+``, ``#``, and one ``{id}`` level
whose text becomes the ``{id}`` in the sensor's ``id``); see
``gateway.drivers.mqtt.topics`` for matching and precedence. ``format`` is
``"json"`` (the riverseal contract) or ``"senml"`` (RFC 8428); ``names`` maps
SenML names to quantities for one sensor (``gateway.drivers.mqtt.senml``).

``reorder_window_s`` (default 30 s, at most 600 s): how long numbers missing from
a node's ``seq`` are awaited before a signed gap record declares them lost.
Messages can arrive out of order (a node or the broker redelivering after a
reconnect); one that arrives within the window is logged like any other and
needs no gap. 0 declares the loss at once, before the reading that revealed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.toml_table import Table, positive

if TYPE_CHECKING:
    from gateway.secrets import SecretReader

__all__ = [
    "ID_PLACEHOLDER",
    "MAX_REORDER_WINDOW_S",
    "MqttConfig",
    "MqttSensorConfig",
    "parse_mqtt",
    "parse_mqtt_sensor",
]

MAX_REORDER_WINDOW_S = 600.0
"""The largest ``reorder_window_s`` (a verifier allows for it after an unclean stop)."""

ID_PLACEHOLDER = "{id}"
"""In a sensor id and its topic: the level that names the sensor (one config, many nodes)."""


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    """Persistent-session identity; default riverseal-<device id>."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """From ``password``, ``password_file``, ``password_env`` or ``password_credential``
    (gateway/secrets.py); never shown."""
    keepalive: int = 30
    max_payload_bytes: int = 65_536
    """Larger payloads are rejected and counted, never parsed."""
    max_inflight: int = 1000
    """Messages received but not yet committed and acknowledged; reading pauses at this."""
    tls_ca: Path | None = None
    """CA certificate(s), PEM: setting it turns TLS on."""
    tls_cert: Path | None = None
    """Client certificate, PEM, for mutual TLS (with ``tls_key``)."""
    tls_key: Path | None = None
    reorder_window_s: float = 30.0
    """Seconds a node's missing ``seq`` numbers are awaited (out-of-order delivery) before
    a gap record declares them lost; time disconnected from the broker does not count."""


@dataclass(frozen=True)
class MqttSensorConfig:
    id: str
    """The sensor id, or a template containing ``{id}`` when the topic has an ``{id}`` level."""
    topic: str
    interval_s: float = 60.0
    site: str | None = None
    format: Literal["json", "senml"] = "json"
    names: tuple[tuple[str, str], ...] = ()
    """SenML name (full or short) → quantity, checked before the default table."""
    driver: Literal["mqtt"] = "mqtt"


def _tls_path(t: Table, name: str) -> Path | None:
    text = t.optional(name, str)
    if text is None:
        return None
    path = Path(text)
    t.check(name, text, lambda _: path.is_absolute(), "must be an absolute path")
    return path


def parse_mqtt(t: Table | None, secrets: SecretReader | None = None) -> MqttConfig | None:
    from gateway.secrets import SecretReader

    if t is None:
        return None
    if "tls_insecure" in t.data:
        t.used.add("tls_insecure")
        t.problem(
            "tls_insecure",
            "does not exist: certificate and hostname verification are always on; "
            "give the broker's CA in tls_ca",
        )
    d = MqttConfig()
    port = t.get("port", int, d.port)
    tls_ca, tls_cert, tls_key = (_tls_path(t, k) for k in ("tls_ca", "tls_cert", "tls_key"))
    if (tls_cert is None) != (tls_key is None):
        t.problem("tls_cert", "tls_cert and tls_key go together")
    if tls_cert is not None and tls_ca is None:
        t.problem("tls_cert", "a client certificate needs TLS: set tls_ca")
    cfg = MqttConfig(
        host=t.get("host", str, d.host),
        port=t.check("port", port, lambda p: 0 < p < 65536, "is not a TCP port"),
        client_id=t.get("client_id", str, ""),
        username=t.optional("username", str),
        password=(secrets or SecretReader()).read(t, "password"),
        keepalive=t.check(
            "keepalive", t.get("keepalive", int, d.keepalive), positive, "must be > 0"
        ),
        max_payload_bytes=t.check(
            "max_payload_bytes",
            t.get("max_payload_bytes", int, d.max_payload_bytes),
            positive,
            "must be > 0",
        ),
        max_inflight=t.check(
            "max_inflight", t.get("max_inflight", int, d.max_inflight), positive, "must be > 0"
        ),
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        reorder_window_s=t.check(
            "reorder_window_s",
            t.get("reorder_window_s", float, d.reorder_window_s),
            lambda w: 0 <= w <= MAX_REORDER_WINDOW_S,
            f"must be between 0 and {MAX_REORDER_WINDOW_S:.0f} seconds",
        ),
    )
    if cfg.password is not None and cfg.username is None:
        t.problem("password", "a password needs a username")
    t.done()
    return cfg


def _filter_problem(topic: str) -> str | None:
    if not topic:
        return "must not be empty"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "may use '#' only as the whole last level"
        if "+" in level and level != "+":
            return "may use '+' only as a whole level"
        if ("{" in level or "}" in level) and level != ID_PLACEHOLDER:
            return "may use '{id}' only as a whole level"
    if levels.count(ID_PLACEHOLDER) > 1:
        return "may have only one '{id}' level"
    return None


def parse_mqtt_sensor(t: Table, sid: str, site: str | None) -> MqttSensorConfig:
    topic = t.get("topic", str, required=True)
    problem = _filter_problem(topic)
    t.check("topic", topic, lambda _: problem is None, str(problem))
    if (ID_PLACEHOLDER in topic.split("/")) != (ID_PLACEHOLDER in sid):
        t.problem(
            "id", f"{sid!r}: an '{{id}}' level in the topic and '{{id}}' in the id go together"
        )
    if sid.count(ID_PLACEHOLDER) > 1:
        t.problem("id", f"{sid!r} may contain '{{id}}' only once")
    interval = t.get("interval_s", float, 60.0)
    fmt = t.get("format", str, "json")
    t.check("format", fmt, lambda f: f in ("json", "senml"), "is not one of 'json', 'senml'")
    names: list[tuple[str, str]] = []
    table = t.table("names")
    if table is not None:
        if fmt != "senml":
            t.problem("names", "only applies to format = 'senml'")
        for name in table.data:
            quantity = table.get(name, str)
            table.check(
                name,
                quantity,
                lambda q: 0 < len(q) <= 64 and q.isprintable(),
                "must be a quantity name of 1 to 64 printable characters",
            )
            names.append((name, quantity))
    return MqttSensorConfig(
        id=sid,
        topic=topic,
        interval_s=t.check("interval_s", interval, positive, "must be > 0"),
        site=site,
        format="senml" if fmt == "senml" else "json",
        names=tuple(names),
    )

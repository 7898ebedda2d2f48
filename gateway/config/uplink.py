"""``[uplink]``: the daemon publishes its log as it grows (gateway/uplink.py).

::

    [uplink]
    to = "https://mirror.regulator.example/riverseal/rs-1a2b3c"   # or a directory
    token_file = "/etc/riverseal/uplink-token"   # optional: Authorization: Bearer (a secret)
    headers = { "X-Station" = "weir-3" }          # optional, not secret
    max_bytes_per_s = 262144                      # the backlog's pace

    [uplink.announce]                             # optional: MQTT announcements
    host = "broker.regulator.example"
    port = 8883
    tls_ca = "/etc/riverseal/regulator-ca.pem"    # TLS on, as for [mqtt]
    topic = "riverseal/{device}/checkpoint"

Secrets (``token``, ``password``, and ``password`` of ``[uplink.announce]``)
come as gateway/secrets.py allows: ``<name>_file``, ``<name>_env``,
``<name>_credential``, or plain text in a file only its owner can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.drivers.mqtt.config import MqttConfig
from gateway.toml_table import Table, positive

from ..secrets import SecretReader
from .urls import url_problem

__all__ = ["DEVICE_PLACEHOLDER", "AnnounceConfig", "UplinkConfig", "parse_uplink"]

DEVICE_PLACEHOLDER = "{device}"
"""In ``announce.topic``: the device id."""


@dataclass(frozen=True)
class AnnounceConfig:
    """``[uplink.announce]``: where each published checkpoint is announced over MQTT."""

    broker: MqttConfig
    """host, port, client_id, username/password, keepalive, tls_ca/tls_cert/tls_key: as in
    ``[mqtt]`` (certificate and host name always checked when ``tls_ca`` is set)."""
    topic: str = "riverseal/{device}/checkpoint"
    """One topic per device; ``{device}`` becomes the device id. Published QoS 1, retained."""
    timeout_s: float = 10.0
    """Longest wait for the broker's PUBACK before the connection is dropped and made again."""
    retry_max_seconds: float = 60.0
    """Cap of the jittered back-off between connection attempts."""

    def topic_for(self, device: str) -> str:
        return self.topic.replace(DEVICE_PLACEHOLDER, device)


@dataclass(frozen=True)
class UplinkConfig:
    to: str
    """An ``http(s)://`` URL prefix taking PUT (WebDAV, object stores), or a directory
    (relative paths from the config file's folder)."""
    headers: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Sent with every request; not secret (they appear in ``gateway check``)."""
    token: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer``; a secret, never shown."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """With ``username``: HTTP basic authentication; a secret, never shown."""
    max_bytes_per_s: int = 262_144
    """The pace of the upload, in bytes a second (token bucket; bursts of one second's
    worth). A week's backlog of a 10-sensor station (~200 MB) drains in about 15 min at
    the default; the reads it takes are spread out so ingest is not starved."""
    concurrency: int = 4
    """Files in flight at once."""
    timeout_s: float = 30.0
    """Per HTTP request."""
    retry_max_seconds: float = 300.0
    """Cap of the jittered back-off while the target is down or refuses."""
    step_entries: int = 65_536
    """A backlog goes up in steps of at most this many entries, each ending with a stored
    checkpoint: readers see progress, and an interruption loses at most one step."""
    announce: AnnounceConfig | None = None

    @property
    def is_http(self) -> bool:
        return self.to.startswith(("http://", "https://"))


def _tls_path(t: Table, name: str) -> Path | None:
    text = t.optional(name, str)
    if text is None:
        return None
    path = Path(text)
    t.check(name, text, lambda _: path.is_absolute(), "must be an absolute path")
    return path


def _parse_announce(t: Table, secrets: SecretReader) -> AnnounceConfig:
    d = MqttConfig()
    tls_ca, tls_cert, tls_key = (_tls_path(t, k) for k in ("tls_ca", "tls_cert", "tls_key"))
    if (tls_cert is None) != (tls_key is None):
        t.problem("tls_cert", "tls_cert and tls_key go together")
    if tls_cert is not None and tls_ca is None:
        t.problem("tls_cert", "a client certificate needs TLS: set tls_ca")
    port = t.get("port", int, 8883 if tls_ca is not None else d.port)
    broker = MqttConfig(
        host=t.get("host", str, required=True),
        port=t.check("port", port, lambda p: 0 < p < 65536, "is not a TCP port"),
        client_id=t.get("client_id", str, ""),
        username=t.optional("username", str),
        password=secrets.read(t, "password"),
        keepalive=t.check(
            "keepalive", t.get("keepalive", int, d.keepalive), positive, "must be > 0"
        ),
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    if broker.password is not None and broker.username is None:
        t.problem("password", "a password needs a username")
    topic = t.get("topic", str, AnnounceConfig.topic)
    t.check(
        "topic",
        topic,
        lambda s: bool(s) and not any(c in s for c in "+#\0"),
        "must be a topic name (no wildcards)",
    )
    cfg = AnnounceConfig(
        broker=broker,
        topic=topic,
        timeout_s=t.check(
            "timeout_s",
            t.get("timeout_s", float, AnnounceConfig.timeout_s),
            positive,
            "must be > 0",
        ),
        retry_max_seconds=t.check(
            "retry_max_seconds",
            t.get("retry_max_seconds", float, AnnounceConfig.retry_max_seconds),
            positive,
            "must be > 0",
        ),
    )
    t.done()
    return cfg


def _headers(t: Table) -> MappingProxyType[str, str]:
    raw = t.table("headers")
    if raw is None:
        return MappingProxyType({})
    out: dict[str, Any] = {}
    for name in raw.data:
        value = raw.get(name, str)
        if not (name.isascii() and name.replace("-", "").isalnum() and "\n" not in value):
            raw.problem(name, "is not an HTTP header (a token name, a one-line value)")
        if name.lower() == "authorization":
            raw.problem(name, "is a secret: give it as token (or username and password)")
        out[name] = value
    return MappingProxyType(out)


def parse_uplink(t: Table | None, secrets: SecretReader | None = None) -> UplinkConfig | None:
    """``[uplink]`` (None when the section is absent)."""
    if t is None:
        return None
    reader = secrets or SecretReader()
    d = UplinkConfig(to="")
    to = t.get("to", str, required=True)
    if to.startswith(("http://", "https://")):
        problem = url_problem(to)
        t.check("to", to, lambda _: problem is None, str(problem))
        to = to.rstrip("/")
    else:
        t.check("to", to, bool, "must be a URL or a directory")
        to = str(Path(to) if t.base is None else t.base / to)
    cfg = UplinkConfig(
        to=to,
        headers=_headers(t),
        token=reader.read(t, "token"),
        username=t.optional("username", str),
        password=reader.read(t, "password"),
        max_bytes_per_s=t.check(
            "max_bytes_per_s",
            t.get("max_bytes_per_s", int, d.max_bytes_per_s),
            lambda n: n >= 1024,
            "must be >= 1024",
        ),
        concurrency=t.check(
            "concurrency",
            t.get("concurrency", int, d.concurrency),
            lambda n: 1 <= n <= 64,
            "must be from 1 to 64",
        ),
        timeout_s=t.check(
            "timeout_s", t.get("timeout_s", float, d.timeout_s), positive, "must be > 0"
        ),
        retry_max_seconds=t.check(
            "retry_max_seconds",
            t.get("retry_max_seconds", float, d.retry_max_seconds),
            positive,
            "must be > 0",
        ),
        step_entries=t.check(
            "step_entries",
            t.get("step_entries", int, d.step_entries),
            lambda n: n >= 256,
            "must be >= 256",
        ),
        announce=None,
    )
    announce_t = t.table("announce")
    announce = None if announce_t is None else _parse_announce(announce_t, reader)
    if not cfg.is_http and (cfg.headers or cfg.token or cfg.username or cfg.password):
        t.problem("to", "is a directory: headers, token, username and password are for URLs")
    if cfg.password is not None and cfg.username is None:
        t.problem("password", "a password needs a username")
    if cfg.token is not None and cfg.username is not None:
        t.problem("token", "give token or username and password, not both")
    t.done()
    return replace(cfg, announce=announce)

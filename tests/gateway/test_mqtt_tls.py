"""TLS and credentials against a real Mosquitto (certificates made by openssl in the test)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest

from gateway.backoff import Backoff
from gateway.config import MqttConfig, MqttSensorConfig
from gateway.drivers.mqtt.source import MqttSource, tls_context
from gateway.drivers.mqtt.tools import probe_mqtt
from gateway.errors import SensorError
from gateway.pipeline import Value

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink
    from tests.servers.broker import TlsBroker

_ids = itertools.count()
BODY = b'{"seq":0,"time":"2026-11-21T05:09:56Z","values":[{"q":"ph","v":7.25,"u":"pH"}]}'


def config(broker: TlsBroker, **changes: object) -> MqttConfig:
    options: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": f"riverseal-tls-{next(_ids)}",
        "username": broker.username,
        "password": broker.password,
        "tls_ca": broker.ca,
    }
    options.update(changes)
    return MqttConfig(**options)  # type: ignore[arg-type]


async def publish(broker: TlsBroker, topic: str, body: bytes) -> None:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        tls_context=tls_context(MqttConfig(tls_ca=broker.ca)),
    ) as pub:
        await pub.publish(topic, body, qos=1)


async def ingest_one(broker: TlsBroker, cfg: MqttConfig, sink: RecordingSink) -> None:
    topic = f"tls/{cfg.client_id}"
    src = MqttSource(cfg, [MqttSensorConfig(id="n1", topic=topic)], device_id="d")
    task = asyncio.create_task(src.run(sink))
    try:
        await sink.wait_for(lambda: src.connected, what=f"connected ({src.last_error})")
        await publish(broker, topic, BODY)
        await sink.wait_for(lambda: len(sink.readings) == 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sink.readings[0].values == (Value("ph", 7.25, "pH"),)


async def first_failure(cfg: MqttConfig, sink: RecordingSink) -> str:
    """Run a source until its first failed connection; the error it reports."""
    src = MqttSource(
        cfg, [MqttSensorConfig(id="n1", topic="tls/x")], device_id="d", backoff=Backoff(5, 5)
    )
    task = asyncio.create_task(src.run(sink))
    try:
        await sink.wait_for(
            lambda: src.last_error is not None, within=15, what="a connection failure"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not src.connections
    assert src.last_error is not None
    return src.last_error


async def test_connects_and_ingests_with_a_good_ca(
    mosquitto_tls: TlsBroker, sink: RecordingSink
) -> None:
    await ingest_one(mosquitto_tls, config(mosquitto_tls), sink)


async def test_mutual_tls_with_a_client_certificate(
    mosquitto_tls: TlsBroker, sink: RecordingSink
) -> None:
    cert, key = mosquitto_tls.client_cert
    cfg = config(mosquitto_tls, port=mosquitto_tls.mtls_port, tls_cert=cert, tls_key=key)
    await ingest_one(mosquitto_tls, cfg, sink)


async def test_mutual_tls_listener_refuses_a_client_without_certificate(
    mosquitto_tls: TlsBroker, sink: RecordingSink
) -> None:
    error = await first_failure(config(mosquitto_tls, port=mosquitto_tls.mtls_port), sink)
    assert f"broker mqtts://127.0.0.1:{mosquitto_tls.mtls_port}: " in error
    assert "set tls_cert and tls_key" in error


async def test_refuses_a_server_certificate_from_another_ca(
    mosquitto_tls: TlsBroker, sink: RecordingSink
) -> None:
    error = await first_failure(config(mosquitto_tls, tls_ca=mosquitto_tls.rogue_ca), sink)
    assert f"sensor mqtt: broker mqtts://127.0.0.1:{mosquitto_tls.port}: " in error
    assert "TLS handshake failed: the broker's certificate is not signed by the CA" in error


async def test_checks_the_host_name(mosquitto_tls: TlsBroker, sink: RecordingSink) -> None:
    # The certificate names 127.0.0.1 and localhost, not 127.0.0.2 (a listener there too).
    cfg = config(mosquitto_tls, host="127.0.0.2", port=mosquitto_tls.other_name_port)
    error = await first_failure(cfg, sink)
    assert "TLS handshake failed: the broker's certificate does not name this host" in error


async def test_refuses_bad_credentials_with_a_clear_message(
    mosquitto_tls: TlsBroker, sink: RecordingSink
) -> None:
    error = await first_failure(config(mosquitto_tls, password="wrong"), sink)
    assert f"broker mqtts://127.0.0.1:{mosquitto_tls.port}: the broker refused the login" in error
    assert "check [mqtt] username and password" in error


async def test_plain_mqtt_to_a_tls_port_fails_and_is_retried(
    mosquitto_tls: TlsBroker, sink: RecordingSink
) -> None:
    error = await first_failure(config(mosquitto_tls, tls_ca=None), sink)
    assert f"broker mqtt://127.0.0.1:{mosquitto_tls.port}" in error


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "No such file or directory"), (b"not a certificate", "not a usable PEM file")],
)
def test_a_bad_ca_file_is_named(tmp_path: Path, content: bytes | None, problem: str) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    with pytest.raises(SensorError) as info:
        tls_context(MqttConfig(host="broker.example", port=8883, tls_ca=ca))
    assert str(info.value).startswith(
        f"sensor mqtt: broker mqtts://broker.example:8883: CA file {ca}: "
    )
    assert problem in str(info.value)


def test_a_bad_client_key_is_named(mosquitto_tls: TlsBroker, tmp_path: Path) -> None:
    cert, _ = mosquitto_tls.client_cert
    key = tmp_path / "client.key"
    key.write_text("garbage")
    with pytest.raises(SensorError, match=r"client certificate .* / key .*: not a usable PEM"):
        tls_context(MqttConfig(tls_ca=mosquitto_tls.ca, tls_cert=cert, tls_key=key))


async def test_bad_ca_file_is_reported_by_the_running_source(
    tmp_path: Path, mosquitto_tls: TlsBroker, sink: RecordingSink
) -> None:
    error = await first_failure(config(mosquitto_tls, tls_ca=tmp_path / "missing.pem"), sink)
    assert "CA file" in error and "missing.pem" in error


async def test_probe_over_tls(mosquitto_tls: TlsBroker) -> None:
    cfg = config(mosquitto_tls)
    sensor = MqttSensorConfig(id="n1", topic=f"probe/{cfg.client_id}")
    probe = asyncio.create_task(probe_mqtt(sensor, cfg, timeout_s=5))
    await asyncio.sleep(0.5)  # let it subscribe
    await publish(mosquitto_tls, sensor.topic, BODY)
    result = await probe
    assert result.error is None
    assert result.reading is not None
    assert result.reading.values == (Value("ph", 7.25, "pH"),)
    (exchange,) = result.exchanges
    assert exchange.sent == f"SUBSCRIBE {sensor.topic} (QoS 1)"
    assert exchange.received == BODY.decode()


async def test_probe_reports_a_refused_login(mosquitto_tls: TlsBroker) -> None:
    cfg = config(mosquitto_tls, password="wrong")
    result = await probe_mqtt(MqttSensorConfig(id="n1", topic="probe/x"), cfg, timeout_s=5)
    assert result.reading is None
    assert result.error is not None and "refused the login" in result.error

"""Topic filters → sensors (pure), the MQTT config keys, and routing on a real broker."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest

from gateway.backoff import Backoff
from gateway.config import MqttConfig, MqttSensorConfig, parse_config
from gateway.drivers.mqtt.source import MqttSource
from gateway.drivers.mqtt.topics import TopicRouter, filter_covers, topic_matches
from gateway.errors import ConfigError
from gateway.pipeline import Value

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink


def s(sid: str, topic: str) -> MqttSensorConfig:
    return MqttSensorConfig(id=sid, topic=topic)


@pytest.mark.parametrize(
    ("pattern", "topic", "ok"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "x/y", True),
        ("+/b", "$SYS/b", False),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/+/c", "a//c", True),
        ("a/b", "a/b/", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, ok: bool) -> None:
    assert topic_matches(pattern.split("/"), topic.split("/")) is ok


def test_filter_covers() -> None:
    assert filter_covers(["a", "#"], ["a", "+", "c"])
    assert filter_covers(["a", "+"], ["a", "b"])
    assert not filter_covers(["a", "+"], ["a", "#"])
    assert not filter_covers(["a", "b"], ["a", "+"])
    assert filter_covers(["#"], ["x"])


def test_most_specific_filter_wins_whatever_the_config_order() -> None:
    sensors = [
        s("catch-all", "river/#"),
        s("any-senml", "river/+/senml"),
        s("w3-any", "river/w3/+"),
        s("w3-senml", "river/w3/senml"),
        s("w3-deep", "river/w3/#"),
    ]
    for order in itertools.permutations(sensors):
        router = TopicRouter(list(order))

        def who(topic: str, router: TopicRouter = router) -> str | None:
            route = router.route(topic)
            return route.sensor.id if route else None

        assert who("river/w3/senml") == "w3-senml"
        assert who("river/w3/json") == "w3-any"
        assert who("river/w3/a/b") == "w3-deep"
        assert who("river/w3") == "w3-deep"  # '#' also matches the parent level
        assert who("river/w4/senml") == "any-senml"
        assert who("river/w4/json") == "catch-all"
        assert who("lake/w4/json") is None
        assert router.subscriptions() == ["river/#"]


def test_id_placeholder_names_the_sensor() -> None:
    router = TopicRouter([s("weir-{id}", "river/{id}/senml"), s("lab", "river/lab/senml")])
    route = router.route("river/w3/senml")
    assert route is not None
    assert route.sensor_id(["river", "w3", "senml"]) == "weir-w3"
    lab = router.route("river/lab/senml")
    assert lab is not None and lab.sensor_id(["river", "lab", "senml"]) == "lab"
    assert router.subscriptions() == ["river/+/senml"]
    with pytest.raises(ValueError, match="not a usable sensor id"):
        route.sensor_id(["river", "bad id", "senml"])
    with pytest.raises(ValueError, match="not a usable sensor id"):
        route.sensor_id(["river", "", "senml"])


def test_covered_filters_are_not_subscribed() -> None:
    router = TopicRouter([s("a", "river/{id}/senml"), s("b", "river/lab/senml"), s("c", "lake/x")])
    assert router.subscriptions() == ["lake/x", "river/+/senml"]


def test_same_filter_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="same filter as sensor 'a'"):
        TopicRouter([s("a", "r/+/x"), s("b-{id}", "r/{id}/x")])


# -- config ---------------------------------------------------------------------------------

BASE = '[device]\nkey_file = "/k"\ndata_dir = "/d"\n'


def config(mqtt: str = "", sensor: str = 'id = "n1"\ntopic = "a/b"') -> str:
    return f'{BASE}[mqtt]\n{mqtt}\n[[sensor]]\ndriver = "mqtt"\n{sensor}\n'


def test_config_reads_tls_format_names_and_templates() -> None:
    cfg = parse_config(
        config(
            'port = 8883\ntls_ca = "/etc/riverseal/ca.pem"\ntls_cert = "/c.pem"\n'
            'tls_key = "/k.pem"\nusername = "gw"\npassword = "pw"\nmax_inflight = 50',
            'id = "weir-{id}"\ntopic = "river/{id}/senml"\nformat = "senml"\n'
            'names = { t1 = "temperature", "urn:dev:x:do" = "do_sat" }',
        ),
        Path("/etc/gateway.toml"),
    )
    assert cfg.mqtt == MqttConfig(
        port=8883,
        username="gw",
        password="pw",
        max_inflight=50,
        tls_ca=Path("/etc/riverseal/ca.pem"),
        tls_cert=Path("/c.pem"),
        tls_key=Path("/k.pem"),
    )
    (sensor,) = cfg.sensors
    assert sensor == MqttSensorConfig(
        id="weir-{id}",
        topic="river/{id}/senml",
        format="senml",
        names=(("t1", "temperature"), ("urn:dev:x:do", "do_sat")),
    )


@pytest.mark.parametrize(
    ("mqtt", "sensor", "where", "problem"),
    [
        ("tls_insecure = true", None, "mqtt.tls_insecure", "verification are always on"),
        ('tls_ca = "ca.pem"', None, "mqtt.tls_ca", "must be an absolute path"),
        ('tls_ca = "/ca.pem"\ntls_cert = "/c.pem"', None, "mqtt.tls_cert", "go together"),
        ('tls_cert = "/c.pem"\ntls_key = "/k.pem"', None, "mqtt.tls_cert", "needs TLS"),
        ('password = "x"', None, "mqtt.password", "needs a username"),
        ("max_inflight = 0", None, "mqtt.max_inflight", "must be > 0"),
        ("", 'id = "n"\ntopic = "a/#/b"', "sensor[0].topic", "'#' only as the whole last"),
        ("", 'id = "n"\ntopic = "a/b+"', "sensor[0].topic", "'+' only as a whole level"),
        ("", 'id = "n"\ntopic = "a/x{id}"', "sensor[0].topic", "'{id}' only as a whole"),
        ("", 'id = "n-{id}"\ntopic = "{id}/{id}"', "sensor[0].topic", "only one '{id}'"),
        ("", 'id = "n"\ntopic = "a/{id}"', "sensor[0].id", "go together"),
        ("", 'id = "n-{id}"\ntopic = "a/+"', "sensor[0].id", "go together"),
        ("", 'id = "n"\ntopic = ""', "sensor[0].topic", "must not be empty"),
        ("", 'id = "n"\ntopic = "a"\nformat = "xml"', "sensor[0].format", "not one of"),
        ("", 'id = "n"\ntopic = "a"\nnames = { a = "b" }', "sensor[0].names", "senml"),
        (
            "",
            'id = "n"\ntopic = "a"\nformat = "senml"\nnames = { a = 3 }',
            "sensor[0].names.a",
            "must be str",
        ),
    ],
)
def test_config_errors_name_the_key(
    mqtt: str, sensor: str | None, where: str, problem: str
) -> None:
    text = config(mqtt) if sensor is None else config(mqtt, sensor)
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/etc/gateway.toml"))
    assert where in info.value.where
    assert problem in info.value.problem


# -- routing on a real broker -------------------------------------------------------------

_ids = itertools.count()


def pack(bt: float, temp: float) -> bytes:
    return json.dumps([{"bn": "urn:dev:x:", "bt": bt, "n": "temp", "u": "Cel", "v": temp}]).encode()


async def test_routing_senml_templates_and_strays_on_a_real_broker(
    mosquitto: tuple[str, int], sink: RecordingSink
) -> None:
    n = next(_ids)
    prefix, client_id = f"route{n}", f"riverseal-route-{n}"
    host, port = mosquitto
    sensors = [
        MqttSensorConfig(id="weir-{id}", topic=f"{prefix}/{{id}}/senml", format="senml"),
        MqttSensorConfig(id="lab", topic=f"{prefix}/lab/senml", format="senml"),
        MqttSensorConfig(id="json-1", topic=f"{prefix}/j1"),
    ]
    src = MqttSource(
        MqttConfig(host=host, port=port, client_id=client_id),
        sensors,
        device_id="d",
        backoff=Backoff(0.05, 0.2),
    )
    task = asyncio.create_task(src.run(sink))
    await sink.wait_for(lambda: src.connected)
    async with aiomqtt.Client(host, port) as pub:
        await pub.publish(f"{prefix}/w3/senml", pack(1_767_225_600, 11.0), qos=1)
        await pub.publish(f"{prefix}/lab/senml", pack(1_767_225_600, 12.0), qos=1)
        await pub.publish(f"{prefix}/w3/senml", pack(1_767_225_600, 11.0), qos=1)  # again
        await pub.publish(f"{prefix}/w 4/senml", pack(1_767_225_600, 13.0), qos=1)
        await pub.publish(f"{prefix}/w4/senml", b'[{"n":"temp","v":1}]', qos=1)
        await pub.publish(f"{prefix}/w5/senml", pack(1_767_225_601, 14.0), qos=1)
        await sink.wait_for(lambda: len(sink.submitted) == 4 and len(sink.rejects) == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(r.sensor, r.values) for r in sink.readings] == [
        ("weir-w3", (Value("temperature", 11.0, "Cel"),)),
        ("lab", (Value("temperature", 12.0, "Cel"),)),
        ("weir-w5", (Value("temperature", 14.0, "Cel"),)),
    ]
    assert sink.returned == [True, True, False, True]  # the repeated pack is a duplicate
    assert sink.readings[0].sensor_time == "2026-01-01T00:00:00.000000Z"
    assert sink.readings[0].src_seq is None
    assert [(who, reason) for who, reason, _ in sink.rejects] == [
        ("weir-{id}", "bad-topic"),
        ("weir-w4", "bad-senml"),
    ]
    assert "has no unit" in sink.rejects[1][2]


async def test_a_message_matching_no_sensor_is_rejected_and_counted(
    mosquitto: tuple[str, int], sink: RecordingSink
) -> None:
    n = next(_ids)
    host, port = mosquitto
    client_id = f"riverseal-stray-{n}"
    # The session keeps a subscription from an older config ...
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=False) as old:
        await old.subscribe(f"stray{n}/old", qos=1)
    src = MqttSource(
        MqttConfig(host=host, port=port, client_id=client_id),
        [MqttSensorConfig(id="new", topic=f"stray{n}/new")],
        device_id="d",
    )
    task = asyncio.create_task(src.run(sink))
    await sink.wait_for(lambda: src.connected)
    body = b'{"seq":0,"time":"2026-11-21T05:09:56Z","values":[{"q":"ph","v":7,"u":"pH"}]}'
    async with aiomqtt.Client(host, port) as pub:
        await pub.publish(f"stray{n}/old", body, qos=1)
        await pub.publish(f"stray{n}/new", body, qos=1)
    await sink.wait_for(lambda: len(sink.readings) == 1 and len(sink.rejects) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.rejects == [("mqtt", "no-sensor", f"'stray{n}/old' matches no sensor's topic")]

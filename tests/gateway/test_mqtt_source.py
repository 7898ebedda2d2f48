"""MqttSource: the pure payload parser, then the driver against a real Mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiomqtt
import pytest

from gateway.backoff import Backoff
from gateway.config import MqttConfig, MqttSensorConfig
from gateway.drivers.mqtt.payload import ParsedPayload, PayloadError, parse_payload
from gateway.drivers.mqtt.source import MqttSource
from gateway.errors import ConfigError, ProtocolError
from gateway.pipeline import Gap, Reading, Value
from simulators.mqtt_node import MqttNode, NodeFaults
from simulators.river import RiverModel

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

GOOD = {
    "seq": 17,
    "time": "2026-11-21T05:09:56.123Z",
    "values": [{"q": "temperature", "v": 14.213, "u": "Cel"}, {"q": "ph", "v": 7, "u": "pH"}],
}


def encode(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def edited(**changes: object) -> bytes:
    doc = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return encode(doc)


def value_item(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {"q": "ph", "v": 7.5, "u": "pH"}
    for key, value in changes.items():
        if value is ...:
            del item[key]
        else:
            item[key] = value
    return item


# -- parse_payload --------------------------------------------------------------------------


def test_parse_good_payload() -> None:
    payload = encode(GOOD)
    assert parse_payload("t/a", payload, 65536) == ParsedPayload(
        seq=17,
        time="2026-11-21T05:09:56.123000Z",
        values=(Value("temperature", 14.213, "Cel"), Value("ph", 7.0, "pH")),
        text=payload.decode(),
    )


@pytest.mark.parametrize(
    ("stamp", "normalised"),
    [
        ("2026-11-21T05:09:56Z", "2026-11-21T05:09:56.000000Z"),
        ("2026-11-21T05:09:56.1Z", "2026-11-21T05:09:56.100000Z"),
        ("2026-11-21T05:09:56.123456789Z", "2026-11-21T05:09:56.123456Z"),
        ("2026-11-21t05:09:56.5z", "2026-11-21T05:09:56.500000Z"),
        ("2026-11-21T07:09:56.123+02:00", "2026-11-21T05:09:56.123000Z"),
        ("2026-11-20T23:39:56-05:30", "2026-11-21T05:09:56.000000Z"),
        ("2026-11-21T05:09:56+00:00", "2026-11-21T05:09:56.000000Z"),
    ],
)
def test_time_is_normalised_to_utc_microseconds(stamp: str, normalised: str) -> None:
    assert parse_payload("t", edited(time=stamp), 65536).time == normalised


@pytest.mark.parametrize(
    ("payload", "reason", "problem"),
    [
        (b"x" * 70_000, "too-large", "70000 bytes is over the 65536-byte limit"),
        (b"\xff\xfe{}", "not-utf8", "not UTF-8"),
        (b"", "not-json", "not JSON"),
        (b"hello", "not-json", "not JSON"),
        (b'{"seq": 1, "time": "2026-11-21T05:09:56Z", "values": [', "not-json", "not JSON"),
        (b"[" * 60_000 + b"]" * 60_000, "too-large", "over the"),
        (b"[" * 30_000 + b"]" * 30_000, "not-json", "not JSON"),
        (b'{"seq": 1, "seq": 2}', "not-json", "duplicate key 'seq'"),
        (b"[1, 2]", "bad-payload", "must be a JSON object, got list"),
        (b'"text"', "bad-payload", "must be a JSON object, got str"),
        (b"null", "bad-payload", "got NoneType"),
        (edited(seq=...), "bad-payload", "missing 'seq'"),
        (edited(time=...), "bad-payload", "missing 'time'"),
        (edited(values=...), "bad-payload", "missing 'values'"),
        (edited(extra=1), "bad-payload", "unknown key 'extra'"),
        (edited(seq="17"), "bad-payload", "seq must be an integer, got str"),
        (edited(seq=1.0), "bad-payload", "seq must be an integer, got float"),
        (edited(seq=True), "bad-payload", "seq must be an integer, got bool"),
        (edited(seq=-1), "bad-payload", "seq -1 is out of range"),
        (edited(seq=2**63), "bad-payload", "out of range"),
        (edited(time=1763701796), "bad-payload", "time must be a string"),
        (edited(time="yesterday"), "bad-payload", "not an RFC 3339"),
        (edited(time="2026-11-21 05:09:56Z"), "bad-payload", "not an RFC 3339"),
        (edited(time="2026-11-21T05:09:56"), "bad-payload", "not an RFC 3339"),
        (edited(time="2026-02-30T05:09:56Z"), "bad-payload", "not a valid date-time"),
        (edited(time="2026-11-21T25:09:56Z"), "bad-payload", "not a valid date-time"),
        (edited(time="2026-11-21T05:09:56+24:00"), "bad-payload", "invalid UTC offset"),
        (edited(values={}), "bad-payload", "values must be a list, got dict"),
        (edited(values=[]), "bad-payload", "values is empty"),
        (edited(values=[7.5]), "bad-payload", "values[0] must be an object, got float"),
        (edited(values=[value_item(q=...)]), "bad-payload", "values[0] is missing 'q'"),
        (edited(values=[value_item(v=...)]), "bad-payload", "values[0] is missing 'v'"),
        (edited(values=[value_item(u=...)]), "bad-payload", "values[0] is missing 'u'"),
        (edited(values=[value_item(t=1)]), "bad-payload", "values[0] has unknown key 't'"),
        (edited(values=[value_item(q=1)]), "bad-payload", "values[0].q must be a string"),
        (edited(values=[value_item(q="")]), "bad-payload", "values[0].q '' must be 1 to 64"),
        (edited(values=[value_item(u="\n")]), "bad-payload", "values[0].u"),
        (edited(values=[value_item(u=None)]), "bad-payload", "values[0].u must be a string"),
        (edited(values=[value_item(v="7.5")]), "bad-payload", "values[0].v must be a number"),
        (
            edited(values=[value_item(v=True)]),
            "bad-payload",
            "values[0].v must be a number, got bool",
        ),
        (edited(values=[value_item(v=None)]), "bad-payload", "values[0].v must be a number"),
        (edited(values=[value_item(v=10**400)]), "bad-payload", "values[0].v is not a finite"),
        (
            edited(values=[value_item(), value_item(q="do", v=1e999)]),
            "not-json",
            "Infinity is not a JSON number",
        ),
        (
            edited(values=[value_item(), value_item()]),
            "bad-payload",
            "values[1].q 'ph' repeats",
        ),
        (
            b'{"seq":1,"time":"2026-11-21T05:09:56Z","values":[{"q":"ph","v":NaN,"u":"pH"}]}',
            "not-json",
            "NaN is not a JSON number",
        ),
    ],
)
def test_parse_rejects(payload: bytes, reason: str, problem: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload("site/node-1", payload, 65536, sensor="node-1")
    assert isinstance(info.value, ProtocolError)
    assert info.value.reason == reason
    assert info.value.sensor == "node-1"
    assert problem in info.value.problem


def test_errors_name_the_topic_without_a_sensor() -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload("site/node-1", b"{", 100)
    assert info.value.sensor == "site/node-1"


# -- the driver against a real broker ----------------------------------------------------

_ids = itertools.count()


@pytest.fixture
def names() -> tuple[str, str]:
    """A fresh client id and topic prefix per test on the session-wide broker."""
    n = next(_ids)
    return f"riverseal-test-{n}", f"test{n}/site"


class _Longest(random.Random):
    """Always the longest back-off delay, for a test that needs a predictable pause."""

    def uniform(self, a: float, b: float) -> float:
        return b


def make_source(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    *,
    max_bytes: int = 4096,
    backoff: Backoff | None = None,
    reorder_window_s: float = 30.0,
) -> MqttSource:
    host, port = mosquitto
    client_id, prefix = names
    config = MqttConfig(
        host=host,
        port=port,
        client_id=client_id,
        max_payload_bytes=max_bytes,
        reorder_window_s=reorder_window_s,
    )
    sensors = [
        MqttSensorConfig(id="node-1", topic=f"{prefix}/node-1"),
        MqttSensorConfig(id="node-2", topic=f"{prefix}/node-2"),
    ]
    return MqttSource(config, sensors, device_id="unused", backoff=backoff or Backoff(0.05, 0.2))


@pytest.fixture
async def publisher(mosquitto: tuple[str, int]) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mosquitto[0], mosquitto[1]) as client:
        yield client


def payload(seq: int, ph: float = 7.5, t: str = "2026-11-21T05:09:56.123Z") -> bytes:
    return encode({"seq": seq, "time": t, "values": [{"q": "ph", "v": ph, "u": "pH"}]})


async def start(src: MqttSource, sink: RecordingSink) -> asyncio.Task[None]:
    task = asyncio.create_task(src.run(sink), name="mqtt-under-test")
    await sink.wait_for(lambda: src.connected, what="connected")
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_default_client_id_and_topic_clash() -> None:
    sensors = [MqttSensorConfig(id="a", topic="t/a")]
    assert MqttSource(MqttConfig(), sensors, device_id="box7").client_id == "riverseal-box7"
    assert MqttSource(MqttConfig(client_id="x"), sensors, device_id="box7").client_id == "x"
    assert MqttSource(MqttConfig(), sensors, device_id="box7").name == "mqtt"
    with pytest.raises(ConfigError, match="may not share topic filters"):
        MqttSource(MqttConfig(), [*sensors, MqttSensorConfig(id="b", topic="t/a")], device_id="d")


async def test_readings_from_two_nodes(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    src = make_source(mosquitto, names)
    task = await start(src, sink)
    prefix = names[1]
    for seq in range(3):
        await publisher.publish(f"{prefix}/node-1", payload(seq, 7.0 + seq / 10), qos=1)
        await publisher.publish(f"{prefix}/node-2", payload(100 + seq, 8.0), qos=1)
    await sink.wait_for(lambda: len(sink.readings) >= 6)
    await stop(task)
    one = [r for r in sink.readings if r.sensor == "node-1"]
    two = [r for r in sink.readings if r.sensor == "node-2"]
    assert [r.src_seq for r in one] == [0, 1, 2]
    assert [r.src_seq for r in two] == [100, 101, 102]
    assert [r.values for r in one] == [(Value("ph", 7.0 + s / 10, "pH"),) for s in range(3)]
    first = one[0]
    assert first.sensor_time == "2026-11-21T05:09:56.123000Z"
    assert first.raw == payload(0, 7.0).decode()
    assert first.dedup_key == "src_seq:0@2026-11-21T05:09:56.123000Z"
    assert first.received_ns > 0
    assert sink.rejects == []
    assert sink.gaps == []


async def test_malformed_payloads_are_rejected_and_acknowledged(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    src = make_source(mosquitto, names, max_bytes=512)
    task = await start(src, sink)
    topic = f"{names[1]}/node-1"
    bad = [
        b"not json at all",
        b'{"seq": 1, "time": "2026-11-21T05:09:56Z"}',
        edited(seq=True),
        b"\xc3\x28",
        b'{"pad": "' + b"x" * 600 + b'"}',
        payload(0)[:-10],
    ]
    for body in bad:
        await publisher.publish(topic, body, qos=1)
    await publisher.publish(topic, payload(1), qos=1)
    await sink.wait_for(lambda: len(sink.readings) == 1)
    await stop(task)
    assert sink.reject_counts() == {"not-json": 2, "bad-payload": 2, "not-utf8": 1, "too-large": 1}
    assert all(sensor == "node-1" for sensor, _, _ in sink.rejects)
    assert "missing 'values'" in sink.rejects[1][2]
    assert topic in sink.rejects[1][2]
    assert sink.readings[0].src_seq == 1

    # Every message was acknowledged: a new session with the same client id gets none again.
    again = await start(make_source(mosquitto, names, max_bytes=512), sink)
    await publisher.publish(topic, payload(2), qos=1)
    await sink.wait_for(lambda: len(sink.readings) == 2)
    await asyncio.sleep(0.2)
    await stop(again)
    assert len(sink.rejects) == len(bad)
    assert [r.src_seq for r in sink.readings] == [1, 2]


async def test_a_duplicate_is_submitted_but_logged_once(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    src = make_source(mosquitto, names)
    task = await start(src, sink)
    topic = f"{names[1]}/node-1"
    await publisher.publish(topic, payload(5), qos=1)
    await publisher.publish(topic, payload(5), qos=1)
    await publisher.publish(topic, payload(6), qos=1)
    await sink.wait_for(lambda: len(sink.submitted) == 3)
    await stop(task)
    assert sink.returned == [True, False, True]
    assert [r.src_seq for r in sink.readings] == [5, 6]
    assert sink.gaps == []
    assert sink.rejects == []


async def test_sequence_jumps_become_gaps_and_resets_are_accepted(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    # No reorder window: a jump is declared lost at once, before the reading that showed
    # it (tests/gateway/test_mqtt_redelivery.py has the window).
    src = make_source(mosquitto, names, reorder_window_s=0)
    task = await start(src, sink)
    one, two = f"{names[1]}/node-1", f"{names[1]}/node-2"
    for topic, seq in [(one, 0), (one, 1), (two, 40), (one, 5), (one, 6), (one, 2), (two, 41)]:
        await publisher.publish(topic, payload(seq), qos=1)
    await sink.wait_for(lambda: len(sink.submitted) == 7)
    await stop(task)
    seqs = [(e.sensor, e.src_seq) if isinstance(e, Reading) else e for e in sink.events]
    by_seq = {(r.sensor, r.src_seq): r for r in sink.readings}
    gap = Gap(
        "node-1",
        "source sequence gap",
        from_ns=by_seq[("node-1", 1)].received_ns,
        to_ns=by_seq[("node-1", 5)].received_ns,
        src_seq_from=2,
        src_seq_to=4,
    )
    # node-2 started at 40: the first seq seen after a start is no gap; 2 < 6 is a reset, not a gap
    assert seqs == [
        ("node-1", 0),
        ("node-1", 1),
        ("node-2", 40),
        gap,
        ("node-1", 5),
        ("node-1", 6),
        ("node-1", 2),
        ("node-2", 41),
    ]


async def test_a_restarted_node_reusing_seqs_loses_no_reading(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    src = make_source(mosquitto, names)
    task = await start(src, sink)
    topic = f"{names[1]}/node-1"
    first, second = payload(0, t="2026-11-21T05:00:00Z"), payload(1, t="2026-11-21T05:01:00Z")
    for body in (first, second, first, payload(0, t="2026-11-21T05:02:00Z")):
        await publisher.publish(topic, body, qos=1)
    await sink.wait_for(lambda: len(sink.submitted) == 4)
    await stop(task)
    # the redelivered message is a duplicate; the restarted node's seq 0 (new time) is logged
    assert sink.returned == [True, True, False, True]
    assert sink.rejects == []


async def test_ack_waits_for_the_commit(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    """A message whose commit never finished is redelivered to the next session."""
    topic = f"{names[1]}/node-1"
    sink.gate = asyncio.Event()  # the disk is slow: submit blocks
    first = await start(make_source(mosquitto, names), sink)
    await publisher.publish(topic, payload(3, 6.5), qos=1)
    await sink.wait_for(lambda: len(sink.submitted) == 1)
    await asyncio.sleep(0.1)  # time for an (unwanted) PUBACK to reach the broker
    await stop(first)  # the source dies with the submit unfinished
    assert sink.readings == []

    sink.gate = None
    second = await start(make_source(mosquitto, names), sink)
    await sink.wait_for(lambda: len(sink.readings) == 1, what="redelivery")
    await stop(second)
    assert sink.readings[0].src_seq == 3
    assert sink.readings[0].values == (Value("ph", 6.5, "pH"),)


async def test_messages_queued_while_offline_arrive_after_reconnect(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    topic = f"{names[1]}/node-2"
    await stop(await start(make_source(mosquitto, names), sink))  # session and subscription exist
    for seq in range(3):
        await publisher.publish(
            topic, payload(seq), qos=1
        )  # nobody connected: the broker keeps them
    task = await start(make_source(mosquitto, names), sink)
    await sink.wait_for(lambda: len(sink.readings) == 3)
    await stop(task)
    assert [r.src_seq for r in sink.readings] == [0, 1, 2]


async def test_reconnects_and_subscribes_again_after_losing_the_session(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    src = make_source(mosquitto, names, backoff=Backoff(0.3, 0.3, rng=_Longest()))
    task = await start(src, sink)
    topic = f"{names[1]}/node-1"
    await publisher.publish(topic, payload(0), qos=1)
    await sink.wait_for(lambda: len(sink.readings) == 1)
    # Another client with our id and a clean session takes the connection over and
    # wipes the session (subscriptions included); ours must reconnect and subscribe
    # again. It leaves before our source comes back 0.3 s later.
    async with aiomqtt.Client(mosquitto[0], mosquitto[1], identifier=names[0], clean_session=True):
        pass
    await sink.wait_for(lambda: src.connections == 2 and src.connected, what="reconnect")
    assert not task.done()
    await publisher.publish(topic, payload(1), qos=1)
    await sink.wait_for(lambda: len(sink.readings) == 2)
    await stop(task)
    assert [r.src_seq for r in sink.readings] == [0, 1]


async def test_unreachable_broker_is_retried(names: tuple[str, str], sink: RecordingSink) -> None:
    src = make_source(("127.0.0.1", 1), names)
    task = asyncio.create_task(src.run(sink))
    await asyncio.sleep(0.3)
    assert not task.done()
    assert not src.connected
    await stop(task)


async def test_cancel_leaves_no_tasks_behind(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    before = asyncio.all_tasks()
    task = await start(make_source(mosquitto, names), sink)
    await publisher.publish(f"{names[1]}/node-1", payload(0), qos=1)
    await sink.wait_for(lambda: len(sink.readings) == 1)
    assert len(asyncio.all_tasks() - before) >= 2  # the run task and the client's own
    await stop(task)
    await asyncio.sleep(0.05)
    assert asyncio.all_tasks() - before == set()


async def test_simulated_node_end_to_end(
    mosquitto: tuple[str, int], names: tuple[str, str], sink: RecordingSink
) -> None:
    """The contract with simulators/mqtt_node.py: faults included, nothing lost, no gaps."""
    now = 1_767_272_400.0
    river = RiverModel(seed=3)
    node = MqttNode(
        mosquitto[0],
        mosquitto[1],
        f"{names[1]}/node-1",
        ["temperature", "ph", "do_sat"],
        river,
        interval_s=0.02,
        node_id=f"{names[0]}-node",
        malformed_every=3,
        duplicate_every=4,
        clock=lambda: now,
    )
    task = await start(make_source(mosquitto, names), sink)
    await node.run(count=8)
    await sink.wait_for(lambda: len(sink.submitted) == 10 and len(sink.rejects) == 2)
    await stop(task)
    state = river.sample(now)
    expected = (
        Value("temperature", round(state.temperature_c, 3), "Cel"),
        Value("ph", round(state.ph, 3), "pH"),
        Value("do_sat", round(state.do_sat_pct, 1), "/100"),
    )
    assert [r.src_seq for r in sink.readings] == list(range(8))
    assert all(r.values == expected for r in sink.readings)
    assert sink.returned.count(False) == 2  # seqs 3 and 7 were sent twice
    assert sink.reject_counts() == {"not-utf8": 2}  # after seqs 2 and 5
    assert sink.gaps == []


async def test_messages_waiting_at_connect_are_not_acknowledged_before_the_commit(
    mosquitto: tuple[str, int],
    names: tuple[str, str],
    publisher: aiomqtt.Client,
    sink: RecordingSink,
) -> None:
    """The broker redelivers the moment the session resumes: manual acks must already be on."""
    topic = f"{names[1]}/node-1"
    await stop(await start(make_source(mosquitto, names), sink))  # the session exists
    for seq in range(3):
        await publisher.publish(topic, payload(seq), qos=1)  # queued while we are away
    sink.gate = asyncio.Event()  # nothing commits
    first = await start(make_source(mosquitto, names), sink)
    await sink.wait_for(lambda: len(sink.submitted) == 3)
    await asyncio.sleep(0.1)  # time for an (unwanted) PUBACK to reach the broker
    await stop(first)
    assert sink.readings == []
    sink.gate = None
    second = await start(make_source(mosquitto, names), sink)
    await sink.wait_for(lambda: len(sink.readings) == 3, what="redelivery")
    await stop(second)
    assert [r.src_seq for r in sink.readings] == [0, 1, 2]


async def test_simulated_senml_nodes_through_one_template_sensor(
    mosquitto: tuple[str, int], names: tuple[str, str], sink: RecordingSink
) -> None:
    """Two SenML nodes, one `{id}` sensor; garbage rejected, lost samples leave no gap."""
    river = RiverModel(seed=5)
    prefix = names[1]
    nodes = [
        MqttNode(
            mosquitto[0],
            mosquitto[1],
            f"{prefix}/{nid}/senml",
            ["temperature", "ec"],
            river,
            interval_s=0.02,
            node_id=f"{names[0]}-{nid}",
            format="senml",
            faults=NodeFaults(garbage_every=4, lost_every=5),
        )
        for nid in ("w1", "w2")
    ]
    config = MqttConfig(host=mosquitto[0], port=mosquitto[1], client_id=names[0])
    sensor = MqttSensorConfig(id="weir-{id}", topic=f"{prefix}/{{id}}/senml", format="senml")
    src = MqttSource(config, [sensor], device_id="d", backoff=Backoff(0.05, 0.2))
    task = await start(src, sink)
    await asyncio.gather(*(n.run(count=10) for n in nodes))
    await sink.wait_for(lambda: len(sink.readings) == 16 and len(sink.rejects) == 4)
    await stop(task)
    for nid in ("w1", "w2"):
        mine = [r for r in sink.readings if r.sensor == f"weir-{nid}"]
        assert len(mine) == 8  # samples 4 and 9 were lost
        assert all([v.quantity for v in r.values] == ["temperature", "ec"] for r in mine)
        assert all(r.values[1].unit == "uS/cm" for r in mine)
    assert {reason for _, reason, _ in sink.rejects} <= {"not-json", "not-utf8", "bad-senml"}
    assert sink.gaps == []


async def test_a_lost_json_sample_becomes_a_gap(
    mosquitto: tuple[str, int], names: tuple[str, str], sink: RecordingSink
) -> None:
    node = MqttNode(
        mosquitto[0],
        mosquitto[1],
        f"{names[1]}/node-1",
        ["ph"],
        RiverModel(seed=1),
        interval_s=0.02,
        node_id=f"{names[0]}-node",
        faults=NodeFaults(lost_every=4),
    )
    task = await start(make_source(mosquitto, names), sink)
    await node.run(count=6)
    await sink.wait_for(lambda: len(sink.readings) == 5)
    await stop(task)
    assert [r.src_seq for r in sink.readings] == [0, 1, 2, 4, 5]
    assert [(g.src_seq_from, g.src_seq_to) for g in sink.gaps] == [(3, 3)]

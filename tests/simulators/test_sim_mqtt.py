import asyncio
import itertools
import json
import re

import aiomqtt
import pytest

from simulators.mqtt_node import QUANTITIES, MqttNode, NodeFaults, rfc3339
from simulators.river import RiverModel
from tests.servers.broker import Broker, TlsBroker

NOW = 1_795_237_796.123  # 2026-11-21T05:09:56.123Z
RIVER = RiverModel(seed=3)
TOPIC = "riverseal/site1/node1"
ALL = list(QUANTITIES)


def node(port: int = 1883, **kwargs: object) -> MqttNode:
    options: dict[str, object] = {"interval_s": 0.02, "node_id": "node1", "seed": 1}
    options.update(kwargs)
    return MqttNode("127.0.0.1", port, TOPIC, ALL, RIVER, **options)  # type: ignore[arg-type]


def test_rfc3339_is_utc_with_milliseconds_and_z() -> None:
    assert rfc3339(NOW) == "2026-11-21T05:09:56.123Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_payload_schema() -> None:
    body = json.loads(node().payload(7, NOW))
    assert list(body) == ["seq", "time", "values"]
    assert body["seq"] == 7
    assert body["time"] == "2026-11-21T05:09:56.123Z"
    state = RIVER.sample(NOW)
    assert body["values"] == [
        {"q": "temperature", "v": round(state.temperature_c, 3), "u": "Cel"},
        {"q": "ph", "v": round(state.ph, 3), "u": "pH"},
        {"q": "do", "v": round(state.do_mg_l, 2), "u": "mg/l"},
        {"q": "do_sat", "v": round(state.do_sat_pct, 1), "u": "/100"},
        {"q": "ec", "v": round(state.ec_us_cm, 1), "u": "uS/cm"},
        {"q": "orp", "v": round(state.orp_mv, 1), "u": "mV"},
        {"q": "turbidity", "v": round(state.turbidity_ntu, 2), "u": "NTU"},
        {"q": "chlorophyll", "v": round(state.chlorophyll_ug_l, 2), "u": "ug/l"},
    ]


def test_payload_keeps_the_configured_quantities_and_order() -> None:
    n = MqttNode("h", 1, TOPIC, ["turbidity", "temperature"], RIVER)
    body = json.loads(n.payload(0, NOW))
    assert [v["q"] for v in body["values"]] == ["turbidity", "temperature"]
    assert re.fullmatch(rb'\{"seq":0,"time":"[^"]+","values":\[.*\]\}', n.payload(0, NOW))


def test_fault_plan_is_pure_and_deterministic() -> None:
    n = node(malformed_every=2, duplicate_every=3)
    plans = [n.messages(seq, NOW) for seq in range(6)]
    assert [len(p) for p in plans] == [1, 2, 2, 2, 1, 3]
    assert plans[2][0] == plans[2][1] == n.payload(2, NOW)
    bad = plans[1][1]
    with pytest.raises(ValueError):  # JSON and UTF-8 errors are both ValueError
        json.loads(bad)
    assert n.messages(1, NOW) == plans[1]


@pytest.mark.parametrize(
    "kwargs",
    [{"quantities": []}, {"quantities": ["salinity"]}, {"interval_s": -1}, {"malformed_every": -1}],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"quantities": ALL, **kwargs}
    with pytest.raises(ValueError):
        MqttNode("h", 1, TOPIC, river=RIVER, **options)  # type: ignore[arg-type]


async def collect(broker: Broker, started: asyncio.Event, want: int) -> list[bytes]:
    got: list[bytes] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-sub") as sub:
        await sub.subscribe(TOPIC, qos=1)
        started.set()
        async with asyncio.timeout(10):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                assert message.qos == 1
                got.append(message.payload)
                if len(got) == want:
                    break
    return got


@pytest.mark.broker
async def test_publishes_valid_payloads_to_a_real_broker(mosquitto: Broker) -> None:
    clock = itertools.count(NOW, 60.0).__next__
    n = node(mosquitto.port, clock=clock)
    started = asyncio.Event()
    subscriber = asyncio.create_task(collect(mosquitto, started, 5))
    await started.wait()
    await asyncio.wait_for(n.run(count=5), 10)
    got = await subscriber
    assert got == [n.payload(seq, NOW + 60 * seq) for seq in range(5)]


@pytest.mark.broker
async def test_malformed_and_duplicate_messages_reach_the_broker(mosquitto: Broker) -> None:
    n = node(mosquitto.port, malformed_every=2, duplicate_every=3, clock=lambda: NOW)
    expected = [p for seq in range(6) for p in n.messages(seq, NOW)]
    started = asyncio.Event()
    subscriber = asyncio.create_task(collect(mosquitto, started, len(expected)))
    await started.wait()
    await asyncio.wait_for(n.run(count=6), 10)
    assert await subscriber == expected


@pytest.mark.broker
async def test_node_reconnects_after_a_broker_restart(mosquitto: Broker) -> None:
    count = 60
    n = node(mosquitto.port, interval_s=0.05)
    started = asyncio.Event()
    before = asyncio.create_task(collect(mosquitto, started, 5))
    await started.wait()
    run = asyncio.create_task(n.run(count=count))
    assert len(await before) == 5

    await asyncio.to_thread(mosquitto.stop)
    await asyncio.to_thread(mosquitto.start)
    seqs: list[int] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-sub2") as sub:
        await sub.subscribe(TOPIC, qos=1)
        async with asyncio.timeout(20):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                seqs.append(json.loads(message.payload)["seq"])
                if seqs[-1] == count - 1:
                    break
    await asyncio.wait_for(run, 5)
    # After the restart the sequence carries on without gaps (a resend may repeat one).
    assert sorted(set(seqs)) == list(range(seqs[0], count))
    assert seqs[0] >= 5  # 5 itself comes again if its PUBACK was lost in the restart


def test_senml_pack() -> None:
    n = MqttNode(
        "h", 1, TOPIC, ["temperature", "ec", "do_sat"], RIVER, node_id="w3", format="senml"
    )
    pack = json.loads(n.payload(4, NOW))
    state = RIVER.sample(NOW)
    assert pack == [
        {
            "bn": "urn:dev:riverseal:w3:",
            "bt": 1_795_237_796.123,
            "n": "temperature",
            "u": "Cel",
            "v": round(state.temperature_c, 3),
        },
        {"n": "ec", "u": "S/m", "v": round(state.ec_us_cm * 1e-4, 5)},
        {"n": "do_sat", "u": "/100", "v": round(state.do_sat_pct, 1)},
    ]


def test_value_faults_spike_and_stuck() -> None:
    plain = node()
    spiky = node(faults=NodeFaults(spike_every=3))
    stuck = node(faults=NodeFaults(stuck_every=4, stuck_for=2), interval_s=60.0)
    assert spiky.values(0, NOW) == plain.values(0, NOW)
    spiked = dict(spiky.values(2, NOW))
    normal = dict(plain.values(2, NOW))
    changed = [q for q in normal if spiked[q] != normal[q]]
    assert len(changed) == 1
    assert spiked[changed[0]] == pytest.approx(5 * normal[changed[0]])
    # seq 3 starts a stuck run: seqs 4 and 5, sampled a minute apart, repeat seq 3's values
    at = [NOW + 60 * i for i in range(7)]
    assert stuck.values(4, at[4]) == stuck.values(3, at[3]) == stuck.values(5, at[5])
    assert stuck.values(6, at[6]) != stuck.values(3, at[3])
    assert stuck.values(3, at[3]) != stuck.values(2, at[2])


def test_payload_faults_lost_truncated_garbage() -> None:
    n = node(faults=NodeFaults(lost_every=5, truncated_every=2, garbage_every=3))
    assert n.messages(4, NOW) == []  # lost: seq consumed, nothing sent
    good, cut = n.messages(1, NOW)
    assert good == n.payload(1, NOW)
    assert good.startswith(cut) and len(cut) < len(good)
    cut.decode()  # still UTF-8
    with pytest.raises(ValueError):
        json.loads(cut)
    good, garbage = n.messages(2, NOW)
    assert 1 <= len(garbage) <= 64
    assert n.messages(2, NOW)[1] == garbage  # deterministic
    with pytest.raises(ValueError):
        NodeFaults(spike_every=-1)


@pytest.mark.broker
async def test_nodes_as_context_managers_with_dropout_and_disconnect(mosquitto: Broker) -> None:
    faults = NodeFaults(dropout_every=3, dropout_for=5, disconnect_every=4)
    nodes = [
        MqttNode(
            mosquitto.host,
            mosquitto.port,
            f"station/n{i}",
            ["ph"],
            RIVER,
            interval_s=0.02,
            node_id=f"n{i}",
            format="senml" if i % 2 else "json",
            faults=faults,
        )
        for i in range(3)
    ]
    got: dict[str, list[bytes]] = {f"station/n{i}": [] for i in range(3)}
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="station-sub") as sub:
        await sub.subscribe("station/+", qos=1)
        async with nodes[0], nodes[1], nodes[2]:
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    got[message.topic.value].append(message.payload)
                    if all(len(v) >= 10 for v in got.values()):
                        break
    assert all(n.connections >= 3 for n in nodes)  # dropped after seqs 3 and 7
    assert [json.loads(p)["seq"] for p in got["station/n0"][:10]] == list(range(10))
    assert all(isinstance(json.loads(p), list) for p in got["station/n1"])


@pytest.mark.broker
async def test_node_publishes_over_tls_with_credentials(mosquitto_tls: TlsBroker) -> None:
    cert, key = mosquitto_tls.client_cert
    n = MqttNode(
        mosquitto_tls.host,
        mosquitto_tls.mtls_port,
        "tls/node",
        ["ph"],
        RIVER,
        interval_s=0.01,
        node_id="tls-node",
        username=mosquitto_tls.username,
        password=mosquitto_tls.password,
        tls_ca=mosquitto_tls.ca,
        tls_cert=cert,
        tls_key=key,
    )
    await asyncio.wait_for(n.run(count=3), 10)
    assert n.published == 3
    assert n.connections == 1


@pytest.mark.broker
def test_cli_publishes_senml(mosquitto: Broker) -> None:
    import subprocess
    import sys

    async def run() -> list[bytes]:
        started = asyncio.Event()
        sub = asyncio.create_task(collect(mosquitto, started, 3))
        await started.wait()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.cli", "mqtt", "--port", str(mosquitto.port),
            "--topic", TOPIC, "--interval", "0.02", "--count", "3", "--format", "senml",
            "--quantities", "ph,ec",
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        return await sub

    packs = [json.loads(p) for p in asyncio.run(run())]
    assert [[r["n"] for r in pack] for pack in packs] == [["ph", "ec"]] * 3
    assert all(pack[1]["u"] == "S/m" and "bt" in pack[0] for pack in packs)

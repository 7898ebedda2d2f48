"""MQTT nodes for the fault tests: paced QoS 1 publishers that keep every PUBACKed seq.

A message counts as acknowledged once the broker's PUBACK for it has arrived; from then on
the broker, and behind it the gateway, answer for it. Each node publishes the riverseal
JSON contract (docs/mqtt-payloads.md) with ``seq`` 0, 1, 2, ... and keeps trying (a new
connection after a capped pause) while its broker is away; a message whose PUBACK never
came is sent again, same bytes, on the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiomqtt

__all__ = ["Node", "RawNode", "payload", "run_nodes"]

_WINDOW = 100
"""Messages of one node awaiting their PUBACK at once (the client's in-flight window)."""
_EPOCH = datetime(2026, 12, 1, tzinfo=UTC)


def payload(seq: int) -> bytes:
    """Message ``seq`` of a node, stamped by the node's clock one millisecond per message."""
    sent = _EPOCH + timedelta(milliseconds=seq)
    return json.dumps(
        {
            "seq": seq,
            "time": sent.strftime("%Y-%m-%dT%H:%M:%S.") + f"{sent.microsecond // 1000:03d}Z",
            "values": [{"q": "temperature", "v": 10.0 + (seq % 100) / 10, "u": "Cel"}],
        }
    ).encode()


@dataclass
class Node:
    """One publisher: its topic, and the seqs the broker acknowledged."""

    name: str
    topic: str
    acked: set[int] = field(default_factory=set)
    sent: int = 0
    """Messages handed to the client (acknowledged or not)."""
    reconnects: int = 0

    async def run(self, host: str, port: int, rate: float, stop: asyncio.Event) -> None:
        """Publish ``rate`` messages/s until ``stop``, reconnecting while the broker is away."""
        unacked: set[int] = set()
        nxt = 0
        start = time.monotonic()
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    host,
                    port,
                    identifier=f"pub-{self.name}",
                    max_inflight_messages=200,
                    timeout=5,
                ) as client:
                    window = asyncio.Semaphore(_WINDOW)

                    async def one(seq: int, window: asyncio.Semaphore = window) -> None:
                        try:
                            await client.publish(self.topic, payload(seq), qos=1)
                        finally:
                            window.release()
                        unacked.discard(seq)
                        self.acked.add(seq)

                    async with asyncio.TaskGroup() as tg:
                        for seq in sorted(unacked):  # never acknowledged: send again
                            await window.acquire()
                            tg.create_task(one(seq))
                        while not stop.is_set():
                            due = start + nxt / rate
                            delay = due - time.monotonic()
                            if delay > 0:
                                await asyncio.sleep(delay)
                            # Catch up in bursts, not one task per late message at once.
                            for _ in range(50):
                                if time.monotonic() < start + nxt / rate:
                                    break
                                await window.acquire()
                                unacked.add(nxt)
                                tg.create_task(one(nxt))
                                nxt += 1
                                self.sent += 1
            except* (aiomqtt.MqttError, OSError):
                self.reconnects += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)


def _remaining(n: int) -> bytes:
    """MQTT's variable-length Remaining Length (MQTT 3.1.1 §2.2.3)."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


class RawNode(Node):
    """A node that speaks MQTT 3.1.1 itself over one socket: CONNECT, then QoS 1 PUBLISHes
    and the broker's PUBACKs, a few microseconds of Python each (a paho client costs a
    couple of hundred, too much beside a gateway at 2,000 readings/s on two busy cores).
    It does not reconnect: a broker that goes away is a failure of the test using it."""

    async def run(self, host: str, port: int, rate: float, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + _string(f"raw-{self.name}")  # clean, no keepalive
        writer.write(b"\x10" + _remaining(len(body)) + body)
        connack = await reader.readexactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"{self.name}: CONNACK {connack.hex()}")
        outstanding: dict[int, int] = {}  # packet id -> seq
        room = asyncio.Semaphore(_WINDOW)
        topic = _string(self.topic)

        async def pubacks() -> None:
            while True:
                ack = await reader.readexactly(4)
                if ack[0] != 0x40:
                    raise ConnectionError(f"{self.name}: expected a PUBACK, got {ack.hex()}")
                self.acked.add(outstanding.pop(int.from_bytes(ack[2:4], "big")))
                room.release()

        acks = asyncio.create_task(pubacks(), name=f"pubacks[{self.name}]")
        try:
            start, seq = time.monotonic(), 0
            while not stop.is_set():
                delay = start + seq / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for _ in range(50):  # catch up in bursts
                    if time.monotonic() < start + seq / rate:
                        break
                    await room.acquire()
                    pid = seq % 65535 + 1
                    outstanding[pid] = seq
                    rest = topic + pid.to_bytes(2, "big") + payload(seq)
                    writer.write(b"\x32" + _remaining(len(rest)) + rest)
                    seq += 1
                    self.sent += 1
                await writer.drain()
            deadline = time.monotonic() + 30
            while outstanding:  # every message sent gets its PUBACK before we leave
                if acks.done():
                    acks.result()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: {len(outstanding)} PUBACKs never came")
                await asyncio.sleep(0.01)
        finally:
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.IncompleteReadError):
                await acks
            writer.write(b"\xe0\x00")
            writer.close()


async def run_nodes(
    nodes: list[Node], host: str, port: int, rate_each: float, stop: asyncio.Event
) -> None:
    async with asyncio.TaskGroup() as tg:
        for node in nodes:
            tg.create_task(node.run(host, port, rate_each, stop), name=f"node[{node.name}]")

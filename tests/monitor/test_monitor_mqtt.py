"""Two monitor instances, one shared subscription, over TLS: each announcement to one.

Six boxes (signed records and tiles made with the verifier's primitives) are
served by a real nginx; two ``Monitor`` instances in one MQTT 5 group subscribe
to a real Mosquitto over TLS with a password. Each box's checkpoint, announced
once, is verified by exactly one of them, and both get some: the broker splits
the boxes, not our code.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
from pathlib import Path

import aiomqtt

from ledger_client.note import Signer
from riverseal_monitor.config import load_config
from riverseal_monitor.monitor import Monitor
from riverseal_monitor.state_sqlite import SqliteState
from tests.monitor.test_monitor_follow import Box
from tests.servers.broker import TlsBroker
from tests.servers.web_server import WebServer

BOXES = 6


async def test_two_instances_split_the_announcements(
    tmp_path: Path, web_server: WebServer, mosquitto_tls: TlsBroker
) -> None:
    b = mosquitto_tls
    boxes = []
    for k in range(BOXES):
        box = Box(web_server.root / f"box-{k}", Signer.generate(f"riverseal/rs-{k:012x}"))
        box.boot(0, {"a": 15})
        box.reading(1, "a", 7.0)
        boxes.append(box)
    text = (
        "[monitor]\npoll_interval_s = 3600\n"  # the start-up poll finds nothing yet
        f'[broker]\nhost = "{b.host}"\nport = {b.port}\ngroup = "regulators"\n'
        f'tls_ca = "{b.ca}"\nusername = "{b.username}"\npassword = "{b.password}"\n'
        "retry_max_seconds = 1\n"
    ) + "".join(
        f'[[box]]\norigin = "{x.signer.name}"\nvkey = "{x.signer.verifier().to_vkey()}"\n'
        f'url = "{web_server.url}/box-{k}"\n'
        for k, x in enumerate(boxes)
    )
    monitors: list[Monitor] = []
    tasks: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack:
        for n in range(2):
            d = tmp_path / f"monitor-{n}"
            d.mkdir()
            (d / "monitor.toml").write_text(text)
            cfg = load_config(d / "monitor.toml")
            state = await stack.enter_async_context(SqliteState(cfg.state))
            mon = await stack.enter_async_context(Monitor(cfg, state, out=io.StringIO()))
            monitors.append(mon)
            tasks.append(asyncio.create_task(mon.run()))
        try:
            await asyncio.sleep(2)  # both subscribed, the start-up polls done
            context = ssl.create_default_context(cafile=str(b.ca))
            async with aiomqtt.Client(
                b.host, b.port, username=b.username, password=b.password, tls_context=context
            ) as client:
                for box in boxes:
                    topic = f"riverseal/{box.device}/checkpoint"
                    await client.publish(topic, box.publish(), qos=1, retain=True)

            def verified() -> list[set[str]]:
                return [{o for o, x in m.boxes.items() if x.follower.size == 2} for m in monitors]

            async with asyncio.timeout(20):
                while len(verified()[0] | verified()[1]) < BOXES:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a second delivery would show by now
            first, second = verified()
            assert first.isdisjoint(second), (first, second)
            assert first and second, "the broker gave every box to one instance"
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

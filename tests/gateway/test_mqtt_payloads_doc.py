"""docs/mqtt-payloads.md is true: every example runs through the gateway's own code.

The document's configuration block (between ``<!-- mqtt-config:start -->`` and
``<!-- mqtt-config:end -->``) is loaded with ``parse_config``. Each example
(between ``<!-- mqtt-example:NAME:start -->`` and ``…:end -->``) is a shell
block — ``# arrives <time>`` and a ``mosquitto_pub`` command — and a text block
of what the gateway did with it. Here every example, in document order, is
made an ``aiomqtt.Message`` (the object the broker connection yields) with the
command's topic and payload, handed to ``MqttSource`` under a clock reading the
arrival time, and committed through the daemon's ``Ingest`` into a ``Log`` on a
``Store`` — one fresh log for the whole document, signed with box A's test key
(docs/bundle-format.md §12). What it logged (each new entry's record, as
signed) and what it said (the log lines of the MQTT source and of ingest) must
be the text block, line for line.

The payloads are the document's; the text blocks are generated. After a
deliberate change of the gateway, regenerate them (and review the diff):

    .venv/bin/python tests/gateway/test_mqtt_payloads_doc.py --write
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest

from gateway.config import LogConfig, MqttConfig, parse_config
from gateway.drivers.mqtt.payload import MAX_RAW_CHARS, PayloadError, decode
from gateway.drivers.mqtt.source import MqttSource, readings_of
from gateway.ingest import Ingest
from gateway.keys import DeviceKey, device_id_for
from gateway.log import Log
from gateway.qc import QcEngine
from gateway.store import Store
from ledger_client.note import Signer
from ledger_client.records import parse_entry

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "mqtt-payloads.md"
SEED = bytes(range(0x20))
"""Box A's test key seed (docs/bundle-format.md §12): never use it for anything real."""
LOGGERS = ("gateway.drivers.mqtt.source", "gateway.ingest")
"""Whose log lines an example shows."""

_CONFIG = re.compile(
    r"<!-- mqtt-config:start -->\n```toml\n(.*?)```\n<!-- mqtt-config:end -->", re.S
)
_EXAMPLE = re.compile(
    r"(?P<head><!-- mqtt-example:(?P<name>[\w-]+):start -->\n"
    r"```sh\n# arrives (?P<arrives>\S+)\n(?P<command>mosquitto_pub [^\n]*)\n```\n"
    r".*?```text\n)(?P<result>.*?)(?P<tail>```\n<!-- mqtt-example:(?P=name):end -->)",
    re.S,
)


@dataclass(frozen=True)
class Example:
    name: str
    arrives_ns: int
    topic: str
    payload: bytes
    result: str


def _ns(text: str) -> int:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"arrival time {text!r} needs a zone"
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def _publish(command: str) -> tuple[str, bytes]:
    """Topic and payload of ``mosquitto_pub -q 1 -t TOPIC -m PAYLOAD``."""
    words = shlex.split(command)
    assert words[:3] == ["mosquitto_pub", "-q", "1"], command
    options = dict(zip(words[3::2], words[4::2], strict=True))
    assert set(options) == {"-t", "-m"}, command
    return options["-t"], options["-m"].encode()


def config_text(doc: str) -> str:
    (text,) = _CONFIG.findall(doc)
    return str(text)


def examples(doc: str) -> list[Example]:
    out = []
    for m in _EXAMPLE.finditer(doc):
        topic, payload = _publish(m["command"])
        out.append(Example(m["name"], _ns(m["arrives"]), topic, payload, m["result"]))
    return out


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"log {record.levelname}: {record.getMessage()}")


@dataclass
class _Clock:
    now_ns: int = 0

    def __call__(self) -> int:
        return self.now_ns


async def _run(doc: str, work: Path) -> dict[str, str]:
    """Every example through MqttSource, Ingest and Log: its result text, by name."""
    cfg = parse_config("[device]\n" + config_text(doc), work / "gateway.toml")
    assert isinstance(cfg.mqtt, MqttConfig)
    device = device_id_for(Signer.from_seed("riverseal/x", SEED).public_key)
    key = DeviceKey(device, Signer.from_seed(f"riverseal/{device}", SEED))
    clock = _Clock()
    handler = _Lines()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    results: dict[str, str] = {}
    async with Store(work / "log.sqlite") as store:
        log = Log(store, key, clock=clock, clock_state=lambda: "synced", qc=QcEngine(cfg.qc))
        await log.open()
        # The writer's clock stands still, so no commit window could ever close: none.
        ingest = Ingest(log, LogConfig(commit_window_s=0.0), monotonic=lambda: 0.0)
        writer = asyncio.create_task(ingest.run())
        mqtt = MqttSource(
            cfg.mqtt,
            [s for s in cfg.sensors if s.driver == "mqtt"],
            device_id=device,
            clock=clock,
        )
        for lg in loggers:
            lg.addHandler(handler)
            lg.setLevel(logging.DEBUG)
            lg.propagate = False
        try:
            for mid, ex in enumerate(examples(doc), start=1):
                clock.now_ns = ex.arrives_ns
                first = log.size
                handler.lines.clear()
                message = aiomqtt.Message(ex.topic, ex.payload, 1, False, mid, None)
                for job in mqtt._handle(message, ingest):
                    await job
                lines = [
                    f"entry {row.index}: {parse_entry(row.data).signed.decode()}"
                    async for row in store.entries(first, log.size - 1)
                ]
                results[ex.name] = "\n".join(lines + handler.lines) + "\n"
        finally:
            for lg, (level, propagate) in zip(loggers, saved, strict=True):
                lg.removeHandler(handler)
                lg.setLevel(level)
                lg.propagate = propagate
            await ingest.close()
            await writer
    return results


def generate(doc: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_run(doc, Path(tmp)))


def write() -> None:
    doc = DOC.read_text(encoding="utf-8")
    results = generate(doc)

    def swap(m: re.Match[str]) -> str:
        return m["head"] + results[m["name"]] + m["tail"]

    DOC.write_text(_EXAMPLE.sub(swap, doc), encoding="utf-8")


# --- the tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_example_is_found(doc: str) -> None:
    names = [ex.name for ex in examples(doc)]
    assert len(names) == doc.count("<!-- mqtt-example:") // 2 >= 12
    assert len(set(names)) == len(names)


async def test_every_example_is_what_the_gateway_does_with_it(doc: str, tmp_path: Path) -> None:
    results = await _run(doc, tmp_path)
    assert {ex.name: ex.result for ex in examples(doc)} == results


async def test_every_reject_label_of_the_table_occurs(doc: str, tmp_path: Path) -> None:
    """§7 lists every label the MQTT source rejects with: the examples show five of
    them, ``decode`` gives the two the document cannot print, and the source names
    the last one when the broker refuses a subscription."""
    table = doc[doc.index("## 7. Rejected messages") : doc.index("## 8. Examples")]
    labels = re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M)
    assert labels == [
        "too-large",
        "not-utf8",
        "not-json",
        "bad-payload",
        "bad-senml",
        "bad-topic",
        "no-sensor",
        "subscribe-refused",
    ]
    shown = set(
        re.findall(r"rejected \(([a-z0-9-]+)\)", "".join((await _run(doc, tmp_path)).values()))
    )
    assert shown == {"not-json", "bad-payload", "bad-senml", "bad-topic", "no-sensor"}
    limit = MqttConfig().max_payload_bytes
    for payload, reason in ((b"[" * (limit + 1), "too-large"), (b'{"seq":\xff}', "not-utf8")):
        with pytest.raises(PayloadError) as caught:
            decode("json", payload, sensor="node-7", max_bytes=limit, received_ns=0)
        assert caught.value.reason == reason
    source = (ROOT / "gateway" / "drivers" / "mqtt" / "source.py").read_text(encoding="utf-8")
    assert '"subscribe-refused"' in source


def test_the_limits_are_the_gateways(doc: str) -> None:
    said = " ".join(doc.split())
    assert MqttConfig().max_payload_bytes == 65_536
    assert "`mqtt.max_payload_bytes`, default 65,536 bytes" in said
    assert MAX_RAW_CHARS == 1024
    assert "payloads of at most 1,024 characters" in said
    assert MqttConfig().max_inflight == 1000
    assert "`mqtt.max_inflight`, default 1000" in said


def test_a_payload_over_the_raw_limit_is_logged_without_raw() -> None:
    """§5: ``raw`` holds payloads of at most MAX_RAW_CHARS characters."""

    def payload(n: int) -> bytes:
        values = ",".join(f'{{"q":"q{i}","v":{i},"u":"1"}}' for i in range(n))
        return f'{{"seq":1,"time":"2026-03-01T00:00:00Z","values":[{values}]}}'.encode()

    for n, kept in ((2, True), (40, False)):
        decoded = decode("json", payload(n), sensor="n", max_bytes=65_536, received_ns=0)
        assert (len(decoded.text) <= MAX_RAW_CHARS) is kept
        (reading,) = readings_of("n", decoded, 0)
        assert reading.raw == (decoded.text if kept else None)


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__)
        return 2
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

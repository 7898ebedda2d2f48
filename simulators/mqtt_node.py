"""A simulated MQTT sensor node publishing river readings with QoS 1.

Two payload formats. `json` (the riverseal contract), one UTF-8 JSON object:

    {"seq": 17,
     "time": "2026-11-21T05:09:56.123Z",
     "values": [{"q": "temperature", "v": 14.213, "u": "Cel"},
                {"q": "ph", "v": 7.602, "u": "pH"}]}

- `seq`: integer, per node, 0 for the first message of a run and +1 for each
  sample; a message re-sent after a reconnect keeps its seq and exact bytes.
- `time`: when the node sampled, RFC 3339 in UTC with milliseconds and `Z`.
- `values`: one entry per configured quantity, in the configured order, `q`
  the quantity, `v` a JSON number, `u` its unit (SenML names):

      q              json u   senml u
      temperature    Cel      Cel
      ph             pH       pH
      do             mg/l     mg/l
      do_sat         /100     /100     (percent saturation)
      ec             uS/cm    S/m      (SenML has no uS/cm: 1 uS/cm = 1e-4 S/m)
      orp            mV       mV
      turbidity      NTU      NTU
      chlorophyll    ug/l     ug/l

`senml` (RFC 8428), one pack per sample: the first record carries the base
name `urn:dev:riverseal:<node id>:` and the base time (absolute Unix seconds,
millisecond precision); each record has `n` (the quantity), `u` and `v`.
SenML has no seq; a sample skipped by the node leaves no trace in the pack.

Faults (`NodeFaults`), all deterministic in (seed, seq):
garbage payloads (random bytes), truncated JSON (valid UTF-8 cut short),
malformed (truncated plus bytes that are not UTF-8), duplicates (the same bytes
twice), spikes (one quantity jumps), stuck values (the values of an earlier
sample repeat), lost samples (seq consumed, nothing sent: a seq gap),
dropouts (the node falls silent for some intervals, then resumes; no seq is
consumed: silence), and disconnects (the node drops its connection and
reconnects).

`MqttNode` is an async context manager for station launchers: `async with
node:` publishes in a background task until the block ends. aiomqtt is
imported inside `run`, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal

from simulators.river import RiverState, WaterSource

if TYPE_CHECKING:
    import aiomqtt

__all__ = ["QUANTITIES", "MqttNode", "NodeFaults", "Quantity", "rfc3339"]

log = logging.getLogger(__name__)

PayloadFormat = Literal["json", "senml"]


@dataclass(frozen=True)
class Quantity:
    """How one quantity is taken from the river and written in a payload."""

    unit: str
    decimals: int
    value: Callable[[RiverState], float]
    senml_unit: str = ""
    """The SenML unit when it differs from ``unit``."""
    senml_scale: float = 1.0


QUANTITIES: Final[Mapping[str, Quantity]] = {
    "temperature": Quantity("Cel", 3, lambda s: s.temperature_c),
    "ph": Quantity("pH", 3, lambda s: s.ph),
    "do": Quantity("mg/l", 2, lambda s: s.do_mg_l),
    "do_sat": Quantity("/100", 1, lambda s: s.do_sat_pct),
    "ec": Quantity("uS/cm", 1, lambda s: s.ec_us_cm, "S/m", 1e-4),
    "orp": Quantity("mV", 1, lambda s: s.orp_mv),
    "turbidity": Quantity("NTU", 2, lambda s: s.turbidity_ntu),
    "chlorophyll": Quantity("ug/l", 2, lambda s: s.chlorophyll_ug_l),
}

_RECONNECT_BASE_S = 0.5
_RECONNECT_MAX_S = 30.0
_SPIKE_FACTOR = 5.0


@dataclass(frozen=True)
class NodeFaults:
    """Which faults to inject; ``x_every = n`` hits every n-th sample (0: never)."""

    malformed_every: int = 0
    """After the sample: its payload cut short plus bytes that are not UTF-8."""
    garbage_every: int = 0
    """After the sample: 1 to 64 random bytes."""
    truncated_every: int = 0
    """After the sample: its payload cut short (still UTF-8)."""
    duplicate_every: int = 0
    """The sample's payload twice."""
    spike_every: int = 0
    """One quantity (rotating) reads ``_SPIKE_FACTOR`` times its value."""
    stuck_every: int = 0
    stuck_for: int = 0
    """From every ``stuck_every``-th sample, ``stuck_for`` samples repeat its values."""
    lost_every: int = 0
    """The sample is taken (seq consumed) but never sent."""
    dropout_every: int = 0
    dropout_for: float = 0.0
    """After every ``dropout_every``-th sample, silence for ``dropout_for`` intervals."""
    disconnect_every: int = 0
    """After the sample, drop the connection and reconnect."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0")

    @staticmethod
    def hits(every: int, seq: int) -> bool:
        return every > 0 and seq % every == every - 1


def rfc3339(t: float) -> str:
    """Unix seconds as `2026-11-21T05:09:56.123Z` (milliseconds, UTC)."""
    dt = datetime.fromtimestamp(t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond // 1000:03d}Z"


def _digest(*parts: object, size: int = 8) -> bytes:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=size).digest()


def _unit_interval(*parts: object) -> float:
    """A deterministic number in [0, 1) derived from `parts`."""
    return int.from_bytes(_digest(*parts), "big") / 2.0**64


class MqttNode:
    """Publishes `quantities` sampled from `river` every `interval_s` seconds to `topic`.

    `node_id` is the MQTT client identifier; `seed` makes faults and reconnect
    jitter deterministic; `clock` gives the sampling time (tests pin it).
    `tls_ca` turns TLS on (with `tls_cert`/`tls_key` for a client certificate).
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        quantities: Sequence[str],
        river: WaterSource,
        interval_s: float = 1.0,
        node_id: str = "node1",
        seed: int = 0,
        *,
        format: PayloadFormat = "json",
        faults: NodeFaults | None = None,
        malformed_every: int = 0,
        duplicate_every: int = 0,
        clock: Callable[[], float] = time.time,
        username: str | None = None,
        password: str | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        unknown = [q for q in quantities if q not in QUANTITIES]
        if unknown or not quantities:
            raise ValueError(f"quantities must be a non-empty subset of {sorted(QUANTITIES)}")
        if interval_s < 0 or malformed_every < 0 or duplicate_every < 0:
            raise ValueError("interval_s, malformed_every and duplicate_every must be >= 0")
        if format not in ("json", "senml"):
            raise ValueError("format must be 'json' or 'senml'")
        if (tls_cert is None) != (tls_key is None) or (tls_cert is not None and tls_ca is None):
            raise ValueError("tls_cert and tls_key go together, and need tls_ca")
        base = faults or NodeFaults()
        if malformed_every or duplicate_every:
            base = NodeFaults(
                **{
                    **vars(base),
                    "malformed_every": malformed_every or base.malformed_every,
                    "duplicate_every": duplicate_every or base.duplicate_every,
                }
            )
        self.faults = base
        self._host = host
        self._port = port
        self._topic = topic
        self._quantities = tuple(quantities)
        self._river = river
        self._interval_s = interval_s
        self._node_id = node_id
        self._seed = seed
        self._format: PayloadFormat = format
        self._clock = clock
        self._username = username
        self._password = password
        self._tls = (tls_ca, tls_cert, tls_key)
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        """Messages acknowledged by the broker (faulty ones included)."""
        self.connections = 0

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def node_id(self) -> str:
        return self._node_id

    # -- pure: what is sent for a sample -------------------------------------------------

    def values(self, seq: int, now: float) -> list[tuple[str, float]]:
        """(quantity, value) for sample `seq` at `now`, stuck values and spikes applied."""
        f = self.faults
        at = now
        for back in range(1, min(f.stuck_for, seq) + 1):
            if NodeFaults.hits(f.stuck_every, seq - back):
                at = now - back * self._interval_s  # the time of the sample that stuck
                break
        state = self._river.sample(at)
        out = [(name, QUANTITIES[name].value(state)) for name in self._quantities]
        if NodeFaults.hits(f.spike_every, seq):
            i = (seq // f.spike_every) % len(out)
            out[i] = (out[i][0], out[i][1] * _SPIKE_FACTOR)
        return out

    def payload(self, seq: int, now: float) -> bytes:
        """The payload for sample `seq` taken at Unix time `now` (pure)."""
        values = self.values(seq, now)
        if self._format == "senml":
            records: list[dict[str, object]] = []
            for name, value in values:
                q = QUANTITIES[name]
                unit = q.senml_unit or q.unit
                decimals = q.decimals + (4 if q.senml_scale == 1e-4 else 0)
                records.append({"n": name, "u": unit, "v": round(value * q.senml_scale, decimals)})
            records[0] = {
                "bn": f"urn:dev:riverseal:{self._node_id}:",
                "bt": round(now, 3),
                **records[0],
            }
            return json.dumps(records, separators=(",", ":")).encode()
        items = [
            {"q": name, "v": round(value, QUANTITIES[name].decimals), "u": QUANTITIES[name].unit}
            for name, value in values
        ]
        body = {"seq": seq, "time": rfc3339(now), "values": items}
        return json.dumps(body, separators=(",", ":")).encode()

    def _cut(self, seq: int, now: float, what: str) -> bytes:
        good = self.payload(seq, now)
        return good[: 1 + int(_unit_interval(self._seed, what, seq) * (len(good) - 1))]

    def malformed_payload(self, seq: int, now: float) -> bytes:
        """A broken payload: a truncated message plus bytes that are not UTF-8."""
        return self._cut(seq, now, "malformed") + b"\xff\xfe"

    def messages(self, seq: int, now: float) -> list[bytes]:
        """Every payload to publish, in order, for sample `seq` taken at `now`."""
        f, hits = self.faults, NodeFaults.hits
        if hits(f.lost_every, seq):
            return []
        good = self.payload(seq, now)
        out = [good]
        if hits(f.duplicate_every, seq):
            out.append(good)
        if hits(f.malformed_every, seq):
            out.append(self.malformed_payload(seq, now))
        if hits(f.truncated_every, seq):
            out.append(self._cut(seq, now, "truncated"))
        if hits(f.garbage_every, seq):
            size = 1 + int(_unit_interval(self._seed, "garbage-size", seq) * 64)
            out.append(_digest(self._seed, "garbage", seq, size=64)[:size])
        return out

    # -- IO -------------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        ca, cert, key = self._tls
        if ca is None:
            return None
        context = ssl.create_default_context(cafile=str(ca))
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
        return context

    async def __aenter__(self) -> MqttNode:
        if self._task is not None:
            raise RuntimeError(f"{self._node_id} is already running")
        self._task = asyncio.create_task(self.run(), name=f"mqtt-node[{self._node_id}]")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def run(self, count: int | None = None) -> None:
        """Publish `count` samples (forever if None), reconnecting as needed.

        Each message waits for its PUBACK; one that was not acknowledged when the
        connection dropped is sent again, unchanged, after reconnecting.
        """
        import aiomqtt  # here, not at the top: `import simulators` must not load paho

        progress = _Progress(start=asyncio.get_running_loop().time())
        attempt = 0
        context = self._tls_context()
        while not progress.done(count):
            try:
                async with aiomqtt.Client(
                    self._host,
                    self._port,
                    identifier=self._node_id,
                    username=self._username,
                    password=self._password,
                    tls_context=context,
                ) as client:
                    attempt = 0
                    self.connections += 1
                    await self._publish(client, progress, count)
            except aiomqtt.MqttError as exc:
                if progress.done(count):
                    return  # everything was acknowledged; only the disconnect failed
                attempt += 1
                ceiling = min(_RECONNECT_MAX_S, _RECONNECT_BASE_S * 2**attempt)
                delay = ceiling * _unit_interval(self._seed, self._node_id, "backoff", attempt)
                log.warning(
                    "%s: MQTT error (%s); reconnecting in %.2f s", self._node_id, exc, delay
                )
                await asyncio.sleep(delay)

    async def _publish(
        self, client: aiomqtt.Client, progress: _Progress, count: int | None
    ) -> None:
        loop = asyncio.get_running_loop()
        f = self.faults
        while not progress.done(count):
            if not progress.pending:
                if progress.reconnect:
                    progress.reconnect = False
                    return  # leave the client's context: a clean disconnect, then reconnect
                due = progress.start + progress.slot * self._interval_s
                if loop.time() - due > self._interval_s:
                    # Back from an outage: resume the schedule now rather than burst.
                    progress.start = loop.time() - progress.slot * self._interval_s
                    due = loop.time()
                await asyncio.sleep(max(0.0, due - loop.time()))
                seq = progress.seq
                progress.pending = self.messages(seq, self._clock())
                progress.seq += 1
                progress.slot += 1
                if NodeFaults.hits(f.dropout_every, seq):
                    progress.slot += f.dropout_for  # silent for a while; no seq consumed
                progress.reconnect = NodeFaults.hits(f.disconnect_every, seq)
            while progress.pending:
                await client.publish(self._topic, progress.pending[0], qos=1)
                progress.pending.pop(0)
                self.published += 1


@dataclass
class _Progress:
    """Where a run is: the next seq, its schedule slot, and what is still unacknowledged."""

    start: float
    seq: int = 0
    slot: float = 0.0
    pending: list[bytes] = field(default_factory=list)
    reconnect: bool = False

    def done(self, count: int | None) -> bool:
        return count is not None and self.seq >= count and not self.pending

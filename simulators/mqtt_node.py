"""A simulated MQTT sensor node publishing river readings with QoS 1.

Payload contract with the gateway — one UTF-8 JSON object per message:

    {"seq": 17,
     "time": "2026-11-21T05:09:56.123Z",
     "values": [{"q": "temperature", "v": 14.213, "u": "Cel"},
                {"q": "ph", "v": 7.602, "u": "pH"}]}

- `seq`: integer, per node, 0 for the first message of a run and +1 for each
  message; a message re-sent after a reconnect keeps its seq and exact bytes.
- `time`: when the node sampled, RFC 3339 in UTC with milliseconds and `Z`.
- `values`: one entry per configured quantity, in the configured order.
  `q` is the quantity, `v` a JSON number, `u` its unit (SenML names, RFC 8428 /
  RFC 8798):

      q              u
      temperature    Cel
      ph             pH
      do             mg/l
      do_sat         /100     (percent saturation)
      ec             uS/cm
      orp            mV
      turbidity      NTU

Faults: after every `malformed_every`-th message a non-JSON payload follows
(it has no seq), and every `duplicate_every`-th message is published twice with
identical bytes; the gateway must reject the first and deduplicate the second.

aiomqtt is imported inside `run`, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from simulators.river import RiverModel, RiverState

if TYPE_CHECKING:
    import aiomqtt

__all__ = ["QUANTITIES", "MqttNode", "Quantity", "rfc3339"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quantity:
    """How one quantity is taken from the river and written in a payload."""

    unit: str
    decimals: int
    value: Callable[[RiverState], float]


QUANTITIES: Final[Mapping[str, Quantity]] = {
    "temperature": Quantity("Cel", 3, lambda s: s.temperature_c),
    "ph": Quantity("pH", 3, lambda s: s.ph),
    "do": Quantity("mg/l", 2, lambda s: s.do_mg_l),
    "do_sat": Quantity("/100", 1, lambda s: s.do_sat_pct),
    "ec": Quantity("uS/cm", 1, lambda s: s.ec_us_cm),
    "orp": Quantity("mV", 1, lambda s: s.orp_mv),
    "turbidity": Quantity("NTU", 2, lambda s: s.turbidity_ntu),
}

_RECONNECT_BASE_S = 0.5
_RECONNECT_MAX_S = 30.0


def rfc3339(t: float) -> str:
    """Unix seconds as `2026-11-21T05:09:56.123Z` (milliseconds, UTC)."""
    dt = datetime.fromtimestamp(t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond // 1000:03d}Z"


def _unit_interval(*parts: object) -> float:
    """A deterministic number in [0, 1) derived from `parts`."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class MqttNode:
    """Publishes `quantities` sampled from `river` every `interval_s` seconds to `topic`.

    `node_id` is the MQTT client identifier; `seed` makes malformed payloads and
    reconnect jitter deterministic; `clock` gives the sampling time (tests pin it).
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        quantities: Sequence[str],
        river: RiverModel,
        interval_s: float = 1.0,
        node_id: str = "node1",
        seed: int = 0,
        *,
        malformed_every: int = 0,
        duplicate_every: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = [q for q in quantities if q not in QUANTITIES]
        if unknown or not quantities:
            raise ValueError(f"quantities must be a non-empty subset of {sorted(QUANTITIES)}")
        if interval_s < 0 or malformed_every < 0 or duplicate_every < 0:
            raise ValueError("interval_s, malformed_every and duplicate_every must be >= 0")
        self._host = host
        self._port = port
        self._topic = topic
        self._quantities = tuple(quantities)
        self._river = river
        self._interval_s = interval_s
        self._node_id = node_id
        self._seed = seed
        self._malformed_every = malformed_every
        self._duplicate_every = duplicate_every
        self._clock = clock

    @property
    def topic(self) -> str:
        return self._topic

    def payload(self, seq: int, now: float) -> bytes:
        """The payload for message `seq` sampled at Unix time `now` (pure)."""
        state = self._river.sample(now)
        values = []
        for name in self._quantities:
            q = QUANTITIES[name]
            values.append({"q": name, "v": round(q.value(state), q.decimals), "u": q.unit})
        body = {"seq": seq, "time": rfc3339(now), "values": values}
        return json.dumps(body, separators=(",", ":")).encode()

    def malformed_payload(self, seq: int, now: float) -> bytes:
        """A broken payload: a truncated message plus bytes that are not UTF-8."""
        good = self.payload(seq, now)
        cut = 1 + int(_unit_interval(self._seed, "malformed", seq) * (len(good) - 1))
        return good[:cut] + b"\xff\xfe"

    def messages(self, seq: int, now: float) -> list[bytes]:
        """Every payload to publish, in order, for message `seq` sampled at `now`."""
        good = self.payload(seq, now)
        out = [good]
        if self._duplicate_every and seq % self._duplicate_every == self._duplicate_every - 1:
            out.append(good)
        if self._malformed_every and seq % self._malformed_every == self._malformed_every - 1:
            out.append(self.malformed_payload(seq, now))
        return out

    async def run(self, count: int | None = None) -> None:
        """Publish `count` valid messages (forever if None), reconnecting as needed.

        Each message waits for its PUBACK; one that was not acknowledged when the
        connection dropped is sent again, unchanged, after reconnecting.
        """
        import aiomqtt  # here, not at the top: `import simulators` must not load paho

        progress = _Progress(start=asyncio.get_running_loop().time())
        attempt = 0
        while not progress.done(count):
            try:
                async with aiomqtt.Client(
                    self._host, self._port, identifier=self._node_id
                ) as client:
                    attempt = 0
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
        while not progress.done(count):
            if not progress.pending:
                due = progress.start + progress.seq * self._interval_s
                if loop.time() - due > self._interval_s:
                    # Back from an outage: resume the schedule now rather than burst.
                    progress.start = loop.time() - progress.seq * self._interval_s
                    due = loop.time()
                await asyncio.sleep(max(0.0, due - loop.time()))
                progress.pending = self.messages(progress.seq, self._clock())
                progress.seq += 1
            while progress.pending:
                await client.publish(self._topic, progress.pending[0], qos=1)
                progress.pending.pop(0)


@dataclass
class _Progress:
    """Where a run is: the next seq and what is still unacknowledged."""

    start: float
    seq: int = 0
    pending: list[bytes] = field(default_factory=list)

    def done(self, count: int | None) -> bool:
        return count is not None and self.seq >= count and not self.pending

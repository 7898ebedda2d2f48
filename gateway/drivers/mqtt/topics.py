"""Which MQTT sensor a topic belongs to, pure.

A sensor's ``topic`` is an MQTT topic filter: ``+`` matches one level, ``#``
(last level only) the rest, including nothing. One level may be ``{id}``: it
matches like ``+`` and the text found there is put into the sensor's ``id``,
which must then contain ``{id}`` too::

    id = "weir-{id}"   topic = "river/{id}/senml"   river/w3/senml → sensor weir-w3

When several sensors' filters match a topic, the most specific wins: the
filters are compared level by level from the left, and at the first level
where they differ a literal beats ``+``/``{id}``, which beats ``#``; a filter
that ends there beats one that goes on with ``#``. So for ``river/w3/senml``,
``river/w3/+`` beats ``river/+/senml`` (level 2 is literal), which beats
``river/#``. Two sensors may not have the same filter (``+`` and ``{id}``
count as the same). As in MQTT, a filter that starts with a wildcard does not
match topics starting with ``$``.

The broker is sent the smallest set of filters that covers every sensor
(``river/+/senml`` is not subscribed beside ``river/#``), so one message
arrives once unless two filters only partly overlap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.drivers.mqtt.config import ID_PLACEHOLDER, MqttSensorConfig
from gateway.errors import ConfigError

__all__ = ["ID_PLACEHOLDER", "Route", "TopicRouter", "filter_covers", "topic_matches"]

_VALID_ID = re.compile(r"[^\s/+#{}]{1,64}")


def topic_matches(pattern: Sequence[str], topic: Sequence[str]) -> bool:
    """True if the filter levels ``pattern`` match the topic levels ``topic``."""
    if topic and topic[0].startswith("$") and pattern and pattern[0] in ("+", "#"):
        return False
    for i, level in enumerate(pattern):
        if level == "#":
            return True
        if i >= len(topic):
            return False
        if level != "+" and level != topic[i]:
            return False
    return len(pattern) == len(topic)


def filter_covers(a: Sequence[str], b: Sequence[str]) -> bool:
    """True if every topic that filter ``b`` matches is also matched by filter ``a``."""
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(b) or b[i] == "#":
            return False
        if level != "+" and level != b[i]:
            return False
    return len(a) == len(b)


def _rank(levels: Sequence[str]) -> tuple[int, ...]:
    ranks = [0 if lv == "#" else 1 if lv == "+" else 2 for lv in levels]
    if not levels or levels[-1] != "#":
        ranks.append(3)  # ends here: more specific than going on with '#'
    return tuple(ranks)


@dataclass(frozen=True, slots=True)
class Route:
    """A sensor, its filter as sent to the broker, and where its ``{id}`` level is."""

    sensor: MqttSensorConfig
    levels: tuple[str, ...]
    id_level: int | None

    @property
    def filter(self) -> str:
        return "/".join(self.levels)

    def sensor_id(self, topic: Sequence[str]) -> str:
        """The sensor id for a topic this route matched (ValueError if ``{id}`` is unusable)."""
        if self.id_level is None:
            return self.sensor.id
        found = topic[self.id_level]
        if _VALID_ID.fullmatch(found) is None or not found.isprintable():
            raise ValueError(
                f"topic level {self.id_level} {found[:80]!r} is not a usable sensor id "
                "(1 to 64 printable characters, no spaces)"
            )
        return self.sensor.id.replace(ID_PLACEHOLDER, found)


class TopicRouter:
    """Routes topics to sensors; refuses two sensors with the same filter (ConfigError)."""

    def __init__(self, sensors: Sequence[MqttSensorConfig]) -> None:
        self.routes: list[Route] = []
        seen: dict[tuple[str, ...], str] = {}
        for sensor in sensors:
            raw = sensor.topic.split("/")
            id_level = raw.index(ID_PLACEHOLDER) if ID_PLACEHOLDER in raw else None
            levels = tuple("+" if lv == ID_PLACEHOLDER else lv for lv in raw)
            if levels in seen:
                raise ConfigError(
                    f"sensor {sensor.id}.topic",
                    f"{sensor.topic!r} is the same filter as sensor {seen[levels]!r}'s; "
                    "sensors may not share topic filters",
                )
            seen[levels] = sensor.id
            self.routes.append(Route(sensor, levels, id_level))
        # Most specific first: the first match is the winner.
        self.routes.sort(key=lambda r: _rank(r.levels), reverse=True)

    def subscriptions(self) -> list[str]:
        """The fewest filters that cover every sensor, in config-independent order."""
        keep = [
            r.levels
            for r in self.routes
            if not any(
                o.levels != r.levels and filter_covers(o.levels, r.levels) for o in self.routes
            )
        ]
        return sorted("/".join(levels) for levels in keep)

    def route(self, topic: str) -> Route | None:
        """The most specific route for ``topic``, or None if no sensor's filter matches."""
        levels = topic.split("/")
        for r in self.routes:
            if topic_matches(r.levels, levels):
                return r
        return None

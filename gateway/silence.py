"""Silence: signed gap records for sensors that stop reporting, for every driver.

A pure tracker with an explicit clock. It is told when each sensor's readings
arrive and why its input was refused (``Sink.reject`` reasons), and, when
polled, returns the ``Gap`` records that are due.

Rules, per configured sensor (times are the gateway's, in ns):

- A sensor is *silent* once more than its allowance has passed since its last
  reading. The allowance is ``interval_s`` plus a grace of
  ``max(GRACE_FRACTION × interval_s, timeout_s)`` (``expectation``).
- The first gap of a silence runs from the last reading (or, for a sensor that
  has not reported since the gateway started, from the start) to now. While
  the silence lasts, each further gap runs from the previous gap's end to now,
  at most one per ``max(interval_s, MIN_REPEAT_S)``. When the sensor comes back,
  a final gap closes the span up to its first new reading. A reading that
  arrives late but before the poll noticed gets its gap from ``reading`` itself.
- So between two consecutive readings (or the start and the first reading)
  either the spacing is within the allowance and there is no gap, or gaps tile
  the span exactly, end to end, with no overlap.
- A gap's ``reason`` is the last reason the sensor's input was refused since
  its last reading (``timeout``, ``crc``, ``garbage``...), else ``silent``.
  Drivers that know their link is down say so the same way, with one of
  ``LINK_REASONS`` (``link-lost``, ``broker-refused``...), so the gap names
  the real cause.
- Across a clock step (``clock_step``, told by the daemon when gateway/clock.py
  notices one): every time kept moves by the step, so silences are still
  measured in elapsed time and a gap never spans the step itself.
- Across a restart: the tracker starts at the gateway's start, so a sensor
  silent since before the restart gets a gap from the start; the time the
  gateway itself was down is covered by the daemon's ``gateway-down`` gaps,
  which end exactly there (gateway/daemon.py).

A reading counts when it reaches the gateway (``Sink.submit``), before its
commit, so a gap is never written past a reading already on its way to the
log. A reading whose commit then fails is not in the log and has no gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .pipeline import Gap

__all__ = [
    "BROKER_LOST",
    "BROKER_REFUSED",
    "BROKER_TLS",
    "BROKER_UNREACHABLE",
    "GRACE_FRACTION",
    "LINK_LOST",
    "LINK_REASONS",
    "MIN_REPEAT_S",
    "PORT_UNAVAILABLE",
    "SILENT",
    "Expectation",
    "Silence",
    "SilenceTracker",
    "expectation",
]

GRACE_FRACTION = 0.5
"""Grace beyond the interval, as a fraction of it (at least the sensor's timeout)."""
MIN_REPEAT_S = 60.0
"""While a sensor stays silent, at most one gap record per this many seconds
(or per interval, if longer): a day-long outage of a 10 s sensor costs 1440
records, not 8640."""
SILENT = "silent"
"""The reason of a gap when no refused input explains it."""

# Why a driver's link is down, reported with ``Sink.reject`` once per outage (or per change
# of cause), so status and the gap records name the cause, not just ``silent``.
LINK_LOST = "link-lost"
"""A serial port that was open failed (unplugged, I/O error) or cannot be opened again."""
PORT_UNAVAILABLE = "port-unavailable"
"""A serial port that has not opened since the gateway started (missing, busy, no access)."""
BROKER_REFUSED = "broker-refused"
"""The MQTT broker answered and refused the connection (login, not authorised)."""
BROKER_UNREACHABLE = "broker-unreachable"
"""No MQTT broker answered (connection refused, no route, no answer in time)."""
BROKER_TLS = "broker-tls"
"""The TLS handshake with the MQTT broker failed (certificate, CA, client certificate)."""
BROKER_LOST = "broker-lost"
"""An established MQTT connection dropped."""
LINK_REASONS = frozenset(
    {
        LINK_LOST,
        PORT_UNAVAILABLE,
        BROKER_REFUSED,
        BROKER_UNREACHABLE,
        BROKER_TLS,
        BROKER_LOST,
        "disconnected",  # the SDI-12 source's name for a port that failed
    }
)
"""Reasons that mean the sensor cannot be heard at all until its link is back."""

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Expectation:
    """How often one sensor should report, in ns."""

    allowance_ns: int
    """Silent once more than this has passed since the last reading."""
    repeat_ns: int
    """While silent, a new gap record at most this often."""


def expectation(interval_s: float, timeout_s: float | None = None) -> Expectation:
    """The documented defaults for a sensor read every ``interval_s``."""
    if interval_s <= 0:
        raise ValueError("interval_s must be > 0")
    grace = max(GRACE_FRACTION * interval_s, timeout_s or 0.0)
    return Expectation(
        allowance_ns=round((interval_s + grace) * _NS),
        repeat_ns=round(max(interval_s, MIN_REPEAT_S) * _NS),
    )


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence in progress, for status: since the last reading (or start), and why."""

    since_ns: int
    reason: str


class _State:
    __slots__ = ("covered_ns", "expect", "last_ns", "reason", "written_ns")

    def __init__(self, expect: Expectation, start_ns: int) -> None:
        self.expect = expect
        self.last_ns = start_ns
        """The last reading, or the start."""
        self.covered_ns: int | None = None
        """While silent: where the last gap record ended."""
        self.reason: str | None = None
        """The last refusal since the last reading."""
        self.written_ns = start_ns
        """The end of the last gap record: no gap starts before it (a clock stepping
        back must not make two gaps overlap)."""


class SilenceTracker:
    """Decides the gap records of configured sensors; readings of others are ignored."""

    def __init__(
        self,
        expected: Mapping[str, Expectation],
        start_ns: int,
        *,
        on_resume: Callable[[str], None] | None = None,
    ) -> None:
        self._states = {sensor: _State(e, start_ns) for sensor, e in expected.items()}
        self._on_resume = on_resume
        """Told when a silent sensor reports again: its next silence is due within its
        allowance, sooner than ``next_due_ns`` said while it was silent."""

    @property
    def sensors(self) -> Iterable[str]:
        return self._states.keys()

    def _gap(self, sensor: str, st: _State, from_ns: int, to_ns: int) -> Gap | None:
        from_ns = max(from_ns, st.written_ns)
        if to_ns <= from_ns:
            return None
        st.written_ns = to_ns
        return Gap(sensor, st.reason or SILENT, from_ns, to_ns)

    def reading(self, sensor: str, t_ns: int) -> list[Gap]:
        """A reading of ``sensor`` arrived at ``t_ns``; returns the gap that closes a silence."""
        st = self._states.get(sensor)
        if st is None:
            return []
        gap = None
        if st.covered_ns is not None:
            # A reading stamped before the gap just written (its arrival raced the
            # poll) lies inside that gap; there is nothing left to close.
            gap = self._gap(sensor, st, st.covered_ns, t_ns)
        elif t_ns - st.last_ns > st.expect.allowance_ns:
            gap = self._gap(sensor, st, st.last_ns, t_ns)
        resumed = st.covered_ns is not None
        st.covered_ns = None
        st.reason = None
        st.last_ns = t_ns
        if resumed and self._on_resume is not None:
            self._on_resume(sensor)
        return [] if gap is None else [gap]

    def reject(self, sensor: str, reason: str) -> None:
        """Input of ``sensor`` was refused for ``reason``: the next gap names it."""
        st = self._states.get(sensor)
        if st is not None:
            st.reason = reason

    def poll(self, now_ns: int) -> list[Gap]:
        """The gap records due at ``now_ns``."""
        gaps: list[Gap] = []
        for sensor, st in self._states.items():
            if st.covered_ns is None:
                if now_ns - st.last_ns <= st.expect.allowance_ns:
                    continue
                gap = self._gap(sensor, st, st.last_ns, now_ns)
            elif now_ns - st.covered_ns >= st.expect.repeat_ns:
                gap = self._gap(sensor, st, st.covered_ns, now_ns)
            else:
                continue
            st.covered_ns = now_ns
            if gap is not None:
                gaps.append(gap)
        return gaps

    def next_due_ns(self) -> int | None:
        """When ``poll`` next has something to say if no reading arrives (None: no sensors)."""
        due = [
            st.last_ns + st.expect.allowance_ns + 1
            if st.covered_ns is None
            else st.covered_ns + st.expect.repeat_ns
            for st in self._states.values()
        ]
        return min(due, default=None)

    def clock_step(self, step_ns: int) -> None:
        """Wall time stepped by ``step_ns``: move every deadline onto the new scale.

        Without this a sensor silent across a backward step of an hour would get its
        first gap an hour late, and a forward step would make every sensor look silent
        for the length of the step. The verifier moves its covered instants the same way
        at the ``clock-step`` event (docs/bundle-format.md §9, 8 f).
        """
        for st in self._states.values():
            st.last_ns += step_ns
            st.written_ns += step_ns
            if st.covered_ns is not None:
                st.covered_ns += step_ns

    def silence(self, sensor: str) -> Silence | None:
        """The silence ``sensor`` is in, if a gap record has declared one."""
        st = self._states.get(sensor)
        if st is None or st.covered_ns is None:
            return None
        return Silence(st.last_ns, st.reason or SILENT)

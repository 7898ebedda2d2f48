"""What a probe saw on the wire: commands and replies as ``Exchange``s, one way for all."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.drivers.base import Exchange
from gateway.drivers.link.display import escape
from gateway.drivers.link.serial import SerialLink
from gateway.errors import SensorError

__all__ = ["RecordingLink", "Transcript"]


@dataclass
class _Turn:
    sent: str
    received: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Transcript:
    """The exchanges of one probe: each command sent opens a turn; what comes back,
    and any notes, belong to the latest turn (a line before any command opens one
    with nothing sent)."""

    def __init__(self) -> None:
        self._turns: list[_Turn] = []

    def _last(self) -> _Turn:
        if not self._turns:
            self._turns.append(_Turn(""))
        return self._turns[-1]

    def send(self, sent: str) -> None:
        self._turns.append(_Turn(sent))

    def receive(self, received: str) -> None:
        self._last().received.append(received)

    def annotate(self, note: str) -> None:
        if note:
            self._last().notes.append(note)

    def add(self, sent: str, received: str, note: str = "") -> None:
        """One whole exchange at once."""
        self._turns.append(_Turn(sent, [received] if received else [], [note] if note else []))

    @property
    def exchanges(self) -> tuple[Exchange, ...]:
        return tuple(Exchange(t.sent, "".join(t.received), "; ".join(t.notes)) for t in self._turns)


class RecordingLink:
    """A line link that keeps every command and every line in a ``Transcript``."""

    def __init__(self, link: SerialLink, transcript: Transcript | None = None) -> None:
        self._link = link
        self.transcript = transcript if transcript is not None else Transcript()

    async def write(self, data: bytes) -> None:
        self.transcript.send(escape(data.rstrip(b"\r")))
        await self._link.write(data)

    async def readline(self, timeout: float) -> bytes:  # noqa: ASYNC109
        try:
            line = await self._link.readline(timeout)
        except SensorError as exc:
            self.transcript.annotate(exc.problem)
            raise
        self.transcript.receive(escape(line) + "\\r")
        return line

    def discard_input(self) -> None:
        self._link.discard_input()

"""An Atlas Scientific EZO circuit on a real pty: `EzoPtyDevice`.

The circuit itself is the pure state machine of `simulators.ezo`; this host
puts it on a `PtyDevice` (`simulators.pty_device`): it powers up with `*RE`,
streams continuous readings on time, and power-cycles on replug.

A pty carries the client's line settings but does not enforce them
(sensor-protocols §10.1). `EzoPtyDevice` reads the speed the client set and,
when it is not the circuit's, garbles both directions as a UART at the wrong
rate would, so baud-rate scanning can be tested.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from simulators.ezo import EzoCircuit, EzoKind
from simulators.pty_device import Loop, PtyDevice, Reply
from simulators.river import RiverModel, WaterSource

__all__ = ["EzoPtyDevice"]

_IDLE_POLL_S = 0.05  # how often a device with continuous mode off looks again
_TRANSCRIPT_LINES = 1000  # commands and lines an EzoPtyDevice remembers


def _garble(data: bytes) -> bytes:
    """Bytes as received at the wrong baud rate: framing lost, no CR survives."""
    return bytes(b | 0x80 for b in data)


class EzoPtyDevice(PtyDevice):
    """An `EzoCircuit` on a pty: powers up with `*RE`, streams continuous readings.

    `clock` gives the Unix time used to sample the river (tests pin it).
    `baudrate`: the circuit's UART rate; a client that opens the port at
    another rate sees garbage and is not understood. None: any rate works.
    `commands` and `served` keep the recent traffic (commands as text without
    CR; every line written, as bytes) so tests can compare with what a client got.
    """

    def __init__(
        self,
        circuit: EzoCircuit,
        link_path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        baudrate: int | None = None,
    ) -> None:
        super().__init__(link_path, baudrate=baudrate)
        self._circuit = circuit
        self._clock = clock
        self._baudrate = baudrate
        self._pending = bytearray()
        self.commands: collections.deque[str] = collections.deque(maxlen=_TRANSCRIPT_LINES)
        self.served: collections.deque[bytes] = collections.deque(maxlen=_TRANSCRIPT_LINES)

    @classmethod
    def for_river(
        cls,
        kind: EzoKind,
        link_path: Path | None,
        *,
        seed: int = 0,
        river: WaterSource | None = None,
        clock: Callable[[], float] = time.time,
        baudrate: int | None = 9600,
        **circuit_options: Any,
    ) -> EzoPtyDevice:
        """One circuit of `kind` reading `river` (default `RiverModel(seed)`) at `link_path`.

        `circuit_options` go to `EzoCircuit` (firmware, delay_scale, faults ...).
        This is the building block of a whole simulated station.
        """
        water = river if river is not None else RiverModel(seed)
        circuit = EzoCircuit(kind, water, seed=seed, **circuit_options)
        return cls(circuit, link_path, clock=clock, baudrate=baudrate)

    @property
    def circuit(self) -> EzoCircuit:
        return self._circuit

    def _started(self) -> None:
        self.write(self._out(self._circuit.power_up(self._clock())))

    def _loops(self) -> Mapping[str, Loop]:
        return {"continuous": self._continuous_loop}

    def _replugged(self) -> None:
        """A new pty, and the circuit power-cycles (`*RE`, volatile state reset)."""
        self._pending.clear()
        self.write(self._out(self._circuit.power_up(self._clock())))

    def _mismatched(self) -> bool:
        if self._baudrate is None:
            return False
        client = self.link.client_baudrate()
        return client is not None and client != self._baudrate

    def _out(self, replies: Iterable[Reply]) -> list[Reply]:
        garble = self._mismatched()
        out = []
        for reply in replies:
            self.served.extend(reply.data.splitlines(keepends=True))
            out.append(Reply(reply.delay_s, _garble(reply.data)) if garble else reply)
        return out

    def on_data(self, data: bytes) -> list[Reply]:
        if self._mismatched():
            data = _garble(data)
        self._pending += data
        *lines, rest = self._pending.split(b"\r")
        self._pending = bytearray(rest)
        self.commands.extend(line.decode("ascii", "replace").strip() for line in lines)
        return self._out(self._circuit.receive(data, self._clock()))

    async def _continuous_loop(self) -> None:
        while True:
            interval = self._circuit.continuous_interval
            if interval is None:
                await asyncio.sleep(_IDLE_POLL_S)
                continue
            await asyncio.sleep(interval)
            # Asked again now: continuous mode may have been switched off meanwhile.
            line = self._circuit.continuous_output(self._clock())
            if line is not None:
                self.write(self._out([Reply(0.0, line)]))

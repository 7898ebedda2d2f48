"""Tell systemd how the daemon is doing: the sd_notify(3) protocol, without libsystemd.

Under a ``Type=notify`` unit, systemd names a unix datagram socket in
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); each
datagram is newline-separated ``KEY=value`` assignments:

- ``READY=1``: start-up is over (the unit becomes "active");
- ``STATUS=…``: one line ``systemctl status`` shows;
- ``WATCHDOG=1``: "still working"; with ``WatchdogSec=`` set, systemd puts the
  interval in ``$WATCHDOG_USEC`` and kills the service when a ping is late;
- ``STOPPING=1``: an orderly shutdown has begun.

Without ``$NOTIFY_SOCKET`` (run by hand, in tests) every call is a no-op.
A notification that cannot be sent is logged and dropped: it must never stop
the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 1.0  # the manager reads its socket at once; never stall the loop for long


class Notifier:
    """Sends sd_notify datagrams to ``address`` (``$NOTIFY_SOCKET``'s form); None: no-op."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._target: str | None = None
        if self.address is not None:
            if self.address.startswith("@"):
                self._target = "\0" + self.address[1:]  # the abstract namespace
            elif self.address.startswith("/"):
                self._target = self.address
            else:
                logger.warning(
                    "NOTIFY_SOCKET=%r: not a unix socket address; not notifying", address
                )
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd set this process up for (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            usec = None
        watchdog_pid = env.get("WATCHDOG_PID")
        if watchdog_pid and watchdog_pid != str(os.getpid()):
            usec = None  # the watchdog is meant for another process (one that started us)
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half the manager's timeout; None: no watchdog."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True if the manager took it."""
        if self._target is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.settimeout(_SEND_TIMEOUT_S)
            self._sock.sendto(data, self._target)
        except OSError as exc:
            level = logging.DEBUG if self._failing else logging.WARNING
            logger.log(level, "could not notify the service manager at %s: %s", self.address, exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("notifying the service manager at %s again", self.address)
            self._failing = False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", _status(status))

    def status(self, status: str) -> bool:
        return self.notify(_status(status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", _status(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())  # one line: systemctl shows only that

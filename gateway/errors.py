"""The one exception tree of the gateway.

Split by who is at fault, so the CLI can tell a technician what to do::

    GatewayError                   base; ``diagnostics()`` is what the CLI prints
    ├── ConfigError                the configuration file is wrong (the operator's to fix)
    ├── KeyFileError               device key missing, unreadable, wrong mode, or exists already
    ├── StoreError                 the log database failed (disk, corruption, schema)
    ├── HistoryConflict            the log does not extend what the key signed (gateway/history.py)
    ├── DataDirInUse               another gateway holds the data directory's lock (gateway/lock.py)
    ├── SensorError                a sensor or its link misbehaved (retried by the supervisor)
    │   ├── SensorTimeout          no answer within the sensor's timeout
    │   └── ProtocolError          an answer that breaks the wire protocol
    └── AnchorError                a ledger could not take an anchor
        ├── LedgerUnavailable      retryable: network, timeouts, 5xx
        └── LedgerRejected         not retryable as is: the ledger said no
"""

from __future__ import annotations

__all__ = [
    "AnchorError",
    "ConfigError",
    "GatewayError",
    "KeyFileError",
    "LedgerRejected",
    "LedgerUnavailable",
    "ProtocolError",
    "SensorError",
    "SensorTimeout",
    "StoreError",
]


class GatewayError(Exception):
    """Base of every error raised by the gateway."""

    hint: str = ""

    def diagnostics(self) -> str:
        return f"{self}\n  hint: {self.hint}" if self.hint else str(self)


class ConfigError(GatewayError):
    """The configuration is invalid; ``where`` names the file and key."""

    hint = "fix the named key in the config file, then start the gateway again"

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


class KeyFileError(GatewayError):
    """The device key file is missing, unreadable, too open, or would be overwritten."""

    hint = "device keys are never replaced silently; see docs/operations.md on key rotation"


class StoreError(GatewayError):
    """The log database failed."""

    hint = "check free disk space and the data directory's permissions"


class SensorError(GatewayError):
    """A sensor, or the link to it, misbehaved."""

    def __init__(self, sensor: str, problem: str) -> None:
        super().__init__(f"sensor {sensor}: {problem}")
        self.sensor = sensor
        self.problem = problem


class SensorTimeout(SensorError):
    """No answer within the sensor's timeout."""


class ProtocolError(SensorError):
    """An answer that breaks the sensor's wire protocol."""


class AnchorError(GatewayError):
    """A ledger could not take an anchor."""


class LedgerUnavailable(AnchorError):
    """Retryable: the ledger could not be reached or timed out."""


class LedgerRejected(AnchorError):
    """The ledger refused the anchor; retrying unchanged will not help."""

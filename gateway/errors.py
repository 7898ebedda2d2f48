"""The one exception tree of the gateway.

Split by who is at fault, so the CLI can tell a technician what to do. Every
subclass defined anywhere in the gateway is drawn here, with its module; a
new one is added to this drawing::

    GatewayError                     base; ``diagnostics()`` is what the CLI prints
    ├── ConfigError                  the configuration file is wrong (the operator's to fix)
    ├── KeyFileError                 device key missing, unreadable, wrong mode, or exists already
    ├── StoreError                   the log database failed (disk, corruption, schema)
    │   ├── CorruptDatabase          a database file fails its integrity checks (store.py)
    │   └── StorageRefused           no room or I/O errors: writes refused, retried (store.py)
    ├── HistoryConflict              the log does not extend what the key signed (history.py)
    ├── DataDirInUse                 another gateway holds the data directory's lock (lock.py)
    ├── RotationError                a key rotation cannot start or be finished (rotate.py)
    ├── ExportEmpty                  no entries in the requested window (export.py)
    ├── NoSuchEntry                  the entry asked for is not in the log (evidence.py)
    ├── PublishError                 the publish target could not take or give a file (publish.py)
    ├── PublishRefused               the target holds a log this one does not extend (publish.py)
    ├── SensorError                  a sensor or its link misbehaved (retried by the supervisor)
    │   ├── SensorTimeout            no answer within the sensor's timeout
    │   ├── LinkLost                 a Modbus bus's port is gone (drivers/modbus/link.py)
    │   ├── CommandFailed            an SDI-12 command failed every retry (drivers/sdi12/source.py)
    │   ├── _MeasurementFailed       an SDI-12 measurement lost this round (drivers/sdi12/source.py)
    │   ├── _IdentityMismatch        the port answers as another EZO circuit (drivers/ezo/source.py)
    │   └── ProtocolError            an answer that breaks the wire protocol (the sensor's fault)
    │       ├── _ErrorReply          an EZO command answered ``*ER`` (drivers/ezo/source.py)
    │       ├── ModbusExceptionReply a Modbus exception response (drivers/modbus/rtu.py)
    │       ├── ModbusBadCrc         a Modbus frame whose CRC does not match (drivers/modbus/rtu.py)
    │       ├── BadFrame             a Modbus frame of the wrong shape (drivers/modbus/rtu.py)
    │       ├── PayloadError         an MQTT payload refused (drivers/mqtt/payload.py)
    │       └── Sdi12Rejection       a reply SDI-12 does not allow (drivers/sdi12/protocol.py)
    │           ├── Malformed        not an SDI-12 reply at all
    │           ├── WrongAddress     a reply from another address
    │           ├── Sdi12BadCrc      a reply whose CRC does not match
    │           ├── CountMismatch    more or fewer values than announced or configured
    │           └── Aborted          data ran out before every announced value came
    └── AnchorError                  a ledger could not take an anchor
        ├── LedgerUnavailable        retryable: network, timeouts, 5xx
        └── LedgerRejected           not retryable as is: the ledger said no
            ├── RpcError             the EVM node answered a JSON-RPC error (anchoring/evm_rpc.py)
            └── ChainMismatch        every endpoint serves another chain (anchoring/evm_rpc.py)

Outside the tree, never escaping their module's boundary: the pure decoders'
``SenmlError`` (drivers/mqtt/senml.py, mapped to ``PayloadError``) and
``CodecError`` (drivers/modbus/profile.py: registers that do not decode, which
``decode_reading`` turns into a problem the source rejects), both
``ValueError``; and two private control-flow signals, the EZO source's
``_Restart`` (the circuit rebooted: run the start sequence again; ``gateway
probe`` gets a ``SensorError``) and ``anchoring/evm_rpc.py``'s ``_Unusable``.
"""

from __future__ import annotations

__all__ = [
    "AnchorError",
    "ConfigError",
    "CorruptDatabase",
    "GatewayError",
    "KeyFileError",
    "LedgerRejected",
    "LedgerUnavailable",
    "ProtocolError",
    "SensorError",
    "SensorTimeout",
    "StorageRefused",
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


class CorruptDatabase(StoreError):
    """A database file is damaged: not a database, truncated, or failing its integrity check.

    Never repaired or recreated by the gateway: a new log would not extend what
    the key has signed. ``path`` is the file, ``problem`` what is wrong with it.
    """

    hint = (
        "stop the gateway and keep the damaged file for inspection; restore the data directory "
        "from a backup, or rebuild the log from a published mirror or an exported bundle "
        "(docs/operations.md, 'A damaged log database'); never delete it to make the gateway "
        "start: the next start is refused anyway, because the key's history says the log existed"
    )

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"log database {path} is damaged: {problem}")
        self.path = path
        self.problem = problem


class StorageRefused(StoreError):
    """The data directory cannot take writes now; the gateway refuses input and retries.

    ``state`` is ``"full"`` (the file system has no room), ``"quota"`` (the data
    directory reached ``[storage] quota_mb`` or the free-space reserve) or
    ``"io-error"`` (the disk reported an I/O error).
    """

    hint = "free space in the data directory's file system (or raise [storage] quota_mb)"

    def __init__(self, state: str, problem: str) -> None:
        super().__init__(problem)
        self.state = state


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

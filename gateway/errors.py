"""The one exception tree of the gateway.

Split by who is at fault, so the CLI can tell a technician what to do. Every
subclass defined anywhere in the gateway is drawn here, with its module; a
new one is added to this drawing::

    GatewayError                     base; ``diagnostics()`` is what the CLI prints
    ├── ConfigError                  the configuration file is wrong (the operator's to fix)
    │   └── ConfigProblems           every problem of one file at once (config/problems.py)
    ├── KeyFileError                 device key missing, unreadable, wrong mode, or exists already
    ├── StoreError                   the log database failed (disk, corruption, schema)
    │   ├── CorruptDatabase          a database file fails its integrity checks (store.py)
    │   └── StorageRefused           no room or I/O errors: writes refused, retried (store.py)
    ├── HistoryConflict              the log does not extend what the key signed (history.py)
    ├── DataDirInUse                 another gateway holds the data directory's lock (lock.py)
    ├── RotationError                a key rotation cannot start or be finished (rotate.py)
    ├── ExportEmpty                  no entries in the requested window (export.py)
    ├── ExportPruned                 the entries asked for were pruned by retention (export.py)
    ├── NoSuchEntry                  the entry asked for is not in the log (evidence.py)
    ├── PublishError                 the publish target could not take or give a file (publish.py)
    ├── PublishRefused               the target holds a log this one does not extend (publish.py)
    ├── AnnounceError                the uplink's broker did not take an announcement (uplink.py)
    ├── WitnessError                 a witness did not cosign a checkpoint (witnessing.py)
    │   ├── WitnessUnavailable       retryable: unreachable, timeout, 5xx (witnessing.py)
    │   └── WitnessRefused           the witness said no: 4xx, e.g. 422 for a fork (witnessing.py)
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
``ValueError``; and three private control-flow signals, the EZO source's
``_Restart`` (the circuit rebooted: run the start sequence again; ``gateway
probe`` gets a ``SensorError``), ``anchoring/evm_rpc.py``'s ``_Unusable`` and
``check.py``'s ``_Failed`` (a probe's failure, printed as its FAILED line).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.config.problems import Problem

__all__ = [
    "AnchorError",
    "ConfigError",
    "ConfigProblems",
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


class ConfigProblems(ConfigError):
    """Everything wrong with one config file; ``where`` (its key path) and ``problem``
    are the first error's.

    ``problems`` are ``gateway.config.problems.Problem`` s (key path, line, message,
    severity, doc section); the message lists them like a compiler does.
    """

    hint = "fix each key named above (see the doc section under it), then run gateway check"

    def __init__(self, path: str, problems: Sequence[Problem]) -> None:
        from gateway.config.problems import format_problem

        errors = [p for p in problems if p.severity == "error"] or list(problems)
        first = errors[0]
        line = f":{first.line}" if first.line is not None else ""
        self.path = path
        self.problems = tuple(problems)
        GatewayError.__init__(self, "\n".join(format_problem(path, p) for p in errors))
        self.where = first.key or f"{path}{line}"
        self.problem = first.message
        self.partial: GatewayConfig | None = None
        """What could be read despite the problems (None: nothing, e.g. not TOML)."""
        self.sensor_rows: tuple[int, ...] = ()
        """For each sensor of ``partial``, the index of its ``[[sensor]]`` table."""

    def diagnostics(self) -> str:
        n = sum(p.severity == "error" for p in self.problems)
        return f"{n} problem{'s' if n != 1 else ''} in the config:\n{self}\n  hint: {self.hint}"


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
        if state == "io-error":
            self.hint = (
                "the disk reports I/O errors: look at the kernel log (dmesg), replace the card "
                "or drive and restore the data directory (docs/operations.md, Disk space)"
            )


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

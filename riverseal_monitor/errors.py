"""The one exception tree of ``riverseal_monitor``::

MonitorError                  base; its text is what the CLI prints
├── WitnessConfigError        the witness's key, log list or database cannot be used
├── MonitorConfigError        monitor.toml cannot be used (the message names the key)
├── StateError                the monitor's state database cannot be opened or written
└── FetchError                a box's published file cannot be fetched (network, HTTP status)
"""

from __future__ import annotations

__all__ = ["FetchError", "MonitorConfigError", "MonitorError", "StateError", "WitnessConfigError"]


class MonitorError(Exception):
    """Base of every error raised by riverseal_monitor."""


class WitnessConfigError(MonitorError):
    """The witness cannot start: a key file, the log list or the state database is unusable."""


class MonitorConfigError(MonitorError):
    """The monitor's configuration file is unreadable or names an unusable value."""


class StateError(MonitorError):
    """The monitor's state database cannot be opened, read or written."""


class FetchError(MonitorError):
    """A box's published file could not be fetched (connection error or an HTTP error status)."""

"""The one exception tree of ``riverseal_monitor``::

MonitorError                  base; its text is what the CLI prints
└── WitnessConfigError        the witness's key, log list or database cannot be used
"""

from __future__ import annotations

__all__ = ["MonitorError", "WitnessConfigError"]


class MonitorError(Exception):
    """Base of every error raised by riverseal_monitor."""


class WitnessConfigError(MonitorError):
    """The witness cannot start: a key file, the log list or the state database is unusable."""

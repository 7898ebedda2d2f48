"""riverseal's monitor side, installed with the verifier (``pip install 'riverseal[monitor]'``).

- The regulator's monitor (``riverseal-monitor``, docs/monitor.md) follows many
  boxes as their logs grow: ``follow`` is its pure core (one verification step
  per new checkpoint, alerts), ``monitor`` its IO (HTTP, MQTT, webhook),
  ``state_sqlite`` its state, ``config`` its ``monitor.toml``.
- The witness (``riverseal_monitor.witness``, ``riverseal-witness``,
  docs/witness.md): a C2SP tlog-witness that cosigns the checkpoints of the
  boxes it follows and refuses any that is not consistent with the last one it
  cosigned. It needs only the standard library and ``ledger_client``.

Importing the package loads neither httpx nor aiomqtt (``monitor`` does).
"""

from riverseal_monitor.errors import (
    FetchError,
    MonitorConfigError,
    MonitorError,
    StateError,
    WitnessConfigError,
)
from riverseal_monitor.follow import Alert, BoxSpec, Follower, Reading, Verified
from riverseal_monitor.witness import LoggedCheckpoint, Witness, WitnessConfig, load_logs

__all__ = [
    "Alert",
    "BoxSpec",
    "FetchError",
    "Follower",
    "LoggedCheckpoint",
    "MonitorConfigError",
    "MonitorError",
    "Reading",
    "StateError",
    "Verified",
    "Witness",
    "WitnessConfig",
    "WitnessConfigError",
    "load_logs",
]

"""riverseal's monitor side, installed with the verifier (``pip install riverseal``).

The regulator's monitor follows many boxes; for now it holds the witness
(``riverseal_monitor.witness``): a C2SP tlog-witness that cosigns the
checkpoints of the boxes it follows and refuses any that is not consistent with
the last one it cosigned (docs/witness.md). Console script: ``riverseal-witness``.
Only the standard library and ``ledger_client`` (PyNaCl) are needed.
"""

from riverseal_monitor.errors import MonitorError, WitnessConfigError
from riverseal_monitor.witness import LoggedCheckpoint, Witness, WitnessConfig, load_logs

__all__ = [
    "LoggedCheckpoint",
    "MonitorError",
    "Witness",
    "WitnessConfig",
    "WitnessConfigError",
    "load_logs",
]

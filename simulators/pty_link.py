"""Moved: `PtyLink` now lives in `simulators.pty_device` (the base every pty
simulator shares) and `EzoPtyDevice` in `simulators.ezo_pty`, beside the EZO circuit.

This module only re-exports them because tests/gateway and benchmarks still import
`simulators.pty_link`; delete it once they import the new modules.
"""

from simulators.ezo_pty import EzoPtyDevice
from simulators.pty_device import PtyLink, ReplyHandler

__all__ = ["EzoPtyDevice", "PtyLink", "ReplyHandler"]

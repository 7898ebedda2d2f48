"""riverseal's demo: a simulated station end to end, and its bundle verified.

Kept out of the box package on purpose: it is the one place that puts the
three together — the gateway (`gateway`), software sensors on real ptys and a
local timestamp authority (`simulators`), and the regulator's verifier
(`ledger_client`, called through its API). `gateway` imports none of it.
The console script is `riverseal-demo` (`riverseal_demo.cli`).
"""

from riverseal_demo.demo import DemoError, run_demo

__all__ = ["DemoError", "run_demo"]

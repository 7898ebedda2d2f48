"""A coarse throughput floor for verify_bundle (the real measurement: bench_verify.py).

The floor sits far below the target (10,000 entries/s on one core for 100k
entries) so that a busy CI machine passes, while anything quadratic or a lost
cache fails.
"""

from __future__ import annotations

import time

from bench_verify import NOW, build

from ledger_client.verify import verify_bundle


def test_verify_throughput_floor() -> None:
    bundle = build(4000, every=500)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        report = verify_bundle(bundle, now=NOW)
        best = min(best, time.perf_counter() - start)
        assert report.verified
    assert 4000 / best > 2500, f"{4000 / best:,.0f} entries/s"

"""Capped, jittered exponential back-off: reconnecting drivers, restarts, anchor retries.

Attempt ``n`` (counting from 0) waits a delay drawn uniformly from
``[0, min(cap, base * 2**n)]`` ("full jitter"), so a fleet of boxes that lost
the same broker does not come back in lock step. A success resets the count.
"""

from __future__ import annotations

import asyncio
import random

__all__ = ["Backoff", "backoff_bound"]


def backoff_bound(attempt: int, base_s: float, cap_s: float) -> float:
    """The upper end of the delay range for ``attempt`` (0-based)."""
    if attempt < 0:
        raise ValueError("attempt must not be negative")
    # 2**attempt grows without bound; stop doubling once the cap is reached.
    if attempt >= 64 or base_s * 2.0**attempt >= cap_s:
        return cap_s
    return base_s * 2.0**attempt


class Backoff:
    """Delay source for one reconnect loop.

    Args:
        base_s: bound of the first delay.
        cap_s: no delay is longer than this.
        rng: random source; tests pass a seeded ``random.Random``.
    """

    def __init__(
        self, base_s: float = 0.5, cap_s: float = 30.0, *, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s <= 0:
            raise ValueError("back-off base and cap must be > 0")
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()  # noqa: S311  # jitter, not secrets

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        bound = backoff_bound(self.attempt, self.base_s, self.cap_s)
        self.attempt += 1
        return self._rng.uniform(0.0, bound)

    def reset(self) -> None:
        """Call after a success: the next failure starts from ``base_s`` again."""
        self.attempt = 0

    async def sleep(self) -> float:
        """Sleep for ``next_delay()`` seconds; return how long that was."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

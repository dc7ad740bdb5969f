"""How long to wait before the next attempt: exponential backoff with jitter, and Retry-After.

Kept apart from the engine so the policy is one readable function: the wait doubles with each
attempt (capped), is spread by jitter so that many clients hitting a struggling server do not
retry in lockstep, and yields to the server's own ``Retry-After`` when it sends one.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

RETRY_DELAY_ENV = "MODNET_TOOLS_RETRY_DELAY"


@dataclass(frozen=True)
class RetryPolicy:
    """``base`` is the first wait in seconds; ``cap`` bounds backoff; ``max_wait`` bounds
    how long a ``Retry-After`` is honoured before the source is given up instead."""

    base: float = 2.0
    cap: float = 60.0
    max_wait: float = 300.0

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based): "equal jitter",
        a uniform draw from the upper half of ``base * 2**(failures-1)`` (capped)."""
        # The exponent is bounded: 2**1099 overflows a float, and the cap is reached by 2**20.
        ceiling = min(self.cap, self.base * (2 ** min(max(0, failures - 1), 60)))
        draw = (rng or random).uniform(0.5, 1.0)
        return ceiling * draw


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)

"""Deadlines: every request has ``request_timeout`` seconds from arrival to answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from toolkit.serve.errors import ApiError

T = TypeVar("T")


def deadline_in(seconds: float) -> float:
    """The loop time ``seconds`` from now."""
    return asyncio.get_running_loop().time() + seconds


async def wait_until(work: Awaitable[T], deadline: float) -> T:
    """Await ``work`` until the loop time ``deadline``; 503 + Retry-After if not done by then
    (the model is the bottleneck: a retry later may succeed)."""
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        return await asyncio.wait_for(work, max(0.001, remaining))
    except TimeoutError:
        raise ApiError(
            503, "the request timed out waiting for the model", {"Retry-After": "1"}
        ) from None

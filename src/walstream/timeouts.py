"""`within`: asyncio.wait_for without its lost cancellations.

Before Python 3.12, asyncio.wait_for swallows a cancellation that arrives in the same loop iteration as the
awaited thing finishes (CPython gh-86296): the cancelled task carries on as if nothing happened. walstream
met it as a hang: a sink failed, the pipeline was cancelled just as a client queue freed room (waking its
wait), and kept streaming while walstream waited for it to stop. Every timed wait in walstream goes through
here (tests/unit/test_timeouts.py reproduces the race, and checks nothing in src calls asyncio.wait_for).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """The result of `awaitable`, or asyncio.TimeoutError after `timeout` seconds (None: no limit), with the
    awaitable cancelled and finished. A cancellation of the caller always propagates (the awaitable is
    cancelled too)."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task})  # raises only if the caller is cancelled meanwhile
        if task.cancelled():
            raise asyncio.TimeoutError
    return task.result()  # as wait_for: what finished despite the cancel is returned

"""walstream.timeouts.within: the timed wait that never loses a cancellation (asyncio.wait_for before 3.12 does)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from walstream.timeouts import within

SRC = Path(__file__).resolve().parents[2] / "src" / "walstream"


async def _cancel_as_it_finishes(wait: Callable[[Awaitable[None], float], Awaitable[Any]]) -> bool:
    """The race: the awaited future finishes and the waiting task is cancelled in the same loop iteration.
    True if the task ends cancelled."""
    inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(wait(inner, 10.0))
    await asyncio.sleep(0)  # the task is now waiting
    inner.set_result(None)
    task.cancel()
    await asyncio.wait({task})
    return task.cancelled()


def test_a_cancellation_as_the_awaited_finishes_is_kept() -> None:
    assert asyncio.run(_cancel_as_it_finishes(within))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for keeps it from Python 3.12")
def test_asyncio_wait_for_loses_it_here() -> None:
    # Why `within` exists: this is the hang walstream met (a sink failed, the pipeline kept streaming).
    assert not asyncio.run(_cancel_as_it_finishes(asyncio.wait_for))


def test_timeout_cancels_the_awaitable_and_raises() -> None:
    async def scenario() -> bool:
        cancelled = asyncio.Event()

        async def slow() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()

        with pytest.raises(asyncio.TimeoutError):
            await within(slow(), 0.01)
        return cancelled.is_set()  # finished before within returned

    assert asyncio.run(scenario())


def test_result_exception_and_no_limit() -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 7

    async def failing() -> None:
        raise ValueError("bad 7")

    async def scenario() -> None:
        assert await within(value(), 1.0) == 7
        assert await within(value(), None) == 7
        with pytest.raises(ValueError, match="bad 7"):
            await within(failing(), 1.0)

    asyncio.run(scenario())


def test_a_cancelled_caller_cancels_the_awaitable() -> None:
    async def scenario() -> bool:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()

        task = asyncio.ensure_future(within(forever(), None))
        await started.wait()
        task.cancel()
        await asyncio.wait({task})
        await cancelled.wait()
        return task.cancelled()

    assert asyncio.run(scenario())


def test_src_has_no_asyncio_wait_for() -> None:
    users = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "asyncio.wait_for(" in p.read_text()]
    assert users == [], f"use walstream.timeouts.within instead of asyncio.wait_for in {users}"

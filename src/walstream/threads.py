"""Blocking work (libpq calls) off the event loop, in a daemon thread the loop need not wait for.

asyncio.to_thread's pool is joined when the event loop closes, so a connection attempt to a host that does
not answer would hold walstream's exit for the whole connect_timeout. A daemon thread does not; when the
awaiting task is cancelled (walstream is stopping), `abandoned(result)` tidies up whatever the work still
produced.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_daemon_thread(work: Callable[[], T], name: str,
                           abandoned: Callable[[T], None] = lambda result: None) -> T:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            if error is None:
                abandoned(result)  # type: ignore[arg-type]
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting task)
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the event loop is gone: walstream has stopped
            if error is None:
                abandoned(result)  # type: ignore[arg-type]

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done

"""app.serve's shutdown: a fatal error of the replication stream while stopping is raised, not swallowed."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from walstream import app
from walstream.config import StartConfig
from walstream.errors import ProtocolError
from walstream.pgcluster import free_port


class FailingOnStop(app.Pipeline):
    """Streams nothing; fails the way a broken stream would once asked to stop."""

    async def run(self) -> None:
        self.first_attempt.set()
        await self.stopping.wait()
        raise ProtocolError("the stream broke while draining")


def test_a_fatal_error_during_shutdown_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "Pipeline", FailingOnStop)
    # Nothing listens on this port: the slot monitor's side connection fails fast and is only logged.
    config = StartConfig(connection=f"host=127.0.0.1 port={free_port()} connect_timeout=1", publication="p",
                         slot="s", host="127.0.0.1", port=0)

    async def scenario() -> int:
        ready = asyncio.Event()
        serving = asyncio.create_task(app.serve(config, ready))
        await ready.wait()
        os.kill(os.getpid(), signal.SIGTERM)  # serve() owns SIGTERM: the graceful stop begins
        return await serving

    with pytest.raises(ProtocolError, match="broke while draining"):
        asyncio.run(scenario())

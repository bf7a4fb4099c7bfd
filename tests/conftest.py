import asyncio
import sys
from pathlib import Path

import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_proc import GatewayProcess


@pytest.fixture(scope="session")
def demo_gateway():
    """The embedded default config (demo service), one process for the whole session."""
    gw = GatewayProcess()
    yield gw
    assert gw.stop() == 0


@pytest.fixture
def run():
    """Runs a coroutine on a fresh uvloop loop: `run(coro)`."""
    def _run(coro, timeout: float = 30):
        async def guarded():
            return await asyncio.wait_for(coro, timeout)
        return uvloop.run(guarded())
    return _run

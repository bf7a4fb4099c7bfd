import asyncio

import pytest
import uvloop

from support.gateway_proc import GatewayProcess


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


@pytest.fixture
def warnings():
    """The genapi logger's warning records (attached directly: log.setup may have stopped propagation)."""
    import logging

    records: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("genapi")
    handler = ListHandler(logging.WARNING)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)

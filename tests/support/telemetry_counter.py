"""One cheap telemetry handler on every request's stop event (the benchmarks' "one handler"
case), attached when a gateway config names `telemetry_counter:count`; and a record of the
retry events (`telemetry_counter:retries`), so a test sees that a call was re-run."""

from genapi import telemetry

COUNT = [0]


def _count(event, measurements, metadata, config):
    COUNT[0] += 1


telemetry.attach("bench-counter", ["genapi.executor.request.start", "genapi.executor.request.stop"], _count)


async def count():
    return COUNT[0]


RETRIES: list[str] = []


def _retry(event, measurements, metadata, config):
    RETRIES.append(repr(metadata.get("mode")))


telemetry.attach("test-retry-counter", "genapi.executor.retry", _retry)


async def retries(clear=False):
    """The retry mode of each `genapi.executor.retry` event seen so far (one per re-run call)."""
    out = list(RETRIES)
    if clear:
        RETRIES.clear()
    return out

"""One cheap telemetry handler on every request's stop event (the benchmarks' "one handler"
case), attached when a gateway config names `telemetry_counter:count`."""

from genapi import telemetry

COUNT = [0]


def _count(event, measurements, metadata, config):
    COUNT[0] += 1


telemetry.attach("bench-counter", ["genapi.executor.request.start", "genapi.executor.request.stop"], _count)


async def count():
    return COUNT[0]

"""Telemetry handlers inside a test gateway: attached when the gateway imports this module (a
function of the config names it), read back through `events()`, a gateway function."""

import time

from genapi import telemetry

SEEN: list[dict] = []


def _record(event, measurements, metadata, config):
    SEEN.append(
        {
            "event": event,
            "measurements": sorted(measurements),
            "metadata": sorted(metadata),
            "config": config,
            "service": metadata.get("service"),
            "success": metadata.get("success"),
            "kind": metadata.get("kind"),
        }
    )


def _boom(event, measurements, metadata, config):
    raise RuntimeError("handler bug")


def _slow(event, measurements, metadata, config):
    time.sleep(0.2)


telemetry.attach_all("probe", _record, {"tag": 1})
telemetry.attach("bad", "genapi.executor.request.stop", _boom)
telemetry.attach("slow", "genapi.executor.request.start", _slow)


async def events(clear=False):
    out = list(SEEN)
    if clear:
        SEEN.clear()
    return out


async def attached(event):
    return telemetry.listening(event)

"""Rate-limiter features the README promises, end to end against real gateways: `fail_open`
(a limiter that cannot answer lets requests through, or refuses them with "Rate limit service
unavailable"), `genapi ratelimit config --set FILE.json` (the whole config replaced on every
worker before the command returns) and `genapi ratelimit status KEY VALUE --api SERVICE.REQUEST_TYPE`
(that function's limits), through the real CLI."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from genapi.client import Client
from genapi.errors import RATE_LIMIT_UNAVAILABLE
from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess

KEYED = """
[[functions]]
service = "w"
request_type = "keyed"
mfa = "testapi:echo"
arg_types = { text = "string" }
"""

REFUSED = re.compile(r"Rate limit exceeded\. Please retry after \d+ seconds\.")


def genapi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genapi", *args], capture_output=True, text=True, timeout=60)


async def on_workers(gw: GatewayProcess, workers: int) -> dict[int, Client]:
    """One joined connection per worker (by the pid that answers `w.pid`), reconnecting until each is found."""
    found: dict[int, Client] = {}
    extra: list[Client] = []
    for _ in range(200):
        c = await Client.connect(gw.url)
        await c.join("api:r")
        pid = (await c.call("w", "pid", topic="api:r")).result  # type: ignore[union-attr]
        if pid in found:
            extra.append(c)
        else:
            found[pid] = c
        if len(found) == workers:
            break
    await asyncio.gather(*(c.close() for c in extra))
    assert len(found) == workers, f"connections reached {len(found)} of {workers} workers"
    return found


async def keyed(c: Client, text: str, n: int) -> list[Any]:
    return [await c.call("w", "keyed", {"text": text}, topic="api:r", raise_on_error=False) for _ in range(n)]


# ----------------------------------------------------------------------------------- fail_open
# The limiter cannot answer for a request that more limits apply to than the shared table checks
# in one step (16): sixteen global limits on `text` and one more on w.keyed make every keyed call
# fail in the limiter (logged as rate_limiter_failed); w.pid carries no `text`, so no limit applies to it.
MANY_LIMITS = "".join(
    f'[[rate_limiter.global_limits]]\nkey = "text"\nmax_requests = 100\nwindow_ms = {60000 + i}\n' for i in range(16)
) + (
    '[[rate_limiter.api_limits]]\nservice = "w"\nrequest_type = "keyed"\nkey = "text"\nmax_requests = 1\nwindow_ms = 60000\n'
)


@pytest.mark.parametrize("fail_open", [True, False])
def test_fail_open_decides_when_the_limiter_cannot_answer(fail_open: bool) -> None:
    config = PID_CONFIG + KEYED + f"\n[rate_limiter]\nfail_open = {str(fail_open).lower()}\n" + MANY_LIMITS
    gw = GatewayProcess(config, extra_args=["--workers", "2"])
    try:

        async def main() -> tuple[list[Any], list[Any]]:
            clients = await on_workers(gw, 2)
            got, pids = [], []
            for c in clients.values():  # on each worker
                got += await keyed(c, "same", 3)  # the api limit (1) would refuse the 2nd and 3rd
                pids += [await c.call("w", "pid", topic="api:r", raise_on_error=False) for _ in range(2)]
            await asyncio.gather(*(c.close() for c in clients.values()))
            return got, pids

        got, pids = asyncio.run(main())
        assert len(got) == 6 and all(p.success for p in pids)  # requests no limit applies to are untouched
        if fail_open:  # let through: every call answered, none counted against the limit of 1
            assert [r.success for r in got] == [True] * 6
            assert {r.result["text"] for r in got} == {"same"}
        else:  # refused, retryable
            assert [(r.success, r.error, r.can_retry) for r in got] == [(False, RATE_LIMIT_UNAVAILABLE, True)] * 6
        log = gw.read_stderr()
        assert len(re.findall(rf"rate_limiter_failed .*fail_open={fail_open}", log)) == 6, log[-2000:]
    finally:
        assert gw.stop() == 0


# ------------------------------------------------------------------ config --set and status --api
BEFORE = '[[rate_limiter.global_limits]]\nkey = "text"\nmax_requests = 1\nwindow_ms = 60000\n'
AFTER = {
    "enabled": True,
    "fail_open": False,
    "global_limits": [],
    "api_limits": [
        {"service": "w", "request_type": "keyed", "key": "text", "max_requests": 2, "window_ms": 60000},
    ],
}


@pytest.mark.parametrize("workers", [2, 1])
def test_config_set_replaces_the_config_on_every_worker_and_status_api_reads_one_function(
    tmp_path: Path, workers: int
) -> None:
    gw = GatewayProcess(PID_CONFIG + KEYED + "\n[rate_limiter]\n" + BEFORE, extra_args=["--workers", str(workers)])
    try:

        async def each_worker(texts: list[str], n: int) -> list[list[bool]]:
            """`n` keyed calls per text, text i on worker i's connection: each worker's verdicts."""
            conns = await on_workers(gw, workers)
            try:
                out = []
                for c, text in zip(conns.values(), texts, strict=True):
                    got = await keyed(c, text, n)
                    assert all(REFUSED.fullmatch(r.error) for r in got if not r.success), got
                    out.append([r.success for r in got])
                return out
            finally:
                await asyncio.gather(*(c.close() for c in conns.values()))

        # before: the global limit of 1 per text, on every worker
        assert asyncio.run(each_worker(["a", "b"][:workers], 3)) == [[True, False, False]] * workers

        new = tmp_path / "limits.json"
        new.write_text(json.dumps(AFTER))
        out = genapi("ratelimit", "config", "--set", str(new), "--control", gw.control, "--json")
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        if workers > 1:  # the master answers once every worker acknowledged (a lone worker applied it itself)
            assert answer["workers"] == workers and answer["missing"] == []
        want = {**AFTER, "table_slots": 16384, "max_requests_cap": 100}  # the table's sizes stay the running ones
        assert answer["config"] == want
        shown = genapi("ratelimit", "config", "--control", gw.control, "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout) == want

        # after, on every worker at once (no waiting: the command returned once each worker had it):
        # the global limit is gone ("a" and "b", refused before, are let through again) and
        # w.keyed's own limit of 2 holds
        assert asyncio.run(each_worker(["a", "b"][:workers], 3)) == [[True, True, False]] * workers
        assert asyncio.run(each_worker(["c", "d"][:workers], 3)) == [[True, True, False]] * workers

        status = genapi("ratelimit", "status", "text", "c", "--api", "w.keyed", "--control", gw.control, "--json")
        assert status.returncode == 0, status.stderr
        (row,) = json.loads(status.stdout)
        assert {k: v for k, v in row.items() if k != "resets_in_ms"} == {
            "key": "text",
            "value": "c",
            "service": "w",
            "request_type": "keyed",
            "max_requests": 2,
            "window_ms": 60000,
            "used": 2,
            "remaining": 0,
        }
        assert 0 < row["resets_in_ms"] <= 60000
        fresh = genapi("ratelimit", "status", "text", "never-sent", "--api", "w.keyed", "--control", gw.control)
        assert fresh.returncode == 0 and "text=never-sent: 0/2 used per 60000 ms, 2 remaining" in fresh.stdout
        # the global limits on `text` (none now) and a function without limits
        glob = genapi("ratelimit", "status", "text", "c", "--control", gw.control, "--json")
        assert glob.returncode == 0 and json.loads(glob.stdout) == []
        other = genapi("ratelimit", "status", "text", "c", "--api", "w.pid", "--control", gw.control)
        assert other.returncode == 0 and other.stdout.strip() == "no limit on text for w.pid"

        # a file that is not a config is refused, and the config in force stays
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"global_limits": [{"key": "text", "max_requests": "many"}]}))
        refused = genapi("ratelimit", "config", "--set", str(bad), "--control", gw.control)
        assert refused.returncode == 2 and "[rate_limiter]" in refused.stderr, refused.stderr
        assert json.loads(genapi("ratelimit", "config", "--control", gw.control, "--json").stdout) == want
    finally:
        assert gw.stop() == 0

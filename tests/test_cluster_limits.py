"""Rate limits exact across hosts (`scope = "cluster"`, `[engine] type = "redis"`): a real
redis-server and two real gateway hosts (one with two workers) sharing it. A limit of N per
minute per user admits N calls however they are spread over the hosts and refuses the next on
either, with the reference's error and a retry-after; a refusal records nothing; `genapi
ratelimit reset` on one host clears the user on both; with Redis killed the hosts follow
`fail_open` (admit, or refuse with the clear error), count it in /metrics, show it in /ready and
`genapi admin status`, log it once; with Redis back, the limits hold again."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from genapi.client import Client
from genapi.config import parse
from genapi.errors import ConfigError
from support.configs import echo
from support.gateway_proc import GatewayProcess, several_hosts, wait_until
from support.node_proc import control
from support.redis_proc import RedisProcess

SECRET = "cluster-limits-test-secret-0123456789abcdef"
N = 6  # w.echo: N calls per minute per user_id, over every host
REFUSED = re.compile(r"^Rate limit exceeded\. Please retry after (\d+) seconds\.$")
UNAVAILABLE = "Rate limit service unavailable"

CONFIG = """
[auth]
jwt_secret = "{secret}"

[engine]
type = "redis"
url = "{url}"
prefix = "{prefix}"
connect_timeout_ms = 500
command_timeout_ms = 2000

[rate_limiter]
fail_open = true

[[rate_limiter.api_limits]]
service = "w"
request_type = "echo"
key = "user_id"
max_requests = {n}
window_ms = 60000
scope = "cluster"

[[rate_limiter.api_limits]]
service = "w"
request_type = "later"
key = "user_id"
max_requests = 2
window_ms = 60000
scope = "cluster"

[[rate_limiter.api_limits]]
service = "w"
request_type = "both"
key = "user_id"
max_requests = 4
window_ms = 60000

[[rate_limiter.api_limits]]
service = "w"
request_type = "both"
key = "user_id"
max_requests = 2
window_ms = 60000
scope = "cluster"

[[rate_limiter.api_limits]]
service = "w"
request_type = "race"
key = "user_id"
max_requests = 1
window_ms = 60000

[[rate_limiter.api_limits]]
service = "w"
request_type = "race"
key = "user_id"
max_requests = 5
window_ms = 60000
scope = "cluster"

[[rate_limiter.api_limits]]
service = "w"
request_type = "tight"
key = "text"
max_requests = 5
window_ms = 60000
scope = "cluster"

[[rate_limiter.api_limits]]
service = "w"
request_type = "tight"
key = "user_id"
max_requests = 3
window_ms = 60000
scope = "cluster"
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[engine]\ntype = "redis"\n',
            '[engine] key url: type = "redis" needs the server\'s url, "redis://host:port[/db]", '
            '"rediss://host:port[/db]" (TLS) or "unix:///path/to/redis.sock"',
        ),
        (
            '[engine]\ntype = "redis"\nurl = "http://10.0.0.5:6379"\n',
            '[engine] key url: must be "redis://host:port[/db]", "rediss://host:port[/db]" (TLS) or '
            '"unix:///path/to/redis.sock", got "http://10.0.0.5:6379"',
        ),
        ('[engine]\ntype = "redis"\nurl = "redis://"\n', '[engine] key url: must be "redis://host:port[/db]"'),
        ('[engine]\ntype = "valkey"\n', '[engine] key type: must be one of memory, redis, got "valkey"'),
        (
            '[rate_limiter]\n[[rate_limiter.api_limits]]\nservice = "w"\nrequest_type = "echo"\nkey = "user_id"\n'
            'max_requests = 3\nwindow_ms = 1000\nscope = "cluster"\n',
            '[rate_limiter] limit on user_id of w.echo: scope = "cluster" counts across hosts in Redis; set '
            '[engine] type = "redis" and url, or scope = "host"',
        ),
    ],
)
def test_a_bad_engine_is_refused_naming_the_key(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, "t.toml")
    assert problem in str(e.value)


def test_the_redis_engine_without_redis_py_is_refused_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    with pytest.raises(ConfigError) as e:
        parse('[engine]\ntype = "redis"\nurl = "redis://10.0.0.5:6379"\n', "t.toml")
    assert '[engine] key type: "redis" needs redis-py: pip install "genapi-gateway[redis]"' in str(e.value)


def test_the_engine_defaults_to_memory_and_takes_each_url_form() -> None:
    assert parse("").engine.type == "memory"
    for url in ("redis://10.0.0.5:6379/0", "rediss://:pw@redis.example:6380", "unix:///run/redis/redis.sock"):
        engine = parse(f'[engine]\ntype = "redis"\nurl = "{url}"\n').engine
        assert (engine.type, engine.url, engine.prefix, engine.host_name(4000)) == (
            "redis",
            url,
            "genapi",
            f"{socket.gethostname()}:4000",
        )


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture(scope="module")
def hosts(redis: RedisProcess) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateway hosts with the same [engine]: A with two workers, B with one."""
    config = (
        CONFIG.format(secret=SECRET, url=redis.url, prefix=f"t{os.getpid()}", n=N)
        + echo("w")
        + echo("w", "tight")
        + echo("w", "later", response_type="async")  # a Task's request: the general path
        + echo("w", "both")
        + echo("w", "race")
    )
    with several_hosts(config, 2, 1) as (a, b):
        yield a, b


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


async def _calls(gw: GatewayProcess, user: str, n: int, rt: str = "echo", text: str = "x") -> list[Any]:
    """`n` calls by `user` on host `gw`, each on a fresh connection (so over its workers)."""
    out = []
    for _ in range(n):
        client = await Client.connect(gw.url, token=token(user))
        try:
            await client.join("api:t")
            out.append(await client.call("w", rt, {"text": text}, topic="api:t", raise_on_error=False))
        finally:
            await client.close()
    return out


def calls(gw: GatewayProcess, user: str, n: int = 1, rt: str = "echo", text: str = "x") -> list[Any]:
    return asyncio.run(_calls(gw, user, n, rt, text))


def refused(resp: Any) -> bool:
    """The reference's rate-limit refusal, with a retry-after within the window, can_retry."""
    m = REFUSED.match(resp.error or "")
    return not resp.success and m is not None and 1 <= int(m.group(1)) <= 60 and resp.can_retry is True


def get(gw: GatewayProcess, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{gw.host}:{gw.port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(gw: GatewayProcess, name: str) -> float:
    _, text = get(gw, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics:\n{text}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genapi", *args], capture_output=True, text=True, timeout=60, env={**os.environ}
    )


def set_fail_open(gw: GatewayProcess, fail_open: bool) -> None:
    config = control(gw.control, "$rl_config")
    control(gw.control, "$rl_update", [{**config, "fail_open": fail_open}])


def test_a_cluster_limit_holds_exactly_across_two_hosts(hosts: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = hosts
    got = []
    for i in range(N):  # spread: A, B, A, B, ...
        got += calls(a if i % 2 == 0 else b, "ada")
    assert all(r.success for r in got), [r.error for r in got]
    on_a, on_b = calls(a, "ada")[0], calls(b, "ada")[0]
    assert refused(on_a), on_a
    assert refused(on_b), on_b
    # another user is not counted with ada
    assert all(r.success for r in calls(b, "bob", 2))
    # seen as Redis holds it, from either host
    rows = control(a.control, "$rl_status", ["user_id", "ada", "w", "echo"])
    assert [(r["scope"], r["used"], r["remaining"], r["max_requests"]) for r in rows] == [("cluster", N, 0, N)]
    assert 0 < rows[0]["resets_in_ms"] <= 60000


def test_the_general_path_waits_for_the_cluster_check_too(hosts: tuple[GatewayProcess, GatewayProcess]) -> None:
    """w.later answers async (a Task: the general path): 2 per user over both hosts, then refused."""
    a, b = hosts
    got = calls(b, "kim", 1, "later") + calls(a, "kim", 1, "later")
    assert all(r.success and r.result == {"text": "x", "n": 1} for r in got), got
    assert refused(calls(a, "kim", 1, "later")[0]) and refused(calls(b, "kim", 1, "later")[0])


def test_a_refusal_records_nothing(hosts: tuple[GatewayProcess, GatewayProcess]) -> None:
    """w.tight counts per text (5), then per user (3): calls admitted by the text's limit and
    refused by the user's are not counted under the text's, so another user still gets the
    text's 2 remaining, not fewer."""
    a, b = hosts
    assert all(r.success for r in calls(a, "cyd", 3, "tight", "shared"))
    over = calls(b, "cyd", 4, "tight", "shared") + calls(a, "cyd", 2, "tight", "shared")
    assert all(refused(r) for r in over), [r.error for r in over]
    # the text "shared" has 3 of its 5: dee gets exactly 2 more on either host
    more = calls(b, "dee", 1, "tight", "shared") + calls(a, "dee", 2, "tight", "shared")
    assert [r.success for r in more] == [True, True, False]
    assert refused(more[2])


def test_a_refusal_by_a_cluster_limit_records_nothing_in_a_host_limit(
    hosts: tuple[GatewayProcess, GatewayProcess],
) -> None:
    """w.both: 4 per user on each host, 2 over both hosts. The cluster limit refuses the 3rd
    call on; the host limit, checked first, has counted only the 2 admitted."""
    _a, b = hosts
    assert all(r.success for r in calls(b, "lee", 2, "both"))
    over = calls(b, "lee", 3, "both")
    assert all(refused(r) for r in over), [r.error for r in over]
    rows = control(b.control, "$rl_status", ["user_id", "lee", "w", "both"])
    assert [(r.get("scope", "host"), r["used"]) for r in rows] == [("host", 2), ("cluster", 2)]


def test_a_host_refusal_after_the_cluster_admitted_takes_the_cluster_records_back(
    hosts: tuple[GatewayProcess, GatewayProcess],
) -> None:
    """w.race: 1 per user on the host, 5 over both. Calls sent at once on one connection are all
    admitted by the host's look (nothing recorded yet) and by the cluster; the host then records
    one and refuses the others, whose cluster records are taken back: the cluster counts 1."""
    _a, b = hosts

    async def at_once(n: int) -> list[Any]:
        client = await Client.connect(b.url, token=token("max"))
        try:
            await client.join("api:t")
            return await asyncio.gather(
                *(client.call("w", "race", {"text": "x"}, topic="api:t", raise_on_error=False) for _ in range(n))
            )
        finally:
            await client.close()

    got = asyncio.run(at_once(4))
    assert sum(r.success for r in got) == 1 and all(refused(r) for r in got if not r.success), got

    def cluster_used() -> int:
        rows = control(b.control, "$rl_status", ["user_id", "max", "w", "race"])
        return int(next(r["used"] for r in rows if r.get("scope") == "cluster"))

    # taken back in the worker's next script call (it sends one for them alone)
    assert wait_until(lambda: cluster_used() == 1, timeout=30), cluster_used()
    rows = control(b.control, "$rl_status", ["user_id", "max", "w", "race"])
    assert [(r.get("scope", "host"), r["used"]) for r in rows] == [("host", 1), ("cluster", 1)]


def test_reset_on_one_host_clears_the_user_on_both(hosts: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = hosts
    calls(a, "eve", N // 2)
    calls(b, "eve", N - N // 2)
    # both hosts refuse (and so remember the refusal locally until its retry-after)
    assert refused(calls(a, "eve")[0]) and refused(calls(b, "eve")[0])
    status = cli("ratelimit", "status", "user_id", "eve", "--api", "w.echo", "--control", b.control)
    assert status.returncode == 0, status.stderr
    assert f"{N}/{N} used per 60000 ms, 0 remaining" in status.stdout and "(cluster" in status.stdout
    done = cli("ratelimit", "reset", "user_id", "eve", "--control", a.control, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"freed": 1}  # one log: the user's under w.echo's limit
    # B heard the reset (its local refusal forgotten): eve has N again, over both hosts
    assert wait_until(lambda: calls(b, "eve")[0].success, timeout=30, interval=0.2)
    again = calls(a, "eve", N - 1)
    assert all(r.success for r in again), [r.error for r in again]
    assert refused(calls(b, "eve")[0]) and refused(calls(a, "eve")[0])


_warm = itertools.count()


def workers_reach_redis(gw: GatewayProcess) -> bool:
    """Every worker of `gw` checked a call in Redis since it was last unreachable (a call by a
    user of its own drives each try; fresh connections spread them over the workers)."""
    calls(gw, f"warm{next(_warm)}")
    workers = control(gw.control, "$status")["workers"]
    return all(w["cluster_limits"]["up"] for w in workers)


def _count(gw: GatewayProcess, event: str) -> int:
    return len(re.findall(rf"\b{event}\b", gw.read_stderr()))


def test_redis_down_follows_fail_open_and_recovers(
    redis: RedisProcess, hosts: tuple[GatewayProcess, GatewayProcess]
) -> None:
    a, b = hosts
    assert json.loads(get(a, "/ready")[1])["engine"]["reachable"] is True
    calls(a, "fay", N)
    assert refused(calls(b, "fay")[0])
    redis.stop(signal.SIGKILL)
    try:
        # fail_open = true: admitted on both hosts while Redis is gone, each counted
        assert wait_until(lambda: calls(a, "gus")[0].success, timeout=30, interval=0.2)
        admitted = calls(a, "gus", N + 1) + calls(b, "gus", N + 1)
        assert all(r.success for r in admitted), [r.error for r in admitted]
        assert metric(a, "genapi_rate_limit_cluster_unavailable_total") >= N + 1
        assert metric(b, "genapi_rate_limit_cluster_unavailable_total") >= N + 1
        for gw in (a, b):
            assert wait_until(lambda gw=gw: metric(gw, "genapi_engine_reachable") == 0, timeout=30)
            code, body = get(gw, "/ready")
            assert code == 200 and json.loads(body)["engine"]["reachable"] is False, body
        status = cli("admin", "status", "--control", a.control)
        assert status.returncode == 0, status.stderr
        assert "engine redis" in status.stdout and "UNREACHABLE" in status.stdout, status.stdout
        assert re.search(r"\d+ answered without Redis", status.stdout), status.stdout
        # fail_open = false: refused with the clear error, can_retry
        for gw in (a, b):
            set_fail_open(gw, False)
        shut = calls(a, "gus", 2) + calls(b, "gus", 2)
        assert all(not r.success and r.error == UNAVAILABLE and r.can_retry for r in shut), [r.error for r in shut]
        # logged once per outage: the host's probe once, each worker's limiter once
        assert _count(a, "engine_unreachable") == 1 and _count(b, "engine_unreachable") == 1
        assert 1 <= _count(a, "rate_limit_engine_unreachable") <= 2  # by each worker that met it
        assert _count(b, "rate_limit_engine_unreachable") == 1
    finally:
        redis.start()
        for gw in (a, b):
            set_fail_open(gw, True)
    # Redis back (empty: nothing persisted): once every worker has reached it again, the limit
    # holds again, across both hosts
    for gw in (a, b):
        assert wait_until(lambda gw=gw: workers_reach_redis(gw), timeout=60, interval=0.2)
    got = calls(a, "hal", N - 2) + calls(b, "hal", 2)
    assert all(r.success for r in got), [r.error for r in got]
    assert refused(calls(a, "hal")[0]) and refused(calls(b, "hal")[0])
    for gw in (a, b):
        assert wait_until(lambda gw=gw: json.loads(get(gw, "/ready")[1])["engine"]["reachable"], timeout=30)
        assert metric(gw, "genapi_engine_outages_total") == 1
    assert _count(a, "engine_reachable") == 1 and _count(b, "engine_reachable") == 1

"""A real deployment of several hosts: a real redis-server, two real gateway hosts (each
`--workers 2`) with the same `[engine]` and cluster limits, and a real nginx running the SHIPPED
example config (examples/nginx/genapi.conf, only its upstreams and listen port replaced) in
front of them. phoenix.js clients connected through nginx land on both hosts and share a
cluster limit exactly; each host's access log names the real client (X-Forwarded-For through
nginx, `[gateway] trusted_proxies`); only the socket path is proxied.

And Redis faults under traffic through nginx (what tests/test_cluster_limits.py does not cover:
it kills Redis between calls): kill -9 and restart while calls flow on both hosts (every call
answered, per `fail_open` while Redis is down, exact again after the restart), and `CLIENT PAUSE`
(shorter than `command_timeout_ms`: calls wait and stay exact; longer: they follow `fail_open`;
none lost either way)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from genapi.client import Client
from genapi.engine.cluster_limits import RETRY_DOWN_S
from support.configs import PID, echo
from support.gateway_proc import GatewayProcess, children, several_hosts, wait_until
from support.nginx_proc import NginxProcess
from support.node_proc import control
from support.redis_proc import RedisProcess

JS_DIR = Path(__file__).resolve().parent / "js"
SECRET = "nginx-hosts-test-secret-0123456789abcdef"
N = 5  # w.echo: N calls per minute per user_id, over every host
ROUND = 2  # w.round: 2 calls per minute per `text`, over every host: a round of 3 calls is ok, ok, refused
COMMAND_TIMEOUT_MS = 1500
REFUSED = re.compile(r"^Rate limit exceeded\. Please retry after (\d+) seconds\.$")
UNAVAILABLE = "Rate limit service unavailable"

CONFIG = """
[gateway]
trusted_proxies = ["127.0.0.1"]
log_level = "info"

[auth]
jwt_secret = "{secret}"

[engine]
type = "redis"
url = "{url}"
prefix = "{prefix}"
connect_timeout_ms = 500
command_timeout_ms = {timeout}

[relay]
service = "chat"

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
request_type = "round"
key = "text"
max_requests = {round}
window_ms = 60000
scope = "cluster"
"""


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture(scope="module")
def hosts(redis: RedisProcess) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateway hosts, two workers each, with the same [engine] and limits."""
    config = (
        CONFIG.format(
            secret=SECRET, url=redis.url, prefix=f"n{os.getpid()}", timeout=COMMAND_TIMEOUT_MS, n=N, round=ROUND
        )
        + PID
        + echo("w")
        + echo("w", "round")
    )
    with several_hosts(config, 2, 2) as (a, b):
        yield a, b


@pytest.fixture(scope="module")
def nginx(hosts: tuple[GatewayProcess, GatewayProcess]) -> Iterator[NginxProcess]:
    a, b = hosts
    with NginxProcess([f"{a.host}:{a.port}", f"{b.host}:{b.port}"]) as proxy:
        yield proxy


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


def workers(gw: GatewayProcess) -> set[int]:
    pids = children(gw.pid)
    assert len(pids) == 2, pids
    return pids


def refused(answer: dict[str, Any]) -> bool:
    """The reference's rate-limit refusal (a Response push), with a retry-after within the window."""
    m = REFUSED.match(answer.get("error") or "")
    return answer.get("success") is False and m is not None and 1 <= int(m.group(1)) <= 60 and answer["can_retry"]


def phoenix_js(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs tests/js/hosts_client.cjs (phoenix.js clients) with `plan`; its answers."""
    return list(phoenix_js_run(plan)["answers"])


def phoenix_js_run(plan: dict[str, Any]) -> dict[str, Any]:
    """Runs tests/js/hosts_client.cjs (phoenix.js clients) with `plan`: {"answers", "relayed"}."""
    if not (JS_DIR / "node_modules" / "phoenix").is_dir():
        pytest.fail("tests/js/node_modules is missing (phoenix, ws): run `npm ci --prefix tests/js`", pytrace=False)
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` (Node.js 20+) is not on PATH; it is needed for tests/js", pytrace=False)
    proc = subprocess.run(
        [node, str(JS_DIR / "hosts_client.cjs")], input=json.dumps(plan), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"hosts_client.cjs exited {proc.returncode}\n{proc.stderr}"
    return dict(json.loads(proc.stdout))


def test_phoenix_js_clients_through_nginx_share_a_cluster_limit_over_both_hosts(
    hosts: tuple[GatewayProcess, GatewayProcess], nginx: NginxProcess
) -> None:
    a, b = hosts
    host_of = {pid: gw for gw in (a, b) for pid in workers(gw)}
    # four clients of one user, each from its own loopback address (the "real client" nginx sees)
    sources = [f"127.0.0.{i}" for i in range(2, 6)]
    clients = [{"token": token("ada"), "local": src} for src in sources]
    calls = [[i, "w", "pid", {}] for i in range(len(clients))]  # where each landed
    calls += [[i % len(clients), "w", "echo", {"text": f"e{i}"}] for i in range(N)]  # N admitted, over both hosts
    calls += [[i, "w", "echo", {"text": "over"}] for i in range(len(clients))]  # then refused on each client
    answers = phoenix_js({"url": nginx.url, "clients": clients, "calls": calls})

    pids = [ans["result"] for ans in answers[: len(clients)]]
    assert all(ans["success"] for ans in answers[: len(clients)]), answers
    landed = [host_of.get(pid) for pid in pids]
    assert None not in landed, (pids, host_of)
    assert {a, b} == set(landed), f"every client landed on one host: {pids}"
    echoes = answers[len(clients) :]
    assert [e["success"] for e in echoes[:N]] == [True] * N, echoes[:N]
    assert all(refused(e) for e in echoes[N:]), echoes[N:]  # the limit is full on both hosts

    # each host's access log names the client (its X-Forwarded-For), the peer being nginx
    for src, gw in zip(sources, landed, strict=True):
        assert gw is not None
        pattern = rf"INFO connect conn=\S+ peer={re.escape(src)} user=ada vsn=2\.0\.0 proxy=127\.0\.0\.1:\d+\n"
        assert re.search(pattern, gw.read_stderr()), f"no connect line naming {src}\n{gw.read_stderr()[-3000:]}"
    # nginx's own log: the upgrades, each sent on with the client's address in X-Forwarded-For
    ups = {f"{a.host}:{a.port}", f"{b.host}:{b.port}"}

    def upgrades() -> list[tuple[str, str, str]]:
        return re.findall(r'^(\S+) "GET /socket/websocket" 101 xff="([^"]*)" up=(\S+)$', nginx.access_log(), re.M)

    assert wait_until(lambda: len(upgrades()) >= len(clients), timeout=30), nginx.access_log()
    seen = upgrades()
    assert sorted(xff for _, xff, _ in seen) == sources, seen
    assert {up for _, _, up in seen} == ups, seen


def test_phoenix_js_clients_through_nginx_share_a_relay_group_over_both_hosts(
    hosts: tuple[GatewayProcess, GatewayProcess], nginx: NginxProcess
) -> None:
    """Members on both hosts, reached through nginx, get every message of every sender exactly
    once and each sender's in the order sent (Redis numbers them; each host delivers its own)."""
    a, b = hosts
    host_of = {pid: gw for gw in (a, b) for pid in workers(gw)}
    sources = [f"127.0.0.{i}" for i in range(6, 10)]
    clients = [{"token": token(f"member{i}"), "local": src} for i, src in enumerate(sources)]
    sends = [[i % len(clients), n] for n in range(40) for i in range(len(clients))]  # each sends 40
    out = phoenix_js_run(
        {
            "url": nginx.url,
            "clients": clients,
            "calls": [[i, "w", "pid", {}] for i in range(len(clients))],
            "relay": {"group": f"g{os.getpid()}", "sends": sends},
        }
    )
    answers, relayed = out["answers"], out["relayed"]
    assert all(ans.get("success") for ans in answers), [ans for ans in answers if not ans.get("success")]
    landed = {host_of.get(ans["result"]) for ans in answers[: len(clients)]}
    assert landed == {a, b}, f"every member landed on one host: {answers[: len(clients)]}"
    for member, got in enumerate(relayed):
        seen = [(m["message"]["from"], m["message"]["n"]) for m in got]
        assert len(seen) == len(set(seen)) == len(sends), (member, len(seen), len(set(seen)))
        for sender in range(len(clients)):
            order = [n for s, n in seen if s == sender]
            assert order == list(range(40)), (member, sender, order)


def test_nginx_proxies_only_the_socket_path(hosts: tuple[GatewayProcess, GatewayProcess], nginx: NginxProcess) -> None:
    a, _b = hosts
    with urllib.request.urlopen(f"http://{a.host}:{a.port}/metrics", timeout=10) as r:
        assert r.status == 200  # the host serves it on its own address ...
    for path in ("/metrics", "/ready", "/health", "/"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(nginx.http + path, timeout=10)
        assert e.value.code == 404, path  # ... never through nginx


# ---------------------------------------------------------------------------- faults under traffic


def classify(resp: Any) -> str:
    if resp.success:
        return "ok"
    if REFUSED.match(resp.error or "") and resp.can_retry:
        return "limited"
    if resp.error == UNAVAILABLE and resp.can_retry:
        return "unavailable"
    return f"other: {resp.error!r}"


_texts = itertools.count()


class Traffic:
    """`n` phoenix connections through nginx (spread over the hosts and their workers), each doing
    rounds of three sequential w.round calls on a fresh text until stopped. Each round records
    the worker that served it and the test's `phase` when it began and ended."""

    def __init__(self, url: str, n: int = 6) -> None:
        self.url = url
        self.n = n
        self.phase = "before"
        self.rounds: list[tuple[int, str, str, list[str]]] = []  # (pid, phase at start, at end, outcomes)
        self.errors: list[str] = []
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        assert self._ready.wait(60), self.errors
        assert not self.errors, self.errors
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive()

    async def _main(self) -> None:
        conns: list[tuple[Client, int]] = []
        try:
            for i in range(self.n):
                c = await Client.connect(self.url, token=token(f"traffic{i}"))
                await c.join("api:t")
                pid = (await c.call("w", "pid", {}, topic="api:t")).result  # type: ignore[union-attr]
                conns.append((c, pid))
                self.pids.add(pid)
        except Exception as exc:
            self.errors.append(f"setup: {type(exc).__name__}: {exc}")
            self._ready.set()
            return
        self._ready.set()
        try:
            await asyncio.gather(*(self._rounds(c, pid) for c, pid in conns))
        finally:
            for c, _ in conns:
                await c.close()

    async def _rounds(self, c: Client, pid: int) -> None:
        while not self._stop.is_set():
            text = f"r{os.getpid()}-{next(_texts)}"
            start = self.phase
            outcomes = []
            for _ in range(3):
                try:  # generous: every call must be answered, however late
                    resp = await c.call("w", "round", {"text": text}, topic="api:t", timeout=60, raise_on_error=False)
                    outcomes.append(classify(resp))
                except Exception as exc:
                    outcomes.append(f"lost: {type(exc).__name__}: {exc}")
            self.rounds.append((pid, start, self.phase, outcomes))

    def settled(self, phase: str) -> dict[int, list[list[str]]]:
        """Per worker pid, the outcomes of the rounds that began and ended in `phase`."""
        out: dict[int, list[list[str]]] = {}
        for pid, start, end, outcomes in list(self.rounds):
            if start == end == phase:
                out.setdefault(pid, []).append(outcomes)
        return out

    def wait_rounds(self, phase: str, each: int = 2, timeout: float = 60) -> None:
        """Until every worker with a connection has `each` whole rounds in `phase`."""
        ok = wait_until(lambda: all(len(self.settled(phase).get(p, [])) >= each for p in self.pids), timeout, 0.05)
        assert ok, (phase, {p: len(r) for p, r in self.settled(phase).items()}, self.pids)


def set_fail_open(gw: GatewayProcess, fail_open: bool) -> None:
    config = control(gw.control, "$rl_config")
    control(gw.control, "$rl_update", [{**config, "fail_open": fail_open}])


def workers_up(gw: GatewayProcess, pids: set[int]) -> bool:
    """Every worker of `gw` among `pids` has reached Redis since it last could not."""
    status = control(gw.control, "$status")["workers"]
    return all(w["cluster_limits"]["up"] for w in status if w.get("pid") in pids)


@pytest.fixture
def fail_open(request: pytest.FixtureRequest, hosts: tuple[GatewayProcess, GatewayProcess]) -> Iterator[bool]:
    for gw in hosts:
        set_fail_open(gw, request.param)
    try:
        yield request.param
    finally:
        for gw in hosts:
            set_fail_open(gw, True)


@pytest.mark.parametrize("fail_open", [True, False], indirect=True, ids=["fail_open", "fail_closed"])
def test_redis_killed_and_restarted_under_traffic(
    fail_open: bool, redis: RedisProcess, hosts: tuple[GatewayProcess, GatewayProcess], nginx: NginxProcess
) -> None:
    a, b = hosts
    with Traffic(nginx.url) as traffic:
        assert traffic.pids & workers(a) and traffic.pids & workers(b), "nginx sent all the traffic to one host"
        traffic.wait_rounds("before")
        traffic.phase = "killing"
        redis.stop(signal.SIGKILL)
        try:
            traffic.phase = "down"
            traffic.wait_rounds("down")
        finally:
            traffic.phase = "restarting"
            redis.start()
        # each worker with traffic tries Redis again RETRY_DOWN_S after its last failure
        for gw in hosts:
            assert wait_until(lambda gw=gw: workers_up(gw, traffic.pids), timeout=10 * RETRY_DOWN_S + 30)
        traffic.phase = "after"
        traffic.wait_rounds("after")

    everything = [o for _, _, _, outcomes in traffic.rounds for o in outcomes]
    assert all(o in ("ok", "limited", "unavailable") for o in everything), [
        o for o in everything if o not in ("ok", "limited", "unavailable")
    ]  # every call answered, with one of the three answers
    exact = ["ok", "ok", "limited"]
    for phase in ("before", "after"):  # Redis up (restarted empty: fresh texts): exact on every worker
        odd = [r for rs in traffic.settled(phase).values() for r in rs if r != exact]
        assert not odd, (phase, odd)
    down = ["ok", "ok", "ok"] if fail_open else ["unavailable"] * 3
    odd = [r for rs in traffic.settled("down").values() for r in rs if r != down]
    assert not odd, odd
    if fail_open:
        assert "unavailable" not in everything


def pause(redis: RedisProcess, ms: int) -> float:
    """CLIENT PAUSE ALL for `ms`; a time (monotonic) before the pause began, so it ends after it + ms."""
    client = redis.client()
    client.ping()  # connected first
    before = time.monotonic()
    client.execute_command("CLIENT", "PAUSE", ms, "ALL")
    return before


async def _at_once(url: str, n: int, text: str, before: Any = None) -> list[tuple[str, float]]:
    """`n` connections through nginx (ready first), then one w.round call on `text` on each at
    once (after `before()`); each outcome and when (monotonic) it was answered."""
    conns = []
    try:
        for i in range(n):
            c = await Client.connect(url, token=token(f"pause{i}"))
            await c.join("api:t")
            conns.append(c)
        if before is not None:
            before()

        async def one(c: Client) -> tuple[str, float]:
            try:
                resp = await c.call("w", "round", {"text": text}, topic="api:t", timeout=60, raise_on_error=False)
                return classify(resp), time.monotonic()
            except Exception as exc:
                return f"lost: {type(exc).__name__}: {exc}", time.monotonic()

        return list(await asyncio.gather(*(one(c) for c in conns)))
    finally:
        for c in conns:
            await c.close()


@pytest.mark.parametrize("fail_open", [False], indirect=True, ids=["fail_closed"])
def test_a_pause_shorter_than_the_command_timeout_is_waited_out_exactly(
    fail_open: bool, redis: RedisProcess, nginx: NginxProcess
) -> None:
    """Calls on both hosts while Redis is paused for less than command_timeout_ms: none is
    answered before the pause ends, none per fail_open (here: refused as unavailable), and the
    limit is exact: ROUND admitted over all of them, the rest refused."""
    ms = COMMAND_TIMEOUT_MS // 2
    began: list[float] = []
    got = asyncio.run(_at_once(nginx.url, 8, f"p{os.getpid()}-short", lambda: began.append(pause(redis, ms))))
    outcomes = sorted(o for o, _ in got)
    assert outcomes == ["limited"] * 6 + ["ok"] * ROUND, outcomes
    # (the clocks of Redis and of this test may differ by a little: 50 ms granted)
    assert min(t for _, t in got) >= began[0] + ms / 1000 - 0.05, "answered before the pause ended: not paused"


@pytest.mark.parametrize("fail_open", [True, False], indirect=True, ids=["fail_open", "fail_closed"])
def test_a_pause_longer_than_the_command_timeout_follows_fail_open(
    fail_open: bool, redis: RedisProcess, hosts: tuple[GatewayProcess, GatewayProcess], nginx: NginxProcess
) -> None:
    """Calls while Redis is paused past command_timeout_ms are each answered per fail_open once
    the command times out (none lost, none waiting for the pause); after it, the limit holds again."""
    text = f"p{os.getpid()}-long-{fail_open}"
    began: list[float] = []
    got = asyncio.run(_at_once(nginx.url, 8, text, lambda: began.append(pause(redis, 2 * COMMAND_TIMEOUT_MS))))
    # (through Redis they would be ROUND ok and the rest limited: these did not wait for it)
    outcomes = [o for o, _ in got]
    assert outcomes == (["ok"] * 8 if fail_open else ["unavailable"] * 8), outcomes
    # the timed-out script calls were dropped with their connections, never run once Redis went
    # on: nothing recorded for `text` (a refusal as unavailable does not count against the user)
    wait_until(lambda: time.monotonic() > began[0] + 2 * COMMAND_TIMEOUT_MS / 1000, timeout=30)
    a, b = hosts
    rows = control(a.control, "$rl_status", ["text", text, "w", "round"])
    assert [(r["scope"], r["used"]) for r in rows] == [("cluster", 0)], rows
    # back: once every worker has reached Redis again, a fresh text gets exactly ROUND on either host
    for gw in (a, b):
        assert wait_until(lambda gw=gw: workers_up(gw, workers(gw)) or _touch(gw), timeout=30, interval=0.2)
    fresh = f"p{os.getpid()}-after-{fail_open}"
    again = asyncio.run(_at_once(nginx.url, 6, fresh))
    assert sorted(o for o, _ in again) == ["limited"] * 4 + ["ok"] * ROUND, again


def _touch(gw: GatewayProcess) -> bool:
    """A call on a fresh connection to `gw` (so over its workers), for its worker to try Redis; False."""

    async def one() -> None:
        c = await Client.connect(gw.url, token=token("touch"))
        try:
            await c.join("api:t")
            await c.call("w", "round", {"text": f"touch{next(_texts)}"}, topic="api:t", raise_on_error=False)
        finally:
            await c.close()

    asyncio.run(one())
    return False

"""Relay fan-out (issue 13): one message to the 1 000 members of one public group, spread over
the two workers of `genapi serve --workers 2` by SO_REUSEPORT, every member (the sender included)
getting it once.

- throughput: the sender pipelines BENCH_RELAY_MESSAGES messages (no waiting for answers), timed
  from the first send to the last delivery to any member: deliveries/s = messages x members / s
  (best of BENCH_RELAY_ROUNDS);
- latency: BENCH_RELAY_PACED messages, one every BENCH_RELAY_INTERVAL_MS: per delivery, its
  receive time minus its send time (p50, p99), and per message the last member's.

The members live in BENCH_RELAY_HELPERS helper processes (`relay_members.py`) that only note the
receive time of each relayed frame (its seq is read after the round), so receiving costs about
what delivering does; the sender is in this process. Times are CLOCK_MONOTONIC in every process.
Nothing is pinned: on a 2-core machine the master, the two workers and the helpers share both
cores, so each figure comes with where the CPU went during its round: the gateway (master and
workers, also per delivery: the figure that does not depend on the clients sharing the machine),
the helpers, the sender, softirq (loopback TCP, charged to no process) and other processes (a
warning above 10% of a core and 0.1 s). A missing, duplicated or failed delivery fails the test.

Run: `pytest benchmarks/test_relay.py --benchmark-only -s` (part of `pytest benchmarks`; ~15 s).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from support.configs import PID  # tests/support: on the path by benchmarks/conftest.py

HERE = Path(__file__).resolve().parent

from .relay_members import Member, Recorder, connect  # noqa: E402

MEMBERS = int(os.environ.get("BENCH_RELAY_MEMBERS", "1000"))  # the sender included
HELPERS = int(os.environ.get("BENCH_RELAY_HELPERS", "2"))
MESSAGES = int(os.environ.get("BENCH_RELAY_MESSAGES", "300"))  # per throughput round
ROUNDS = int(os.environ.get("BENCH_RELAY_ROUNDS", "3"))  # throughput rounds, the best kept
PACED = int(os.environ.get("BENCH_RELAY_PACED", "100"))  # latency messages
INTERVAL_MS = float(os.environ.get("BENCH_RELAY_INTERVAL_MS", "50"))
OTHER_WARN_PCT = 10.0  # percent of a core other processes may take during a round before the summary warns,
OTHER_WARN_MIN_S = 0.1  # and CPU seconds (/proc counts 10 ms ticks per process: short rounds are coarse)
TIMEOUT_S = 30.0  # for every member to get a round's messages

CONFIG = (
    """
[gateway]
idle_timeout_ms = 600000  # the members send nothing (no heartbeats) between rounds

[auth]
callback = "testapi:auth_callback"

[relay]
service = "chat"
"""
    + PID
)
GROUP = "bench"
TOPIC = "room:1"
EVENT = "phoenix_gen_api"
TEXT = "a chat message of a realistic length, some sixty characters."


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds these processes used so far (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def _machine_s() -> tuple[float, float]:
    """(CPU seconds all processes used, CPU seconds in softirq) on every core so far. With IRQ
    time accounting, loopback TCP's softirq work is charged to no process."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, softirq = (int(v) for v in f.readline().split()[1:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system) / tick, softirq / tick


class Fanout:
    """The group: the sender (creator, in this process, on `loop`) and the helpers' members."""

    def __init__(self, gw: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.gw = gw
        self.loop = loop
        self.rec = Recorder()  # the sender's own copies
        self.sender: Any = None
        self.helpers: list[asyncio.subprocess.Process] = []
        self.stderr = [tempfile.TemporaryFile() for _ in range(HELPERS)]
        self.seqs = itertools.count(1)
        self.workers: Counter[int] = Counter()
        self.gateway_pids: list[int] = []

    # ------------------------------------------------------------------ helpers' pipes
    async def _say(self, helper: asyncio.subprocess.Process, cmd: dict[str, Any]) -> None:
        assert helper.stdin is not None
        helper.stdin.write(msgspec.json.encode(cmd) + b"\n")
        await helper.stdin.drain()

    async def _hear(self, i: int) -> dict[str, Any]:
        stdout = self.helpers[i].stdout
        assert stdout is not None
        try:
            line = await asyncio.wait_for(stdout.readline(), TIMEOUT_S + 30)
        except TimeoutError:
            pytest.fail(f"member helper {i} did not answer in {TIMEOUT_S + 30:g} s")
        if not line:
            self.stderr[i].seek(0)
            pytest.fail(f"member helper {i} exited: {self.stderr[i].read().decode(errors='replace')[-2000:]}")
        return msgspec.json.decode(line)

    async def _ask_all(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        for h in self.helpers:
            await self._say(h, cmd)
        return list(await asyncio.gather(*(self._hear(i) for i in range(len(self.helpers)))))

    # ------------------------------------------------------------------ setup
    async def start(self) -> None:
        from support.gateway_proc import children

        self.sender = await connect(self.gw.url, "sender", TOPIC)
        await self.sender.call("chat", "create_group", {"group_id": GROUP, "group_type": "public"})
        self.workers[(await self.sender.call("w", "pid")).result] += 1
        Member(self.rec, self.sender)
        users = [f"m{n:05d}" for n in range(1, MEMBERS)]
        for i in range(HELPERS):
            argv = [sys.executable, str(HERE / "relay_members.py"), self.gw.url, GROUP, TOPIC, *users[i::HELPERS]]
            self.helpers.append(
                await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=self.stderr[i],
                    limit=2**28,
                )
            )
        for ready in await asyncio.gather(*(self._hear(i) for i in range(HELPERS))):
            for pid, n in ready["workers"].items():
                self.workers[int(pid)] += n
        info = (await self.sender.call("chat", "get_group_info", {"group_id": GROUP})).result
        assert len(info["members"]) == MEMBERS, f"the group has {len(info['members'])} members, not {MEMBERS}"
        self.gateway_pids = [self.gw.pid, *children(self.gw.pid)]
        assert set(self.workers) == set(self.gateway_pids[1:]) and len(self.workers) == 2, (
            f"members per worker {dict(self.workers)}, workers {self.gateway_pids[1:]}: not spread over both"
        )
        await self.burst(10)  # warm-up (and the first check that every member gets every message)

    async def stop(self) -> None:
        for h in self.helpers:
            if h.stdin is not None:
                h.stdin.close()
        for i, h in enumerate(self.helpers):
            try:
                code = await asyncio.wait_for(h.wait(), 15)
            except TimeoutError:
                h.kill()
                code = await h.wait()
            assert code == 0, f"member helper {i} exited with {code}"
        if self.sender is not None:
            await self.sender.close()

    # ------------------------------------------------------------------ one measurement
    def _send(self, seq: int) -> asyncio.Future[Any]:
        return self.sender.push(
            TOPIC,
            EVENT,
            {
                "request_id": f"r{seq}",
                "service": "chat",
                "request_type": "handle_relay",
                "args": {"group_id": GROUP, "message": {"seq": seq, "text": TEXT}},
            },
        )

    async def _round(self, send: Callable[[], Awaitable[dict[int, float]]]) -> dict[str, Any]:
        """Sends with `send` (-> {seq: send time}) and waits until every member got every one of
        them; returns the sends, the deliveries and the CPU each side used."""
        await self._ask_all({"cmd": "arm"})
        self.rec.arm()
        gw_cpu, me_cpu, (tasks_s, softirq_s) = _cpu_s(self.gateway_pids), time.process_time(), _machine_s()
        started = time.monotonic()
        sent = await send()
        for h in self.helpers:
            await self._say(h, {"cmd": "wait", "per_member": len(sent), "timeout": TIMEOUT_S})
        _, reports = await asyncio.gather(
            self.rec.wait(len(sent), TIMEOUT_S),  # a timeout shows in the counts
            asyncio.gather(*(self._hear(i) for i in range(len(self.helpers)))),
        )
        gw_cpu, me_cpu = _cpu_s(self.gateway_pids) - gw_cpu, time.process_time() - me_cpu
        window = time.monotonic() - started
        tasks_s, softirq_s = (b - a for a, b in zip((tasks_s, softirq_s), _machine_s(), strict=True))
        reports = [
            {**done, **noted} for done, noted in zip(reports, await self._ask_all({"cmd": "report"}), strict=True)
        ]
        reports.append({**self.rec.counts(), **self.rec.report(), "cpu_s": 0.0})
        seqs = [s for r in reports for s in r["seq"]]
        times = [t for r in reports for t in r["t"]]
        counts = [c for r in reports for c in r["counts"]]
        got = Counter(seqs)
        if (
            min(counts) != len(sent)
            or max(counts) != len(sent)
            or set(got) != set(sent)
            or set(got.values()) != {MEMBERS}
        ):
            pytest.fail(
                f"not every member got every message once: messages per member {min(counts)}..{max(counts)} "
                f"of {len(sent)}; deliveries per message {min(got.values(), default=0)}.."
                f"{max(got.values(), default=0)} of {MEMBERS}; gateway: {self.gw.read_stderr()[-2000:]}"
            )
        self._check_answers(len(sent))
        helpers_cpu = sum(r["cpu_s"] for r in reports)
        return {
            "sent": sent,
            "seqs": seqs,
            "times": times,
            "gateway_cpu_s": gw_cpu,
            "helpers_cpu_s": helpers_cpu,
            "sender_cpu_s": me_cpu,
            "softirq_cpu_s": softirq_s,
            "window_s": window,
            "other_cpu_s": max(0.0, tasks_s - gw_cpu - helpers_cpu - me_cpu),
        }

    async def _replied(self, replies: list[asyncio.Future[Any]]) -> None:
        done, _ = await asyncio.wait(replies, timeout=TIMEOUT_S)
        if len(done) < len(replies):
            pytest.fail(
                f"{len(replies) - len(done)} of {len(replies)} messages had no reply in {TIMEOUT_S:g} s; "
                f"gateway: {self.gw.read_stderr()[-2000:]}"
            )
        bad = [f.result() for f in replies if f.result().get("status") != "ok"]
        assert not bad, f"{len(bad)} of {len(replies)} messages refused: {bad[:3]}"

    def _check_answers(self, n: int) -> None:
        """The sender's answers: each message relayed to every member."""
        answers = []
        while not self.sender.pushes.empty():
            answers.append(self.sender.pushes.get_nowait().payload)
        bad = [
            a
            for a in answers
            if not (a.get("success") and a["result"] == {"status": "relayed", "recipients_count": MEMBERS})
        ]
        assert len(answers) == n and not bad, f"{len(answers)} answers for {n} messages; failed: {bad[:3]}"

    async def burst(self, n: int) -> dict[str, Any]:
        """`n` messages sent back to back, their answers awaited only after."""

        async def send() -> dict[int, float]:
            sent, replies = {}, []
            for seq in itertools.islice(self.seqs, n):
                sent[seq] = time.monotonic()
                replies.append(self._send(seq))
            await self._replied(replies)
            return sent

        return await self._round(send)

    async def paced(self, n: int, interval_s: float) -> dict[str, Any]:
        """`n` messages, one every `interval_s` (on a fixed schedule, so a late one does not
        delay the rest)."""

        async def send() -> dict[int, float]:
            sent, replies = {}, []
            start = time.monotonic()
            for k, seq in enumerate(itertools.islice(self.seqs, n)):
                await asyncio.sleep(max(0.0, start + k * interval_s - time.monotonic()))
                sent[seq] = time.monotonic()
                replies.append(self._send(seq))
            await self._replied(replies)
            return sent

        return await self._round(send)


def _cpu(r: dict[str, Any]) -> dict[str, float]:
    """CPU the gateway (master and workers) and the helpers used in a round, also per delivery:
    the gateway's share of a machine it shares with its clients."""
    n = len(r["times"])
    return {
        "gateway_cpu_s": round(r["gateway_cpu_s"], 3),
        "helpers_cpu_s": round(r["helpers_cpu_s"], 3),
        "gateway_cpu_us_per_delivery": round(r["gateway_cpu_s"] / n * 1e6, 2),
        "helpers_cpu_us_per_delivery": round(r["helpers_cpu_s"] / n * 1e6, 2),
        "sender_cpu_s": round(r["sender_cpu_s"], 3),
        "softirq_cpu_s": round(r["softirq_cpu_s"], 3),
        "other_cpu_s": round(r["other_cpu_s"], 3),
        "other_load_pct": round(r["other_cpu_s"] / r["window_s"] * 100, 1),
    }


def _cpu_line(out: dict[str, Any]) -> str:
    line = (
        f"CPU: gateway {out['gateway_cpu_s']:.2f} s ({out['gateway_cpu_us_per_delivery']:.1f} us/delivery), "
        f"member helpers {out['helpers_cpu_s']:.2f} s ({out['helpers_cpu_us_per_delivery']:.1f} us/delivery), "
        f"sender {out['sender_cpu_s']:.2f} s, softirq {out['softirq_cpu_s']:.2f} s, "
        f"other processes {out['other_cpu_s']:.2f} s"
    )
    if out["other_load_pct"] > OTHER_WARN_PCT and out["other_cpu_s"] > OTHER_WARN_MIN_S:
        line += (
            f" (WARNING: other processes took {out['other_load_pct']:.0f}% of a core: "
            "these figures are low; rerun on a quiet machine)"
        )
    return line


def _latencies(r: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(every delivery's latency, each message's last delivery's latency), in ms."""
    sent = r["sent"]
    every = [(t - sent[s]) * 1000 for s, t in zip(r["seqs"], r["times"], strict=True)]
    last: dict[int, float] = {}
    for s, ms in zip(r["seqs"], every, strict=True):
        if ms > last.get(s, -1.0):
            last[s] = ms
    return every, list(last.values())


@pytest.fixture(scope="module")
def fanout():
    import uvloop

    from support.gateway_proc import GatewayProcess

    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2", "--log-level", "warning"])
    loop = uvloop.new_event_loop()
    f = Fanout(gw, loop)
    try:
        loop.run_until_complete(f.start())
        yield f
        loop.run_until_complete(f.stop())
    finally:
        for h in f.helpers:
            if h.returncode is None:
                h.kill()
                loop.run_until_complete(h.wait())
        loop.close()
        code = gw.stop()
    assert code == 0, f"gateway exited with {code}: {gw.read_stderr()[-2000:]}"


@pytest.mark.benchmark(group="relay")
def test_relay_fanout_throughput(benchmark, fanout):
    """MESSAGES messages pipelined by one sender to MEMBERS members: deliveries/s from the first
    send to the last delivery (best of ROUNDS)."""
    best: dict[str, Any] = {}

    def run() -> None:
        r = fanout.loop.run_until_complete(fanout.burst(MESSAGES))
        out = {"members_per_worker": sorted(fanout.workers.values()), **burst_figures(r)}
        if out["deliveries_per_s"] > best.get("deliveries_per_s", -1):
            best.clear()
            best.update(out)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(best)
    print(
        f"\nrelay fan-out: {MESSAGES} messages x {MEMBERS} members ({best['members_per_worker']} per worker): "
        f"{best['deliveries_per_s']:,} deliveries/s ({best['messages_per_s']:,} messages/s, "
        f"{best['elapsed_s'] * 1000:.0f} ms); {_cpu_line(best)}; best of {ROUNDS}"
    )
    assert best["deliveries"] == MESSAGES * MEMBERS


def burst_figures(r: dict[str, Any]) -> dict[str, Any]:
    """A burst's figures: deliveries/s from the first send to the last delivery, latencies, CPU."""
    elapsed = max(r["times"]) - min(r["sent"].values())
    every, _ = _latencies(r)
    return {
        "members": MEMBERS,
        "messages": MESSAGES,
        "deliveries": len(r["times"]),
        "elapsed_s": round(elapsed, 4),
        "deliveries_per_s": round(len(r["times"]) / elapsed),
        "messages_per_s": round(MESSAGES / elapsed, 1),
        "p50_delivery_ms": round(_pct(every, 0.50), 2),
        "p99_delivery_ms": round(_pct(every, 0.99), 2),
        **_cpu(r),
    }


@pytest.mark.benchmark(group="relay")
def test_relay_delivery_latency(benchmark, fanout):
    """PACED messages, one every INTERVAL_MS: latency of every delivery and of each message's
    last delivery (p50, p99)."""
    out: dict[str, Any] = {}

    def run() -> None:
        r = fanout.loop.run_until_complete(fanout.paced(PACED, INTERVAL_MS / 1000))
        every, last = _latencies(r)
        out.update(
            {
                "members": MEMBERS,
                "messages": PACED,
                "interval_ms": INTERVAL_MS,
                "offered_deliveries_per_s": round(MEMBERS * 1000 / INTERVAL_MS),
                "p50_ms": round(_pct(every, 0.50), 3),
                "p99_ms": round(_pct(every, 0.99), 3),
                "max_ms": round(max(every), 3),
                "last_member_p50_ms": round(_pct(last, 0.50), 3),
                "last_member_p99_ms": round(_pct(last, 0.99), 3),
                **_cpu(r),
            }
        )

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    print(
        f"\nrelay delivery latency: {PACED} messages, one every {INTERVAL_MS:g} ms, to {MEMBERS} members: "
        f"p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms (max {out['max_ms']:.2f}); "
        f"the last member per message p50 {out['last_member_p50_ms']:.2f} ms, "
        f"p99 {out['last_member_p99_ms']:.2f} ms; {_cpu_line(out)}"
    )

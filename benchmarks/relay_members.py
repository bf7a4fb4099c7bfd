"""Members of one relay group for benchmarks/test_relay.py: genapi clients whose relayed
messages are only timed, not decoded, so receiving stays about as cheap as delivering.

Each member is a `genapi.client.Client` (the setup goes through the real client); once it is a
member, a text frame that carries a relayed benchmark message (`{"seq": N, ...}`) is kept with
its time.monotonic() and counted, and every other frame goes to the client as usual. The seqs
are read from the kept frames after the round. CLOCK_MONOTONIC is system-wide on Linux: the
sender's and the receivers' times compare directly.

Run as a script, it is a helper process holding some members, driven over stdin/stdout (one
JSON object a line):

    python relay_members.py URL GROUP TOPIC USER...   -> {"ready": n, "workers": {pid: members}}
    {"cmd": "arm"}                                     -> {"armed": n}   (forgets what was noted)
    {"cmd": "wait", "per_member": M, "timeout": T}     -> {"members": n, "counts": [min, max], "cpu_s": s}
                                       (once every member noted M messages since `arm`, or at T)
    {"cmd": "report"}                                  -> {"seq": [...], "t": [...]}   (what was noted)
    EOF                                                -> closes the members, exits 0

The users are those the test gateways' auth callback (`testapi:auth_callback`) lets in; the
gateway serves the relay operations as `chat.<op>` and `testapi:pid` as `w.pid`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import msgspec

from genapi.client import Client

MARK = b'"message":{"seq":'  # a relayed benchmark message: {"seq": N, "text": ...}
CONNECT_AT_ONCE = 50  # connections opened concurrently while setting up


class Recorder:
    """What the members of one process noted since `arm`: frames[i] arrived at times[i]."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.arm()

    def arm(self) -> None:
        self.frames: list[bytes] = []
        self.times: list[float] = []
        self.total = 0
        self.target = -1
        self.done: asyncio.Future[None] | None = None
        for m in self.members:
            m.count = 0

    async def wait(self, per_member: int, timeout: float) -> bool:
        """True once every member noted `per_member` messages (or more) since `arm`; False on timeout."""
        self.target = per_member * len(self.members)
        if self.total < self.target:
            self.done = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.done, timeout)
            except TimeoutError:
                return False
        return True

    def counts(self) -> dict[str, Any]:
        counts = [m.count for m in self.members]
        return {"members": len(self.members), "counts": [min(counts, default=0), max(counts, default=0)]}

    def report(self) -> dict[str, Any]:
        return {"seq": [_seq(f) for f in self.frames], "t": self.times}


def _seq(frame: bytes) -> int:
    i = frame.index(MARK) + len(MARK)
    return int(frame[i : frame.index(b",", i)])


class Member:
    """One client's frame hook: notes relayed benchmark messages, passes everything else on."""

    __slots__ = ("client", "count", "passthrough", "rec")

    def __init__(self, rec: Recorder, client: Client) -> None:
        self.rec = rec
        self.client = client
        self.count = 0
        self.passthrough = client._on_text
        client._on_text = self.on_text  # type: ignore[method-assign]  # the listener calls client._on_text
        rec.members.append(self)

    def on_text(self, data: bytes) -> None:
        if MARK not in data:
            self.passthrough(data)
            return
        rec = self.rec
        rec.times.append(time.monotonic())
        rec.frames.append(data)  # its seq is read in `report`, off the clock
        self.count += 1
        rec.total += 1
        if rec.total == rec.target and rec.done is not None and not rec.done.done():
            rec.done.set_result(None)


async def connect(url: str, user: str, topic: str) -> Client:
    """A connection of `user` (the test gateways' auth callback), joined to `topic`; no heartbeats
    (nothing in a benchmark should run but the messages)."""
    client = await Client.connect(url, params={"token": "let-me-in", "user": user}, heartbeat_interval=None)
    await client.join(topic)
    return client


async def join(rec: Recorder, url: str, group: str, topic: str, users: list[str]) -> dict[int, int]:
    """Connects `users`, each joins `group`; returns how many landed on each worker (by pid)."""
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    workers: dict[int, int] = {}

    async def one(user: str) -> None:
        async with gate:
            client = await connect(url, user, topic)
            await client.call("chat", "join_group", {"group_id": group})
            pid = (await client.call("w", "pid")).result  # type: ignore[union-attr]
            workers[pid] = workers.get(pid, 0) + 1
            Member(rec, client)

    await asyncio.gather(*(one(u) for u in users))
    return workers


async def serve(url: str, group: str, topic: str, users: list[str]) -> None:
    """The helper process: seats `users` in `group`, then answers the commands on stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    rec = Recorder()

    def say(message: dict[str, Any]) -> None:
        out.write(msgspec.json.encode(message) + b"\n")
        out.flush()

    workers = await join(rec, url, group, topic, users)
    say({"ready": len(rec.members), "workers": workers})
    cpu = time.process_time()
    while line := await reader.readline():
        cmd = msgspec.json.decode(line)
        if cmd["cmd"] == "arm":
            rec.arm()
            cpu = time.process_time()
            say({"armed": len(rec.members)})
        elif cmd["cmd"] == "wait":
            await rec.wait(cmd["per_member"], cmd["timeout"])
            say({**rec.counts(), "cpu_s": time.process_time() - cpu})
        elif cmd["cmd"] == "report":
            say(rec.report())
    await asyncio.gather(*(m.client.close() for m in rec.members))


def main() -> None:
    import uvloop

    url, group, topic, *users = sys.argv[1:]
    uvloop.run(serve(url, group, topic, users))


if __name__ == "__main__":
    main()

"""Config changes under `--workers 2` go to the workers as deltas (what changed since the last
generation, down each worker's pipe); the whole registry is written to shared memory only when a
worker needs it whole. A worker killed with SIGKILL and restarted serves everything that went
as deltas before it started, and takes the next delta from there. Real master, workers, node."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any

import msgspec

from genapi.config import parse
from genapi.host import pipe
from genapi.host.master import Master
from genapi.host.snapshot import HEADER, Delta, SnapshotReader, default_path
from genapi.structs import FunConfig
from support.configs import ANON
from support.gateway_proc import GatewayProcess, children, free_port, wait_until
from support.node_proc import NodeProcess, control
from test_admin import CONFIG, every_worker
from test_workers import ready


def file_generation(gw: GatewayProcess) -> int:
    """The generation the snapshot in shared memory holds (its header)."""
    with open(default_path("127.0.0.1", gw.port), "rb") as f:
        return int(HEADER.unpack(f.read(HEADER.size))[2])


def push(gw: GatewayProcess, message: dict[str, Any]) -> dict[str, Any]:
    answer = control(gw.control, "$push", [message, False], timeout=30)
    assert answer["status"] == "accepted" and answer["missing"] == [] and answer["workers"] == 2, answer
    return answer


def served(gw: GatewayProcess, rt: str) -> tuple[set[int], set[str]]:
    """The workers that answered `inv.<rt>` (every worker is asked) and all they answered."""
    got = every_worker(gw, rt, service="inv")
    return set(got), {str(a) for answers in got.values() for a in answers}


def test_a_change_goes_as_a_delta_and_a_restarted_worker_serves_it_whole() -> None:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    try:
        with NodeProcess([], name="n") as node:
            v1 = control(node.address, "$config")
            names = [f["request_type"] for f in v1["fun_configs"]]
            assert "echo" in names and "where" in names
            first = push(gw, v1)
            assert served(gw, "where")[1] == {"n"} and file_generation(gw) <= first["generation"]

            # v2: `where` disabled, `echo` gone, the rest as it was
            v2 = dict(
                v1,
                config_version="2",
                fun_configs=[
                    dict(f, disabled=True) if f["request_type"] == "where" else f
                    for f in v1["fun_configs"]
                    if f["request_type"] != "echo"
                ],
            )
            written = file_generation(gw)
            second = push(gw, v2)
            assert second["generation"] == first["generation"] + 1
            assert file_generation(gw) == written  # sent as a delta: the whole snapshot not written again
            assert served(gw, "where")[1] == {"disabled function: where version 0.0.0"}
            assert served(gw, "echo")[1] == {"unsupported function: echo version 0.0.0"}

            victim = min(children(gw.pid))
            os.kill(victim, signal.SIGKILL)
            assert wait_until(lambda: len(children(gw.pid)) == 2 and victim not in children(gw.pid), timeout=20)
            assert wait_until(lambda: ready(gw), timeout=30)  # the restarted worker serves the current generation
            workers = children(gw.pid)
            assert served(gw, "where") == (workers, {"disabled function: where version 0.0.0"})  # the restarted too
            assert served(gw, "echo") == (workers, {"unsupported function: echo version 0.0.0"})
            assert file_generation(gw) == second["generation"]  # written whole for the restarted worker

            # v3: `where` enabled again: a delta the restarted worker applies as the other does
            v3 = dict(v2, config_version="3", fun_configs=[dict(f, disabled=False) for f in v2["fun_configs"]])
            third = push(gw, v3)
            assert third["generation"] == second["generation"] + 1
            assert file_generation(gw) == second["generation"]
            assert served(gw, "where") == (workers, {"n"})
            assert node.alive()
    finally:
        assert gw.stop() == 0


def test_the_master_answers_a_worker_that_missed_a_delta_with_the_whole_generation() -> None:
    """The master's side of a missed delta, over a real pipe (this test is the worker): a
    worker's `Ack` with `whole` gets the current generation written to shared memory and sent
    without a delta; a worker that only acknowledges gets nothing more."""
    settings = parse(ANON)
    settings = msgspec.structs.replace(
        settings, gateway=msgspec.structs.replace(settings.gateway, host="127.0.0.1", port=free_port())
    )
    added = FunConfig(service="d", request_type="added", mfa="m:f", nodes=["127.0.0.1:1"])

    async def main() -> None:
        m = Master(settings, 1, None, 1.0, "test")
        w = m.workers[0]
        ours, theirs = socket.socketpair()
        w.reader, w.writer = await asyncio.open_connection(sock=ours)
        reader, writer = await asyncio.open_connection(sock=theirs)
        task = asyncio.ensure_future(m._read_acks(w, w.reader))
        try:
            m._publish()  # generation 1, whole
            writer.write(pipe.encode(pipe.Hello(os.getpid())))
            assert pipe.decode_to_worker(await asyncio.wait_for(reader.readline(), 10)) == pipe.Generation(1)
            m.functions.replace([], [added])
            delta = m._publish()
            assert delta == Delta(1, [added], []) and m.snapshots.written == 1  # generation 2: a delta only
            writer.write(pipe.encode(pipe.Ack(1)))  # acknowledged, nothing asked: nothing sent
            writer.write(pipe.encode(pipe.HostAsk(5, "ready")))
            answer = pipe.decode_to_worker(await asyncio.wait_for(reader.readline(), 10))
            assert type(answer) is pipe.HostAnswer, answer
            writer.write(pipe.encode(pipe.Ack(1, whole=True)))  # it missed generation 2
            assert pipe.decode_to_worker(await asyncio.wait_for(reader.readline(), 10)) == pipe.Generation(2)
            assert m.snapshots.written == 2
            snap = SnapshotReader(m.snapshots.path).read(2)
            assert added in snap.configs and len(snap.configs) == len(m.functions.registry)
            assert w.acked == 1
        finally:
            task.cancel()
            writer.close()
            w.writer.close()
            m.snapshots.close()

    asyncio.run(main())

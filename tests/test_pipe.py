"""The master–worker pipe (`genapi.host.pipe`): every message round-trips, each side's handler
table covers its direction, and a line that is no message is logged and skipped by a real
worker process that goes on serving."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from genapi import log
from genapi.client import Client
from genapi.config import load
from genapi.host import link, master, pipe
from genapi.host.snapshot import Delta, SnapshotWriter, default_path
from genapi.structs import FunConfig
from support.configs import PID_CONFIG
from support.gateway_proc import SUPPORT, TESTS, ChildProcess, free_port, wait_until

PAYLOAD = b'{"request_id":"relay","result":{"group_id":"g","from_user_id":"u","message":["\\u00e9",1]}}'


def every_message() -> list[Any]:
    """One of each message type, both directions."""
    return [
        pipe.Settings(load(None)),
        pipe.Generation(7),
        pipe.Generation(8, Delta(7, [FunConfig(service="s", request_type="r", mfa="m:f")], [("s", "q", "1.0")])),
        pipe.Limits({"enabled": True, "api_limits": []}, 3),
        pipe.Drain(2.5),
        pipe.Collect(4),
        pipe.HostAnswer(5, {"ready": True, "workers": 2}),
        pipe.HostAnswer(6, "# HELP genapi_up\n"),
        pipe.RelayAnswer(8, {"group_id": "g", "status": "active"}),
        pipe.RelayAnswer(9, err="not_found", text="group not found"),
        pipe.RelayDelivery([1, 2, 30], msgspec.Raw(PAYLOAD)),
        pipe.Hello(1234),
        pipe.Ack(7),
        pipe.Ack(6, whole=True),
        pipe.LimitsAck(3),
        pipe.Collected(4, {"index": 1, "connections": 0}),
        pipe.HostAsk(5, "ready"),
        pipe.HostAsk(6, "metrics"),
        pipe.RelayAsk(8, "join_group", {"group_id": "g", "user_id": "u"}, 12),
        pipe.RelayAsk(10, "stats", {}),
        pipe.RelayGone([12, 13]),
    ]


def test_every_message_round_trips_in_its_direction() -> None:
    to_worker, to_master = set(get_args(pipe.ToWorker)), set(get_args(pipe.ToMaster))
    messages = every_message()
    assert {type(m) for m in messages} == to_worker | to_master  # none left out
    for m in messages:
        line = pipe.encode(m)
        assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line: the framing holds
        own, other = (
            (pipe.decode_to_worker, pipe.decode_to_master)
            if type(m) in to_worker
            else (pipe.decode_to_master, pipe.decode_to_worker)
        )
        assert own(line) == m
        with pytest.raises(msgspec.ValidationError):
            other(line)  # a message of the other direction is no message here


def test_the_pre_framed_delivery_is_the_declared_message() -> None:
    tokens = [3, 1, 4]
    line = pipe.DELIVERY_HEAD + msgspec.json.encode(tokens) + pipe.DELIVERY_MID + PAYLOAD + pipe.DELIVERY_END
    assert line == pipe.encode(pipe.RelayDelivery(tokens, msgspec.Raw(PAYLOAD)))
    got = pipe.decode_to_worker(line)
    assert isinstance(got, pipe.RelayDelivery) and got.to == tokens
    assert bytes(got.p) == PAYLOAD  # passed on as encoded, not re-encoded


def test_each_side_has_a_handler_for_every_message_of_its_direction() -> None:
    assert set(link._HANDLERS) == set(get_args(pipe.ToWorker))
    assert set(master._HANDLERS) == set(get_args(pipe.ToMaster))


BAD_LINES = [
    b"not json at all\n",
    b'{"t":"no_such_message","x":1}\n',
    b'{"t":"gen","gen":"seven"}\n',  # a known message with a wrong field
    b'{"gen":1}\n',  # the undeclared format of old: no tag
    b"[1,2,3]\n",
]


def test_the_master_side_logs_a_line_that_is_no_message(capfd: pytest.CaptureFixture[str]) -> None:
    log.setup("warning")
    for line in BAD_LINES:
        with pytest.raises(msgspec.DecodeError) as exc:
            pipe.decode_to_master(line)
        pipe.invalid("master", 1, line, exc.value)
    err = capfd.readouterr().err.splitlines()
    assert len([ln for ln in err if "pipe_message_invalid" in ln and "side=master" in ln and "index=1" in ln]) == 5
    assert any("no_such_message" in ln and "error=" in ln for ln in err)


class WorkerProcess(ChildProcess):
    """A real worker process (`run_worker`), this test its master: its end of the pipe is `pipe`."""

    def __init__(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        pp = [str(SUPPORT)] + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(pp),
            "GENAPI_WORKER_FD": str(theirs.fileno()),
            "GENAPI_WORKER_INDEX": str(index),
        }
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from genapi.gateway.worker import run_worker; run_worker()"],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=self.stderr,
            cwd=str(TESTS),
        )
        theirs.close()
        self.pid = self.proc.pid
        ours.settimeout(30)
        self.pipe = ours
        self.lines = ours.makefile("rb")

    def send(self, line: bytes) -> None:
        self.pipe.sendall(line)

    def receive(self) -> Any:
        """The worker's next message (decoded as the master decodes it)."""
        return pipe.decode_to_master(self.lines.readline())


async def answered_by(url: str) -> Any:
    """A fresh connection's call of `w.pid`: the pid of the worker that answered."""
    client = await Client.connect(url)
    try:
        await client.join("api:w")
        return (await client.call("w", "pid", topic="api:w")).result
    finally:
        await client.close()


def serving(url: str) -> bool:
    try:
        asyncio.run(answered_by(url))
    except OSError:
        return False
    return True


def test_a_worker_logs_a_line_that_is_no_message_and_keeps_serving(tmp_path: Path) -> None:
    config = tmp_path / "genapi.toml"
    config.write_text(textwrap.dedent(PID_CONFIG))
    port = free_port()
    settings = load(str(config))
    settings = msgspec.structs.replace(
        settings, gateway=msgspec.structs.replace(settings.gateway, host="127.0.0.1", port=port)
    )
    snapshots = SnapshotWriter(default_path("127.0.0.1", port))
    worker = WorkerProcess(index=1)
    try:
        gen = snapshots.publish(list(settings.functions))
        worker.send(pipe.encode(pipe.Settings(settings)))
        assert worker.receive() == pipe.Hello(worker.pid)
        for line in BAD_LINES:  # before its first generation: skipped, it still waits for one
            worker.send(line)
        worker.send(pipe.encode(pipe.Generation(gen)))
        assert worker.receive() == pipe.Ack(gen)
        url = f"ws://127.0.0.1:{port}/socket"
        assert wait_until(lambda: serving(url), timeout=10)
        assert asyncio.run(answered_by(url)) == worker.pid

        for line in BAD_LINES:  # while serving: skipped, the pipe still works
            worker.send(line)
        worker.send(pipe.encode(pipe.Collect(42)))
        collected = worker.receive()
        assert isinstance(collected, pipe.Collected) and collected.seq == 42
        assert collected.metrics["index"] == 1 and collected.metrics["pid"] == worker.pid
        assert asyncio.run(answered_by(url)) == worker.pid
        assert worker.alive()

        invalid = [ln for ln in worker.read_stderr().splitlines() if "pipe_message_invalid" in ln]
        assert len(invalid) == 2 * len(BAD_LINES), invalid
        assert all("side=worker" in ln and "index=1" in ln and "error=" in ln for ln in invalid)
        assert any("no_such_message" in ln for ln in invalid)

        worker.send(pipe.encode(pipe.Drain(0.1)))  # and it still drains when told
        assert worker.proc.wait(10) == 0
    finally:
        worker.pipe.close()
        worker.stop()
        snapshots.close()


async def echoes(url: str) -> tuple[bool, bool]:
    """Whether a fresh connection's calls of `w.echo` and `w.echo2` are served."""
    client = await Client.connect(url)
    try:
        await client.join("api:w")
        got = [
            await client.call("w", rt, {"text": "x"}, topic="api:w", raise_on_error=False) for rt in ("echo", "echo2")
        ]
        return got[0].success, got[1].success
    finally:
        await client.close()


def test_a_worker_applies_a_delta_only_to_the_generation_it_serves(tmp_path: Path) -> None:
    """This test is the master. A delta is applied only by a worker serving exactly its base
    generation; one that missed a generation asks for the whole snapshot (`Ack` with `whole`)
    and serves the table it had until it gets it, never one patched from the wrong generation;
    a delta older than what it serves changes nothing."""
    config = tmp_path / "genapi.toml"
    config.write_text(textwrap.dedent(PID_CONFIG))
    port = free_port()
    settings = load(str(config))
    settings = msgspec.structs.replace(
        settings, gateway=msgspec.structs.replace(settings.gateway, host="127.0.0.1", port=port)
    )
    base = list(settings.functions)
    echo, echo2 = (
        FunConfig(service="w", request_type=rt, mfa="testapi:echo", arg_types={"text": "string"})
        for rt in ("echo", "echo2")
    )
    snapshots = SnapshotWriter(default_path("127.0.0.1", port))
    worker = WorkerProcess(index=1)
    url = f"ws://127.0.0.1:{port}/socket"
    try:
        gen = snapshots.publish(base)
        worker.send(pipe.encode(pipe.Settings(settings)))
        assert worker.receive() == pipe.Hello(worker.pid)
        worker.send(pipe.encode(pipe.Generation(gen)))
        assert worker.receive() == pipe.Ack(gen)
        assert wait_until(lambda: serving(url), timeout=10)
        assert asyncio.run(echoes(url)) == (False, False)

        two = snapshots.advance([*base, echo])
        assert two == Delta(1, [echo], [])
        worker.send(pipe.encode(pipe.Generation(2, two)))
        assert worker.receive() == pipe.Ack(2)
        assert asyncio.run(echoes(url)) == (True, False)

        three = snapshots.advance([*base, echo, echo2])  # never sent: the worker misses it
        four = snapshots.advance([*base, echo2])
        assert four == Delta(3, [], [("w", "echo", None)])
        worker.send(pipe.encode(pipe.Generation(4, four)))
        assert worker.receive() == pipe.Ack(2, whole=True)
        assert asyncio.run(echoes(url)) == (True, False)  # generation 2 still, not 2 patched by 4

        assert snapshots.flush() == 4  # as the master answers: the current generation, whole
        worker.send(pipe.encode(pipe.Generation(4)))
        assert worker.receive() == pipe.Ack(4)
        assert asyncio.run(echoes(url)) == (False, True)

        assert three is not None
        worker.send(pipe.encode(pipe.Generation(3, three)))  # late: older than what it serves
        assert worker.receive() == pipe.Ack(4)
        assert asyncio.run(echoes(url)) == (False, True)
        assert "config_delta_skipped" in worker.read_stderr()
        assert worker.alive()
    finally:
        worker.pipe.close()
        worker.stop()
        snapshots.close()

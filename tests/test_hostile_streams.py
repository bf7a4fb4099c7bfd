"""Streams and clients that do not read, through real sockets (issue 8): a stream shares the
worker (other clients' heartbeats get through, its timeout fires), stops producing while its
client is not reading (the worker's memory stays bounded), and a client that does not drain its
output is aborted, not closed gracefully (which would wait for it to read)."""

import os
import re
import subprocess
import threading
import time

import pytest

from support.gateway_proc import GatewayProcess, wait_until
from support.sockclient import SockClient

EV = "phoenix_gen_api"
MiB = 1 << 20

FUNCTIONS = """
[auth]
require_verified_user_id = false

[[functions]]
service = "t"
request_type = "echo"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
timeout = 1000

[[functions]]
service = "t"
request_type = "big"
nodes = "local"
mfa = "testapi:big"
arg_types = {{ n = "num" }}
timeout = 1000

[[functions]]
service = "t"
request_type = "spin"
nodes = "local"
mfa = "testapi:spin"
arg_types = {{ size = "num" }}
response_type = "stream"
timeout = {timeout}

[[functions]]
service = "t"
request_type = "spin_plain"
nodes = "local"
mfa = "testapi:spin_plain"
arg_types = {{ size = "num" }}
response_type = "stream"
timeout = {timeout}

[[functions]]
service = "t"
request_type = "push_forever"
nodes = "local"
mfa = "testapi:push_forever"
arg_types = {{ size = "num" }}
request_info = true
response_type = "stream"
timeout = {timeout}
"""

STREAMS = ["spin", "spin_plain", "push_forever"]


def gateway(timeout: int, **gw: object) -> GatewayProcess:
    table = "[gateway]\n" + "".join(f"{k} = {v}\n" for k, v in gw.items())
    return GatewayProcess(table + FUNCTIONS.format(timeout=timeout))


@pytest.fixture(scope="module")
def gw_short():
    """Streams time out after 1 s."""
    with gateway(1000) as gw:
        yield gw


@pytest.fixture(scope="module")
def gw_long():
    """Streams run for a minute; nothing is aborted for a minute."""
    with gateway(60_000, idle_timeout_ms=60_000, drain_timeout_ms=60_000) as gw:
        yield gw


def aborted(gw: GatewayProcess, reason: str) -> bool:
    """Whether the gateway logged a connection aborted for `reason`."""
    return re.search(rf"connection_aborted .*reason={reason}\b", gw.read_stderr()) is not None


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sockets(pid: int) -> int:
    """Sockets the process holds open (the listener and its clients)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def joined(gw: GatewayProcess, **kw: object) -> SockClient:
    c = SockClient(gw.host, gw.port, **kw)  # type: ignore[arg-type]
    c.send(["1", "1", "api:t", "phx_join", {}])
    assert c.recv()[4] == {"status": "ok", "response": {}}
    return c


def req(rid: str, request_type: str, args: dict) -> list:
    return ["1", rid, "api:t", EV, {"request_id": rid, "service": "t", "request_type": request_type, "args": args}]


def heartbeat(c: SockClient, ref: str) -> float:
    """Seconds until the heartbeat is answered (the socket's timeout bounds the wait)."""
    t0 = time.monotonic()
    c.send([None, ref, "phoenix", "heartbeat", {}])
    got = c.recv()
    assert got == [None, ref, "phoenix", "phx_reply", {"status": "ok", "response": {}}]
    return time.monotonic() - t0


def echo(c: SockClient, rid: str) -> None:
    c.send(req(rid, "echo", {"text": rid}))
    push, reply = c.recv(), c.recv()
    assert push[4]["result"] == {"text": rid, "n": 1} and reply[3] == "phx_reply"


def non_reader(gw: GatewayProcess, request_type: str, size: int = 1000) -> SockClient:
    """A client with a small receive buffer that asks for an endless stream and stops reading."""
    c = joined(gw, rcvbuf=4096)
    c.send(req("s", request_type, {"size": size}))
    return c


# ---------------------------------------------------------------- sharing the worker
@pytest.mark.parametrize("request_type", STREAMS)
def test_an_endless_stream_lets_heartbeats_through_and_times_out(gw_short, request_type):
    streamer = joined(gw_short, timeout=20)
    beater = joined(gw_short, timeout=3)
    ended = {}

    def read_stream():
        ended["timeout"] = streamer.drain_until(b'"error":"local execution timed out after 1000ms"')
        ended["at"] = time.monotonic()

    t0 = time.monotonic()
    streamer.send(req("s", request_type, {"size": 10}))
    reader = threading.Thread(target=read_stream)
    reader.start()
    waits = []
    i = 0
    while reader.is_alive() and time.monotonic() - t0 < 15:
        i += 1
        waits.append(heartbeat(beater, f"h{i}"))  # the socket's 3 s timeout: no answer fails here
        time.sleep(0.05)
    reader.join(5)
    assert ended.get("timeout") is True, "the stream did not end with the timeout error"
    assert len(waits) >= 3  # heartbeats were answered while the stream ran
    assert max(waits) < 2.0, waits  # promptly: not after the stream (the bound is generous)
    echo(beater, "after")
    streamer.close()
    beater.close()


# ---------------------------------------------------------------- a client that stops reading
@pytest.mark.parametrize("request_type", STREAMS)
def test_a_stream_held_by_a_client_that_stops_reading_still_times_out(gw_short, request_type):
    """The stream waits for the client to drain; its timeout fires there too, and the client
    that reads again finds the timeout error after what was sent before."""
    c = non_reader(gw_short, request_type, size=1000)
    time.sleep(1.5)
    c.sock.settimeout(10)
    assert c.drain_until(b'"error":"local execution timed out after 1000ms"', limit=64 * MiB)
    echo(c, "after")  # the connection serves on
    c.close()


@pytest.mark.parametrize("request_type", STREAMS)
def test_a_stream_to_a_client_that_stops_reading_keeps_memory_bounded(gw_long, request_type):
    other = joined(gw_long, timeout=10)
    echo(other, "warm")
    before = rss(gw_long.pid)
    c = non_reader(gw_long, request_type, size=1000)
    peak = before
    for i in range(20):  # 2 s: an unbounded stream of 1 kB chunks grows by hundreds of MiB
        time.sleep(0.1)
        peak = max(peak, rss(gw_long.pid))
        echo(other, f"e{i}")
        assert heartbeat(other, f"h{i}") < 5.0  # answered, not held behind the stream (which runs a minute)
    assert peak - before < 32 * MiB, f"RSS grew by {(peak - before) / MiB:.0f} MiB"
    c.close()
    echo(other, "last")
    other.close()


def test_many_streams_from_a_client_that_stops_reading(gw_long):
    """A flood of stream requests from a non-reader: bounded memory, others still served."""
    other = joined(gw_long, timeout=10)
    echo(other, "warm")
    before = rss(gw_long.pid)
    c = joined(gw_long, rcvbuf=4096)
    c.send_many([req(f"s{i}", "spin", {"size": 1000}) for i in range(50)])
    peak = before
    for i in range(10):
        time.sleep(0.1)
        peak = max(peak, rss(gw_long.pid))
        echo(other, f"e{i}")
    assert peak - before < 48 * MiB, f"RSS grew by {(peak - before) / MiB:.0f} MiB"
    c.close()
    other.close()


def test_a_client_that_does_not_drain_is_aborted_after_drain_timeout():
    with gateway(60_000, idle_timeout_ms=60_000, drain_timeout_ms=500) as gw:
        base = sockets(gw.pid)
        c = non_reader(gw, "spin")
        assert wait_until(lambda: aborted(gw, "drain_timeout"), 10)
        assert wait_until(lambda: sockets(gw.pid) == base, 5)  # the server let go of it
        assert c.read_to_end() >= 0  # and the client sees the end
        other = joined(gw, timeout=3)
        echo(other, "still")
        other.close()


def test_answers_piling_up_past_max_unsent_bytes_abort_the_client():
    with gateway(1000, max_unsent_bytes=1_000_000, drain_timeout_ms=60_000) as gw:
        base = sockets(gw.pid)
        c = joined(gw, rcvbuf=4096)
        c.send_many([req(f"b{i}", "big", {"n": 400_000}) for i in range(20)])  # 8 MB of answers
        assert wait_until(lambda: aborted(gw, "max_unsent_bytes"), 10)
        assert wait_until(lambda: sockets(gw.pid) == base, 5)
        c.close()


def test_an_idle_client_that_does_not_read_is_aborted_not_closed():
    """Past idle_timeout_ms a client is closed with 1001; one that is not reading would hold the
    close (and its unsent output) until it reads, so it is aborted."""
    with gateway(60_000, idle_timeout_ms=800, drain_timeout_ms=60_000) as gw:
        other = joined(gw, timeout=3)
        echo(other, "warm")
        base = sockets(gw.pid)
        before = rss(gw.pid)
        c = non_reader(gw, "spin", size=10_000)
        assert wait_until(lambda: aborted(gw, "not_draining_at_close"), 10)
        assert wait_until(lambda: sockets(gw.pid) == base - 1, 5)  # `other` went idle too: closed
        assert rss(gw.pid) - before < 32 * MiB
        assert c.read_to_end() >= 0
        assert gw.read_stderr().count("connection_aborted") == 1  # logged once per connection


def test_shutdown_aborts_a_client_that_does_not_read():
    with gateway(60_000, drain_timeout_ms=60_000) as gw:
        c = non_reader(gw, "spin")
        time.sleep(0.3)
        t0 = time.monotonic()
        assert gw.stop() == 0
        assert time.monotonic() - t0 < 8
        assert aborted(gw, "not_draining_at_close")
        c.close()


def fin_wait_1(port: int) -> int:
    """The gateway's sockets on `port` the kernel still holds in FIN_WAIT1 (closed by the server,
    unsent output not yet taken by the peer)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "fin-wait-1", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_an_aborted_client_leaves_no_kernel_buffer_behind():
    """An abort resets the connection (SO_LINGER {1, 0}), so the socket's unsent output is freed
    at once: a client that reads nothing cannot make the kernel keep megabytes per socket in
    FIN_WAIT1 for minutes after the gateway let go of it."""
    with gateway(60_000, idle_timeout_ms=800, drain_timeout_ms=60_000) as gw:
        c = non_reader(gw, "spin", size=10_000)
        assert wait_until(lambda: aborted(gw, "not_draining_at_close"), 10)
        assert wait_until(lambda: fin_wait_1(gw.port) == 0, 5), subprocess.run(
            ["ss", "-tn", f"( sport = :{gw.port} )"], capture_output=True, text=True
        ).stdout
        c.close()

"""Hostile clients against the log and the descriptor limit, through real gateway processes:
client text cannot forge log lines, floods are summarized, the libraries' records are formatted,
and a worker at its open-files limit refuses the excess without spinning and recovers."""

import asyncio
import base64
import os
import re
import resource
import socket
import subprocess
import sys
from urllib.parse import quote

import pytest
from picows import WSError

from genapi import log
from support.gateway_proc import GatewayProcess, wait_until
from support.rawclient import Raw, request

EV = "phoenix_gen_api"
FORGED = "2030-01-01 00:00:00,000 ERROR forged_by_client user_id=admin"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S")


def lines(text: str) -> list[str]:
    return text.splitlines()


def assert_every_line_ours(text: str) -> None:
    """Each line is a record of this process (timestamp, level, event) or a traceback line."""
    for line in lines(text):
        assert LINE.match(line) or line.startswith("  | "), line
        assert not line.startswith("2030-"), line


@pytest.fixture
def gateway():
    g = GatewayProcess()  # the embedded demo: anonymous clients, demo.admin_stats needs role admin
    yield g
    assert g.stop() == 0


def test_client_text_cannot_forge_a_log_line(gateway, run):
    async def go():
        with pytest.raises(WSError, match="403"):
            await Raw.connect(gateway.url, "vsn=" + quote("1.0.0\n" + FORGED + "\x1b[2J\r"))
        c = await Raw.connect(gateway.url)
        await c.join("api:x")
        c.send(["1", "2", "api:x", EV, request("r1\n" + FORGED + "\u2028", "admin_stats", {})])
        push = (await c.recv_n(2))[0]
        assert push[4]["error"] == "Permission denied"
        await c.close()

    run(go())
    text = gateway.read_stderr()
    assert_every_line_ours(text)
    assert f'vsn="1.0.0\\n{FORGED}\\x1b[2J\\r"' in text
    assert f'request_id="r1\\n{FORGED}\\u2028"' in text


def test_a_flood_is_cut_and_summarized(gateway, run):
    n = 3000

    async def go():
        c = await Raw.connect(gateway.url)
        await c.join("api:x")
        for i in range(0, n, 100):
            for j in range(i, i + 100):
                c.send(["1", str(j), "api:x", EV, request(f"r{j}", "admin_stats", {})])
            await c.recv_n(200)  # every request is still answered (push + reply)
        await c.close()

    run(go())
    # the summary comes when the window ends, even though nothing is logged after the flood
    assert wait_until(lambda: "log_suppressed" in gateway.read_stderr(), timeout=log.WINDOW + 5)
    text = gateway.read_stderr()
    denied = [line for line in lines(text) if " permission_denied " in line]
    summaries = re.findall(r"WARNING log_suppressed event=permission_denied suppressed=(\d+) seconds=", text)
    assert len(denied) <= log.BURST * 2  # one window, or the flood straddled two
    assert len(denied) + sum(map(int, summaries)) == n
    assert_every_line_ours(text)


def send_unmasked_frame(gateway: GatewayProcess) -> None:
    """Upgrades a raw socket, then sends a client frame without a mask: picows's parser refuses
    it (closing 1002) and reports it at ERROR."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as s:
        s.sendall(
            f"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 101 ")
        s.sendall(bytes([0x81, 0x05]) + b"hello")
        assert s.recv(4096)[:2] == b"\x88\x49"  # close 1002


def test_picows_records_are_genapi_lines():
    """picows's records come out as genapi lines; a client's protocol error (here an unmasked
    frame, which picows reports at ERROR) is the client's mistake: INFO, not ERROR."""
    with GatewayProcess(extra_args=["--log-level", "info"]) as gateway:
        send_unmasked_frame(gateway)
        assert wait_until(lambda: "WS parser error" in gateway.read_stderr())
        text = gateway.read_stderr()
        assert re.search(
            r"^\S+ \S+ INFO picows fd=\d+ msg=\"WS parser error: .*Received un-masked frame from client", text, re.M
        ), text
        assert_every_line_ours(text)


def test_a_clients_protocol_error_leaves_no_line_at_the_default_level(gateway):
    """At the default level (warning) a client's protocol error is not logged at all."""
    send_unmasked_frame(gateway)
    assert "WS parser error" not in gateway.read_stderr()
    assert " ERROR " not in gateway.read_stderr()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_at_the_descriptor_limit_the_excess_is_refused_without_spinning(run):
    g = GatewayProcess(nofile=256)
    try:

        async def go():
            async def one():
                try:
                    return await Raw.connect(g.url)
                except WSError as exc:
                    return exc

            got = await asyncio.gather(*[one() for _ in range(300)])
            ok = [c for c in got if isinstance(c, Raw)]
            refused = [e for e in got if not isinstance(e, Raw)]
            assert 200 < len(ok) < 256 and len(ok) + len(refused) == 300
            assert all("503" in str(e) for e in refused), refused[:3]
            # all of them answered at once: none is left waiting in the backlog
            cpu = cpu_seconds(g.pid)
            await asyncio.sleep(3)
            assert cpu_seconds(g.pid) - cpu < 0.5  # a spinning worker burns ~3 s here
            # the ones in are served
            assert (await ok[0].join("api:x"))[4] == {"status": "ok", "response": {}}
            for c in ok:
                await c.close()
            await asyncio.sleep(0.3)
            # after they left, new clients are served
            later = [await Raw.connect(g.url) for _ in range(20)]
            for c in later:
                assert (await c.join("api:x"))[4]["status"] == "ok"
                await c.close()

        run(go(), timeout=60)
        assert g.alive()
        text = g.read_stderr()
        assert "fd_limit_low open_files=256" in text
        assert 'accept_refused reason="Too many open files"' in text
        assert len(text) < 20_000, text[:2000]  # a few lines, no traceback storm
        assert_every_line_ours(text)
    finally:
        assert g.stop() == 0


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one():
    def limits():
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 4000))

    p = subprocess.Popen(
        [sys.executable, "-m", "genapi", "serve", "--port", "0", "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limits,
    )
    try:
        assert "genapi listening" in p.stdout.readline()  # type: ignore[union-attr]
        with open(f"/proc/{p.pid}/limits") as f:
            row = next(line for line in f if line.startswith("Max open files"))
        assert row.split()[3:5] == ["4000", "4000"]
    finally:
        p.terminate()
        _out, err = p.communicate(timeout=10)
    assert "INFO fd_limit open_files=4000 hard=4000" in err

"""What a user would write instead of genapi: a hand-written Phoenix endpoint on aiohttp.

The comparison the issue asks for (genapi >= 3x at P=1 and P=16, every function kind): the same
V2 frames the gateway answers, written the way an aiohttp user writes a WebSocket handler: one
`async for` over the messages, `json` to decode and encode, `send_str` per frame, and a dict
from request_type to the function. `echo` is an `async def` awaited in the handler; `echo_plain`
a plain `def` sent to the default thread pool with `run_in_executor` (a plain function may
block). Requests of one connection run one after another, as in a typical handler. No
validation, auth, limits or timeouts: what it lacks, genapi does on top of being faster.

Run it pinned: `taskset -c 0 python benchmarks/aiohttp_phoenix.py --port 0`; it prints
`aiohttp-phoenix listening on 127.0.0.1:PORT` once it accepts connections and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
from typing import Any

import uvloop
from aiohttp import WSMsgType, web


async def echo(text: str, n: int = 1) -> dict[str, Any]:
    return {"text": text, "n": n}


def echo_plain(text: str, n: int = 1) -> dict[str, Any]:
    return {"text": text, "n": n}


FUNCTIONS: dict[str, Any] = {"echo": echo, "echo_plain": echo_plain}


async def socket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    loop = asyncio.get_running_loop()
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        join_ref, ref, topic, event, payload = json.loads(msg.data)
        if event != "phoenix_gen_api":
            await ws.send_str(json.dumps([join_ref, ref, topic, "phx_reply", {"status": "ok", "response": {}}]))
            continue
        rt = payload.get("request_type")
        args = payload.get("args") or {}
        fn = FUNCTIONS.get(rt)
        if fn is None:
            result, error = None, f"unsupported function: {rt}"
        elif fn is echo:
            result, error = await fn(args.get("text"), args.get("n", 1)), None
        else:
            result, error = await loop.run_in_executor(None, fn, args.get("text"), args.get("n", 1)), None
        response = {
            "kind": "answer" if error is None else "error",
            "request_id": payload.get("request_id"),
            "result": result,
            "success": error is None,
            "error": error,
            "async": False,
            "has_more": False,
            "can_retry": False,
        }
        await ws.send_str(json.dumps([join_ref, None, topic, event, response]))
        await ws.send_str(json.dumps([join_ref, ref, topic, "phx_reply", {"status": "ok", "response": rt}]))
    return ws


async def main(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/socket/websocket", socket_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock)
    await site.start()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    bound = sock.getsockname()
    print(f"aiohttp-phoenix listening on {bound[0]}:{bound[1]}", flush=True)
    await stop
    await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    uvloop.run(main(a.host, a.port))

"""Raw picows echo server: the WebSocket ceiling the gateway is compared with.

Every data frame is sent straight back (zero-copy view of the read buffer); nothing else.
Run it pinned: `taskset -c 0 python benchmarks/echo_server.py --port 0`; it prints
`echo listening on 127.0.0.1:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

CLOSE = WSMsgType.CLOSE


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt is CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        else:
            transport.send(mt, frame.get_payload_as_memoryview())


async def main(host: str, port: int) -> None:
    server = await ws_create_server(lambda _request: Echo(), host, port)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    bound = server.sockets[0].getsockname()
    print(f"echo listening on {bound[0]}:{bound[1]}", flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    uvloop.run(main(a.host, a.port))

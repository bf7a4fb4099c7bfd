"""Minimal Phoenix server: the least a Python Phoenix-protocol gateway can do per call.

The throughput ceiling the gateway is compared with, in the same run and with the same client.
picows + uvloop + msgspec, V2 frames only, any path and token accepted. `phx_join` and every
other event but `phoenix_gen_api` (heartbeat, phx_leave) get an ok `phx_reply`; a
`phoenix_gen_api` request decodes its payload, calls `echo(text, n)` inline and answers with
the Response push and the `phx_reply`, exactly the frames the gateway sends for `demo.echo`.
Every frame answering one read batch goes out in ONE write (buffered while
`frame.last_in_buffer` is false), as the gateway does. No validation, auth, config lookup,
concurrency, timeouts or error handling: whatever genapi measures below this is the price of
its features.

Run it pinned: `taskset -c 0 python benchmarks/phx_min_server.py --port 0`; it prints
`phx-min listening on 127.0.0.1:PORT` once it accepts connections and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import msgspec
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
decode = msgspec.json.Decoder().decode
encode = msgspec.json.Encoder().encode
EMPTY: dict = {}


def echo(text, n=1):
    return {"text": text, "n": n}


def server_frame(payload: bytes) -> bytes:
    """An unmasked final text frame carrying `payload`."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Conn(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.out: list[bytes] = []
        self.write = transport.underlying_transport.write

    def flush(self) -> None:
        out = self.out
        if out:
            self.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            if frame.msg_type is CLOSE:
                self.flush()
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            elif frame.last_in_buffer:
                self.flush()
            return
        join_ref, ref, topic, event, payload = decode(frame.get_payload_as_memoryview())
        out = self.out
        if event == "phoenix_gen_api":
            args = payload.get("args") or EMPTY
            resp = {  # genapi's answer, byte for byte (its kind first, as the gateway writes it)
                "kind": "answer",
                "request_id": payload.get("request_id"),
                "result": echo(args.get("text"), args.get("n", 1)),
                "success": True,
                "error": None,
                "async": False,
                "has_more": False,
                "can_retry": False,
            }
            out.append(server_frame(encode([join_ref, None, topic, event, resp])))
            out.append(
                server_frame(
                    encode(
                        [join_ref, ref, topic, "phx_reply", {"status": "ok", "response": payload.get("request_type")}]
                    )
                )
            )
        else:
            out.append(server_frame(encode([join_ref, ref, topic, "phx_reply", {"status": "ok", "response": EMPTY}])))
        if frame.last_in_buffer:
            self.flush()


async def main(host: str, port: int) -> None:
    server = await ws_create_server(lambda _request: Conn(), host, port, enable_auto_ping=False)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    bound = server.sockets[0].getsockname()
    print(f"phx-min listening on {bound[0]}:{bound[1]}", flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    uvloop.run(main(a.host, a.port))

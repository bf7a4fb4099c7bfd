"""A frame-level WebSocket client for protocol tests: sends exactly what it is given and
records every frame the server sends, in order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class _L(WSListener):
    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            self.raw.frames.put_nowait(json.loads(frame.get_payload_as_bytes()))
        elif frame.msg_type is WSMsgType.BINARY:
            self.raw.frames.put_nowait(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.PONG:
            self.raw.pongs.put_nowait(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.CLOSE:
            self.raw.close_code = frame.get_close_code().value
            self.raw.close_reason = frame.get_close_message()
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.raw.closed.done():
            self.raw.closed.set_result(self.raw.close_code)


class Raw:
    def __init__(self) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.pongs: asyncio.Queue[bytes] = asyncio.Queue()  # the payload of each PONG frame
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_reason: bytes | None = None
        self.transport: WSTransport | None = None
        self.response: Any = None

    @classmethod
    async def connect(cls, url: str, query: str = "vsn=2.0.0", headers: dict[str, str] | None = None, **kw: Any) -> Raw:
        self = cls()
        full = url + "/websocket" + (("?" + query) if query else "")
        self.transport, _ = await ws_connect(lambda: _L(self), full, extra_headers=headers, **kw)
        self.response = self.transport.response
        return self

    def send(self, msg: Any) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, msg if isinstance(msg, (bytes, str)) else json.dumps(msg))

    def send_binary(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.BINARY, data)

    async def recv(self, timeout: float = 5) -> Any:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def recv_n(self, n: int, timeout: float = 5) -> list[Any]:
        return [await self.recv(timeout) for _ in range(n)]

    async def nothing(self, wait: float = 0.3) -> bool:
        """True when no frame arrives within `wait` seconds."""
        try:
            extra = await asyncio.wait_for(self.frames.get(), wait)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame {extra!r}")

    async def join(self, topic: str, join_ref: str = "1", payload: Any = None) -> Any:
        self.send([join_ref, join_ref, topic, "phx_join", payload or {}])
        return await self.recv()

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close()
            self.transport.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2)
            except TimeoutError:
                pass


def request(rid: str, request_type: str = "echo", args: Any = None, service: str = "demo", **extra: Any) -> dict:
    p = {
        "request_id": rid,
        "service": service,
        "request_type": request_type,
        "args": {"text": "hi"} if args is None else args,
    }
    p.update(extra)
    return p

"""A Python client for genapi (and any Phoenix Channels server), on picows.

    client = await Client.connect("ws://127.0.0.1:4000/socket", token="...")
    await client.join("api:lobby")
    resp = await client.call("demo", "echo", {"text": "hi"})
    async for chunk in client.stream("demo", "count", {"n": 3}): ...
"""
from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from .structs import Response

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()
_resp_dec = msgspec.json.Decoder(Response)


class PhoenixError(Exception):
    """An error phx_reply (join refused, unmatched topic, bad request...)."""

    def __init__(self, response: Any) -> None:
        super().__init__(response)
        self.response = response


class Push(msgspec.Struct):
    """A server push that is not the answer to one of this client's calls."""

    topic: str
    event: str
    payload: Any
    join_ref: Any = None


class _Listener(WSListener):
    def __init__(self, client: Client) -> None:
        self.client = client

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            self.client._on_text(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.BINARY:
            self.client._on_binary(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.client.close_code = code
            transport.send_close(WSCloseCode.OK if code is WSCloseCode.NO_INFO else code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.client._on_disconnected()


class Client:
    """One connection. Requests go to the first joined topic unless `topic=` is given."""

    def __init__(self, vsn: str, event: str) -> None:
        self.vsn = vsn
        self.event = event
        self.transport: WSTransport | None = None
        self.close_code: Any = None
        self.pushes: asyncio.Queue[Push] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self._refs = itertools.count(1)
        self._replies: dict[str, asyncio.Future] = {}
        self._calls: dict[str, asyncio.Queue[Response]] = {}
        self._joined: dict[str, str] = {}

    @classmethod
    async def connect(cls, url: str, *, params: dict[str, str] | None = None, token: str | None = None,
                      auth_token: str | None = None, vsn: str | None = "2.0.0",
                      event: str = "phoenix_gen_api", timeout: float = 10) -> Client:
        """Connects to `url` (the socket mount such as ws://host:4000/socket, or the full
        .../socket/websocket URL). `token` goes in the query string; `auth_token` in the
        `Sec-WebSocket-Protocol` header as phoenix.js's `authToken` does."""
        self = cls(vsn or "1.0.0", event)
        if not url.rstrip("/").endswith("/websocket"):
            url = url.rstrip("/") + "/websocket"
        query = dict(params or {})
        if token is not None:
            query["token"] = token
        if vsn is not None:
            query["vsn"] = vsn
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        headers = {}
        if auth_token is not None:
            b64 = base64.b64encode(auth_token.encode()).decode().rstrip("=")
            headers["Sec-WebSocket-Protocol"] = f"phoenix, base64url.bearer.phx.{b64}"
        self.transport, _ = await asyncio.wait_for(
            ws_connect(lambda: _Listener(self), url, extra_headers=headers or None,
                       max_frame_size=64 * 1024 * 1024), timeout)
        return self

    # ------------------------------------------------------------------ incoming
    def _on_text(self, data: bytes) -> None:
        msg = _dec.decode(data)
        if isinstance(msg, list):
            join_ref, ref, topic, event, payload = msg[:5]
        else:
            join_ref, ref, topic, event, payload = (None, msg.get("ref"), msg.get("topic"),
                                                    msg.get("event"), msg.get("payload"))
        if event == "phx_reply":
            fut = self._replies.pop(str(ref), None) if ref is not None else None
            if fut is not None and not fut.done():
                fut.set_result(payload)
                return
        if event == self.event and isinstance(payload, dict):
            q = self._calls.get(payload.get("request_id"))  # type: ignore[arg-type]
            if q is not None:
                q.put_nowait(msgspec.convert(payload, Response))
                return
        self.pushes.put_nowait(Push(topic, event, payload, join_ref))

    def _on_binary(self, data: bytes) -> None:
        self.pushes.put_nowait(Push("", "binary", data))

    def _on_disconnected(self) -> None:
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self._replies.clear()
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # ------------------------------------------------------------------ outgoing
    def send_raw(self, data: bytes | str, binary: bool = False) -> None:
        """Sends one frame as is (for tests of bad input)."""
        assert self.transport is not None
        self.transport.send(WSMsgType.BINARY if binary else WSMsgType.TEXT,
                            data.encode() if isinstance(data, str) else data)

    def push(self, topic: str, event: str, payload: Any, join_ref: Any = None) -> asyncio.Future:
        """Sends one message; the returned future resolves to its phx_reply payload."""
        if self.transport is None or self.closed.done():
            raise ConnectionError("connection closed")
        ref = str(next(self._refs))
        if join_ref is None:
            join_ref = self._joined.get(topic)
        fut = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        if self.vsn.startswith("1."):
            frame = _enc.encode({"topic": topic, "event": event, "payload": payload, "ref": ref,
                                 "join_ref": join_ref})
        else:
            frame = _enc.encode([join_ref, ref, topic, event, payload])
        self.transport.send(WSMsgType.TEXT, frame)
        return fut

    async def _reply(self, fut: asyncio.Future, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(f"no reply within {timeout}s") from None

    async def join(self, topic: str, params: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        """Joins `topic`; returns the join response or raises PhoenixError."""
        ref = str(next(self._refs))
        # phoenix.js uses ref == join_ref for joins
        self._refs = itertools.count(int(ref) + 1)
        fut = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        if self.vsn.startswith("1."):
            frame = _enc.encode({"topic": topic, "event": "phx_join", "payload": params or {}, "ref": ref,
                                 "join_ref": ref})
        else:
            frame = _enc.encode([ref, ref, topic, "phx_join", params or {}])
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, frame)
        reply = await self._reply(fut, timeout)
        if reply.get("status") != "ok":
            raise PhoenixError(reply.get("response"))
        self._joined[topic] = ref
        return reply.get("response")

    async def leave(self, topic: str, timeout: float = 10) -> None:
        await self._reply(self.push(topic, "phx_leave", {}), timeout)
        self._joined.pop(topic, None)

    async def heartbeat(self, timeout: float = 10) -> Any:
        return await self._reply(self.push("phoenix", "heartbeat", {}, join_ref=None), timeout)

    def _topic(self, topic: str | None) -> str:
        if topic is not None:
            return topic
        if not self._joined:
            raise RuntimeError("join a topic first (or pass topic=)")
        return next(iter(self._joined))

    async def request(self, service: str, request_type: str, args: dict[str, Any] | None = None, *,
                      version: str | None = None, topic: str | None = None, request_id: str | None = None,
                      timeout: float = 10, **extra: Any) -> tuple[Any, asyncio.Queue[Response]]:
        """Sends a request; returns (phx_reply payload, queue of its pushes). Low level."""
        rid = request_id or f"py-{next(self._refs)}"
        payload: dict[str, Any] = {"request_id": rid, "service": service, "request_type": request_type,
                                   "args": args if args is not None else {}}
        if version is not None:
            payload["version"] = version
        payload.update(extra)
        q: asyncio.Queue[Response] = asyncio.Queue()
        self._calls[rid] = q
        reply = await self._reply(self.push(self._topic(topic), self.event, payload), timeout)
        return reply, q

    async def call(self, service: str, request_type: str, args: dict[str, Any] | None = None, *,
                   version: str | None = None, topic: str | None = None, request_id: str | None = None,
                   timeout: float = 10) -> Response | None:
        """Calls a function and returns its final Response (after the acknowledgement for async
        functions); None for fire-and-forget functions. Stream functions: use `stream`."""
        reply, q = await self.request(service, request_type, args, version=version, topic=topic,
                                      request_id=request_id, timeout=timeout)
        rid = request_id
        try:
            if q.empty():
                if reply.get("status") != "ok":
                    raise PhoenixError(reply.get("response"))
                return None
            first = q.get_nowait()
            rid = first.request_id
            if first.success and first.async_ and not first.has_more and first.result is None:
                return await asyncio.wait_for(q.get(), timeout)
            return first
        finally:
            if rid is not None:
                self._calls.pop(rid, None)

    async def stream(self, service: str, request_type: str, args: dict[str, Any] | None = None, *,
                     version: str | None = None, topic: str | None = None, request_id: str | None = None,
                     timeout: float = 30) -> AsyncIterator[Response]:
        """Yields every Response of a stream call after the "init" chunk, the final one included."""
        reply, q = await self.request(service, request_type, args, version=version, topic=topic,
                                      request_id=request_id, timeout=timeout)
        try:
            first = await asyncio.wait_for(q.get(), timeout)
            if not (first.has_more and first.result == "init"):
                yield first
                return
            while True:
                resp = await asyncio.wait_for(q.get(), timeout)
                yield resp
                if not resp.has_more or not resp.success:
                    return
        finally:
            self._calls.pop(first.request_id if "first" in locals() else "", None)

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close()
            self.transport.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2)
            except TimeoutError:
                pass

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

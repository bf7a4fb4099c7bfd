"""A Python client for genapi (and any Phoenix Channels server), on picows.

    client = await Client.connect("ws://127.0.0.1:4000/socket", token="...")
    await client.join("api:lobby")
    resp = await client.call("demo", "echo", {"text": "hi"})        # raises CallFailed on failure
    async for chunk in client.stream("demo", "count", {"n": 3}): ...
    await client.close()

Heartbeats every 30 s keep the connection alive and detect a dead server, as phoenix.js does;
`reconnect=True` reconnects with backoff and rejoins. The reference is docs/client.md.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from genapi import log
from genapi.errors import (
    CLIENT_CLOSED,
    CallFailed,
    ClientError,
    ConnectionLost,
    PhoenixError,
    ReplyTimeout,
    StreamRequired,
    connection_closed,
    heartbeat_timeout,
)
from genapi.structs import (
    RESPONSE_KINDS,
    Ack,
    Chunk,
    Failure,
    LastChunk,
    Relayed,
    Response,
    StreamStart,
)

__all__ = [
    "CallFailed",
    "Client",
    "ClientError",
    "ConnectionLost",
    "PhoenixError",
    "Push",
    "ReplyTimeout",
    "StreamRequired",
    "phoenix_backoff",
]

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()

HEARTBEAT_INTERVAL = 30.0  # phoenix.js heartbeatIntervalMs
_RECONNECT_AFTER_MS = (10, 50, 100, 150, 200, 250, 500, 1000, 2000)  # phoenix.js reconnectAfterMs, then 5000
_MAX_DROPPED = 1024  # request ids whose late pushes are dropped (timed out, abandoned streams)


def phoenix_backoff(tries: int) -> float:
    """phoenix.js's reconnectAfterMs, in seconds: 0.01, 0.05, 0.1 ... 2, then 5 for every later try."""
    return (_RECONNECT_AFTER_MS[tries - 1] if 0 < tries <= len(_RECONNECT_AFTER_MS) else 5000) / 1000


class Push(msgspec.Struct):
    """A server push that is not the answer to one of this client's calls."""

    topic: str
    event: str
    payload: Any
    join_ref: Any = None


_Item = Response | ClientError  # what a call's queue holds: its Responses, or why it ended


class _Listener(WSListener):
    def __init__(self, client: Client) -> None:
        self.client = client

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.client.transport = transport

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
        self.client._on_disconnected(transport)


def _kind_of(payload: dict[str, Any]) -> type[Response] | None:
    """The Response class of a push on the API event, by its `kind` (genapi's marker); None for a
    kind this client does not know (it goes to `pushes`). A payload without the marker comes from
    a server without it (PhoenixGenApi itself): its kind is read from the reference's flags."""
    kind = payload.get("kind")
    if kind is not None:
        return RESPONSE_KINDS.get(kind) if isinstance(kind, str) else None
    return _unmarked(payload)


def _unmarked(payload: dict[str, Any]) -> type[Response]:
    """The kind of a Response without the marker, from the reference's fields. The reference
    leaves two things ambiguous: a relayed message is recognised by its result's keys, and an
    async acknowledgement and a stream end share one shape (the call reading it tells them apart:
    `stream` ends at any push that is not a chunk)."""
    result = payload.get("result")
    if isinstance(result, dict) and "from_user_id" in result and "group_id" in result and "timestamp" in result:
        return Relayed
    if payload.get("success") is False:
        return Failure
    if payload.get("has_more"):
        return StreamStart if result == "init" else Chunk
    if payload.get("async"):
        return Ack if result is None else LastChunk
    return Response


class Client:
    """One connection. Requests go to the first joined topic unless `topic=` is given.
    Make one with `await Client.connect(url, ...)`."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        vsn: str,
        event: str,
        *,
        heartbeat_interval: float | None,
        reconnect: bool,
        reconnect_after: Callable[[int], float],
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.ssl_context = ssl_context
        self.vsn = vsn
        self.event = event
        self.heartbeat_interval = heartbeat_interval
        self.reconnect = reconnect
        self.reconnect_after = reconnect_after
        self.connect_timeout = connect_timeout
        self.transport: WSTransport | None = None
        self.close_code: Any = None
        self.reconnects = 0
        self.pushes: asyncio.Queue[Push] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Any] = loop.create_future()
        self.connected = asyncio.Event()
        self._headers = headers
        self._shown_url = url.split("?", 1)[0]  # errors never show the query (it may hold a token)
        self._refs = itertools.count(1)
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._calls: dict[str, asyncio.Queue[_Item]] = {}
        self._dropped: dict[str, None] = {}
        self._late_refs: dict[str, None] = {}  # refs whose waiter gave up: their reply is dropped
        self._joined: dict[str, str] = {}
        self._join_params: dict[str, dict[str, Any]] = {}
        self._closing = False
        self._lost_reason: str | None = None  # why the socket is being closed (heartbeat timeout)
        self._last_reason: str | None = None  # why the last socket went
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        params: dict[str, str] | None = None,
        token: str | None = None,
        auth_token: str | None = None,
        vsn: str | None = "2.0.0",
        event: str = "phoenix_gen_api",
        timeout: float = 10,
        heartbeat_interval: float | None = HEARTBEAT_INTERVAL,
        reconnect: bool = False,
        reconnect_after: Callable[[int], float] = phoenix_backoff,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Client:
        """Connects to `url` (the socket mount such as ws://host:4000/socket, or the full
        .../socket/websocket URL; wss:// for TLS, verified against the system's CAs unless
        `ssl_context` says otherwise). `token` goes in the query string; `auth_token` in the
        `Sec-WebSocket-Protocol` header as phoenix.js's `authToken` does. See docs/client.md."""
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError(
                f"heartbeat_interval must be a positive number of seconds or None, got {heartbeat_interval!r}"
            )
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
        self = cls(
            url,
            headers,
            vsn or "1.0.0",
            event,
            heartbeat_interval=heartbeat_interval,
            reconnect=reconnect,
            reconnect_after=reconnect_after,
            connect_timeout=timeout,
            ssl_context=ssl_context,
        )
        await self._open()
        self.connected.set()
        return self

    async def _open(self) -> None:
        """Opens the socket (no joins) and starts its heartbeats."""
        self._lost_reason = None
        self.close_code = None
        try:
            transport, _ = await asyncio.wait_for(
                ws_connect(
                    lambda: _Listener(self),
                    self.url,
                    ssl_context=self.ssl_context,
                    extra_headers=self._headers or None,
                    max_frame_size=64 * 1024 * 1024,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise ReplyTimeout(f"the connect to {self._shown_url}", self.connect_timeout) from None
        if transport.is_disconnected:  # picows returns when the server closes before its upgrade answer
            hint = " (a ws:// URL to a TLS port? use wss://)" if self.url.startswith("ws://") else ""
            raise ConnectionLost(f"connection to {self._shown_url} closed before the WebSocket upgrade{hint}")
        self.transport = transport
        if self.heartbeat_interval is not None:
            self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(transport, self.heartbeat_interval)
            )

    # ------------------------------------------------------------------ incoming
    def _on_text(self, data: bytes) -> None:
        try:
            msg = _dec.decode(data)
            if isinstance(msg, list):
                join_ref, ref, topic, event, payload = msg[:5]
            else:
                join_ref, ref, topic, event, payload = (
                    None,
                    msg.get("ref"),
                    msg.get("topic"),
                    msg.get("event"),
                    msg.get("payload"),
                )
        except (msgspec.DecodeError, ValueError, AttributeError, TypeError):
            self.pushes.put_nowait(Push("", "undecodable", data))
            return
        if event == "phx_reply" and ref is not None:
            sref = str(ref)
            fut = self._replies.pop(sref, None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(payload)
                return
            if self._late_refs.pop(sref, 0) is None:  # the reply to a call that timed out
                return
        if (
            event == self.event
            and isinstance(payload, dict)
            and isinstance(rid := payload.get("request_id"), str)
            and (cls := _kind_of(payload)) is not None
            and cls is not Relayed  # a relayed message carries its sender's request_id: never a call's
        ):
            q = self._calls.get(rid)
            if q is not None:
                try:
                    q.put_nowait(msgspec.convert(payload, cls))
                    return
                except msgspec.ValidationError:
                    pass
            elif rid in self._dropped:
                return
        self.pushes.put_nowait(Push(topic, event, payload, join_ref))

    def _on_binary(self, data: bytes) -> None:
        self.pushes.put_nowait(Push("", "binary", data))

    def _on_disconnected(self, transport: WSTransport) -> None:
        if transport is not self.transport:
            return  # an older socket, already replaced
        self.connected.clear()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None
        if self._closing:
            reason = CLIENT_CLOSED
        else:
            reason = self._lost_reason or connection_closed(self._shown_url, self.close_code)
            log.info("client_disconnected", url=self._shown_url, reason=reason)
        self._last_reason = reason
        self._fail_pending(reason)
        if self._closing or not self.reconnect:
            self._finish()
        elif self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())

    def _fail_pending(self, reason: str) -> None:
        """Every reply and call waiting on this connection raises ConnectionLost(reason)."""
        replies, self._replies = self._replies, {}
        for fut in replies.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(reason))
        calls, self._calls = self._calls, {}
        for q in calls.values():
            q.put_nowait(ConnectionLost(reason))

    def _finish(self) -> None:
        if self._reconnect_task is not None and self._reconnect_task is not asyncio.current_task():
            self._reconnect_task.cancel()
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def _abandon(self, ref: str | None) -> None:
        """No one waits for this ref's reply any more: it is dropped when it comes."""
        if ref is not None and self._replies.pop(ref, None) is not None:
            self._late_refs[ref] = None
            if len(self._late_refs) > _MAX_DROPPED:
                del self._late_refs[next(iter(self._late_refs))]

    def _drop(self, rid: str | None) -> None:
        """Forgets a call: its late pushes are dropped rather than landing in `pushes`."""
        if rid is None or self._calls.pop(rid, None) is None:
            return
        self._dropped[rid] = None
        if len(self._dropped) > _MAX_DROPPED:
            del self._dropped[next(iter(self._dropped))]

    # ------------------------------------------------------------------ heartbeats, reconnect
    async def _heartbeat_loop(self, transport: WSTransport, interval: float) -> None:
        """phoenix.js: a heartbeat every `interval`; no reply within `interval` closes the socket."""
        while True:
            await asyncio.sleep(interval)
            if transport is not self.transport or transport.is_disconnected:
                return
            try:
                ref, fut = self._send("phoenix", "heartbeat", {}, None)
                await asyncio.wait_for(fut, interval)
            except TimeoutError:
                self._abandon(ref)
                self._lost_reason = reason = heartbeat_timeout(self._shown_url, interval)
                log.warning("client_heartbeat_timeout", url=self._shown_url, interval_s=interval)
                self._fail_pending(reason)  # at once: the close below may take a while to be seen
                transport.send_close(WSCloseCode.OK, b"heartbeat timeout")
                transport.disconnect(graceful=False)
                return
            except ConnectionLost:
                return

    async def _reconnect_loop(self) -> None:
        tries = 0
        while not self._closing:
            tries += 1
            await asyncio.sleep(self.reconnect_after(tries))
            if self._closing:
                return
            try:
                await self._open()
            except Exception as exc:  # refused, handshake error, timeout: try again later
                log.info("client_reconnect_failed", url=self._shown_url, attempt=tries, error=repr(exc))
                continue
            try:  # `connected` is set once the topics are joined again
                await self._rejoin()
            except ConnectionLost:
                continue  # dropped again while rejoining
            self.reconnects += 1
            log.info("client_reconnected", url=self._shown_url, attempts=tries, topics=len(self._joined))
            self.connected.set()
            return

    async def _rejoin(self) -> None:
        self._joined.clear()
        for topic, params in list(self._join_params.items()):
            try:
                reply = await self._join(topic, params, self.connect_timeout)
            except ReplyTimeout as exc:
                reply = {"status": "timeout", "response": str(exc)}
            if reply.get("status") != "ok":
                self._join_params.pop(topic, None)
                log.warning("client_rejoin_refused", url=self._shown_url, topic=topic, response=reply.get("response"))

    # ------------------------------------------------------------------ outgoing
    def send_raw(self, data: bytes | str, binary: bool = False) -> None:
        """Sends one frame as is (for tests of bad input)."""
        self._transport().send(
            WSMsgType.BINARY if binary else WSMsgType.TEXT, data.encode() if isinstance(data, str) else data
        )

    def _transport(self) -> WSTransport:
        t = self.transport
        if t is None or t.is_disconnected or self.closed.done():
            if self._closing:
                raise ConnectionLost(CLIENT_CLOSED)
            if self.closed.done():
                raise ConnectionLost(self._last_reason or CLIENT_CLOSED)
            raise ConnectionLost(
                f"not connected ({self._last_reason}); reconnecting"
                if self.reconnect
                else self._last_reason or f"not connected to {self._shown_url}"
            )
        return t

    def _send(
        self, topic: str, event: str, payload: Any, join_ref: Any, ref: str | None = None
    ) -> tuple[str, asyncio.Future[Any]]:
        t = self._transport()
        ref = ref or str(next(self._refs))
        fut = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        if self.vsn.startswith("1."):
            frame = _enc.encode({"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref})
        else:
            frame = _enc.encode([join_ref, ref, topic, event, payload])
        t.send(WSMsgType.TEXT, frame)
        return ref, fut

    def push(self, topic: str, event: str, payload: Any, join_ref: Any = None) -> asyncio.Future[Any]:
        """Sends one message; the returned future resolves to its phx_reply payload (or raises
        ConnectionLost). Low level: no timeout, no wait for a reconnection."""
        if join_ref is None:
            join_ref = self._joined.get(topic)
        return self._send(topic, event, payload, join_ref)[1]

    async def _wait_reply(self, ref: str, fut: asyncio.Future[Any], what: str, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ReplyTimeout(what, timeout) from None
        finally:
            self._abandon(ref)

    async def _ready(self) -> None:
        """Waits for a reconnection in progress (reconnect=True); else raises when not connected."""
        if not self.connected.is_set() and self.reconnect and not self._closing and not self.closed.done():
            waiter = asyncio.ensure_future(self.connected.wait())
            try:  # close() ends the wait too
                await asyncio.wait((waiter, self.closed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        self._transport()

    async def _join(self, topic: str, params: dict[str, Any], timeout: float) -> Any:
        ref = str(next(self._refs))  # phoenix.js: ref == join_ref for joins
        _, fut = self._send(topic, "phx_join", params, ref, ref)
        reply = await self._wait_reply(ref, fut, f"the join of {topic}", timeout)
        if reply.get("status") == "ok":
            self._joined[topic] = ref
            self._join_params[topic] = params
        return reply

    async def join(self, topic: str, params: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        """Joins `topic`; returns the join response or raises PhoenixError."""
        async with self._deadline(timeout, f"the join of {topic}"):
            await self._ready()
            reply = await self._join(topic, params or {}, timeout)
        if reply.get("status") != "ok":
            raise PhoenixError(reply.get("response"))
        return reply.get("response")

    async def leave(self, topic: str, timeout: float = 10) -> None:
        """Leaves `topic` (its running calls are cancelled by the gateway); not rejoined after."""
        self._join_params.pop(topic, None)
        ref, fut = self._send(topic, "phx_leave", {}, self._joined.get(topic))
        try:
            await self._wait_reply(ref, fut, f"the leave of {topic}", timeout)
        finally:
            self._joined.pop(topic, None)

    async def heartbeat(self, timeout: float = 10) -> Any:
        """Sends one heartbeat now and returns its reply ({"status": "ok", "response": {}})."""
        ref, fut = self._send("phoenix", "heartbeat", {}, None)
        return await self._wait_reply(ref, fut, "the heartbeat", timeout)

    def _topic(self, topic: str | None) -> str:
        if topic is not None:
            return topic
        if not self._joined:
            raise RuntimeError("join a topic first (or pass topic=)")
        return next(iter(self._joined))

    def _deadline(self, timeout: float, what: str, request_id: str | None = None, detail: str = "") -> _Deadline:
        return _Deadline(self, timeout, what, request_id, detail)

    async def request(
        self,
        service: str,
        request_type: str,
        args: dict[str, Any] | None = None,
        *,
        version: str | None = None,
        topic: str | None = None,
        request_id: str | None = None,
        timeout: float = 10,
        **extra: Any,
    ) -> tuple[Any, asyncio.Queue[_Item]]:
        """Sends a request; returns (phx_reply payload, queue of its Responses). Low level: the
        caller reads the queue (an item that is a ClientError ends the call) and must `forget`
        the request id when done."""
        rid = request_id or f"py-{next(self._refs)}"
        async with self._deadline(timeout, f"{service}.{request_type}", rid):
            return await self._start(rid, service, request_type, args, version, topic, extra)

    async def _start(
        self,
        rid: str,
        service: str,
        request_type: str,
        args: dict[str, Any] | None,
        version: str | None,
        topic: str | None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Any, asyncio.Queue[_Item]]:
        """Sends a request and waits for its phx_reply; the caller bounds the wait."""
        if not self.connected.is_set():
            await self._ready()
        tp = self._topic(topic)
        payload: dict[str, Any] = {
            "request_id": rid,
            "service": service,
            "request_type": request_type,
            "args": args if args is not None else {},
        }
        if version is not None:
            payload["version"] = version
        if extra:
            payload.update(extra)
        q: asyncio.Queue[_Item] = asyncio.Queue()
        self._calls[rid] = q
        ref = None
        try:
            ref, fut = self._send(tp, self.event, payload, self._joined.get(tp))
            return await fut, q
        except BaseException:
            self._abandon(ref)
            self._drop(rid)
            raise

    def forget(self, request_id: str) -> None:
        """Stops routing a request's Responses (later ones are dropped). For `request` users."""
        self._drop(request_id)

    async def call(
        self,
        service: str,
        request_type: str,
        args: dict[str, Any] | None = None,
        *,
        version: str | None = None,
        topic: str | None = None,
        request_id: str | None = None,
        timeout: float = 10,
        raise_on_error: bool = True,
    ) -> Response | None:
        """Calls a function and returns its final Response (after the acknowledgement for async
        functions); None for fire-and-forget functions. `timeout` bounds the whole call.

        Raises CallFailed for a failed Response (its `.response` is the Response) unless
        `raise_on_error=False`, which returns it; StreamRequired for a stream function;
        PhoenixError for an error reply with no Response (topic not joined); ReplyTimeout;
        ConnectionLost."""
        rid = request_id or f"py-{next(self._refs)}"
        name = f"{service}.{request_type}"
        try:
            async with self._deadline(timeout, name, rid):
                reply, q = await self._start(rid, service, request_type, args, version, topic)
                if q.empty():
                    self._drop(rid)
                    if reply.get("status") != "ok":
                        raise PhoenixError(reply.get("response"))
                    return None  # fire-and-forget: the reply alone
                first = _item(q.get_nowait())
                if first.kind == "start":
                    raise StreamRequired(service, request_type, rid)
                if first.kind == "ack":
                    first = _item(await q.get())  # an async function's answer follows its acknowledgement
        finally:
            self._drop(rid)
        if not first.success and raise_on_error:
            raise CallFailed(name, first)
        return first

    async def stream(
        self,
        service: str,
        request_type: str,
        args: dict[str, Any] | None = None,
        *,
        version: str | None = None,
        topic: str | None = None,
        request_id: str | None = None,
        timeout: float = 30,
    ) -> AsyncIterator[Response]:
        """Yields every Response of a stream call after its start (kind "start", result "init"):
        each chunk (kind "chunk"), then the one that ends it, kind "last" (a last chunk), "end"
        (result None) or "error" (success false with `error`: no exception).
        `timeout` bounds the wait for each chunk. A function that is not a stream yields its
        one Response."""
        rid = request_id or f"py-{next(self._refs)}"
        name = f"{service}.{request_type}"
        async with self._deadline(timeout, name, rid):
            reply, q = await self._start(rid, service, request_type, args, version, topic)
        try:
            if q.empty() and reply.get("status") != "ok":
                raise PhoenixError(reply.get("response"))
            async with self._deadline(timeout, name, rid):
                first = _item(await q.get())
            if first.kind != "start":
                yield first
                return
            while True:
                async with self._deadline(timeout, name, rid, " (waiting for the next chunk)"):
                    resp = _item(await q.get())
                yield resp
                if resp.kind != "chunk":  # last, end or error: the stream is over
                    return
        finally:
            self._drop(rid)

    async def close(self) -> None:
        """Closes the connection (no reconnect); waiting calls raise ConnectionLost."""
        self._closing = True
        if self._reconnect_task is not None and self._reconnect_task is not asyncio.current_task():
            self._reconnect_task.cancel()
        t = self.transport
        if t is not None and not t.is_disconnected:
            t.send_close()
            t.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2)
            except TimeoutError:
                pass
        if not self.closed.done():  # never connected now (reconnecting) or the close was not seen
            self._fail_pending(CLIENT_CLOSED)
            self.connected.clear()
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()
            self._finish()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _item(item: _Item) -> Response:
    if isinstance(item, ClientError):
        raise item
    return item


class _Deadline:
    """`async with`: the body's TimeoutError after `timeout` s becomes a ReplyTimeout naming the call.
    (asyncio.Timeout is final: wrapped, not subclassed.)"""

    __slots__ = ("_cm", "client", "detail", "request_id", "timeout", "what")

    def __init__(self, client: Client, timeout: float, what: str, request_id: str | None, detail: str = "") -> None:
        self._cm = asyncio.timeout(timeout)
        self.client = client
        self.timeout = timeout
        self.what = what
        self.request_id = request_id
        self.detail = detail

    async def __aenter__(self) -> None:
        await self._cm.__aenter__()

    async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None:
        try:
            await self._cm.__aexit__(et, exc, tb)
        except TimeoutError:
            detail = self.detail
            if not detail and not self.client.connected.is_set():
                detail = " (not connected: reconnecting)"
            raise ReplyTimeout(self.what, self.timeout, self.request_id, detail) from None

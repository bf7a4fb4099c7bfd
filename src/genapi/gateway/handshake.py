"""The first bytes of a new socket, read ahead of picows: an upgrade request's head over picows's
16 KB limit is answered 431 (picows would drop it without a word), a plain GET of /health,
/ready, /metrics or a browser page (/explorer) is answered here, as is a GET/POST under
/dashboard; genapi RPC (a node given this port for the control port) is refused in HTTP naming
the control port, and anything else is handed to picows with the socket."""

from __future__ import annotations

import asyncio
from typing import Any

from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows.pyi

from genapi import log
from genapi.errors import headers_too_large
from genapi.gateway import dashboard, pages

RPC_HERE = (
    "this is the gateway's WebSocket port; genapi RPC (a service node's --gateway, genapi admin "
    "--control) goes to its control port ([gateway] control_port, default 4001)\n"
)
HEAD_LIMIT = 16 * 1024  # picows drops (without an answer) an upgrade request whose head reaches this


class Handshake(asyncio.Protocol):
    """Reads a new socket's HTTP upgrade request ahead of picows, only to answer 431 when its
    head reaches picows's 16 KB limit (picows would drop the socket without a word, e.g. on a
    100 KB token); a head under it is handed to picows, with the socket, after one look."""

    __slots__ = ("buf", "draining", "http", "transport", "ws")

    def __init__(self, ws: WSProtocol, http: Any = None) -> None:
        self.ws = ws
        # async (path, authorization, method, body) -> (status, content type, body): /health, /ready,
        # /metrics, /dashboard
        self.http = http
        self.buf = b""
        self.draining = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ws.connection_made(transport)  # picows's handshake timeout runs from here

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return
        buf = self.buf + data if self.buf else data
        if buf[:1] == b"\x00":  # a genapi RPC frame's length: no HTTP request starts with NUL
            self._refuse_rpc()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) < HEAD_LIMIT:
            self.buf = buf
            return
        self.buf = b""
        if end < 0 or end >= HEAD_LIMIT:
            self._refuse()
            return
        if self.http is not None and (get := _plain_get(buf[:end])) is not None:
            method, path, authorization, length = get
            if length > BODY_LIMIT:
                get = ("GET", "", None, 0)  # answered 413 below, unread
            elif len(buf) < end + 4 + length:  # a POST's body still on its way
                self.buf = buf
                return
            self.draining = True
            body = buf[end + 4 : end + 4 + length]
            task = asyncio.ensure_future(self._answer(method, path, authorization, body, length > BODY_LIMIT))
            _answering.add(task)
            task.add_done_callback(_answering.discard)
            return
        ws = self.ws
        self.transport.set_protocol(ws)
        view = memoryview(buf)
        while view:  # picows is a buffered protocol: copy into its read buffer
            into = ws.get_buffer(len(view))
            n = min(len(into), len(view))
            into[:n] = view[:n]
            ws.buffer_updated(n)
            view = view[n:]

    async def _answer(
        self, method: str, path: str, authorization: str | None, payload: bytes, too_large: bool = False
    ) -> None:
        """A plain HTTP GET of /health, /ready or /metrics (load balancers, probes, Prometheus), of
        a browser page's file (gateway/pages.py), or a GET/POST under /dashboard (gateway/dashboard.py)."""
        try:
            if too_large:
                status, ctype, body = 413, "text/plain", b"request body too large\n"
            else:
                status, ctype, body = await self.http(path, authorization, method, payload)
        except Exception:
            log.error("http_endpoint_failed", path=path, exc_info=True)
            status, ctype, body = 500, "text/plain", b"internal error\n"
        reason = REASONS.get(status, "Internal Server Error")
        extra = b'WWW-Authenticate: Bearer realm="genapi"\r\n' if status == 401 else b""
        if ctype.startswith("text/html"):  # a page: itself and its gateway only, never framed
            extra += b"Content-Security-Policy: %s\r\n" % pages.CSP.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nConnection: close\r\n%sContent-Type: %s\r\nCache-Control: no-store\r\n"
            b"X-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n\r\n%s"
            % (status, reason.encode(), extra, ctype.encode(), len(body), body)
        )
        self.transport.close()

    def _refuse(self) -> None:
        log.warning("connect_refused", reason="request headers too large", limit=HEAD_LIMIT)
        body = headers_too_large(HEAD_LIMIT).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        # read and drop what the client still sends, so closing does not reset the answer away
        self.draining = True
        if self.transport.can_write_eof():  # not over TLS: there the close itself ends the answer
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(2.0, self.transport.close)

    def _refuse_rpc(self) -> None:
        """A genapi RPC client (a service node's --gateway, `genapi admin --control`) on the
        WebSocket port: said here once, and answered in HTTP, which the client reports with the
        control port's name at once (instead of waiting for a HELLO that never comes)."""
        peer = self.transport.get_extra_info("peername")
        log.warning(
            "websocket_port_got_rpc",
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            hint=RPC_HERE.strip(),
        )
        body = RPC_HERE.encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.draining = True
        self.transport.write_eof()
        asyncio.get_running_loop().call_later(2.0, self.transport.close)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.connection_lost(exc)


HTTP_PATHS = frozenset({"/health", "/ready", "/metrics"}) | pages.PATHS
BODY_LIMIT = 64 * 1024  # a POST's body (the dashboard's actions are a few hundred bytes)
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    503: "Service Unavailable",
}


_answering: set[asyncio.Future[None]] = set()  # plain HTTP answers under way (a reference each)


def _plain_get(head: bytes) -> tuple[str, str, str | None, int] | None:
    """A plain (not upgrade) `GET /health|/ready|/metrics`, or a GET or POST under /dashboard:
    its method, path, (first) Authorization header's value and Content-Length; else None."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in (b"GET", b"POST") or b"upgrade:" in rest.lower():
        return None
    method = parts[0].decode()
    path = parts[1].split(b"?", 1)[0].decode("latin-1")
    if not (method == "GET" and path in HTTP_PATHS) and not dashboard.wants(path):
        return None
    authorization: str | None = None
    length = 0
    for header in rest.split(b"\r\n"):
        name, sep, value = header.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"authorization" and authorization is None:
            authorization = value.strip().decode("latin-1")
        elif name == b"content-length":
            try:
                length = max(0, int(value.strip()))
            except ValueError:
                length = BODY_LIMIT + 1
    return method, path, authorization, length

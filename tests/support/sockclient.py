"""A blocking WebSocket client on a plain socket, written by hand, for clients that misbehave at
the socket level: it does the upgrade itself, sends masked text frames, and reads only when told
to (a client that stops reading is one that stops calling `recv`). `rcvbuf` shrinks the socket's
receive buffer before connecting, so the server's output backs up quickly."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any


class SockClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        path: str = "/socket/websocket?vsn=2.0.0",
        rcvbuf: int | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head!r}")

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    @staticmethod
    def frame(payload: bytes, opcode: int = 0x1) -> bytes:
        """One masked client frame."""
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + masked

    def send(self, msg: Any) -> None:
        self.sock.sendall(self.frame(json.dumps(msg).encode()))

    def send_many(self, msgs: list[Any]) -> None:
        """Several frames in one write (they arrive as one read batch)."""
        self.sock.sendall(b"".join(self.frame(json.dumps(m).encode()) for m in msgs))

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    @staticmethod
    def _bounds(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
        """(payload start, frame end) of the server frame at `pos`, if it is all there."""
        if len(buf) - pos < 2:
            return None
        n, at = buf[pos + 1] & 0x7F, pos + 2
        if n == 126:
            if len(buf) - pos < 4:
                return None
            n, at = struct.unpack_from("!H", buf, pos + 2)[0], pos + 4
        elif n == 127:
            if len(buf) - pos < 10:
                return None
            n, at = struct.unpack_from("!Q", buf, pos + 2)[0], pos + 10
        return (at, at + n) if len(buf) >= at + n else None

    def recv_frame(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next server frame, or None at end of stream."""
        while True:
            bounds = self._bounds(self.buf, 0)
            if bounds is not None:
                at, end = bounds
                opcode, payload, self.buf = self.buf[0] & 0x0F, self.buf[at:end], self.buf[end:]
                return opcode, payload
            if not self._fill():
                return None

    def recv(self) -> Any:
        """The next text frame, decoded (None at end of stream)."""
        while True:
            got = self.recv_frame()
            if got is None:
                return None
            if got[0] == 0x1:
                return json.loads(got[1])

    def drain_until(self, needle: bytes, limit: int = 1 << 30) -> bool:
        """Reads frames without decoding them until one holds `needle` (True; the frames after
        it stay to be read) or the stream ends (False)."""
        buf = bytearray(self.buf)
        seen = pos = 0
        while True:
            while (bounds := self._bounds(buf, pos)) is not None:
                at, end = bounds
                if buf.find(needle, at, end) != -1:
                    self.buf = bytes(buf[end:])
                    return True
                pos = end
            del buf[:pos]
            pos = 0
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                self.buf = b""
                return False
            seen += len(chunk)
            if seen > limit:
                raise AssertionError(f"read {seen} bytes without seeing {needle!r}")
            buf += chunk

    def read_to_end(self) -> int:
        """Reads until the server closes the socket; the bytes read (a reset counts as the end)."""
        total = len(self.buf)
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    return total
                total += len(chunk)
        except ConnectionResetError:
            return total

    def close(self) -> None:
        self.sock.close()

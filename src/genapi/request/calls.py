"""What every callee shares: the stream handle. The retry policy (`retries`, `backoff`) and
`resume` / `pass_turn` live in the compiled core (`_core/callee.pyx`, `_core/turns.py`).

The callee interface itself (`Callee`, `LocalCallee`) is compiled: `_core/callee.pyx`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from genapi.structs import Response

__all__ = ["THREAD_WINDOW", "StreamHandle"]


# Chunks a push-style function in a thread may have on their way to the loop before `send` waits.
THREAD_WINDOW = 64


class StreamHandle:
    """Push-style streaming for functions that get it through request info: `send(chunk)`,
    `send_last(chunk)`, `complete()`, `error(reason)`, and `await drain()`. Safe to call from
    worker threads.

    `push_style` is true when the function holds the handle (it ends the stream itself); `flow`
    (the request's Reply) is where backpressure comes from.

    Backpressure: `drained()` is None while the client keeps up, else a Future done once its
    output drains; the gateway's stream loops wait on it between chunks. A function on the event
    loop awaits `drain()` itself; one in a thread is held inside `send` while the client is not
    reading, or while `THREAD_WINDOW` of its chunks still wait for the loop, so what a stream
    keeps in memory stays bounded."""

    def __init__(
        self,
        emit: Callable[[Response], None],
        request_id: str,
        loop: asyncio.AbstractEventLoop,
        push_style: bool = False,
        flow: Any = None,
    ) -> None:
        self._emit = emit
        self._rid = request_id
        self._loop = loop
        self._thread = threading.get_ident()
        self.done = loop.create_future()
        self.push_style = push_style
        self._flow = flow  # the Reply: drained(), cork(), uncork() (None: no backpressure)
        # what threads sending through the handle need
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._go.set()
        self._backlog = 0
        self._held = False

    def drained(self) -> asyncio.Future[None] | None:
        """None while the client reads as fast as the stream goes; else a Future done when it
        has caught up (or the connection is gone)."""
        if self._flow is None or self.done.done():
            return None
        return self._flow.drained()

    def cork(self) -> bool:
        """Holds the chunks sent from here on to go out in one write at `uncork` (a stream
        corks only while it produces without suspending); False when nothing was corked."""
        return self._flow is not None and self._flow.cork()

    def uncork(self) -> None:
        if self._flow is not None:
            self._flow.uncork()

    async def drain(self) -> None:
        """Waits while the client is not keeping up (for push-style functions on the event loop)."""
        w = self.drained()
        if w is not None:
            await w

    def _post(self, resp: Response, final: bool) -> None:
        if threading.get_ident() != self._thread:
            self._from_thread(resp, final)
            return
        if self.done.done():
            return
        self._emit(resp)
        if final:
            self.done.set_result(resp)
            self._go.set()

    def offer(self, chunk: Any) -> bool:
        """From a thread: sends `chunk` without waiting; False when the sender should stop and
        hand back (the client is not keeping up, or the stream is over)."""
        if self.done.done():
            return False
        self._enqueue(Response.chunk(self._rid, chunk, True), False)
        return self._go.is_set() and not self.done.done()

    def _from_thread(self, resp: Response, final: bool) -> None:
        self._go.wait()
        if not self.done.done():
            self._enqueue(resp, final)

    def _enqueue(self, resp: Response, final: bool) -> None:
        with self._lock:
            self._backlog += 1
            if self._backlog >= THREAD_WINDOW:
                self._go.clear()
        self._loop.call_soon_threadsafe(self._posted, resp, final)

    def _posted(self, resp: Response, final: bool) -> None:
        """On the loop: a chunk a thread sent; then whether threads may go on."""
        self._post(resp, final)
        with self._lock:
            self._backlog -= 1
        self._gate()

    def _gate(self) -> None:
        w = self.drained()
        with self._lock:
            if w is not None and not self._held:
                self._held = True
                w.add_done_callback(self._released)
            if self.done.done() or (self._backlog < THREAD_WINDOW and not self._held):
                self._go.set()
            else:
                self._go.clear()

    def _released(self, _fut: asyncio.Future[None]) -> None:
        self._held = False
        self._gate()

    def stop(self) -> None:
        """The stream is over (ended, timed out or cancelled): later sends are dropped and no
        thread stays held in `send`."""
        if not self.done.done():
            self.done.cancel()
        self._go.set()

    def send(self, chunk: Any) -> None:
        self._post(Response.chunk(self._rid, chunk, True), False)

    def send_last(self, chunk: Any) -> None:
        self._post(Response.chunk(self._rid, chunk, False), True)

    def complete(self) -> None:
        self._post(Response.stream_end(self._rid), True)

    def error(self, reason: Any) -> None:
        self._post(Response.fail(self._rid, str(reason)), True)

    def end(self, response: Response) -> None:
        """Ends the stream with a ready Response (the gateway's own errors)."""
        self._post(response, True)

    @property
    def closed(self) -> bool:
        return self.done.done()

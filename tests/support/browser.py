"""A real headless Chromium (Debian's `chromium`) for the browser tests, driven over the Chrome
DevTools Protocol on a pipe (--remote-debugging-pipe: NUL-separated JSON messages on the child's
fds 3 and 4). No driver, no browser download, no WebSocket library: the protocol's few commands
the tests need (navigate, evaluate, screenshot) are written here. Started by the test in a new
profile directory, stopped by its pid.

    with Browser() as browser:
        page = browser.page(url)
        page.wait_for("document.title === 'genapi explorer'")

`chromium_or_skip()` skips a test with a clear reason where Chromium is absent (`.ci/run`
installs it, so CI runs them)."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-default-browser-check",
    "--remote-debugging-pipe",
    "--window-size=1280,900",
    "--hide-scrollbars",  # screenshots as wide as the window
]
TIMEOUT = 30.0  # generous: a loaded 2-core machine


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_or_skip() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return path


class BrowserError(Exception):
    """A DevTools command's error, or a page's JavaScript exception."""


class Browser:
    """A headless Chromium child process and its DevTools pipe."""

    def __init__(self, executable: str | None = None) -> None:
        executable = executable or chromium_or_skip()
        self.profile = tempfile.mkdtemp(prefix="genapi-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # above 4, so the redirections below cannot overwrite one with the other
        to_child_r, from_child_w = (_high(fd) for fd in (to_child_r, from_child_w))
        # the child's fd 3 is what it reads commands from, its fd 4 where it writes answers
        command = (
            " ".join([_quote(executable), *FLAGS, f"--user-data-dir={_quote(self.profile)}", "about:blank"])
            + f" 3<&{to_child_r} 4>&{from_child_w}"
        )
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            ["bash", "-c", "exec " + command],  # bash: dash reads no fd numbers above 9,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            pass_fds=(to_child_r, from_child_w),
        )
        self.pid = self.proc.pid
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._answers: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name="chromium-devtools", daemon=True)
        self._reader.start()
        self.version = self.send("Browser.getVersion")

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._arrived:
                    self._answers[-1] = {"error": {"message": "chromium closed its DevTools pipe"}}
                    self._arrived.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._arrived:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self._arrived.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """One DevTools command; its result (BrowserError on its error)."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
            if session is not None:
                message["sessionId"] = session
            os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        with self._arrived:
            while ident not in self._answers and -1 not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no answer in {TIMEOUT}s; stderr: {self.read_stderr()[-2000:]}")
                self._arrived.wait(left)
            answer = self._answers.pop(ident, None) or self._answers[-1]
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def page(self, url: str) -> Page:
        """A new tab attached to, at `url` (waiting for its load event)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.goto(url)
        return page

    def read_stderr(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM by pid (SIGKILL after a while), then the profile directory goes."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(15)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Page:
    """One tab: navigate, evaluate JavaScript, wait for a condition, type, screenshot."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.send(method, params, self.session)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href === " + json.dumps(url))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(details.get("exception", {}).get("description") or details.get("text"))
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """Polls a JavaScript expression until it is truthy; its value (BrowserError after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"not true after {timeout}s: {expression}\n{self.explain()}")
            time.sleep(0.05)

    def explain(self) -> str:
        """What the page showed and reported, for a failed wait: its text and its errors."""
        try:
            shown = self.evaluate("document.body.innerText.slice(0, 3000)")
        except BrowserError as exc:
            shown = f"(unreadable: {exc})"
        return f"page text:\n{shown}\npage errors: {self.errors()}"

    def errors(self) -> list[str]:
        """The page's uncaught exceptions and console errors so far."""
        out = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            if event["method"] == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                out.append(details.get("exception", {}).get("description") or details.get("text"))
            elif event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in event["params"]["args"]))
        return out

    def type(self, text: str) -> None:
        """Types text into the focused element, as keystrokes."""
        self.send("Input.insertText", {"text": text})

    def key(self, key: str, keycode: int, text: str | None = None) -> None:
        """Presses and releases one key on the focused element: key("Enter", 13, "\r"), key("Tab", 9)
        (`text` is what the key types: Enter's "\r" is what submits a form)."""
        base = {"key": key, "code": key, "windowsVirtualKeyCode": keycode}
        down = {"type": "keyDown", **base, **({"text": text} if text else {})}
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **base})

    def screenshot(self, path: str | Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        Path(path).write_bytes(base64.b64decode(data))


def _high(fd: int) -> int:
    """`fd` moved to a number above 9."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"

"""Structured, quiet-by-default logging: one `event key=value ...` line per record.

Every value is escaped, so nothing a client sends can start a line of its own: a value with a
space, `"`, `=`, `\\` or a control character is quoted, and control characters are written as
`\\n`, `\\r`, `\\t`, `\\xNN` (C0, DEL, C1) or `\\u2028`/`\\u2029`. Records of the libraries under
the gateway (picows, aiofastnet, asyncio) go through the same handler, as `picows msg="..."`, with
the same timestamp, level and escaping; traceback lines are escaped alike and indented with `| `.

Floods are cut: one kind of record (a genapi event, or one message template of one library,
whichever connection it is about) prints at most BURST lines per WINDOW seconds; the rest are
counted and summarized in one line when the window ends,
`log_suppressed event=... suppressed=N seconds=...`. So neither one connection nor many can
make the worker write more than BURST lines of a kind per window.

Times: text lines start with the local time (`2026-12-07 21:30:05,123`, for a person); JSON
lines' `time` is RFC 3339 in UTC with milliseconds (`2026-12-07T21:30:05.123Z`, for collectors).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
import traceback
from typing import Any

_logger = logging.getLogger("genapi")
# the loggers of the libraries under the gateway; picows logs to genapi.picows (worker.py)
FOREIGN = ("asyncio", "aiofastnet", "picows")
BURST = 20  # records of one kind printed per window
WINDOW = 5.0  # seconds

_UNSAFE = re.compile('[\x00-\x20"=\\\\\x7f-\x9f\u2028\u2029]')
_CONTROL = re.compile('[\x00-\x1f"\\\\\x7f-\x9f\u2028\u2029]')
_CONTROL_NOT_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_FRAME_CHUNKS = ("Traceback (most recent call last)", "  File ", "  [Previous line repeated")
_CHAIN_CHUNKS = (
    "\nThe above exception was the direct cause of the following exception:\n\n",
    "\nDuring handling of the above exception, another exception occurred:\n\n",
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def value(v: Any) -> str:
    """One value as it is written: bare when safe, else quoted with every control escaped."""
    s = v if isinstance(v, str) else str(v)
    if s and _UNSAFE.search(s) is None:
        return s
    return '"' + _CONTROL.sub(_escape_char, s) + '"'


def _fmt(event: str, fields: dict[str, Any]) -> str:
    parts = [event]
    for k, v in fields.items():
        parts.append(f"{k}={value(v)}")
    return " ".join(parts)


def enabled(level: str) -> bool:
    """Whether records at `level` are written (so costly fields are only built when they are)."""
    return _logger.isEnabledFor(getattr(logging, level.upper()))


class _Formatter(logging.Formatter):
    """`time LEVEL message`; a library's record becomes `name msg="..."` (escaped), every
    traceback line is escaped and indented, so each line of the log is ours."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.name != "genapi":
            record.message = _foreign(record)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        """The traceback, each line indented with `| `; an exception's message (which may hold
        a client's text) is escaped onto one line, as a value is."""
        lines = []
        for chunk in traceback.TracebackException(*ei).format():
            if chunk.startswith(_FRAME_CHUNKS) or chunk in _CHAIN_CHUNKS:
                text = _CONTROL_NOT_NL.sub(_escape_char, chunk.rstrip("\n"))
            else:  # the exception's own text: one line, every control escaped
                text = _CONTROL_NOT_NL.sub(_escape_char, chunk.rstrip("\n")).replace("\n", "\\n")
            lines.extend(text.split("\n"))
        return "\n".join("  | " + line for line in lines)

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("  | " + _CONTROL_NOT_NL.sub(_escape_char, line) for line in stack_info.split("\n"))


def _foreign(record: logging.LogRecord) -> str:
    """A library's record as a genapi line: `picows conn=17 msg="..."`."""
    name = record.name
    if name.startswith("genapi."):
        name = name[len("genapi.") :]
    base, _, rest = name.partition(".")
    try:
        msg = record.getMessage()
    except Exception:  # a broken %-format in a library's call still gets its line
        msg = f"{record.msg!r} {record.args!r}"
    if base == "picows" and rest.isdigit():
        return f"picows fd={rest} msg={value(msg)}"
    return f"{value(name)} msg={value(msg)}"


# picows's reports of a peer's protocol error (a frame over the size limit, a bad opcode, a bad
# mask): the client's mistake, not an alert for the operator. Logged at INFO and counted
# (/metrics: genapi_protocol_errors_total); picows's own failures keep their level.
_PEER_PROTOCOL_ERRORS = ("WS parser error", "on_ws_frame raised WSProtocolError")
_peer_errors = [0]


def peer_protocol_errors() -> int:
    """Client protocol errors picows reported in this process (see _PEER_PROTOCOL_ERRORS)."""
    return _peer_errors[0]


def _demoted(record: logging.LogRecord) -> bool:
    """Turns a peer's protocol error reported at ERROR into an INFO record (counted); False when
    INFO is not logged, so the record is dropped."""
    _peer_errors[0] += 1
    record.levelno, record.levelname = logging.INFO, "INFO"
    return _logger.isEnabledFor(logging.INFO)


class _Handler(logging.StreamHandler):
    """stderr, with the flood limit: per kind of record, BURST lines per WINDOW seconds."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        # kind → [window start, printed, suppressed, highest suppressed level, event]
        self.kinds: dict[tuple[str, str], list[Any]] = {}
        self.flush_at: float | None = None
        self.guard = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno >= logging.ERROR
            and record.name.startswith("genapi.picows")
            and isinstance(record.msg, str)
            and record.msg.startswith(_PEER_PROTOCOL_ERRORS)
            and not _demoted(record)
        ):
            return False
        if record.levelno >= logging.WARNING and not self._admit(record):  # never the access log
            return False
        return bool(super().handle(record))

    def _admit(self, record: logging.LogRecord) -> bool:
        if record.name == "genapi":
            msg = record.msg if isinstance(record.msg, str) else str(record.msg)
            event = msg.partition(" ")[0]
            kind = (record.name, event)
        else:  # a library's message template, whichever connection (picows logs per socket)
            event = _foreign_event(record.name)
            kind = (event, str(record.msg))
        now = time.monotonic()
        with self.guard:
            entry = self.kinds.get(kind)
            if entry is None or now - entry[0] >= WINDOW:
                if entry is not None and entry[2]:
                    self._summarize(entry, now)
                self.kinds[kind] = [now, 1, 0, 0, event]
                if len(self.kinds) > 10_000:
                    self._sweep(now)
                return True
            if entry[1] < BURST:
                entry[1] += 1
                return True
            entry[2] += 1
            if record.levelno > entry[3]:
                entry[3] = record.levelno
            if self.flush_at is None:
                self._schedule(entry[0] + WINDOW)
            return False

    def _schedule(self, when: float) -> None:
        """A later sweep prints the summaries even when the flood has stopped."""
        self.flush_at = when
        delay = max(when - time.monotonic(), 0.0) + 0.01
        try:
            asyncio.get_running_loop().call_later(delay, self.sweep)
        except RuntimeError:  # no loop in this thread: a timer thread does it
            t = threading.Timer(delay, self.sweep)
            t.daemon = True
            t.start()

    def sweep(self) -> None:
        with self.guard:
            self.flush_at = None
            self._sweep(time.monotonic())

    def _sweep(self, now: float) -> None:
        """Summarizes and forgets every kind whose window ended; reschedules for the rest."""
        pending: float | None = None
        for kind, entry in list(self.kinds.items()):
            if now - entry[0] >= WINDOW:
                if entry[2]:
                    self._summarize(entry, now)
                del self.kinds[kind]
            elif entry[2] and (pending is None or entry[0] + WINDOW < pending):
                pending = entry[0] + WINDOW
        if pending is not None and self.flush_at is None:
            self._schedule(pending)

    def _summarize(self, entry: list[Any], now: float) -> None:
        fields = {"event": entry[4], "suppressed": entry[2], "seconds": round(now - entry[0], 1)}
        record = _logger.makeRecord(
            "genapi",
            entry[3] or logging.WARNING,
            __file__,
            0,
            _fmt("log_suppressed", fields),
            (),
            None,
            extra={"genapi_event": "log_suppressed", "genapi_fields": fields},
        )
        entry[2] = 0
        logging.StreamHandler.handle(self, record)


def _foreign_event(name: str) -> str:
    if name.startswith("genapi."):
        name = name[len("genapi.") :]
    return name.partition(".")[0]


_handler: _Handler | None = None


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 in UTC with milliseconds: `2026-12-07T21:30:05.123Z`."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


class _JsonFormatter(_Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, event and the record's fields (or
    a library's name and msg); a traceback goes in `traceback`. JSON escapes whatever a client sent."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "genapi_event", None)
        out: dict[str, Any] = {"time": rfc3339(record.created), "level": record.levelname}
        if event is not None:
            out["event"] = event
            out.update(record.genapi_fields)  # type: ignore[attr-defined]
        else:
            out["event"] = _foreign_event(record.name) if record.name != "genapi" else record.getMessage()
            if record.name != "genapi":
                out["msg"] = record.getMessage()
        if record.exc_info:
            out["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


_json = False


def setup(level: str = "warning", fmt: str = "text") -> None:
    """Configures the genapi logger once per process (stderr; `text`: logfmt-style lines,
    `json`: one object per line), and sends the libraries' loggers through the same handler."""
    global _handler, _json
    _json = fmt == "json"
    if _handler is None:
        _handler = _Handler()
    _handler.setFormatter(_JsonFormatter() if _json else _Formatter())
    if not _logger.handlers:
        for name in ("genapi", *FOREIGN):
            lg = logging.getLogger(name)
            lg.addHandler(_handler)
            lg.propagate = False
    lvl = level.upper()
    _logger.setLevel(lvl)
    for name in FOREIGN:
        logging.getLogger(name).setLevel(lvl)


def loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: one structured, rate-limited line (with the
    traceback) instead of asyncio's unformatted default."""
    exc = context.get("exception")
    fields: dict[str, Any] = {"message": context.get("message", "")}
    if exc is not None:
        fields["error"] = f"{type(exc).__name__}: {exc}"
    _log(logging.ERROR, "loop_exception", fields, (type(exc), exc, exc.__traceback__) if exc is not None else None)


def _log(level: int, event: str, fields: dict[str, Any], exc_info: Any) -> None:
    extra = {"genapi_event": event, "genapi_fields": fields} if _json else None
    _logger.log(level, _fmt(event, fields), exc_info=exc_info, extra=extra)


def debug(event: str, exc_info: Any = None, **fields: Any) -> None:
    if _logger.isEnabledFor(logging.DEBUG):
        _log(logging.DEBUG, event, fields, exc_info)


def info(event: str, **fields: Any) -> None:
    if _logger.isEnabledFor(logging.INFO):
        _log(logging.INFO, event, fields, None)


def warning(event: str, exc_info: Any = None, **fields: Any) -> None:
    if _logger.isEnabledFor(logging.WARNING):
        _log(logging.WARNING, event, fields, exc_info)


def error(event: str, exc_info: Any = False, **fields: Any) -> None:
    _log(logging.ERROR, event, fields, exc_info)

"""Config tables the tests share: one home for a function several test files declare.

A test's config is text, as a user writes it; these build the repeated parts of that text.
`function(...)` renders one `[[functions]]` table; `t(...)` one of testapi's functions as the
tests declare them under service "t" (local, 1 s timeout unless a test overrides a key);
`PID_CONFIG` is the anonymous gateway answering `w.pid` that the workers' tests start from.
`echo(service)` is testapi's echo with only its argument declared. A table only one test file uses
stays inline in that file.
"""

from __future__ import annotations

from typing import Any

# Anonymous connections (no token needed): most test gateways start from this.
ANON = "[auth]\nrequire_verified_user_id = false\n"


def toml(value: Any) -> str:
    """`value` as a TOML value (str, bool, int, float, list, dict as an inline table, in its order)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def function(service: str, request_type: str, **keys: Any) -> str:
    """One `[[functions]]` table (keys in the order given), with a blank line before it."""
    lines = ["", "[[functions]]", f"service = {toml(service)}", f"request_type = {toml(request_type)}"]
    lines += [f"{key} = {toml(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


# testapi's functions under service "t", by request type: the keys every test file gives them.
TESTAPI: dict[str, dict[str, Any]] = {
    "echo": {"nodes": "local", "mfa": "testapi:echo", "arg_types": {"text": "string"}, "timeout": 1000},
    "plain": {"nodes": "local", "mfa": "testapi:plain_echo", "arg_types": {"text": "string"}, "timeout": 1000},
    "boom": {"nodes": "local", "mfa": "testapi:boom", "arg_types": {"text": "string"}, "timeout": 1000},
    "block": {"nodes": "local", "mfa": "testapi:block", "arg_types": {"ms": "num"}, "timeout": 5000},
    "sleep": {"nodes": "local", "mfa": "testapi:sleep", "arg_types": {"ms": "num"}, "timeout": 300},
    "gen": {
        "nodes": "local",
        "mfa": "testapi:gen",
        "arg_types": {"n": "num"},
        "response_type": "stream",
        "timeout": 1000,
    },
}


def t(name: str, request_type: str | None = None, **overrides: Any) -> str:
    """testapi's function `name` as service "t" declares it (TESTAPI), as `request_type` (default:
    `name`), with `overrides` replacing or adding keys (a key set to None is left out)."""
    keys = {**TESTAPI[name], **overrides}
    return function("t", request_type or name, **{k: v for k, v in keys.items() if v is not None})


# The anonymous gateway answering `w.pid` (which worker process answered): the workers' tests start from it.
# Users named by the test auth callback (token "let-me-in", param "user"), relay groups served as chat.<op>
RELAY_CHAT = """
[auth]
callback = "testapi:auth_callback"
require_verified_user_id = false

[relay]
service = "chat"
"""
PID = function("w", "pid", mfa="testapi:pid")
PID_CONFIG = "\n" + ANON + PID


def echo(service: str, request_type: str = "echo", **keys: Any) -> str:
    """testapi's echo with one string argument, `text`, then `keys`; every other key at its default."""
    return function(service, request_type, mfa="testapi:echo", arg_types={"text": "string"}, **keys)


# The demo's echo as the protocol tests declare it beside their own functions.
DEMO_ECHO = function(
    "demo",
    "echo",
    nodes="local",
    mfa="genapi.demo:echo",
    arg_types={"text": "string", "n": {"type": "num", "default_value": 1}},
    arg_orders=["text", "n"],
    timeout=5000,
)

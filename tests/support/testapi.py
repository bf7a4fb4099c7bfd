"""Functions, hooks and callbacks the test gateways serve (imported by the gateway process)."""

import asyncio
import threading
import time

import msgspec

from genapi import Reject

CALLS = {"flaky": 0}


async def echo(text, n=1):
    return {"text": text, "n": n}


def plain_echo(text):
    return {"text": text, "thread": threading.current_thread().name}


def block(ms):
    time.sleep(ms / 1000)
    return "blocked"


async def sleep(ms):
    await asyncio.sleep(ms / 1000)
    return "slept"


async def boom(text):
    raise RuntimeError(f"exploded on {text}")


def plain_boom():
    raise ValueError("plain failure")


async def flaky(key):
    """Fails twice for each key, then succeeds (for retry)."""
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] < 3:
        raise RuntimeError("not yet")
    return CALLS[key]


async def info(*args):
    *values, req = args
    return {"values": values, "info": {k: v for k, v in req.items() if k != "stream"}}


async def predefined(a, b, text):
    return [a, b, text]


async def as_map(args):
    return args


async def nothing():
    return "nothing"


def keyword_only(a, *, b):
    """Cannot be configured: the gateway passes positional arguments only."""
    return [a, b]


async def watch_cancel(path, ms):
    """Sleeps; writes `cancelled` to path when cancelled (the test observes it)."""
    try:
        await asyncio.sleep(ms / 1000)
        with open(path, "w") as f:
            f.write("finished")
    except asyncio.CancelledError:
        with open(path, "w") as f:
            f.write("cancelled")
        raise


async def stream_watch(path, n):
    try:
        for i in range(int(n)):
            yield i
            await asyncio.sleep(0.05)
        with open(path, "w") as f:
            f.write("finished")
    except (asyncio.CancelledError, GeneratorExit):
        with open(path, "w") as f:
            f.write("cancelled")
        raise


async def agen(n):
    for i in range(int(n)):
        yield {"i": i}


def gen(n):
    for i in range(int(n)):
        yield i * 10


async def agen_fail(n):
    for i in range(int(n)):
        yield i
    raise RuntimeError("stream broke")


def push_style(n, req):
    s = req["stream"]
    for i in range(int(n)):
        s.send(i)
    s.send_last("last")


async def push_style_complete(req):
    s = req["stream"]
    s.send("a")
    await asyncio.sleep(0.01)
    s.complete()


async def push_style_error(req):
    req["stream"].send("a")
    req["stream"].error("custom failure")


async def spin(size):
    """A stream that never awaits and never ends."""
    chunk = "x" * int(size)
    i = 0
    while True:
        i += 1
        yield [i, chunk]


def spin_plain(size):
    """The same as a plain generator (its items come through the thread pool)."""
    chunk = "x" * int(size)
    i = 0
    while True:
        i += 1
        yield [i, chunk]


def push_forever(size, req):
    """Push-style from a thread: sends until the stream is over."""
    s = req["stream"]
    chunk = "x" * int(size)
    i = 0
    while not s.closed:
        i += 1
        s.send([i, chunk])


async def big(n):
    return "x" * int(n)


async def stream_value(text):
    return text.upper()


# ---------------------------------------------------------------- hooks
def before_upper(request, config):
    return msgspec.structs.replace(request, args={**request.args, "text": request.args["text"].upper()}), config


def before_reject(request, config):
    return Reject("not today")


def before_error_tuple(request, config):
    return ("error", "tuple says no")


def before_raise(request, config):
    raise PermissionError("hook blew up")


async def before_slow(request, config):
    await asyncio.sleep(1)


def before_ignored(request, config):
    return 42


def before_extra(request, config, tag):
    return msgspec.structs.replace(request, args={**request.args, "text": f"{tag}:{request.args['text']}"}), config


def before_switch_mode(request, config):
    return request, msgspec.structs.replace(config, check_permission="any_authenticated")


def after_record(request, config, response, path):
    with open(path, "a") as f:
        f.write(f"{request.request_id} {response.success} {response.error}\n")


def after_raise(request, config, response):
    raise RuntimeError("after hook failure must not matter")


# ---------------------------------------------------------------- permission / auth callbacks
def allow_if_magic(request):
    return request.args.get("text") == "magic"


async def allow_async(request, wanted):
    return request.args.get("text") == wanted


def perm_raises(request):
    raise RuntimeError("callback broke")


def auth_callback(params, headers):
    token = params.get("token") or params.get("auth_token")
    if token == "let-me-in":
        return {"user_id": params.get("user", "cb-user"), "roles": ["reader"], "device_id": "dev-1"}
    if token == "anon":
        return {}
    if token == "boom":
        raise RuntimeError("auth backend down")
    return None


async def identity(value):
    return value


async def unencodable():
    return object()


def plain_unencodable():
    return {"set": object()}


async def agen_unencodable():
    yield 1
    yield object()


async def pid():
    """Which worker process answered (the workers tests)."""
    import os

    return os.getpid()


async def relay_kick(group_id, user_id):
    """A local function acting on relay groups from inside the gateway (genapi.relay)."""
    from genapi import relay

    return await relay.leave_group(group_id, user_id)

# cython: language_level=3
"""Outbound frames, compiled: Phoenix V1/V2 messages wrapped as ready-to-write WebSocket text
frames. `answer_v2`/`answer_v1` build the push and the phx_reply of one request in one bytes
object, so the common case costs one call and one buffer append.

Every frame is sent: a message that cannot be encoded (a client's `ref` or `join_ref` nested
deeper than the encoder goes, a result that is not JSON) goes out without the offending part,
which becomes null, and a reply then says so in its error reason."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

import msgspec

from genapi import log
from genapi.errors import unencodable_answer

cdef object _encode = msgspec.json.Encoder().encode
cdef str REPLY = "phx_reply"
cdef object _unencodable = None
# the client-given parts of a message, by name and where they sit in V2 lists and V1 objects
cdef tuple _V2_PARTS = (("join_ref", 0), ("ref", 1), ("payload", 4))
cdef tuple _V1_PARTS = (("ref", "ref"), ("payload", "payload"))


def on_unencodable(handler):
    """Sets `handler(payload, exc) -> payload`, used when a push payload (a function's result)
    cannot be encoded as JSON, so the client gets an error Response instead of nothing."""
    global _unencodable
    _unencodable = handler


cdef inline bytes _frame(object msg):
    """Encodes a message (V2 list or V1 dict); one that cannot be encoded is salvaged."""
    try:
        return _encode(msg)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        return _salvage(msg, exc)


cdef bint _encodes(object value):
    """Whether `value` encodes at the depth it has in a message (one level down)."""
    try:
        _encode([value])
        return True
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False


cdef bytes _salvage(object msg, object exc):
    """The message without the parts that cannot be encoded: each becomes null, a reply becomes
    an error naming them, another message's unencodable payload a `reason`."""
    cdef bint v2 = type(msg) is list
    cdef list bad = []
    for name, key in (_V2_PARTS if v2 else _V1_PARTS):
        if not _encodes(msg[key]):
            bad.append(name)
            msg[key] = None
    if not bad:  # no single part is to blame: drop every client-given one
        for name, key in (_V2_PARTS if v2 else _V1_PARTS):
            bad.append(name)
            msg[key] = None
    text = unencodable_answer(bad, exc)
    log.warning("answer_not_encodable", parts=",".join(bad), error=f"{type(exc).__name__}: {exc}")
    if (msg[3] if v2 else msg["event"]) == REPLY:
        payload = {"status": "error", "response": {"reason": text}}
    elif "payload" in bad:
        payload = {"reason": text}
    else:
        return _encode(msg)
    if v2:
        msg[4] = payload
    else:
        msg["payload"] = payload
    return _encode(msg)


cdef bytes _encode_push(object msg, object key):
    """Encodes a push message (V2 list or V1 dict) whose payload sits at `msg[key]`: a payload
    that cannot be encoded is replaced by the `on_unencodable` handler (an error Response), any
    other unencodable part is salvaged."""
    try:
        return _encode(msg)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        if _unencodable is not None and not _encodes(msg[key]):
            try:
                msg[key] = _unencodable(msg[key], exc)
            except Exception:
                pass  # not a Response: _salvage replaces it
        return _frame(msg)


cdef inline Py_ssize_t _hdr_len(Py_ssize_t n):
    if n < 126:
        return 2
    if n < 65536:
        return 4
    return 10


cdef inline Py_ssize_t _put(char* out, bytes payload):
    """Writes header + payload at `out`; returns bytes written."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef unsigned char* o = <unsigned char*>out
    cdef Py_ssize_t h
    o[0] = 0x81
    if n < 126:
        o[1] = <unsigned char>n
        h = 2
    elif n < 65536:
        o[1] = 126
        o[2] = (n >> 8) & 0xFF
        o[3] = n & 0xFF
        h = 4
    else:
        o[1] = 127
        for i in range(8):
            o[2 + i] = (n >> (8 * (7 - i))) & 0xFF
        h = 10
    memcpy(out + h, PyBytes_AS_STRING(payload), n)
    return h + n


cpdef bytes ws_text(bytes payload):
    """One unmasked, final WebSocket text frame around `payload`."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _hdr_len(n) + n)
    _put(PyBytes_AS_STRING(out), payload)
    return out


cdef bytes _two(bytes a, bytes b):
    cdef Py_ssize_t na = PyBytes_GET_SIZE(a), nb = PyBytes_GET_SIZE(b)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _hdr_len(na) + na + _hdr_len(nb) + nb)
    cdef char* p = PyBytes_AS_STRING(out)
    p += _put(p, a)
    _put(p, b)
    return out


cpdef bytes message_v2(object join_ref, object ref, str topic, str event, object payload):
    return ws_text(_frame([join_ref, ref, topic, event, payload]))


cpdef bytes push_v2(object join_ref, str topic, str event, object payload):
    return ws_text(_encode_push([join_ref, None, topic, event, payload], 4))


cpdef bytes reply_v2(object join_ref, object ref, str topic, str status, object response):
    return ws_text(_frame([join_ref, ref, topic, REPLY, {"status": status, "response": response}]))


cpdef bytes answer_v2(object join_ref, object ref, str topic, str event, object push, str status,
                      object response):
    """The push, then the phx_reply for `ref`: both frames in one buffer."""
    return _two(_encode_push([join_ref, None, topic, event, push], 4),
                _frame([join_ref, ref, topic, REPLY, {"status": status, "response": response}]))


cpdef bytes message_v1(object join_ref, object ref, str topic, str event, object payload):
    return ws_text(_frame({"topic": topic, "event": event, "payload": payload, "ref": ref}))


cpdef bytes push_v1(object join_ref, str topic, str event, object payload):
    return ws_text(_encode_push({"topic": topic, "event": event, "payload": payload, "ref": None}, "payload"))


cpdef bytes reply_v1(object join_ref, object ref, str topic, str status, object response):
    return ws_text(_frame({"topic": topic, "event": REPLY,
                           "payload": {"status": status, "response": response}, "ref": ref}))


cpdef bytes answer_v1(object join_ref, object ref, str topic, str event, object push, str status,
                      object response):
    return _two(_encode_push({"topic": topic, "event": event, "payload": push, "ref": None}, "payload"),
                _frame({"topic": topic, "event": REPLY, "payload": {"status": status, "response": response},
                        "ref": ref}))


cdef bytes _V1_HEAD = b'{"topic":'
cdef bytes _V1_EVENT = b',"event":'
cdef bytes _V1_PAYLOAD = b',"payload":'
cdef bytes _V1_TAIL = b',"ref":null}'


cpdef bytes push_raw(bint v2, object join_ref, str topic, str event, bytes payload):
    """A push whose payload is already JSON (one relayed message, encoded once for all its
    receivers): only the envelope is encoded per connection."""
    cdef bytes head, msg
    if v2:
        head = _frame([join_ref, None, topic, event])  # "[...]": its "]" makes room for the payload
        msg = head[:PyBytes_GET_SIZE(head) - 1] + b"," + payload + b"]"
    else:
        msg = b"".join((_V1_HEAD, _encode(topic), _V1_EVENT, _encode(event), _V1_PAYLOAD, payload, _V1_TAIL))
    return ws_text(msg)

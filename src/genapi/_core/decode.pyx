# cython: language_level=3
"""Inbound decoding, compiled: Phoenix frames (V1 objects, V2 arrays, V2 binary pushes) and the
gateway request inside them.

Everything a client sends passes through here first, so every failure is a `FrameError` or a
`DecodeError` carrying a client-facing message; nothing else may escape.
"""
import msgspec

from genapi.trace import valid as _valid_trace

from genapi.errors import DecodeError, FrameError
from genapi.structs import Request

cdef object _json_decode = msgspec.json.Decoder().decode
cdef object _DecodeErr = msgspec.DecodeError


cdef str _json_kind(object v):
    if v is None:
        return "null"
    t = type(v)
    if t is bool:
        return "boolean"
    if t is int or t is float:
        return "number"
    if t is str:
        return "string"
    if t is list:
        return "array"
    if t is dict:
        return "object"
    return t.__name__


cdef inline object _json(object data):
    try:
        return _json_decode(data)
    except _DecodeErr as exc:
        raise FrameError(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError:
        raise FrameError("text frame is not valid UTF-8") from None
    except RecursionError:
        raise FrameError("JSON is nested too deeply") from None


cpdef tuple decode_v2(object data):
    """`[join_ref, ref, topic, event, payload, ...]` → a 5-tuple (extra elements are ignored)."""
    cdef object msg = _json(data)
    if type(msg) is not list:
        raise FrameError("a V2 frame must be a JSON array [join_ref, ref, topic, event, payload], "
                         f"got {_json_kind(msg)}")
    cdef list lst = <list>msg
    cdef Py_ssize_t n = len(lst)
    if n < 5:
        raise FrameError(
            f"a V2 frame must have 5 elements [join_ref, ref, topic, event, payload], got {n}",
            ref=lst[1] if n > 1 else None, topic=lst[2] if n > 2 and type(lst[2]) is str else None)
    topic = lst[2]
    event = lst[3]
    if type(topic) is not str or type(event) is not str:
        raise FrameError("topic and event must be strings", ref=lst[1],
                         topic=topic if type(topic) is str else None)
    return (lst[0], lst[1], topic, event, lst[4])


cpdef tuple decode_v1(object data):
    """`{"topic", "event", "payload", "ref", "join_ref"?}` → a 5-tuple like `decode_v2`."""
    cdef object msg = _json(data)
    if type(msg) is not dict:
        raise FrameError(f"a V1 frame must be a JSON object with topic, event, payload and ref, got {_json_kind(msg)}")
    cdef dict d = <dict>msg
    missing = [k for k in ("topic", "event", "payload", "ref") if k not in d]
    if missing:
        raise FrameError("a V1 frame is missing the key(s): " + ", ".join(missing), ref=d.get("ref"),
                         topic=d.get("topic") if type(d.get("topic")) is str else None)
    topic = d["topic"]
    event = d["event"]
    if type(topic) is not str or type(event) is not str:
        raise FrameError("topic and event must be strings", ref=d["ref"],
                         topic=topic if type(topic) is str else None)
    return (d.get("join_ref"), d["ref"], topic, event, d["payload"])


cpdef tuple decode_binary(const unsigned char[:] buf):
    """A V2 binary push `u8 0, u8 len(join_ref), u8 len(ref), u8 len(topic), u8 len(event), ...`.

    Returns (join_ref, ref, topic, event, data bytes); the payload stays raw bytes.
    """
    cdef Py_ssize_t n = buf.shape[0]
    if n < 5:
        raise FrameError(f"binary frame too short ({n} bytes) for a Phoenix push header")
    if buf[0] != 0:
        raise FrameError(f"binary frame kind {buf[0]} is not a client push (kind 0)")
    cdef Py_ssize_t lj = buf[1], lr = buf[2], lt = buf[3], le = buf[4]
    cdef Py_ssize_t pos = 5
    if pos + lj + lr + lt + le > n:
        raise FrameError("binary frame header lengths exceed the frame size")
    try:
        join_ref = bytes(buf[pos:pos + lj]).decode() if lj else None
        pos += lj
        ref = bytes(buf[pos:pos + lr]).decode() if lr else None
        pos += lr
        topic = bytes(buf[pos:pos + lt]).decode()
        pos += lt
        event = bytes(buf[pos:pos + le]).decode()
        pos += le
    except UnicodeDecodeError:
        raise FrameError("binary frame header fields must be UTF-8") from None
    return (join_ref, ref, topic, event, bytes(buf[pos:]))


cpdef object decode_request(object payload, object user_id, object device_id, object user_roles,
                            Py_ssize_t size, Py_ssize_t max_size, object traceparent=None):
    """Payload dict → `Request`, with the connection's identity already applied (its
    `traceparent` too, unless the request brings a valid one of its own).

    `size` is the byte size of the frame that carried it; only when it exceeds `max_size` is the
    payload itself measured, so the common case costs nothing.
    """
    if type(payload) is not dict:
        raise DecodeError(f"Invalid request: payload must be a JSON object, got {_json_kind(payload)}")
    cdef dict p = <dict>payload
    rid = p.get("request_id")
    cdef str rid_s = rid if (type(rid) is str and rid) else "unknown"
    if size > max_size:
        real = len(msgspec.json.encode(p))
        if real > max_size:
            raise DecodeError(
                f"Invalid request: Request payload exceeds maximum size of {max_size} bytes (got {real} bytes)",
                rid_s)
    rt = p.get("request_type")
    svc = p.get("service")
    if not (type(rt) is str and rt) or not (type(rid) is str and rid) or not (type(svc) is str and svc):
        missing = []
        wrong = []
        for name, v in (("request_type", rt), ("request_id", rid), ("service", svc)):
            if v is None or v == "":
                missing.append(name)
            elif type(v) is not str:
                wrong.append(f"{name} must be a string, got {_json_kind(v)}")
        if missing:
            raise DecodeError("Invalid request: Missing required fields: " + ", ".join(missing), rid_s)
        raise DecodeError("Invalid request: " + "; ".join(wrong), rid_s)
    args = p.get("args")
    if args is None:
        args = {}
    elif type(args) is not dict:
        raise DecodeError(f"Invalid request: args must be a JSON object, got {_json_kind(args)}", rid)
    version = p.get("version")
    if version is not None and type(version) is not str:
        raise DecodeError(f"Invalid request: version must be a string, got {_json_kind(version)}", rid)
    if device_id is None:
        device_id = p.get("device_id")
        if device_id is not None and type(device_id) is not str:
            raise DecodeError(f"Invalid request: device_id must be a string, got {_json_kind(device_id)}", rid)
    tp = p.get("traceparent")
    if tp is not None:
        tp = _valid_trace(tp)
        if tp is not None:
            traceparent = tp
    return Request(rid, svc, rt, args, version, user_id, device_id, user_roles, traceparent)

# cython: language_level=3
"""The shared vocabulary as Python sees it: the enums of vocab.pxd, their members as module
constants, and the RPC error codes (strings, so they live here rather than in the .pxd)."""

globals().update({k.name: int(k) for k in Kind})  # SYNC, ASYNC, GEN, ASYNCGEN
globals().update({f.name: int(f) for f in Frame})  # HELLO ... CREDIT
globals().update(STREAM_WINDOW=STREAM_WINDOW)

# RPC ERROR codes: why a call failed (the text says what happened)
RAISED = "raised"  # the function raised; text = "Type: message"
UNKNOWN = "unknown"  # the node has no such function
TIMEOUT = "timeout"  # the deadline passed
LOST = "lost"  # the connection closed before the answer
REFUSED = "refused"  # a control request was refused (text: why)
AUTH_FAILED = "auth"  # the handshake failed
PROTOCOL = "protocol"  # a malformed frame
INVALID = "invalid"  # the node refused an argument (text: what the client is told)

# The words the compiled core and the Python above it share, declared once: how a callable runs,
# the genapi RPC frame kinds and the stream window. Cython modules cimport these (C constants);
# Python reads the same values from `genapi._core.vocab` (vocab.pyx).


cpdef enum Kind:
    # how a callable runs: in a thread (plain def, may block), on the loop, or as a stream
    SYNC = 0
    ASYNC = 1
    GEN = 2
    ASYNCGEN = 3


cpdef enum Frame:
    # genapi RPC: every frame is a msgpack array whose first item is one of these (nodes/rpc.py)
    HELLO = 0       # server → client  [0, nonce, secured, name]
    AUTH = 1        # client → server  [1, proof, cnonce]
    WELCOME = 2     # server → client  [2, proof]
    CALL = 3        # client → server  [3, id, target, args, timeout_ms, stream]
    RESULT = 4      # server → client  [4, id, value]
    ERROR = 5       # either           [5, id, code, text]
    CHUNK = 6       # server → client  [6, id, value]
    END = 7         # server → client  [7, id]
    CANCEL = 8      # client → server  [8, id]
    CREDIT = 9      # client → server  [9, id, n]


cdef enum:
    STREAM_WINDOW = 64  # chunks a stream may send before the gateway grants more

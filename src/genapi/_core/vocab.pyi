import enum

class Kind(enum.IntEnum):
    SYNC = 0
    ASYNC = 1
    GEN = 2
    ASYNCGEN = 3

class Frame(enum.IntEnum):
    HELLO = 0
    AUTH = 1
    WELCOME = 2
    CALL = 3
    RESULT = 4
    ERROR = 5
    CHUNK = 6
    END = 7
    CANCEL = 8
    CREDIT = 9

SYNC: int
ASYNC: int
GEN: int
ASYNCGEN: int
HELLO: int
AUTH: int
WELCOME: int
CALL: int
RESULT: int
ERROR: int
CHUNK: int
END: int
CANCEL: int
CREDIT: int
STREAM_WINDOW: int

RAISED: str
UNKNOWN: str
TIMEOUT: str
LOST: str
REFUSED: str
AUTH_FAILED: str
PROTOCOL: str
INVALID: str

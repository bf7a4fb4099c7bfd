# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, auto_pickle=False
"""Which service node a remote call goes to, and whether a node may take one more call.

Every gateway worker keeps its own view of each node (`NodeState`): a bound on its calls in
flight, so one slow node cannot absorb a worker's every pending call, and a circuit breaker, so
a node that keeps failing is skipped for a cooldown instead of costing each caller a timeout.
A `Selector` (one per function config) turns `choose_node_mode` into the order in which one
request tries the nodes: the chosen node first, then the others in ring order -- the fallback
order of the reference's executor, which tries every node before giving up.

Public API::

    ADMITTED, FULL, OPEN                      # NodeState.admit() outcomes (ints)
    class NodeState(address: str, max_in_flight: int = 1000, threshold: int = 10,
                    cooldown_ms: int = 60000)
        .admit(now: float) -> int             # now = time.monotonic()
        .done(node_failed: bool, now: float) -> None
        .forget() -> None
        .snapshot(now: float | None = None) -> dict
    class Selector(mode, custom: Callable | None = None, sticky_max: int = 100_000)
        .order(nodes: list, request) -> list

Keys: a request_id or an argument value is hashed with xxh3-64 (seed 0, so every process and
host agrees) over its bytes: a str as UTF-8, any other value as its compact JSON with sorted
keys (so `5` and `"5"` pick the same node). An argument that is missing or null counts as
missing: the request_id is hashed instead, and sticky mode remembers nothing for it.
"""
cimport cython
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_AsUTF8String

import os

import msgspec
import xxhash

from genapi._core.clock cimport monotonic as _monotonic
from genapi._core.stats cimport Stats, stats

from genapi import log
from genapi.structs import NODE_MODES

globals().update(ADMITTED=ADMITTED, FULL=FULL, OPEN=OPEN)  # the enum's values, for Python callers

cdef object _xxh3 = xxhash.xxh3_64_intdigest
cdef object _json = msgspec.json.encode
cdef object _MISSING = object()
cdef Stats _stats = stats()  # emit: telemetry's hook for the breaker events

cdef enum:
    BREAKER_CLOSED = 0
    BREAKER_OPEN = 1
    BREAKER_HALF_OPEN = 2

cdef tuple _BREAKER_NAMES = ("closed", "open", "half_open")


cdef void _breaker_event(str what, str address, int failures) noexcept:
    """A node's breaker opened or closed: telemetry's worker_pool.circuit_breaker events (the
    reference's pool is our node), with the node's address as the pool name."""
    emit = _stats.emit
    if emit is None:
        return
    try:
        emit("genapi.worker_pool.circuit_breaker." + what,
             {"consecutive_failures": failures} if what == "open" else {}, {"pool_name": address})
    except Exception:
        pass

cdef enum:
    MODE_RANDOM = 0
    MODE_HASH = 1          # request_id
    MODE_HASH_ARG = 2
    MODE_ROUND_ROBIN = 3
    MODE_STICKY = 4
    MODE_CUSTOM = 5

cdef str _MODES_HELP = NODE_MODES + " or custom"


@cython.final
cdef class NodeState:
    """One node as one gateway worker sees it: calls in flight and a circuit breaker.

    Only failures of the node itself (timeout, connection refused or lost) count toward opening
    the breaker: a function that raises is a node that answers. Once open, the node is refused
    for `cooldown_ms`; then one probe call is let through, whose outcome closes the breaker or
    opens it for another cooldown. Calls that end while the breaker is open (admitted before it
    opened) leave it as it is.
    """

    def __init__(self, str address not None, Py_ssize_t max_in_flight=1000, Py_ssize_t threshold=10,
                 double cooldown_ms=60000):
        if not address:
            raise ValueError("address: must be a non-empty host:port")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight: must be at least 1, not {max_in_flight}")
        if threshold < 1:
            raise ValueError(f"threshold: must be at least 1, not {threshold}")
        if not cooldown_ms >= 0:
            raise ValueError(f"cooldown_ms: must be a non-negative number of ms, not {cooldown_ms}")
        self.address = address
        self.max_in_flight = max_in_flight
        self.threshold = threshold
        self.cooldown_s = cooldown_ms / 1000.0
        self.in_flight = 0
        self.failures = 0
        self._breaker = BREAKER_CLOSED
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self):
        return _BREAKER_NAMES[self._breaker]

    cpdef int admit(self, double now):
        """ADMITTED (and the call counts in flight), FULL, or OPEN; see the class docstring."""
        if self._breaker != BREAKER_CLOSED:
            if self._breaker == BREAKER_OPEN:
                if now - self._opened_at < self.cooldown_s:
                    return OPEN
                self._breaker = BREAKER_HALF_OPEN
                self._probing = False
            if self._probing:
                return OPEN
            if self.in_flight >= self.max_in_flight:
                return FULL
            self._probing = True
            self.in_flight += 1
            return ADMITTED
        if self.in_flight >= self.max_in_flight:
            return FULL
        self.in_flight += 1
        return ADMITTED

    cpdef void done(self, bint node_failed, double now):
        """An admitted call ended; `node_failed` = the node did not answer it."""
        if self.in_flight > 0:
            self.in_flight -= 1
        if self._breaker == BREAKER_CLOSED:
            if node_failed:
                self.failures += 1
                if self.failures >= self.threshold:
                    self._breaker = BREAKER_OPEN
                    self._opened_at = now
                    _breaker_event("open", self.address, self.failures)
            else:
                self.failures = 0
        elif self._breaker == BREAKER_HALF_OPEN:
            # the probe's outcome (a call admitted before the breaker opened is as good a probe)
            self._probing = False
            if node_failed:
                self.failures += 1
                self._breaker = BREAKER_OPEN
                self._opened_at = now
                _breaker_event("open", self.address, self.failures)
            else:
                self.failures = 0
                self._breaker = BREAKER_CLOSED
                _breaker_event("close", self.address, 0)

    cpdef void forget(self):
        """An admitted call was never sent: it says nothing about the node."""
        if self.in_flight > 0:
            self.in_flight -= 1
        if self._breaker == BREAKER_HALF_OPEN:
            self._probing = False  # let another call be the probe

    def snapshot(self, now=None) -> dict:
        """For status output; `now` (time.monotonic()) defaults to the clock."""
        cdef double t = _monotonic() if now is None else <double>now
        return {
            "address": self.address,
            "state": _BREAKER_NAMES[self._breaker],
            "in_flight": self.in_flight,
            "failures": self.failures,
            "opened_ms_ago": None if self._breaker == BREAKER_CLOSED
                             else int((t - self._opened_at) * 1000.0),
        }

    def __repr__(self):
        return (f"NodeState({self.address!r}, state={self.state}, in_flight={self.in_flight}, "
                f"failures={self.failures})")


cdef inline bytes _key_bytes(object value):
    if type(value) is str:
        return PyUnicode_AsUTF8String(value)
    try:
        return _json(value, order="sorted")
    except (TypeError, ValueError, msgspec.EncodeError):
        return PyUnicode_AsUTF8String(repr(value))


cdef inline unsigned long long _hash(object value) except? 0:
    return _xxh3(_key_bytes(value))


cdef inline object _arg_value(object request, str arg):
    args = request.args
    if type(args) is not dict:
        return _MISSING
    value = (<dict>args).get(arg)
    return _MISSING if value is None else value


cdef inline str _address(object node):
    if type(node) is NodeState:
        return (<NodeState>node).address
    return node.address


cdef list _ring(list nodes, Py_ssize_t first):
    """nodes[first:] + nodes[:first], in one new list."""
    cdef Py_ssize_t n = len(nodes), k, j
    cdef list out = PyList_New(n)
    for k in range(n):
        j = first + k
        if j >= n:
            j -= n
        item = nodes[j]
        Py_INCREF(item)
        PyList_SET_ITEM(out, k, item)
    return out


@cython.final
cdef class Selector:
    """The order in which one request tries a function's nodes (`choose_node_mode`).

    Modes: "random"; "hash" (request_id); {"hash": ARG} (the argument's value); "round_robin" (a
    counter of this Selector); {"sticky": ARG} (a key's first node, by hash, is remembered by
    address and kept while that address is among the nodes; at most `sticky_max` keys, the
    older half dropped when full; keys are stored as their 64-bit hash, so a long value costs
    no memory); "custom": `custom(addresses, request)` returns the first node's address (the
    rest follow in ring order) or a list of addresses (unknown and repeated ones dropped, the
    nodes it leaves out follow in ring order after its first). A custom function that raises or
    names no known node gets the random order, with one warning per Selector.
    """

    def __init__(self, mode, custom=None, Py_ssize_t sticky_max=100_000):
        self.arg = None
        if isinstance(mode, str):
            if mode == "random":
                self._mode = MODE_RANDOM
            elif mode == "hash":
                self._mode = MODE_HASH
            elif mode == "round_robin":
                self._mode = MODE_ROUND_ROBIN
            elif mode == "custom":
                self._mode = MODE_CUSTOM
            else:
                raise ValueError(f"choose_node_mode: must be one of {_MODES_HELP}, not {mode!r}")
        elif isinstance(mode, dict) and len(mode) == 1:
            (kind, arg), = mode.items()
            if kind not in ("hash", "sticky") or not isinstance(arg, str) or not arg:
                raise ValueError(f"choose_node_mode: must be one of {_MODES_HELP} (ARG a non-empty "
                                 f"argument name), not {mode!r}")
            self._mode = MODE_HASH_ARG if kind == "hash" else MODE_STICKY
            self.arg = arg
        else:
            raise ValueError(f"choose_node_mode: must be one of {_MODES_HELP}, not {mode!r}")
        if self._mode == MODE_CUSTOM:
            if not callable(custom):
                raise ValueError(f"custom: choose_node_mode custom needs the selector function, not {custom!r}")
        elif custom is not None:
            raise ValueError(f"custom: a selector function is only used with choose_node_mode custom, "
                             f"not {mode!r}")
        if sticky_max < 1:
            raise ValueError(f"sticky_max: must be at least 1, not {sticky_max}")
        self._custom = custom
        self._sticky_max = sticky_max
        self._sticky = {}
        self._counter = 0
        self._rng = int.from_bytes(os.urandom(8), "little") | 1  # xorshift's state must not be 0
        self._warned = False

    @property
    def mode(self):
        if self._mode == MODE_HASH_ARG:
            return {"hash": self.arg}
        if self._mode == MODE_STICKY:
            return {"sticky": self.arg}
        return ("random", "hash", None, "round_robin", None, "custom")[self._mode]

    @property
    def sticky_size(self):
        """Keys remembered by sticky mode."""
        return len(self._sticky)

    cdef Py_ssize_t _random(self, Py_ssize_t n) noexcept:
        # xorshift64*; the high 32 bits scaled to [0, n) (n < 2**32)
        cdef unsigned long long x = self._rng
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self._rng = x
        x = (x * 0x2545F4914F6CDD1DULL) >> 32
        return <Py_ssize_t>((x * <unsigned long long>n) >> 32)

    cdef Py_ssize_t _hash_index(self, object request, Py_ssize_t n) except -1:
        cdef object key = _MISSING
        if self._mode != MODE_HASH:
            key = _arg_value(request, self.arg)
        if key is _MISSING:
            key = request.request_id
        return <Py_ssize_t>(_hash(key) % <unsigned long long>n)

    cdef Py_ssize_t _sticky_index(self, list nodes, object request) except -1:
        cdef Py_ssize_t n = len(nodes), i, drop
        cdef object value = _arg_value(request, self.arg)
        if value is _MISSING:
            return <Py_ssize_t>(_hash(request.request_id) % <unsigned long long>n)
        cdef unsigned long long h = _hash(value)
        key = h
        remembered = self._sticky.get(key)
        if remembered is not None:
            for i in range(n):
                if _address(nodes[i]) == remembered:
                    return i
            del self._sticky[key]  # its node left: re-pick, and the key becomes the youngest
        i = <Py_ssize_t>(h % <unsigned long long>n)
        if len(self._sticky) >= self._sticky_max:
            drop = max(1, len(self._sticky) // 2)
            old = []
            for k in self._sticky:
                if drop == 0:
                    break
                old.append(k)
                drop -= 1
            for k in old:
                del self._sticky[k]
        self._sticky[key] = _address(nodes[i])
        return i

    cdef list _custom_order(self, list nodes, object request):
        cdef Py_ssize_t n = len(nodes), i, k, first
        cdef list addresses = [_address(node) for node in nodes]
        reason = None
        try:
            chosen = self._custom(addresses, request)
        except Exception as exc:
            chosen = None
            reason = f"raised {type(exc).__name__}: {exc}"
        if reason is None:
            if isinstance(chosen, str):
                for i in range(n):
                    if addresses[i] == chosen:
                        return _ring(nodes, i)
                reason = f"returned {chosen!r}, not one of the nodes"
            elif isinstance(chosen, (list, tuple)):
                index = {}
                for i in range(n - 1, -1, -1):
                    index[addresses[i]] = i  # the first of repeated addresses wins
                picked = []
                used = set()
                for address in chosen:
                    if isinstance(address, str):
                        j = index.get(address)
                        if j is not None and j not in used:
                            used.add(j)
                            picked.append(nodes[j])
                if picked:
                    first = index[_address(picked[0])]
                    for k in range(1, n):
                        i = (first + k) % n
                        if i not in used:
                            picked.append(nodes[i])
                    return picked
                reason = f"returned {chosen!r}, no known node among them"
            else:
                reason = f"returned {type(chosen).__name__}, not an address or a list of addresses"
        if not self._warned:
            self._warned = True
            log.warning("node_selector_failed", selector=getattr(self._custom, "__qualname__", repr(self._custom)),
                        reason=reason, fallback="random")
        return _ring(nodes, self._random(n))

    cpdef list order(self, list nodes, object request):
        """A new list of every node: the chosen first, then the rest in ring order (fallback)."""
        cdef Py_ssize_t i = self.first(nodes, request)
        if i < 0:
            return self._custom_order(nodes, request)
        return _ring(nodes, i)

    cdef Py_ssize_t first(self, list nodes, object request) except -2:
        """The index of the chosen node (`order` is the ring from there), or -1 for a custom
        selector, whose order is its own (`_custom_order`). The caller that walks the ring itself
        needs no list per request."""
        cdef Py_ssize_t n = len(nodes), i
        if n == 0:
            raise ValueError("nodes: must be a non-empty list")
        if self._mode == MODE_RANDOM:
            i = self._random(n)
        elif self._mode == MODE_ROUND_ROBIN:
            i = <Py_ssize_t>(self._counter % <unsigned long long>n)
            self._counter += 1
        elif self._mode == MODE_STICKY:
            i = self._sticky_index(nodes, request)
        elif self._mode == MODE_CUSTOM:
            return -1
        else:
            i = self._hash_index(request, n)
        return i

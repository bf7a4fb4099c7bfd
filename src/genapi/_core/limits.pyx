# cython: language_level=3
"""The rate-limit step of the request path, compiled: which limits apply to a request, the value
each counts (user_id, device_id, ip_address or an argument), and one check-and-record per limit
in the shared table. A request is counted only if every limit allows it: all of its limits are
checked and recorded in one step (`check_many_h`), so a refusal by one records none. The refusal is the reference's
text with `can_retry`; a table that fails answers per `fail_open`.

Limits of `scope = "cluster"` are not in the table: `cluster` (engine/cluster_limits.py) holds
them, and `Entry.admit` checks them after this check and the permission mode (batched in
Redis). A request some of them count is first only looked at here (`record` false) and recorded
here once they admit it, so a refusal by either scope records in neither."""
from libc.math cimport ceil
from libc.stdint cimport uint64_t

import xxhash

from genapi import log
from genapi.errors import rate_limited, RATE_LIMIT_UNAVAILABLE
from genapi.structs import Response

from genapi._core.ratelimit cimport Table, now_ms
from genapi._core.stats cimport Stats, stats

from genapi._core.clock cimport monotonic as _now

cdef object _xxh3 = xxhash.xxh3_64_intdigest
cdef Stats _stats = stats()  # on_check, on_exceeded: the rate limiter's telemetry hooks
cdef int K_USER = 0, K_DEVICE = 1, K_IP = 2, K_ARG = 3
cdef enum:
    MAX_LIMITS = 16  # the table's check_many bound
    HASH_CACHE = 65536  # (key, value) hashes remembered


cdef class Rule:
    """One limit, compiled: its id in the table, the key it counts by, its max and window."""

    def __init__(self, unsigned long long limit_id, str key, long long max_requests, long long window_ms):
        self.limit_id = limit_id
        self.key = key
        self.kind = K_USER if key == "user_id" else K_DEVICE if key == "device_id" else \
            K_IP if key == "ip_address" else K_ARG
        self.max_requests = max_requests
        self.window_ms = window_ms


cdef class RequestLimiter:
    """Configured as a whole (`configure`), checked per request (`check`)."""

    def __init__(self, Table table, bint fail_open=True):
        self.table = table
        self.enabled = False
        self.fail_open = fail_open
        self.globals = []
        self.apis = {}
        self.hashes = {}
        self.cluster = None

    def set_cluster(self, cluster):
        """The cluster limits now in force (None: none)."""
        self.cluster = cluster

    def configure(self, bint enabled, bint fail_open, list global_rules, dict api_rules):
        self.globals = [Rule(*r) for r in global_rules]
        self.apis = {k: [Rule(*r) for r in v] for k, v in api_rules.items()}
        self.fail_open = fail_open
        self.enabled = enabled and bool(self.globals or self.apis)

    cdef object _value(self, Rule rule, object request, object identity):
        if rule.kind == K_USER:
            return request.user_id
        if rule.kind == K_DEVICE:
            return request.device_id
        if rule.kind == K_IP:
            return identity.ip if identity is not None else None
        value = request.args.get(rule.key) if type(request.args) is dict else None
        return value if value is None or type(value) is str else str(value)

    cpdef object check(self, object request, object identity, bint record=True):
        """None to go on, or the refusal Response. `record` false: the verdict only, nothing
        recorded (a request whose cluster limits are asked next is recorded here once they admit)."""
        if not self.enabled:
            return None
        cdef double t0
        try:
            if _stats.on_check is None:
                return self._check(request, identity, record)
            t0 = _now()
            out = self._check(request, identity, record)
            _stats.on_check(request, out, _now() - t0)
            return out
        except Exception as exc:
            log.error("rate_limiter_failed", error=f"{type(exc).__name__}: {exc}", request_id=request.request_id,
                      fail_open=self.fail_open)
            if self.fail_open:
                return None
            return Response.fail(request.request_id, RATE_LIMIT_UNAVAILABLE, True)

    cdef object _check(self, object request, object identity, bint record):
        cdef uint64_t hashes[MAX_LIMITS]
        cdef uint64_t ids[MAX_LIMITS]
        cdef uint64_t maxes[MAX_LIMITS]
        cdef long long windows[MAX_LIMITS]
        cdef int n = 0, refused = -1
        cdef long long r
        cdef Rule rule
        cdef list api = self.apis.get((request.service, request.request_type)) if self.apis else None
        cdef list counted = None
        for rules in (self.globals, api):
            if not rules:
                continue
            for rule in rules:
                value = self._value(rule, request, identity)
                if value is None:
                    continue  # nothing to count this request under
                if n == MAX_LIMITS:
                    raise ValueError(f"more than {MAX_LIMITS} rate limits apply to {request.service}."
                                     f"{request.request_type}")
                ck = (rule.key, value)
                h = self.hashes.get(ck)
                if h is None:  # hashed once per value (a connection's user, device or address)
                    if len(self.hashes) >= HASH_CACHE:
                        self.hashes.clear()
                    h = self.hashes[ck] = _xxh3(f"{rule.key}:{value}".encode()) or 1  # the table's key_hash()
                hashes[n] = h
                ids[n] = rule.limit_id
                maxes[n] = rule.max_requests
                windows[n] = rule.window_ms
                if counted is None:
                    counted = []
                counted.append((rule, value))
                n += 1
        if n == 0:
            return None
        # one request under every limit that applies: recorded only if all of them admit it
        r = self.table.check_many_h(hashes, ids, maxes, windows, n, now_ms(), &refused, record)
        if r >= 0:
            return None
        rule, value = counted[refused]
        self.refused += 1
        if _stats.on_exceeded is not None:
            scope = "global" if any(g is rule for g in self.globals) else [request.service, request.request_type]
            _stats.on_exceeded(request, rule, value, -r, scope)
        log.info("rate_limited", request_id=request.request_id, key=rule.key, value=value,
                 max_requests=rule.max_requests, window_ms=rule.window_ms)
        return Response.fail(request.request_id, rate_limited(<long long>ceil(-r / 1000.0)), True)

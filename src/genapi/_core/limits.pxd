# Declarations of the rate-limit step, so the dispatcher checks a request at C level.
from genapi._core.ratelimit cimport Table


cdef class Rule:
    cdef readonly unsigned long long limit_id
    cdef readonly str key
    cdef readonly int kind
    cdef readonly long long max_requests
    cdef readonly long long window_ms


cdef class RequestLimiter:
    cdef readonly Table table
    cdef readonly bint enabled
    cdef readonly bint fail_open
    cdef list globals
    cdef dict apis
    cdef dict hashes                    # (key, value) -> the table's hash of "key:value"
    cdef readonly long long refused     # requests this worker refused (for /metrics)
    # the scope = "cluster" limits (engine/cluster_limits.py's ClusterLimiter), None without any:
    # `Entry.admit` checks them last
    cdef readonly object cluster

    cdef object _value(self, Rule rule, object request, object identity)
    cpdef object check(self, object request, object identity, bint record=*)
    cdef object _check(self, object request, object identity, bint record)

# Declarations of the shared-memory rate-limit table, so dispatch checks a limit at C level.
cimport cython
from libc.stdint cimport uint32_t, uint64_t


cdef struct Header:
    char magic[8]
    uint32_t version
    uint32_t header_size
    uint64_t slots
    uint64_t ring
    uint64_t shards
    uint64_t per_shard
    uint64_t lock_steals
    uint64_t reserved


cdef struct ShardHeader:
    uint64_t lock             # owner pid, 0 when free
    uint64_t used             # occupied slots
    uint64_t evictions
    uint64_t pad[5]


cdef struct Slot:
    uint64_t hash             # 0: free
    uint64_t limit_id
    uint64_t word             # count << 32 | head (the next ring index written)
    uint64_t newest           # the newest admission (ms): eviction's age


@cython.final
cdef class Table:
    cdef char *_base                # the mapping (NULL once closed)
    cdef size_t _size
    cdef uint64_t _slots            # shards * _per_shard
    cdef uint64_t _ring             # admissions remembered per slot (the largest max_requests)
    cdef uint64_t _shards
    cdef uint64_t _per_shard
    cdef uint64_t _shard_bytes
    cdef uint64_t _ring_off         # offset of the rings inside a shard
    cdef uint64_t _probes           # slots looked at per key: min(PROBES, _per_shard)
    cdef readonly str path

    cdef _setup(self)
    cdef _args(self, long long max_requests, long long window_ms)
    cdef ShardHeader *_shard(self, uint64_t h) noexcept nogil
    cdef uint64_t _start(self, uint64_t h, uint64_t limit_id) noexcept nogil
    cdef uint64_t *_ring_of(self, ShardHeader *sh, Slot *s) noexcept nogil
    cdef Slot *_find(self, ShardHeader *sh, uint64_t h, uint64_t limit_id) noexcept nogil
    cdef Slot *_claim(self, ShardHeader *sh, uint64_t h, uint64_t limit_id) noexcept nogil

    # 0: admitted (and recorded). < 0: refused, -retry_after_ms (at least 1 ms).
    # No argument checks: max_requests in 1.._ring, window_ms >= 1, an open table.
    cdef long long check_h(self, uint64_t h, uint64_t limit_id, uint64_t max_requests,
                           long long window_ms, long long now_ms) noexcept nogil
    # One request under n (<= 16) limits, counted only if all admit it: 0, or the most negative
    # verdict, whose index goes to *refused (-1 if admitted; refused may be NULL). `record` false:
    # only looked at (the verdict of a check), nothing recorded.
    cdef long long check_many_h(self, const uint64_t *hashes, const uint64_t *limit_ids,
                                const uint64_t *max_requests, const long long *window_ms, int n,
                                long long now_ms, int *refused, bint record) noexcept nogil
    cpdef long long check_hash(self, unsigned long long h, unsigned long long limit_id, long long max_requests,
                               long long window_ms, long long now_ms=*) except? -1


cdef long long now_ms() noexcept nogil

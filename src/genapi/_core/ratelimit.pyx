# cython: language_level=3
"""The rate-limit table every worker of a host maps: exact sliding-window limits across processes.

A per-process limiter would admit N times the limit with N workers, so the counters live in one
shared-memory file (the master creates it, each worker opens it). The semantics are the
reference's sliding log, exactly: a request at `now` is admitted iff fewer than `max_requests`
earlier admitted requests of its (key, limit) fall in (now - window_ms, now]; an admitted request
is recorded, a refused one is not. Each slot keeps a ring of its last `ring` admission times, so
that test is one look at the max-th most recent admission (the ring is in time order).

Layout (native endian, 64-byte aligned): a 64-byte header (magic, version, slots, ring, shards,
slots per shard, lock steals), then `shards` shards. A shard is a 64-byte header (lock word,
used slots, evictions), its slot headers (hash, limit id, head|count, newest admission: 32 bytes,
compact so a probe run is a few cache lines), then one ring of u64 ms per slot. A key's shard
comes from its 64-bit xxh3 hash, its slot from the hash mixed with the limit id, found by linear
probing (at most PROBES slots); so different keys rarely share a lock, and every limit of a key
lives in one shard (a reset of all of a key's limits looks at one shard).

Locks: a shard's lock word holds its owner's pid, taken with a CAS. No syscall is made while a
lock is held. A waiter yields its CPU every 128 spins (the holder may be preempted: more workers
than CPUs); one that spun RL_SPINS times asks kill(owner, 0), and ESRCH (the owner died holding
it) lets it steal the lock (counted). Every update is ordered so that a holder killed half-way
leaves the slot admitting less, never more: a ring entry is written before head|count (one u64
store) moves over it, and a slot gets its hash last. A killed worker stays a zombie until the
master reaps it, and kill() finds a zombie alive: the lock is stolen once it is reaped.

Memory is bounded: the file's size is fixed at creation (sparse on tmpfs: a ring's pages are
touched only as far as its key's admissions reach). A new key whose probe run is full evicts the
slot whose newest admission is the oldest; the window of another limit is unknown here, so the
age alone decides.
"""
cimport cython
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap

import os

import xxhash

cdef extern from *:
    """
    #include <errno.h>
    #include <pthread.h>
    #include <sched.h>
    #include <signal.h>
    #include <stdint.h>
    #include <time.h>
    #include <unistd.h>

    #define RL_SPINS 100000      /* spins before the owner is asked after (kill(pid, 0)) */
    #define RL_YIELD_EVERY 127   /* a sched_yield every 128 spins */

    /* This process's pid, the lock words' owner id: cached (getpid is a syscall) and renewed in
       a forked child, which must not take locks in its parent's name. */
    static uint64_t rl_pid = 0;
    static void rl_atfork_child(void) { rl_pid = (uint64_t)getpid(); }
    static int rl_init(void) {
        rl_pid = (uint64_t)getpid();
        return pthread_atfork(NULL, NULL, rl_atfork_child);
    }

    static inline void rl_pause(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }

    /* Takes the lock word; 1 if it was stolen from a dead owner. */
    static int rl_lock(uint64_t *lock, uint64_t *steals) {
        uint64_t me = rl_pid, cur, exp;
        unsigned long spins = 0;
        for (;;) {
            cur = __atomic_load_n(lock, __ATOMIC_RELAXED);
            if (cur == 0) {
                exp = 0;
                if (__atomic_compare_exchange_n(lock, &exp, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    return 0;
                continue;
            }
            if (++spins < RL_SPINS) {
                /* a holder preempted mid-update (more workers than CPUs): let it run */
                if ((spins & RL_YIELD_EVERY) == 0) sched_yield(); else rl_pause();
                continue;
            }
            spins = 0;
            if (cur != me && kill((pid_t)cur, 0) != 0 && errno == ESRCH) {
                exp = cur;
                if (__atomic_compare_exchange_n(lock, &exp, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                    __atomic_fetch_add(steals, 1, __ATOMIC_RELAXED);
                    return 1;
                }
            }
        }
    }
    static inline void rl_unlock(uint64_t *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }
    static inline void rl_publish(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint64_t rl_read(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

    /* CLOCK_MONOTONIC in ms: one clock for every process of the host. */
    static inline long long rl_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    """
    uint64_t rl_pid
    int rl_init() nogil
    int rl_lock(uint64_t *lock, uint64_t *steals) nogil
    void rl_unlock(uint64_t *lock) nogil
    void rl_publish(uint64_t *p, uint64_t v) nogil
    uint64_t rl_read(uint64_t *p) nogil
    long long rl_now_ms() nogil

if rl_init() != 0:
    raise OSError("pthread_atfork failed")

cdef enum:
    HEADER = 64
    SHARD_HEADER = 64
    SLOT = 32                 # bytes of a slot header
    PROBES = 16               # slots looked at for a key before one is evicted
    MAX_RING = 0x7fffffff     # head and count are 32 bits
    MANY = 16                 # limits in one check_many

cdef bytes MAGIC = b"GNAPIRLT"
cdef uint32_t VERSION = 1
cdef uint64_t MIX = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _fix(uint64_t h) noexcept nogil:
    """0 marks a free slot; the one key hashing to 0 shares 1's counters."""
    return h if h != 0 else 1


cdef inline uint64_t _round64(uint64_t n) noexcept nogil:
    return (n + 63) & ~(<uint64_t>63)


cdef inline uint64_t _used(uint64_t *ring, uint64_t cap, uint64_t word, uint64_t max_requests,
                           long long window_ms, long long now_ms) noexcept nogil:
    """Admissions in (now - window, now] among the last max: a binary search, the ring being in
    time order (the k-th most recent is in the window for every k up to the answer)."""
    cdef uint64_t head = word & 0xffffffffULL, count = word >> 32
    cdef uint64_t lo = 0, hi = count if count < max_requests else max_requests, mid
    cdef long long idx
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        idx = <long long>head - <long long>mid
        if idx < 0:
            idx += cap
        if <long long>ring[idx] + window_ms > now_ms:
            lo = mid
        else:
            hi = mid - 1
    return lo


cdef inline long long _oldest(uint64_t *ring, uint64_t cap, uint64_t word, uint64_t k) noexcept nogil:
    """The k-th most recent admission (k >= 1, k <= count)."""
    cdef long long idx = <long long>(word & 0xffffffffULL) - <long long>k
    if idx < 0:
        idx += cap
    return <long long>ring[idx]


cdef inline long long _verdict(uint64_t *ring, uint64_t cap, uint64_t word, uint64_t max_requests,
                               long long window_ms, long long now_ms) noexcept nogil:
    """0 if one more fits, else -(ms until the max-th most recent admission leaves the window)."""
    cdef long long oldest
    if (word >> 32) >= max_requests:
        oldest = _oldest(ring, cap, word, max_requests)
        if oldest + window_ms > now_ms:
            return now_ms - oldest - window_ms
    return 0


cdef inline void _record(Slot *s, uint64_t *ring, uint64_t cap, long long now_ms) noexcept nogil:
    """Appends an admission, never before the newest, so the ring stays in time order."""
    cdef uint64_t word = s.word, head = word & 0xffffffffULL, count = word >> 32
    cdef long long rec = now_ms if <long long>s.newest < now_ms else <long long>s.newest
    ring[head] = <uint64_t>rec
    head += 1
    if head == cap:
        head = 0
    if count < cap:
        count += 1
    rl_publish(&s.word, (count << 32) | head)   # after the ring entry: a torn update under-admits
    s.newest = <uint64_t>rec


cdef inline void _free(ShardHeader *sh, Slot *s) noexcept nogil:
    rl_publish(&s.hash, 0)
    s.word = 0
    s.newest = 0
    s.limit_id = 0
    sh.used -= 1


cdef object _xxh3 = xxhash.xxh3_64_intdigest


cdef long long now_ms() noexcept nogil:
    """The table's clock (CLOCK_MONOTONIC, ms): the same in every process of the host."""
    return rl_now_ms()


def key_hash(key: bytes | str) -> int:
    """The hash check() counts `key` under (xxh3-64, seed 0: the same in every process), for
    callers of check_hash()."""
    return _fix(_xxh3(key.encode() if isinstance(key, str) else key))


def unlink(path: str) -> None:
    """Removes the table's file (the master, at exit); workers' mappings stay valid until closed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@cython.final
cdef class Table:
    """One shared-memory rate-limit table: created by the master, opened by every worker."""

    def __cinit__(self):
        self._base = NULL
        self.path = ""

    def __dealloc__(self):
        if self._base != NULL:
            munmap(self._base, self._size)
            self._base = NULL

    @staticmethod
    def create(str path, long long slots=65536, long long ring=1000, long long shards=64) -> Table:
        """Creates (or replaces) the file at `path`, zeroed, mode 0600, and maps it."""
        cdef Table table
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        if slots < shards:
            raise ValueError(f"slots must be >= shards ({shards}), got {slots}")
        if ring < 1 or ring > MAX_RING:
            raise ValueError(f"ring must be in 1..{MAX_RING}, got {ring}")
        cdef uint64_t per_shard = (slots + shards - 1) // shards
        cdef uint64_t ring_off = _round64(SHARD_HEADER + per_shard * SLOT)
        cdef uint64_t shard_bytes = _round64(ring_off + per_shard * <uint64_t>ring * 8)
        cdef uint64_t size = HEADER + shard_bytes * <uint64_t>shards
        if size > (<uint64_t>1 << 46):
            raise ValueError(f"slots * ring too large: {size} bytes (slots={slots}, ring={ring})")
        # tmpfs grants pages as they are first written: a file larger than the room left would
        # kill a worker with SIGBUS the day its keys reach that far, so refuse it now
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if size > <uint64_t>fs.f_bavail * fs.f_frsize:
            raise ValueError(f"rate-limit table of {size} bytes (slots={slots}, ring={ring}) exceeds the "
                             f"{fs.f_bavail * fs.f_frsize} bytes free where {path} would be")
        unlink(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            table = _map(fd, size, path)
        finally:
            os.close(fd)
        cdef Header hdr
        memset(&hdr, 0, sizeof(Header))
        hdr.version = VERSION
        hdr.header_size = HEADER
        hdr.slots = per_shard * <uint64_t>shards
        hdr.ring = <uint64_t>ring
        hdr.shards = <uint64_t>shards
        hdr.per_shard = per_shard
        memcpy(table._base, &hdr, sizeof(Header))
        memcpy(table._base, <char *>MAGIC, 8)   # last: a half-created file is not a table
        table._setup()
        return table

    @staticmethod
    def open(str path) -> Table:
        """Maps an existing table (a worker). ValueError if the file is not one."""
        cdef Table table
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER:
                raise ValueError(f"{path}: not a rate-limit table (size {size} < header {HEADER})")
            table = _map(fd, size, path)
        finally:
            os.close(fd)
        cdef Header *hdr = <Header *>table._base
        if memcmp(hdr.magic, <char *>MAGIC, 8) != 0:
            table.close()
            raise ValueError(f"{path}: not a rate-limit table (bad magic)")
        if hdr.version != VERSION or hdr.header_size != HEADER:
            version = hdr.version
            table.close()
            raise ValueError(f"{path}: rate-limit table version {version}, expected {VERSION}")
        table._setup()
        if (table._ring < 1 or table._ring > MAX_RING or table._shards < 1 or table._per_shard < 1
                or table._slots != table._per_shard * table._shards
                or <uint64_t>size != HEADER + table._shard_bytes * table._shards):
            table.close()
            raise ValueError(f"{path}: rate-limit table header inconsistent with its size {size}")
        return table

    cdef _setup(self):
        cdef Header *hdr = <Header *>self._base
        self._slots = hdr.slots
        self._ring = hdr.ring
        self._shards = hdr.shards
        self._per_shard = hdr.per_shard
        self._ring_off = _round64(SHARD_HEADER + self._per_shard * SLOT)
        self._shard_bytes = _round64(self._ring_off + self._per_shard * self._ring * 8)
        self._probes = PROBES if self._per_shard > PROBES else self._per_shard

    # -- the C path ------------------------------------------------------------------------

    cdef inline ShardHeader *_shard(self, uint64_t h) noexcept nogil:
        return <ShardHeader *>(self._base + HEADER + ((h >> 40) % self._shards) * self._shard_bytes)

    cdef inline uint64_t _start(self, uint64_t h, uint64_t limit_id) noexcept nogil:
        return (h ^ (limit_id * MIX)) % self._per_shard

    cdef inline uint64_t *_ring_of(self, ShardHeader *sh, Slot *s) noexcept nogil:
        cdef uint64_t i = <uint64_t>((<char *>s - (<char *>sh + SHARD_HEADER)) // SLOT)
        return <uint64_t *>(<char *>sh + self._ring_off + i * self._ring * 8)

    cdef inline Slot *_find(self, ShardHeader *sh, uint64_t h, uint64_t limit_id) noexcept nogil:
        """The key's slot, or NULL. Looks at the whole probe run: a reset frees slots mid-run."""
        cdef Slot *slots = <Slot *>(<char *>sh + SHARD_HEADER)
        cdef uint64_t i = self._start(h, limit_id), _n
        for _n in range(self._probes):
            if slots[i].hash == h and slots[i].limit_id == limit_id:
                return &slots[i]
            i += 1
            if i == self._per_shard:
                i = 0
        return NULL

    cdef inline Slot *_claim(self, ShardHeader *sh, uint64_t h, uint64_t limit_id) noexcept nogil:
        """A slot for a new key: a free one of its probe run, else the run's idlest (evicted)."""
        cdef Slot *slots = <Slot *>(<char *>sh + SHARD_HEADER)
        cdef uint64_t i = self._start(h, limit_id), _n
        cdef Slot *victim = NULL
        cdef Slot *s
        for _n in range(self._probes):
            s = &slots[i]
            if s.hash == 0:
                victim = s
                break
            if victim == NULL or s.newest < victim.newest:
                victim = s
            i += 1
            if i == self._per_shard:
                i = 0
        if victim.hash == 0:
            sh.used += 1
        else:
            sh.evictions += 1
            rl_publish(&victim.hash, 0)
        victim.word = 0
        victim.newest = 0
        victim.limit_id = limit_id
        rl_publish(&victim.hash, h)   # last: the key owns the slot only once it is empty
        return victim

    cdef long long check_h(self, uint64_t h, uint64_t limit_id, uint64_t max_requests,
                           long long window_ms, long long now_ms) noexcept nogil:
        cdef Header *hdr = <Header *>self._base
        cdef ShardHeader *sh
        cdef Slot *s
        cdef uint64_t *ring
        cdef long long verdict
        h = _fix(h)
        sh = self._shard(h)
        rl_lock(&sh.lock, &hdr.lock_steals)
        s = self._find(sh, h, limit_id)
        if s == NULL:
            s = self._claim(sh, h, limit_id)
        ring = self._ring_of(sh, s)
        verdict = _verdict(ring, self._ring, s.word, max_requests, window_ms, now_ms)
        if verdict == 0:
            _record(s, ring, self._ring, now_ms)
        rl_unlock(&sh.lock)
        return verdict

    cdef long long check_many_h(self, const uint64_t *hashes, const uint64_t *limit_ids,
                                const uint64_t *max_requests, const long long *window_ms, int n,
                                long long now_ms, int *refused, bint record) noexcept nogil:
        cdef Header *hdr = <Header *>self._base
        cdef ShardHeader *locked[MANY]
        cdef ShardHeader *sh
        cdef Slot *s
        cdef uint64_t h
        cdef long long verdict = 0, v
        cdef int i, j, m = 0, which = -1
        for i in range(n):   # the distinct shards, in address order: every process locks alike
            sh = self._shard(_fix(hashes[i]))
            j = m
            while j > 0 and locked[j - 1] > sh:
                j -= 1
            if j > 0 and locked[j - 1] == sh:
                continue
            memmove(&locked[j + 1], &locked[j], (m - j) * sizeof(ShardHeader *))
            locked[j] = sh
            m += 1
        for j in range(m):
            rl_lock(&locked[j].lock, &hdr.lock_steals)
        for i in range(n):
            h = _fix(hashes[i])
            sh = self._shard(h)
            s = self._find(sh, h, limit_ids[i])
            if s != NULL:
                v = _verdict(self._ring_of(sh, s), self._ring, s.word, max_requests[i], window_ms[i], now_ms)
                if v < verdict:
                    verdict = v
                    which = i
        if verdict == 0 and record:
            for i in range(n):   # found again: a claim may have evicted an earlier one's slot
                h = _fix(hashes[i])
                sh = self._shard(h)
                s = self._find(sh, h, limit_ids[i])
                if s == NULL:
                    s = self._claim(sh, h, limit_ids[i])
                _record(s, self._ring_of(sh, s), self._ring, now_ms)
        j = m - 1
        while j >= 0:
            rl_unlock(&locked[j].lock)
            j -= 1
        if refused != NULL:
            refused[0] = which
        return verdict

    cdef _args(self, long long max_requests, long long window_ms):
        if self._base == NULL:
            raise ValueError(f"rate-limit table {self.path} is closed")
        if max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {max_requests}")
        if <uint64_t>max_requests > self._ring:
            raise ValueError(f"max_requests {max_requests} exceeds the table's ring {self._ring}")
        if window_ms < 1:
            raise ValueError(f"window_ms must be >= 1, got {window_ms}")

    cpdef long long check_hash(self, unsigned long long h, unsigned long long limit_id, long long max_requests,
                               long long window_ms, long long now_ms=-1) except? -1:
        """check() with the key's hash (key_hash()) computed by the caller; now_ms -1: the clock."""
        self._args(max_requests, window_ms)
        if now_ms < 0:
            now_ms = rl_now_ms()
        # the GIL is kept: releasing it costs more than the check
        return self.check_h(_fix(h), limit_id, <uint64_t>max_requests, window_ms, now_ms)

    # -- the Python API ----------------------------------------------------------------------

    def check(self, key, unsigned long long limit_id, long long max_requests, long long window_ms,
              now_ms=None) -> int:
        """Counts one request of `key` under limit `limit_id`. 0: admitted and recorded; < 0:
        refused, -(ms until one fits again). (What is left in the window is status()'s: counting
        it costs a search of the ring, which the request path does not need.)"""
        cdef uint64_t h = _fix(_xxh3(key.encode() if isinstance(key, str) else key))
        self._args(max_requests, window_ms)
        cdef long long now = rl_now_ms() if now_ms is None else now_ms
        return self.check_h(h, limit_id, <uint64_t>max_requests, window_ms, now)

    def check_many(self, limits, now_ms=None) -> tuple:
        """One request under several limits, `(key, limit_id, max_requests, window_ms)` each,
        counted only if every one admits it (all their shards locked together): `(0, -1)` if
        admitted and recorded under all, else `(-retry_after_ms, index)` of the limit that
        frees last (nothing recorded)."""
        cdef int n = len(limits), i, which = -1
        if n > MANY:
            raise ValueError(f"check_many takes at most {MANY} limits, got {n}")
        cdef uint64_t hashes[MANY]
        cdef uint64_t lids[MANY]
        cdef uint64_t maxes[MANY]
        cdef long long windows[MANY]
        for i in range(n):
            key, limit_id, max_requests, window_ms = limits[i]
            self._args(max_requests, window_ms)
            hashes[i] = _fix(_xxh3(key.encode() if isinstance(key, str) else key))
            lids[i] = limit_id
            maxes[i] = max_requests
            windows[i] = window_ms
        cdef long long now = rl_now_ms() if now_ms is None else now_ms
        cdef long long verdict = self.check_many_h(hashes, lids, maxes, windows, n, now, &which, True)
        return verdict, which

    def status(self, key, unsigned long long limit_id, long long max_requests, long long window_ms,
               now_ms=None) -> dict:
        """Without counting: `used` (admissions in the window, up to max), `remaining`, and
        `resets_in_ms` (until the oldest of them leaves the window, 0 if none is in it)."""
        cdef uint64_t h = _fix(_xxh3(key.encode() if isinstance(key, str) else key))
        self._args(max_requests, window_ms)
        cdef long long now = rl_now_ms() if now_ms is None else now_ms
        cdef Header *hdr = <Header *>self._base
        cdef ShardHeader *sh = self._shard(h)
        cdef Slot *s
        cdef uint64_t used = 0
        cdef long long resets = 0
        rl_lock(&sh.lock, &hdr.lock_steals)
        s = self._find(sh, h, limit_id)
        if s != NULL:
            used = _used(self._ring_of(sh, s), self._ring, s.word, <uint64_t>max_requests, window_ms, now)
            if used:
                resets = _oldest(self._ring_of(sh, s), self._ring, s.word, used) + window_ms - now
        rl_unlock(&sh.lock)
        return {"used": used, "remaining": max_requests - <long long>used, "resets_in_ms": resets}

    def reset(self, key, limit_id=None) -> int:
        """Forgets `key` under `limit_id` (every limit if None); the number of slots freed."""
        if self._base == NULL:
            raise ValueError(f"rate-limit table {self.path} is closed")
        cdef uint64_t h = _fix(_xxh3(key.encode() if isinstance(key, str) else key))
        cdef Header *hdr = <Header *>self._base
        cdef ShardHeader *sh = self._shard(h)
        cdef Slot *slots = <Slot *>(<char *>sh + SHARD_HEADER)
        cdef Slot *s
        cdef uint64_t i, lid
        cdef long long freed = 0
        if limit_id is not None:
            lid = limit_id
        rl_lock(&sh.lock, &hdr.lock_steals)
        if limit_id is not None:
            s = self._find(sh, h, lid)
            if s != NULL:
                _free(sh, s)
                freed = 1
        else:
            for i in range(self._per_shard):
                if slots[i].hash == h:
                    _free(sh, &slots[i])
                    freed += 1
        rl_unlock(&sh.lock)
        return freed

    def clear(self) -> None:
        """Forgets every key (the counters of evictions and steals stay)."""
        if self._base == NULL:
            raise ValueError(f"rate-limit table {self.path} is closed")
        cdef Header *hdr = <Header *>self._base
        cdef ShardHeader *sh
        cdef uint64_t k
        for k in range(self._shards):
            sh = <ShardHeader *>(self._base + HEADER + k * self._shard_bytes)
            rl_lock(&sh.lock, &hdr.lock_steals)
            memset(<char *>sh + SHARD_HEADER, 0, self._per_shard * SLOT)
            sh.used = 0
            rl_unlock(&sh.lock)

    def stats(self) -> dict:
        """`slots` (capacity), `used_slots`, `evictions`, `lock_steals`: read without locks."""
        if self._base == NULL:
            raise ValueError(f"rate-limit table {self.path} is closed")
        cdef Header *hdr = <Header *>self._base
        cdef ShardHeader *sh
        cdef uint64_t k, used = 0, evictions = 0
        for k in range(self._shards):
            sh = <ShardHeader *>(self._base + HEADER + k * self._shard_bytes)
            used += rl_read(&sh.used)
            evictions += rl_read(&sh.evictions)
        return {"slots": self._slots, "used_slots": used, "evictions": evictions,
                "lock_steals": rl_read(&hdr.lock_steals)}

    @property
    def ring(self) -> int:
        return self._ring

    @property
    def shards(self) -> int:
        return self._shards

    def close(self) -> None:
        """Unmaps the table (idempotent); the file stays for the other processes."""
        if self._base != NULL:
            munmap(self._base, self._size)
            self._base = NULL

    # -- for tests and benchmarks ----------------------------------------------------------------

    def _hold_lock(self, key) -> None:
        """Takes `key`'s shard lock and keeps it (a test kills the holder to see it stolen)."""
        if self._base == NULL:
            raise ValueError(f"rate-limit table {self.path} is closed")
        cdef uint64_t h = _fix(_xxh3(key.encode() if isinstance(key, str) else key))
        cdef ShardHeader *sh = self._shard(h)
        cdef Header *hdr = <Header *>self._base
        rl_lock(&sh.lock, &hdr.lock_steals)

    def _check_loop(self, unsigned long long h, unsigned long long limit_id, long long max_requests,
                    long long window_ms, long long n, long long keys=1, bint clock=True) -> int:
        """`n` checks from C, what dispatch pays per check without Python's call overhead: on `h`
        alone, or spread over `keys` keys derived from it; now is the clock's (or 0 if not
        `clock`). The admitted count."""
        self._args(max_requests, window_ms)
        if keys < 1:
            raise ValueError(f"keys must be >= 1, got {keys}")
        cdef long long i, admitted = 0
        cdef uint64_t hh = _fix(h)
        with nogil:
            for i in range(n):
                if keys > 1:
                    hh = _fix(_mix64(h + <uint64_t>(i % keys)))
                if self.check_h(hh, limit_id, <uint64_t>max_requests, window_ms,
                                rl_now_ms() if clock else 0) >= 0:
                    admitted += 1
        return admitted


cdef inline uint64_t _mix64(uint64_t x) noexcept nogil:
    """splitmix64's finalizer: distinct inputs, well-spread hashes (benchmark keys)."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef Table _map(int fd, size_t size, str path):
    cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if p == MAP_FAILED:
        raise OSError(f"mmap of {path} ({size} bytes) failed")
    cdef Table table = Table.__new__(Table)
    table._base = <char *>p
    table._size = size
    table.path = path
    return table

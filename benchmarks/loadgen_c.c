// Cheap closed-loop WebSocket load generator in C (cross-check for loadgen.py).
//
// Vendored from the project's measuring instruments (shared bench/loadgen_c.c) as genapi's own
// benchmark client; benchmarks/conftest.py builds it with `gcc -O2` once per session. Changes
// from the original: Phoenix replies are matched to their request by ref and pushes by
// request_id (the original matched replies FIFO and credited pushes to the next reply, which
// miscounts when a server answers out of order, as a thread pool does); the rate is also
// printed as "calls_per_s" (loadgen.py's key); "errors" is the total of every failure (see
// "Failures" below) instead of failed joins only.
//
// Echo mode (default), same workload as loadgen.py: C connections to ws://127.0.0.1:PORT/,
// each keeps P requests {"id":n,"x":"hello"} in flight (masked text frames, random mask),
// one new request per reply, FIFO matching per connection (-verify checks each id). Single
// thread, epoll, one write() per connection per read batch. Prints one JSON line with the
// keys of loadgen.py (calls_per_s, p50_us, p99_us, errors, replies, client_cpu_pct) and more
// (msgs_per_s = calls_per_s, p90_us, max_us, server_cpu_pct, cores, ...).
//
// Phoenix mode (-phoenix TOPIC), same workload as loadgen.py --mode phoenix: each connection
// sends the V2 join ["1","1","TOPIC","phx_join",{}] and waits for its phx_reply ("status":"ok";
// otherwise it counts in join_errors and stays idle), then keeps P requests
// ["1","<ref>","TOPIC","phoenix_gen_api",{"request_id":"<ref>","service":"SVC",
// "request_type":"RT","version":"VER","args":ARGS}] in flight, refs increasing per connection
// (a table of PR >= 4 P slots per connection, indexed by ref). A request completes when a frame
// with "phx_reply" (looked for in the frame's head, where the event is) carrying its ref (the
// frame's second element) arrives, in any order; it must be "status":"ok" and come after at
// least one push for it. Every other text frame is a push: the Response, matched by its
// "request_id", which must say "success":true. No JSON parsing beyond the ref and request_id.
// calls_per_s, replies and latency count completed requests; pushes counts the pushes of the
// measured ones (== replies with one push per request); out_of_order counts measured replies
// answered after a newer request of their connection (information, not an error).
// Extra keys: mode, unanswered (both modes); joined, pushes, out_of_order and the failure
// counts in phoenix mode. TOPIC, SVC, RT, VER and ARGS are pasted in unescaped.
// Failures, each its own key and all summed in "errors": verify_failures (echo -verify),
// unanswered (requests still in flight 300 ms after the window closed), and in phoenix mode
// join_errors (refused joins), not_joined (joins never answered), reply_errors (no
// "status":"ok"), missing_pushes (a reply with no push before it), unknown_replies (a ref not
// in flight), stray_pushes (a request_id not in flight), push_errors (no "success":true),
// table_overflows (a request still unanswered PR refs later). The first few are described on
// stderr. Exit status 1 when nothing was measured or errors > 0 (the JSON line is printed
// either way); 2 or 3 without a JSON line on a system-call failure or a connection the server
// closed.
//
// Build: gcc -O2 -o loadgen_c loadgen_c.c
// Run:   taskset -c 1 ./loadgen_c -port 9001 -c 50 -p 16 -w 2 -d 8 -server-pid PID [-verify]
//        taskset -c 1 ./loadgen_c -port 9002 -path '/socket/websocket?vsn=2.0.0' -phoenix api:acc
//            [-service acc] [-request-type echo] [-version 1.0.0] [-args '{"text":"hello","n":1}']
// Every option also takes two dashes (--port); -c/-p/-w/-d also read -connections/-pipeline/
// -warmup/-duration. -path is the upgrade's request path (default /).
// -spin: poll epoll with timeout 0 instead of sleeping. On the 2-vCPU bench VM a client asleep in
// epoll_wait makes the server pay a cross-CPU wakeup (IPI) for many of its writes, which
// inflates the server's kernel time per message; a spinning client avoids that. Its
// client_cpu_pct is then ~100 by construction: client_idle_pct (share of the window spent
// in empty polls) shows its headroom instead.
// Target is always 127.0.0.1 (loopback only).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF (256 * 1024)
#define HIST_NS 100           /* histogram bucket width: 100 ns */
#define HIST_N 1000000        /* fine buckets up to 100 ms */
#define HIST2_NS 100000       /* then 100 us buckets */
#define HIST2_N (100000 + 1)  /* up to 10 s, last bucket = overflow */

typedef struct {
    int fd;
    unsigned char *rbuf;
    size_t rlen;
    uint64_t *ts;   /* send timestamps: echo, FIFO ring of size P; phoenix, table of PR by ref */
    uint64_t *ids;  /* echo: ids, same ring (verify); phoenix: the ref in flight in a slot, 0 = free */
    unsigned char *pushed; /* phoenix: pushes received for the request in a slot */
    unsigned head, count;
    unsigned char *wbuf;
    size_t wlen, wcap;
    int state;                     /* phoenix: 0 joining, 1 joined, -1 join failed (idle) */
    uint64_t ref;                  /* phoenix: last ref sent */
    uint64_t last_done;            /* phoenix: highest ref answered so far */
} conn_t;

static int P = 1, C = 50, VERIFY = 0, SPIN = 0;
static unsigned PR = 1; /* phoenix: in-flight table size per connection, a power of two >= 4 P */
static uint64_t next_id = 1, rng = 0x9E3779B97F4A7C15ull;
static uint32_t *hist;
static uint64_t measured = 0, verify_fail = 0, warm = 0, lat_max = 0;
static int phase = 0; /* 0 warm, 1 measure, 2 stop */
static const char *PATH = "/", *TOPIC = NULL, *SERVICE = "acc", *RTYPE = "echo",
                  *VERSION = "1.0.0", *ARGS = "{\"text\":\"hello\",\"n\":1}";
/* phoenix request = ["1","<ref>  tpl_a  <ref>  tpl_b; preq: scratch payload */
static char *tpl_a, *tpl_b, *preq;
static size_t tpl_a_len, tpl_b_len, evt_lim;
static uint64_t joined = 0, join_errors = 0, pushes = 0, push_errors = 0, reply_errors = 0,
                missing_pushes = 0, unknown_replies = 0, stray_pushes = 0, table_overflows = 0,
                out_of_order = 0;

static inline uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}
static inline uint32_t xs32(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)rng;
}
static void die(const char *m) { perror(m); exit(2); }

static void wreserve(conn_t *c, size_t extra) {
    if (c->wlen + extra > c->wcap) {
        c->wcap = (c->wlen + extra) * 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
        if (!c->wbuf) die("realloc");
    }
}

/* append one masked text frame (random mask) carrying payload[0..n) */
static void put_frame(conn_t *c, const char *payload, size_t n) {
    wreserve(c, n + 14);
    unsigned char *o = c->wbuf + c->wlen;
    size_t hl = 2;
    o[0] = 0x81;
    if (n < 126) {
        o[1] = 0x80 | (unsigned char)n;
    } else if (n < 65536) {
        o[1] = 0x80 | 126;
        o[2] = (unsigned char)(n >> 8);
        o[3] = (unsigned char)n;
        hl = 4;
    } else {
        o[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) o[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    uint32_t mk = xs32();
    unsigned char m[4] = {mk & 255, (mk >> 8) & 255, (mk >> 16) & 255, mk >> 24};
    memcpy(o + hl, m, 4);
    hl += 4;
    for (size_t i = 0; i < n; i++) o[hl + i] = (unsigned char)payload[i] ^ m[i & 3];
    c->wlen += hl + n;
}

static inline void track(conn_t *c, uint64_t t, uint64_t id) {
    unsigned slot = (c->head + c->count) % (unsigned)P;
    c->ts[slot] = t;
    c->ids[slot] = id;
    c->count++;
}

/* append one masked text frame with a fresh request; record timestamp */
static void push_request(conn_t *c, uint64_t t) {
    char payload[64];
    uint64_t id = next_id++;
    int n = snprintf(payload, sizeof payload, "{\"id\":%llu,\"x\":\"hello\"}",
                     (unsigned long long)id);
    put_frame(c, payload, (size_t)n);
    track(c, t, id);
}

/* phoenix: append one phoenix_gen_api request with the connection's next ref */
static void push_phx_request(conn_t *c, uint64_t t) {
    uint64_t ref = ++c->ref;
    char r[24];
    size_t k = (size_t)snprintf(r, sizeof r, "%llu", (unsigned long long)ref);
    char *p = preq;
    memcpy(p, "[\"1\",\"", 6), p += 6;
    memcpy(p, r, k), p += k;
    memcpy(p, tpl_a, tpl_a_len), p += tpl_a_len;
    memcpy(p, r, k), p += k;
    memcpy(p, tpl_b, tpl_b_len), p += tpl_b_len;
    put_frame(c, preq, (size_t)(p - preq));
    unsigned s = (unsigned)(ref & (PR - 1));
    if (c->ids[s]) table_overflows++; /* a request PR refs older still unanswered: replaced */
    else c->count++;
    c->ids[s] = ref;
    c->ts[s] = t;
    c->pushed[s] = 0;
}

/* the digits of a JSON string starting at pl[i] (just after its opening quote); 0 if none */
static uint64_t digits_str(const unsigned char *pl, size_t n, size_t i) {
    uint64_t v = 0;
    size_t s = i;
    while (i < n && pl[i] >= '0' && pl[i] <= '9' && i - s < 19) v = v * 10 + (uint64_t)(pl[i++] - '0');
    return (i == s || i >= n || pl[i] != '"') ? 0 : v;
}

/* phoenix: the ref of a V2 frame [join_ref, "ref", ...], its second element; 0 if not a number */
static uint64_t frame_ref(const unsigned char *pl, size_t n) {
    size_t i = 0;
#define SKIP_WS while (i < n && (pl[i] == ' ' || pl[i] == '\t' || pl[i] == '\n' || pl[i] == '\r')) i++
    SKIP_WS;
    if (i >= n || pl[i] != '[') return 0;
    i++;
    SKIP_WS;
    if (i < n && pl[i] == '"') {
        for (i++; i < n && pl[i] != '"'; i++)
            if (pl[i] == '\\') i++;
        i++;
    } else if (n - i >= 4 && !memcmp(pl + i, "null", 4)) {
        i += 4;
    } else {
        return 0;
    }
    SKIP_WS;
    if (i >= n || pl[i] != ',') return 0;
    i++;
    SKIP_WS;
#undef SKIP_WS
    return (i < n && pl[i] == '"') ? digits_str(pl, n, i + 1) : 0;
}

/* phoenix: the request_id of a Response push ("request_id":"<ref>"); 0 if not found */
static uint64_t push_request_id(const unsigned char *pl, size_t n) {
    const unsigned char *p = memmem(pl, n, "\"request_id\":", 13);
    if (!p) return 0;
    size_t i = (size_t)(p - pl) + 13;
    while (i < n && pl[i] == ' ') i++;
    return (i < n && pl[i] == '"') ? digits_str(pl, n, i + 1) : 0;
}

static void first_error(const char *what, const unsigned char *pl, size_t n) {
    static int shown = 0;
    if (shown++ < 3) fprintf(stderr, "%s: %.*s\n", what, (int)(n < 300 ? n : 300), (const char *)pl);
}

static int status_ok(const unsigned char *pl, size_t n) {
    return memmem(pl, n, "\"status\":\"ok\"", 13) || memmem(pl, n, "\"status\": \"ok\"", 14);
}

static void flush(conn_t *c) {
    size_t off = 0;
    while (off < c->wlen) {
        ssize_t w = write(c->fd, c->wbuf + off, c->wlen - off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) continue; /* rare on loopback */
            die("write");
        }
        off += (size_t)w;
    }
    c->wlen = 0;
}

static inline void record(uint64_t d) {
    uint64_t b = d / HIST_NS;
    if (b >= HIST_N) {
        b = HIST_N + (d - (uint64_t)HIST_N * HIST_NS) / HIST2_NS;
        if (b > HIST_N + HIST2_N - 1) b = HIST_N + HIST2_N - 1;
    }
    hist[b]++;
    if (d > lat_max) lat_max = d;
    measured++;
}

/* echo: replies come back in order (FIFO) */
static void on_reply(conn_t *c, const unsigned char *pl, size_t n, uint64_t t) {
    if (c->count == 0) return;
    uint64_t sent = c->ts[c->head];
    uint64_t id = c->ids[c->head];
    c->head = (c->head + 1) % (unsigned)P;
    c->count--;
    if (VERIFY) {
        char pat[40];
        int k = snprintf(pat, sizeof pat, "\"id\":%llu", (unsigned long long)id);
        if (!memmem(pl, n, pat, (size_t)k)) verify_fail++;
    }
    if (phase == 1) record(t - sent);
    else if (phase == 0) warm++;
    else return;
    push_request(c, t);
}

/* phoenix: a phx_reply completes the request with its ref, in whatever order they come */
static void on_phx_reply(conn_t *c, const unsigned char *pl, size_t n, uint64_t t) {
    uint64_t ref = frame_ref(pl, n);
    unsigned s = (unsigned)(ref & (PR - 1));
    if (ref == 0 || c->ids[s] != ref) {
        unknown_replies++;
        first_error("reply to no request in flight", pl, n);
        return;
    }
    uint64_t sent = c->ts[s];
    unsigned pp = c->pushed[s];
    c->ids[s] = 0;
    c->count--;
    if (ref < c->last_done) {
        if (phase == 1) out_of_order++;
    } else {
        c->last_done = ref;
    }
    if (pp == 0) {
        missing_pushes++;
        first_error("reply without a push before it", pl, n);
    }
    if (!status_ok(pl, n)) {
        reply_errors++;
        first_error("reply not ok", pl, n);
    }
    if (phase == 1) {
        record(t - sent);
        pushes += pp;
    } else if (phase == 0) {
        warm++;
    } else {
        return;
    }
    push_phx_request(c, t);
}

/* phoenix: a push is the Response of the request whose ref is its request_id */
static void on_phx_push(conn_t *c, const unsigned char *pl, size_t n) {
    uint64_t rid = push_request_id(pl, n);
    unsigned s = (unsigned)(rid & (PR - 1));
    if (rid == 0 || c->ids[s] != rid) {
        stray_pushes++;
        first_error("push for no request in flight", pl, n);
    } else if (c->pushed[s] < 255) {
        c->pushed[s]++;
    }
    if (!memmem(pl, n, "\"success\":true", 14) && !memmem(pl, n, "\"success\": true", 15)) {
        push_errors++;
        first_error("push without success", pl, n);
    }
}

/* phoenix: one server text frame (join reply, request reply or push) */
static void on_phx_frame(conn_t *c, const unsigned char *pl, size_t n, uint64_t t) {
    int reply = memmem(pl, n < evt_lim ? n : evt_lim, "\"phx_reply\"", 11) != NULL;
    if (c->state == 1) {
        if (reply) on_phx_reply(c, pl, n, t);
        else on_phx_push(c, pl, n);
    } else if (c->state == 0 && reply) {
        if (status_ok(pl, n)) {
            c->state = 1;
            joined++;
            if (phase != 2)
                for (int k = 0; k < P; k++) push_phx_request(c, t);
        } else {
            c->state = -1;
            if (join_errors++ == 0)
                fprintf(stderr, "join failed: %.*s\n", (int)(n < 300 ? n : 300), (const char *)pl);
        }
    }
}

/* parse complete server frames (unmasked) from rbuf */
static void parse(conn_t *c, uint64_t t) {
    size_t pos = 0;
    for (;;) {
        if (c->rlen - pos < 2) break;
        unsigned char *f = c->rbuf + pos;
        int op = f[0] & 0x0f;
        uint64_t len = f[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (c->rlen - pos < 4) break;
            len = ((uint64_t)f[2] << 8) | f[3];
            hl = 4;
        } else if (len == 127) {
            if (c->rlen - pos < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            hl = 10;
        }
        if (f[1] & 0x80) hl += 4; /* server frames must not be masked; tolerate */
        if (len > RBUF - hl) { fprintf(stderr, "frame of %llu bytes exceeds the read buffer\n",
                                       (unsigned long long)len); exit(2); }
        if (c->rlen - pos < hl + len) break;
        if (TOPIC) {
            if (op == 1 && !(f[0] & 0x80)) { fprintf(stderr, "fragmented message\n"); exit(2); }
            if (op == 1) on_phx_frame(c, f + hl, (size_t)len, t);
        } else if (op == 1 || op == 2) {
            on_reply(c, f + hl, (size_t)len, t);
        }
        pos += hl + (size_t)len;
    }
    if (pos) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
    }
}

static double proc_cpu_s(int pid, double *sys_s) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p += 2;
    unsigned long long v[16] = {0};
    /* fields from 3 (state) on; utime=14, stime=15 -> idx 11, 12 after state */
    char *save = NULL, *tok = strtok_r(p, " ", &save);
    for (int i = 0; tok && i < 13; i++, tok = strtok_r(NULL, " ", &save))
        if (i >= 1) v[i] = strtoull(tok, NULL, 10);
    if (sys_s) *sys_s = (double)v[12] / (double)sysconf(_SC_CLK_TCK);
    return (double)(v[11] + v[12]) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct { unsigned long long busy, steal, total; } core_t;
static int cores_snap(core_t *out, int max) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        if (strncmp(line, "cpu", 3) || line[3] == ' ') continue;
        unsigned long long u = 0, ni = 0, s = 0, id = 0, io = 0, irq = 0, si = 0, st = 0;
        int cpu;
        sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &u, &ni, &s,
               &id, &io, &irq, &si, &st);
        out[n].busy = u + ni + s + irq + si;
        out[n].steal = st;
        out[n].total = out[n].busy + id + io + st;
        n++;
    }
    fclose(f);
    return n;
}

static double cpu_self_s(double *sys_s) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (sys_s) *sys_s = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static double hist_pct(double p) {
    uint64_t target = (uint64_t)(p / 100.0 * (double)measured + 0.5), acc = 0;
    if (target == 0) target = 1;
    for (uint64_t b = 0; b < HIST_N + HIST2_N; b++) {
        acc += hist[b];
        if (acc >= target)
            return b < HIST_N ? (double)(b * HIST_NS + HIST_NS / 2) / 1000.0
                              : (double)(HIST_N * HIST_NS + (b - HIST_N) * HIST2_NS + HIST2_NS / 2) / 1000.0;
    }
    return -1;
}

static int connect_ws(int port, conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", PATH, port);
    if (n >= (int)sizeof req) { fprintf(stderr, "path too long\n"); exit(2); }
    if (write(fd, req, (size_t)n) != n) die("handshake write");
    char resp[4096], *end;
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
        if (r <= 0) die("handshake read");
        got += (size_t)r;
        resp[got] = 0;
        if ((end = strstr(resp, "\r\n\r\n"))) break;
        if (got >= sizeof resp - 1) { fprintf(stderr, "handshake too long\n"); exit(2); }
    }
    if (strncmp(resp, "HTTP/1.1 101", 12)) { fprintf(stderr, "bad handshake: %.80s\n", resp); exit(2); }
    /* bytes after the header (unlikely: server sends nothing first) start the frame stream */
    size_t hdr = (size_t)(end + 4 - resp);
    memcpy(c->rbuf, resp + hdr, got - hdr);
    c->rlen = got - hdr;
    return fd;
}

int main(int argc, char **argv) {
    int port = 9001, spid = 0;
    double warm_s = 2, dur_s = 8;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int v = i + 1 < argc;
        if (a[0] == '-' && a[1] == '-') a++; /* --port == -port */
        if (!strcmp(a, "-port") && v) port = atoi(argv[++i]);
        else if ((!strcmp(a, "-c") || !strcmp(a, "-connections")) && v) C = atoi(argv[++i]);
        else if ((!strcmp(a, "-p") || !strcmp(a, "-pipeline")) && v) P = atoi(argv[++i]);
        else if ((!strcmp(a, "-w") || !strcmp(a, "-warmup")) && v) warm_s = atof(argv[++i]);
        else if ((!strcmp(a, "-d") || !strcmp(a, "-duration")) && v) dur_s = atof(argv[++i]);
        else if (!strcmp(a, "-server-pid") && v) spid = atoi(argv[++i]);
        else if (!strcmp(a, "-verify")) VERIFY = 1;
        else if (!strcmp(a, "-spin")) SPIN = 1;
        else if (!strcmp(a, "-path") && v) PATH = argv[++i];
        else if (!strcmp(a, "-phoenix") && v) TOPIC = argv[++i];
        else if (!strcmp(a, "-service") && v) SERVICE = argv[++i];
        else if (!strcmp(a, "-request-type") && v) RTYPE = argv[++i];
        else if (!strcmp(a, "-version") && v) VERSION = argv[++i];
        else if (!strcmp(a, "-args") && v) ARGS = argv[++i];
        else { fprintf(stderr, "unknown arg %s\n", argv[i]); return 2; }
    }
    if (C < 1 || P < 1) { fprintf(stderr, "need -c >= 1 and -p >= 1\n"); return 2; }
    char *join = NULL;
    int join_len = 0;
    if (TOPIC) {
        int a = asprintf(&tpl_a, "\",\"%s\",\"phoenix_gen_api\",{\"request_id\":\"", TOPIC);
        int b = asprintf(&tpl_b, "\",\"service\":\"%s\",\"request_type\":\"%s\",\"version\":\"%s\","
                         "\"args\":%s}]", SERVICE, RTYPE, VERSION, ARGS);
        join_len = asprintf(&join, "[\"1\",\"1\",\"%s\",\"phx_join\",{}]", TOPIC);
        if (a < 0 || b < 0 || join_len < 0) die("asprintf");
        tpl_a_len = (size_t)a;
        tpl_b_len = (size_t)b;
        preq = malloc(6 + tpl_a_len + tpl_b_len + 48);
        evt_lim = 96 + strlen(TOPIC); /* ["<join_ref>","<ref>","TOPIC","<event>" fits */
        for (PR = 1024; PR < 4u * (unsigned)P; PR <<= 1) {}
    }
    hist = calloc(HIST_N + HIST2_N, sizeof *hist);
    conn_t *cs = calloc((size_t)C, sizeof *cs);
    int ep = epoll_create1(0);
    uint64_t tc0 = now_ns();
    for (int i = 0; i < C; i++) {
        conn_t *c = &cs[i];
        c->rbuf = malloc(RBUF);
        c->fd = connect_ws(port, c);
        size_t slots = TOPIC ? PR : (size_t)P;
        c->ts = calloc(slots, sizeof(uint64_t));
        c->ids = calloc(slots, sizeof(uint64_t));
        c->pushed = calloc(slots, 1);
        if (!c->rbuf || !c->ts || !c->ids || !c->pushed) die("calloc");
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    }
    double connect_s = (now_ns() - tc0) / 1e9;
    uint64_t t = now_ns();
    for (int i = 0; i < C; i++) {
        if (TOPIC) { /* requests start on the join's ok reply */
            put_frame(&cs[i], join, (size_t)join_len);
            cs[i].ref = 1;
        } else {
            for (int k = 0; k < P; k++) push_request(&cs[i], t);
        }
        flush(&cs[i]);
    }
    uint64_t t_start = t + (uint64_t)(warm_s * 1e9), t_end = 0, t_meas0 = 0;
    double me0 = 0, srv0 = 0, me0s = 0, srv0s = 0, me1s = 0, srv1s = 0;
    core_t c0[64], c1[64];
    int nc0 = 0, nc1 = 0;
    struct epoll_event evs[256];
    uint64_t idle_ns = 0, t_poll = 0;
    for (;;) {
        if (SPIN) t_poll = now_ns();
        int n = epoll_wait(ep, evs, 256, SPIN ? 0 : 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        t = now_ns();
        if (SPIN && n <= 0 && phase == 1) idle_ns += t - t_poll;
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
            if (r == 0) { fprintf(stderr, "server closed a connection\n"); return 3; }
            if (r < 0) { if (errno == EAGAIN || errno == EINTR) continue; die("read"); }
            c->rlen += (size_t)r;
            parse(c, t);
            if (c->wlen) flush(c);
        }
        if (phase == 0 && t >= t_start) {
            nc0 = cores_snap(c0, 64);
            srv0 = spid ? proc_cpu_s(spid, &srv0s) : -1;
            me0 = cpu_self_s(&me0s);
            t_meas0 = now_ns();
            t_end = t_meas0 + (uint64_t)(dur_s * 1e9);
            phase = 1;
        } else if (phase == 1 && t >= t_end) {
            phase = 2;
            break;
        }
    }
    uint64_t t_meas1 = now_ns();
    double me1 = cpu_self_s(&me1s);
    double srv1 = spid ? proc_cpu_s(spid, &srv1s) : -1;
    nc1 = cores_snap(c1, 64);
    double el = (t_meas1 - t_meas0) / 1e9;
    /* let in-flight replies arrive (phase 2 sends nothing new) */
    uint64_t t_quiet_end = now_ns() + 300000000ull;
    while (now_ns() < t_quiet_end) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
            if (r <= 0) continue;
            c->rlen += (size_t)r;
            parse(c, now_ns());
        }
    }
    uint64_t unanswered = 0, not_joined = 0;
    for (int i = 0; i < C; i++) {
        if (!TOPIC || cs[i].state == 1) unanswered += cs[i].count;
        else if (cs[i].state == 0) not_joined++;
    }
    uint64_t errors = join_errors + not_joined + verify_fail + push_errors + reply_errors +
                      missing_pushes + unknown_replies + stray_pushes + table_overflows + unanswered;
    /* close handshake (1000 OK), then drain until the server closes (max ~2 s),
       so no connection is closed with unread data (which would send a RST) */
    static const unsigned char closef[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8};
    for (int i = 0; i < C; i++) { (void)!write(cs[i].fd, closef, sizeof closef); }
    int open_conns = C;
    uint64_t t_drain_end = now_ns() + 2000000000ull;
    while (open_conns > 0 && now_ns() < t_drain_end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->rbuf, RBUF);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                open_conns--;
            }
        }
    }
    for (int i = 0; i < C; i++) if (cs[i].fd >= 0) close(cs[i].fd);

    printf("{\"client\": \"c\", \"connections\": %d, \"pipeline\": %d, \"warmup_s\": %g, "
           "\"window_s\": %.3f, \"connect_s\": %.3f, \"replies\": %llu, \"msgs_per_s\": %.1f, "
           "\"calls_per_s\": %.1f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
           "\"client_cpu_pct\": %.1f, \"client_sys_pct\": %.1f, \"server_cpu_pct\": ",
           C, P, warm_s, el, connect_s, (unsigned long long)measured, measured / el, measured / el,
           hist_pct(50), hist_pct(90), hist_pct(99), lat_max / 1000.0,
           100.0 * (me1 - me0) / el, 100.0 * (me1s - me0s) / el);
    if (spid && srv0 >= 0 && srv1 >= 0)
        printf("%.1f, \"server_sys_pct\": %.1f", 100.0 * (srv1 - srv0) / el,
               100.0 * (srv1s - srv0s) / el);
    else printf("null, \"server_sys_pct\": null");
    printf(", \"cores\": {");
    for (int i = 0; i < nc0 && i < nc1; i++) {
        double tot = (double)(c1[i].total - c0[i].total);
        printf("%s\"cpu%d\": {\"busy_pct\": %.1f, \"steal_pct\": %.1f}", i ? ", " : "", i,
               tot > 0 ? 100.0 * (c1[i].busy - c0[i].busy) / tot : 0,
               tot > 0 ? 100.0 * (c1[i].steal - c0[i].steal) / tot : 0);
    }
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    printf("}, \"client_affinity\": [");
    for (int i = 0, first = 1; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set)) { printf("%s%d", first ? "" : ", ", i); first = 0; }
    printf("], \"unexpected_disconnects\": 0, \"verify\": %s, \"verify_failures\": %llu, "
           "\"unanswered\": %llu, \"errors\": %llu, \"mode\": \"%s\"", VERIFY ? "true" : "false",
           (unsigned long long)verify_fail, (unsigned long long)unanswered,
           (unsigned long long)errors, TOPIC ? "phoenix" : "echo");
    if (TOPIC)
        printf(", \"joined\": %llu, \"join_errors\": %llu, \"not_joined\": %llu, \"pushes\": %llu, "
               "\"push_errors\": %llu, \"reply_errors\": %llu, \"missing_pushes\": %llu, "
               "\"unknown_replies\": %llu, \"stray_pushes\": %llu, \"table_overflows\": %llu, "
               "\"out_of_order\": %llu",
               (unsigned long long)joined, (unsigned long long)join_errors,
               (unsigned long long)not_joined, (unsigned long long)pushes,
               (unsigned long long)push_errors, (unsigned long long)reply_errors,
               (unsigned long long)missing_pushes, (unsigned long long)unknown_replies,
               (unsigned long long)stray_pushes, (unsigned long long)table_overflows,
               (unsigned long long)out_of_order);
    if (SPIN) printf(", \"spin\": true, \"client_idle_pct\": %.1f", 100.0 * idle_ns / 1e9 / el);
    printf("}\n");
    return (measured == 0 || errors) ? 1 : 0;
}

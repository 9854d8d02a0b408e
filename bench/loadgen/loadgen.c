/*
 * bench/loadgen/loadgen.c: the benchmark's load generator, compiled so that it is never the
 * bottleneck (a Python client tops out well below what one server core can answer).
 *
 * It replays a file of pre-encoded requests, byte for byte, over M keep-alive TCP connections:
 * framed Thrift binary calls (bidfilter, the thread-pool baseline) or HTTP/1.1 POSTs (MLServer).
 * Requests are pipelined; every server under test answers a connection's requests in order, so
 * a per-connection FIFO of send times pairs each response with its request (no sequence ids).
 *
 *   open loop   (--mode open --rate R): request i has the intended send time t0 + i / R and goes
 *               out as soon as the clock passes it, on connection i mod M, whatever is still in
 *               flight. Latency runs from the intended time, so a server (or a generator) that
 *               falls behind shows it in the latencies: no coordinated omission.
 *   closed loop (--mode closed --depth K): K requests in flight per connection; each answer
 *               sends the next. Throughput is what the server sustains; latency runs from the
 *               actual send.
 *
 * Every run is bounded: sending stops after --duration seconds (open loop: after R x duration
 * requests at most), requests still in flight get --drain seconds, and a hard deadline ends the
 * process regardless. Output: one JSON object (counts, outcomes, latency percentiles from a
 * log-linear histogram with 1/512 relative resolution, achieved rate, and this process's own
 * CPU time from getrusage, so the harness can show the generator's headroom).
 *
 * Requests file: records of [u32 little-endian length][bytes], each a complete wire message.
 * Build: gcc -O2 -o loadgen loadgen.c   (Linux: epoll, timerfd; no other library)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 1024
#define MAX_MESSAGE (16u << 20)  /* a response larger than this is a protocol error */
#define MAX_OUT_BUFFER (64u << 20)
#define MAX_BURST 1024           /* open loop: at most this many late sends before reading */
#define HARD_DEADLINE_EXTRA_S 5.0

/* ------------------------------------------------------------------------------------------ */
/* time */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void fail(const char *message) {
    fprintf(stderr, "loadgen: %s\n", message);
    exit(2);
}

/* ------------------------------------------------------------------------------------------ */
/* histogram: values in ns; exact below 1024 ns, then 512 sub-buckets per power of two */

#define SUB_BITS 9
#define SUB_COUNT (1u << SUB_BITS)
#define HIST_BUCKETS (1024 + 54 * SUB_COUNT)

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
    double sum;
} histogram;

static unsigned bucket_of(uint64_t v) {
    if (v < 1024) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 10 */
    unsigned shift = e - SUB_BITS;
    unsigned index = 1024 + (e - 10) * SUB_COUNT + (unsigned)((v >> shift) - SUB_COUNT);
    return index < HIST_BUCKETS ? index : HIST_BUCKETS - 1;
}

static uint64_t bucket_upper(unsigned index) {
    if (index < 1024) return index;
    unsigned e = 10 + (index - 1024) / SUB_COUNT;
    uint64_t sub = SUB_COUNT + (index - 1024) % SUB_COUNT;
    unsigned shift = e - SUB_BITS;
    return ((sub + 1) << shift) - 1;
}

static void record(histogram *h, uint64_t v) {
    h->counts[bucket_of(v)]++;
    h->total++;
    h->sum += (double)v;
    if (v > h->max) h->max = v;
}

/* The q-th percentile (0..100) in ns: the upper edge of the bucket holding it (<= max). */
static uint64_t percentile(const histogram *h, double q) {
    if (h->total == 0) return 0;
    uint64_t rank = (uint64_t)((q / 100.0) * (double)h->total + 0.5);
    if (rank < 1) rank = 1;
    if (rank > h->total) rank = h->total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t upper = bucket_upper(i);
            return upper < h->max ? upper : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------------------------------ */
/* the requests to replay */

typedef struct {
    const uint8_t *data;
    uint32_t size;
} message;

static message *messages;
static size_t message_count;

static void load_requests(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    if (fseek(f, 0, SEEK_END) != 0) die(path);
    long size = ftell(f);
    if (size <= 0) fail("requests file is empty");
    rewind(f);
    uint8_t *all = malloc((size_t)size);
    if (!all || fread(all, 1, (size_t)size, f) != (size_t)size) die(path);
    fclose(f);
    size_t capacity = 1024, pos = 0;
    messages = malloc(capacity * sizeof *messages);
    while (pos + 4 <= (size_t)size) {
        uint32_t n = (uint32_t)all[pos] | (uint32_t)all[pos + 1] << 8 |
                     (uint32_t)all[pos + 2] << 16 | (uint32_t)all[pos + 3] << 24;
        pos += 4;
        if (n == 0 || pos + n > (size_t)size) fail("requests file: truncated record");
        if (message_count == capacity) {
            capacity *= 2;
            messages = realloc(messages, capacity * sizeof *messages);
            if (!messages) fail("out of memory");
        }
        messages[message_count].data = all + pos;
        messages[message_count].size = n;
        message_count++;
        pos += n;
    }
    if (pos != (size_t)size || message_count == 0) fail("requests file: bad framing");
}

/* ------------------------------------------------------------------------------------------ */
/* response parsing: framed Thrift binary replies, or HTTP/1.1 responses with Content-Length */

enum kind { KIND_THRIFT, KIND_HTTP };

/* What one response was. Thrift: the FilterResponse outcome (0 SCORED .. 4), or an error. */
enum result {
    R_OUTCOME_0 = 0, /* ..R_OUTCOME_0 + 4: Thrift outcomes */
    R_OUTCOME_OTHER = 5,
    R_HTTP_OK = 6,
    R_HTTP_ERROR = 7,
    R_THRIFT_EXCEPTION = 8,      /* TApplicationException */
    R_THRIFT_INVALID_REQUEST = 9,
    R_COUNT = 10
};
static const char *result_names[R_COUNT] = {
    "scored", "fail_open_no_model", "fail_open_deadline", "fail_open_overload",
    "fail_open_error", "outcome_other", "http_ok", "http_error", "thrift_exception",
    "invalid_request"};

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    int bad;
} reader;

static uint32_t read_u32(reader *r) {
    if (r->end - r->p < 4) { r->bad = 1; return 0; }
    uint32_t v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 |
                 (uint32_t)r->p[3];
    r->p += 4;
    return v;
}

static void advance(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) { r->bad = 1; r->p = r->end; return; }
    r->p += n;
}

static void skip_value(reader *r, uint8_t type, int depth);

static void skip_struct(reader *r, int depth) {
    if (depth > 64) { r->bad = 1; return; }
    while (!r->bad) {
        if (r->p >= r->end) { r->bad = 1; return; }
        uint8_t type = *r->p++;
        if (type == 0) return; /* STOP */
        advance(r, 2);         /* field id */
        skip_value(r, type, depth + 1);
    }
}

static void skip_value(reader *r, uint8_t type, int depth) {
    if (depth > 64) { r->bad = 1; return; }
    switch (type) {
    case 2: case 3: advance(r, 1); break;                 /* bool, byte */
    case 4: case 10: advance(r, 8); break;                /* double, i64 */
    case 6: advance(r, 2); break;                         /* i16 */
    case 8: advance(r, 4); break;                         /* i32 */
    case 11: { uint32_t n = read_u32(r); advance(r, n); break; } /* string / binary */
    case 12: skip_struct(r, depth + 1); break;
    case 13: {                                            /* map */
        if (r->end - r->p < 2) { r->bad = 1; return; }
        uint8_t kt = r->p[0], vt = r->p[1];
        r->p += 2;
        uint32_t n = read_u32(r);
        for (uint32_t i = 0; i < n && !r->bad; i++) { skip_value(r, kt, depth + 1); skip_value(r, vt, depth + 1); }
        break;
    }
    case 14: case 15: {                                   /* set, list */
        if (r->p >= r->end) { r->bad = 1; return; }
        uint8_t et = *r->p++;
        uint32_t n = read_u32(r);
        for (uint32_t i = 0; i < n && !r->bad; i++) skip_value(r, et, depth + 1);
        break;
    }
    default: r->bad = 1;
    }
}

/* A framed binary reply body (without its 4-byte length): which result it carries, -1 if bad. */
static int thrift_result(const uint8_t *body, size_t size) {
    reader r = {body, body + size, 0};
    uint32_t version = read_u32(&r);
    if (r.bad || (version & 0xffff0000u) != 0x80010000u) return -1;
    uint8_t message_type = (uint8_t)(version & 0xff);
    uint32_t name_length = read_u32(&r);
    advance(&r, name_length);
    read_u32(&r); /* seqid */
    if (r.bad) return -1;
    if (message_type == 3) return R_THRIFT_EXCEPTION;
    if (message_type != 2) return -1;
    int result = -1;
    while (!r.bad) { /* the method's result struct: field 0 = success, 1 = InvalidRequest */
        if (r.p >= r.end) return -1;
        uint8_t type = *r.p++;
        if (type == 0) break;
        if (r.end - r.p < 2) return -1;
        int16_t id = (int16_t)((uint16_t)r.p[0] << 8 | r.p[1]);
        r.p += 2;
        if (id == 0 && type == 12) { /* FilterResponse: find field 4, outcome (i32) */
            int outcome = -1;
            while (!r.bad) {
                if (r.p >= r.end) return -1;
                uint8_t ftype = *r.p++;
                if (ftype == 0) break;
                if (r.end - r.p < 2) return -1;
                int16_t fid = (int16_t)((uint16_t)r.p[0] << 8 | r.p[1]);
                r.p += 2;
                if (fid == 4 && ftype == 8) outcome = (int)read_u32(&r);
                else skip_value(&r, ftype, 1);
            }
            result = (outcome >= 0 && outcome <= 4) ? R_OUTCOME_0 + outcome : R_OUTCOME_OTHER;
        } else if (id == 1) {
            skip_value(&r, type, 1);
            result = R_THRIFT_INVALID_REQUEST;
        } else {
            skip_value(&r, type, 1);
        }
    }
    return r.bad ? -1 : result;
}

/* How many bytes the first complete response in buf takes (0: incomplete, -1: bad), and what
 * it was. */
static long next_response(enum kind kind, const uint8_t *buf, size_t size, int *result) {
    if (kind == KIND_THRIFT) {
        if (size < 4) return 0;
        uint32_t length = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
                          (uint32_t)buf[2] << 8 | buf[3];
        if (length == 0 || length > MAX_MESSAGE) return -1;
        if (size < 4 + (size_t)length) return 0;
        *result = thrift_result(buf + 4, length);
        return *result < 0 ? -1 : (long)(4 + length);
    }
    /* HTTP/1.1: status line and headers, then Content-Length bytes */
    const uint8_t *head_end = memmem(buf, size, "\r\n\r\n", 4);
    if (!head_end) return size > 65536 ? -1 : 0;
    size_t head = (size_t)(head_end - buf) + 4;
    if (size < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
    int status = atoi((const char *)buf + 9);
    long content_length = -1;
    const uint8_t *line = memchr(buf, '\n', head);
    while (line && line + 1 < head_end) {
        line++;
        if ((size_t)(head_end - line) > 15 && strncasecmp((const char *)line, "content-length:", 15) == 0)
            content_length = strtol((const char *)line + 15, NULL, 10);
        line = memchr(line, '\n', (size_t)(head_end + 2 - line));
    }
    if (content_length < 0 || content_length > (long)MAX_MESSAGE) return -1;
    if (size < head + (size_t)content_length) return 0;
    *result = status == 200 ? R_HTTP_OK : R_HTTP_ERROR;
    return (long)(head + (size_t)content_length);
}

/* ------------------------------------------------------------------------------------------ */
/* connections */

typedef struct {
    int fd;
    int open;
    int want_write;
    uint8_t *out;
    size_t out_start, out_end, out_capacity;
    uint8_t *in;
    size_t in_size, in_capacity;
    uint64_t *fifo; /* send times (intended in open loop) of the requests in flight */
    size_t fifo_head, fifo_count, fifo_capacity;
} connection;

static connection connections[MAX_CONNECTIONS];
static int connection_count;
static int epoll_fd;

/* counters */
static uint64_t sent, answered, answered_in_window, not_sent, connection_errors, lost_in_flight;
static uint64_t protocol_errors, inflight_limit_hits, results[R_COUNT];
static histogram latency, send_lag;

static void open_connection(connection *c, const char *host, int port, size_t fifo_capacity) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) fail("--host must be an IPv4 address");
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->open = 1;
    c->out_capacity = 1 << 16;
    c->out = malloc(c->out_capacity);
    c->in_capacity = 1 << 16;
    c->in = malloc(c->in_capacity);
    c->fifo_capacity = fifo_capacity;
    c->fifo = malloc(fifo_capacity * sizeof *c->fifo);
    if (!c->out || !c->in || !c->fifo) fail("out of memory");
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) die("epoll_ctl");
}

static void close_connection(connection *c) {
    if (!c->open) return;
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->open = 0;
    connection_errors++;
    lost_in_flight += c->fifo_count;
    c->fifo_count = 0;
}

static void set_want_write(connection *c, int want) {
    if (c->want_write == want || !c->open) return;
    c->want_write = want;
    struct epoll_event event = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &event);
}

static void flush(connection *c) {
    while (c->open && c->out_start < c->out_end) {
        ssize_t n = write(c->fd, c->out + c->out_start, c->out_end - c->out_start);
        if (n > 0) {
            c->out_start += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_want_write(c, 1);
            return;
        } else {
            close_connection(c);
            return;
        }
    }
    c->out_start = c->out_end = 0;
    set_want_write(c, 0);
}

/* Queue request `index` on c, stamped `stamp`; 0 if it could not be (closed, limits). */
static int enqueue(connection *c, uint64_t index, uint64_t stamp) {
    if (!c->open) { not_sent++; return 0; }
    if (c->fifo_count == c->fifo_capacity) { inflight_limit_hits++; not_sent++; return 0; }
    const message *m = &messages[index % message_count];
    if (c->out_end + m->size > c->out_capacity) {
        if (c->out_start > 0) { /* compact */
            memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
            c->out_end -= c->out_start;
            c->out_start = 0;
        }
        while (c->out_end + m->size > c->out_capacity) {
            if (c->out_capacity >= MAX_OUT_BUFFER) { inflight_limit_hits++; not_sent++; return 0; }
            c->out_capacity *= 2;
            c->out = realloc(c->out, c->out_capacity);
            if (!c->out) fail("out of memory");
        }
    }
    memcpy(c->out + c->out_end, m->data, m->size);
    c->out_end += m->size;
    c->fifo[(c->fifo_head + c->fifo_count) % c->fifo_capacity] = stamp;
    c->fifo_count++;
    sent++;
    return 1;
}

/* Read what is there and account for every complete response; returns how many completed. */
static size_t drain_input(connection *c, enum kind kind, uint64_t window_end) {
    size_t completed = 0;
    for (;;) {
        if (c->in_size == c->in_capacity) {
            if (c->in_capacity >= 2 * MAX_MESSAGE) { protocol_errors++; close_connection(c); return completed; }
            c->in_capacity *= 2;
            c->in = realloc(c->in, c->in_capacity);
            if (!c->in) fail("out of memory");
        }
        ssize_t n = read(c->fd, c->in + c->in_size, c->in_capacity - c->in_size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) { close_connection(c); return completed; }
        c->in_size += (size_t)n;
        uint64_t now = now_ns();
        size_t pos = 0;
        for (;;) {
            int result = -1;
            long used = next_response(kind, c->in + pos, c->in_size - pos, &result);
            if (used == 0) break;
            if (used < 0 || c->fifo_count == 0) {
                protocol_errors++;
                close_connection(c);
                return completed;
            }
            uint64_t stamp = c->fifo[c->fifo_head];
            c->fifo_head = (c->fifo_head + 1) % c->fifo_capacity;
            c->fifo_count--;
            record(&latency, now > stamp ? now - stamp : 0);
            results[result]++;
            answered++;
            if (now <= window_end) answered_in_window++;
            completed++;
            pos += (size_t)used;
        }
        if (pos > 0) {
            memmove(c->in, c->in + pos, c->in_size - pos);
            c->in_size -= pos;
        }
    }
    return completed;
}

static size_t in_flight(void) {
    size_t total = 0;
    for (int i = 0; i < connection_count; i++) total += connections[i].fifo_count;
    return total;
}

/* ------------------------------------------------------------------------------------------ */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P --requests FILE [--host 127.0.0.1] [--kind thrift|http]\n"
            "               [--mode open|closed] [--rate R] [--duration S] [--connections M]\n"
            "               [--depth K] [--drain S] [--max-in-flight N] [--out FILE]\n");
    exit(2);
}

static void print_us(FILE *out, const char *name, const histogram *h) {
    fprintf(out,
            "\"%s\": {\"count\": %llu, \"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, "
            "\"p99\": %.3f, \"p99_9\": %.3f, \"max\": %.3f}",
            name, (unsigned long long)h->total, h->total ? h->sum / (double)h->total / 1e3 : 0.0,
            percentile(h, 50) / 1e3, percentile(h, 90) / 1e3, percentile(h, 99) / 1e3,
            percentile(h, 99.9) / 1e3, h->max / 1e3);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *requests_path = NULL, *out_path = NULL;
    const char *mode = "open", *kind_name = "thrift";
    int port = 0, depth = 1;
    double rate = 0, duration = 5, drain = 2;
    long max_in_flight = 65536;
    connection_count = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--requests")) requests_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--mode")) mode = v;
        else if (!strcmp(a, "--kind")) kind_name = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--drain")) drain = atof(v);
        else if (!strcmp(a, "--connections")) connection_count = atoi(v);
        else if (!strcmp(a, "--depth")) depth = atoi(v);
        else if (!strcmp(a, "--max-in-flight")) max_in_flight = atol(v);
        else usage();
        i++;
    }
    int open_loop = !strcmp(mode, "open");
    if (!requests_path || port <= 0 || port > 65535) usage();
    if (!open_loop && strcmp(mode, "closed")) usage();
    enum kind kind = !strcmp(kind_name, "http") ? KIND_HTTP : KIND_THRIFT;
    if (kind == KIND_THRIFT && strcmp(kind_name, "thrift")) usage();
    if (connection_count < 1 || connection_count > MAX_CONNECTIONS) fail("--connections: 1..1024");
    if (duration <= 0 || duration > 3600) fail("--duration: (0, 3600] seconds");
    if (drain < 0 || drain > 600) fail("--drain: [0, 600] seconds");
    if (open_loop && (rate <= 0 || rate > 10e6)) fail("--rate: (0, 1e7] per second in open loop");
    if (!open_loop && (depth < 1 || depth > 4096)) fail("--depth: 1..4096");
    if (max_in_flight < 1 || max_in_flight > (1L << 24)) fail("--max-in-flight: 1..2^24");
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake at the intended send time, not 50 us later */
    load_requests(requests_path);

    size_t per_connection = (size_t)(max_in_flight + connection_count - 1) / (size_t)connection_count;
    if (!open_loop && per_connection < (size_t)depth) per_connection = (size_t)depth;
    epoll_fd = epoll_create1(0);
    if (epoll_fd < 0) die("epoll_create1");
    for (int i = 0; i < connection_count; i++)
        open_connection(&connections[i], host, port, per_connection);
    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (timer_fd < 0) die("timerfd_create");
    struct epoll_event timer_event = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, timer_fd, &timer_event) != 0) die("epoll_ctl timer");

    struct rusage usage_start;
    getrusage(RUSAGE_SELF, &usage_start);
    const uint64_t t0 = now_ns() + 1000000; /* 1 ms from now: everything above is set up */
    const uint64_t window_end = t0 + (uint64_t)(duration * 1e9);
    const uint64_t drain_end = window_end + (uint64_t)(drain * 1e9);
    const uint64_t hard_end = drain_end + (uint64_t)(HARD_DEADLINE_EXTRA_S * 1e9);
    const uint64_t intended_total = open_loop ? (uint64_t)(rate * duration) : 0;
    const double interval_ns = open_loop ? 1e9 / rate : 0;
    uint64_t next = 0; /* the next request index to send */
    uint64_t last_answer = t0;
    int sending = 1;

    if (!open_loop) { /* closed loop: fill every connection to depth at t0 */
        while (now_ns() < t0) {}
        for (int i = 0; i < connection_count; i++) {
            for (int k = 0; k < depth; k++) enqueue(&connections[i], next++, now_ns());
            flush(&connections[i]);
        }
    }

    struct epoll_event events[256];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= hard_end) break;
        if (sending && now >= window_end) sending = 0;
        if (open_loop && sending) {
            if (next >= intended_total) {
                sending = 0;
            } else if (now >= t0) {
                uint64_t due = (uint64_t)((double)(now - t0) / interval_ns) + 1;
                if (due > intended_total) due = intended_total;
                int burst = 0;
                while (next < due && burst < MAX_BURST) {
                    uint64_t intended = t0 + (uint64_t)((double)next * interval_ns);
                    connection *c = &connections[next % (uint64_t)connection_count];
                    if (enqueue(c, next, intended)) record(&send_lag, now - intended);
                    next++;
                    burst++;
                }
                for (int i = 0; i < connection_count; i++)
                    if (connections[i].out_end > connections[i].out_start && !connections[i].want_write)
                        flush(&connections[i]);
            }
        }
        if (!sending && in_flight() == 0) break;
        if (!sending && now >= drain_end) break;
        if (open_loop && !sending && next < intended_total && now >= window_end) {
            not_sent += intended_total - next; /* could not keep up: those never left */
            next = intended_total;
        }
        /* sleep until the next intended send (open loop), or the end of the phase */
        uint64_t wake = sending ? window_end : drain_end;
        if (open_loop && sending && next < intended_total) {
            uint64_t intended = t0 + (uint64_t)((double)next * interval_ns);
            if (intended < wake) wake = intended;
        }
        int timeout_ms = -1;
        if (wake <= now_ns()) {
            timeout_ms = 0;
        } else {
            struct itimerspec spec = {{0, 0}, {(time_t)(wake / 1000000000ull), (long)(wake % 1000000000ull)}};
            if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) != 0) die("timerfd_settime");
        }
        int n = epoll_wait(epoll_fd, events, 256, timeout_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            connection *c = events[i].data.ptr;
            if (c && !c->open) continue; /* closed earlier in this batch */
            if (!c) {
                uint64_t expirations;
                ssize_t r = read(timer_fd, &expirations, sizeof expirations);
                (void)r;
                continue;
            }
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                size_t done = drain_input(c, kind, window_end);
                if (done) last_answer = now_ns();
                if (!open_loop && c->open && now_ns() < window_end) {
                    for (size_t k = 0; k < done; k++) enqueue(c, next++, now_ns());
                }
            }
            if (c->open && (c->out_end > c->out_start) &&
                ((events[i].events & EPOLLOUT) || !c->want_write))
                flush(c);
        }
    }
    uint64_t finished = now_ns();
    struct rusage usage_end;
    getrusage(RUSAGE_SELF, &usage_end);
    size_t unanswered = in_flight();
    for (int i = 0; i < connection_count; i++)
        if (connections[i].open) close(connections[i].fd);

    double user_s = (double)(usage_end.ru_utime.tv_sec - usage_start.ru_utime.tv_sec) +
                    (double)(usage_end.ru_utime.tv_usec - usage_start.ru_utime.tv_usec) / 1e6;
    double sys_s = (double)(usage_end.ru_stime.tv_sec - usage_start.ru_stime.tv_sec) +
                   (double)(usage_end.ru_stime.tv_usec - usage_start.ru_stime.tv_usec) / 1e6;
    double wall_s = (double)(finished - t0) / 1e9;
    /* Achieved rate: answers inside the sending window over the window (closed loop), or all
     * answers over the time from t0 to the last answer (open loop: the offered rate if kept). */
    double elapsed_s = open_loop ? (double)(last_answer - t0) / 1e9 : duration;
    if (open_loop && elapsed_s < duration) elapsed_s = duration;
    double achieved = elapsed_s > 0 ? (double)(open_loop ? answered : answered_in_window) / elapsed_s : 0;

    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) die(out_path);
    fprintf(out, "{\"mode\": \"%s\", \"kind\": \"%s\", \"connections\": %d, ", open_loop ? "open" : "closed",
            kind == KIND_HTTP ? "http" : "thrift", connection_count);
    if (open_loop) fprintf(out, "\"offered_rate\": %.3f, \"depth\": null, ", rate);
    else fprintf(out, "\"offered_rate\": null, \"depth\": %d, ", depth);
    fprintf(out,
            "\"duration_s\": %.3f, \"intended\": %llu, \"sent\": %llu, \"answered\": %llu, "
            "\"answered_in_window\": %llu, \"unanswered\": %zu, \"not_sent\": %llu, ",
            duration, (unsigned long long)(open_loop ? intended_total : sent),
            (unsigned long long)sent, (unsigned long long)answered,
            (unsigned long long)answered_in_window, unanswered, (unsigned long long)not_sent);
    fprintf(out,
            "\"errors\": {\"connection\": %llu, \"lost_in_flight\": %llu, \"protocol\": %llu, "
            "\"in_flight_limit\": %llu}, \"results\": {",
            (unsigned long long)connection_errors, (unsigned long long)lost_in_flight,
            (unsigned long long)protocol_errors, (unsigned long long)inflight_limit_hits);
    for (int r = 0; r < R_COUNT; r++)
        fprintf(out, "%s\"%s\": %llu", r ? ", " : "", result_names[r], (unsigned long long)results[r]);
    fprintf(out, "}, \"elapsed_s\": %.6f, \"achieved_rate\": %.3f, ", elapsed_s, achieved);
    print_us(out, "latency_us", &latency);
    fprintf(out, ", ");
    print_us(out, "send_lag_us", &send_lag);
    fprintf(out,
            ", \"cpu_user_s\": %.6f, \"cpu_system_s\": %.6f, \"cpu_s\": %.6f, \"wall_s\": %.6f, "
            "\"cpu_share\": %.6f, \"requests_in_file\": %zu}\n",
            user_s, sys_s, user_s + sys_s, wall_s, wall_s > 0 ? (user_s + sys_s) / wall_s : 0,
            message_count);
    if (out != stdout) fclose(out);
    return 0;
}

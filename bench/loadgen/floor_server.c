/*
 * bench/loadgen/floor_server.c: the benchmark's floor. A server that does no work: it answers
 * every framed Thrift message with the same pre-encoded reply (a real bidfilter reply for the
 * replayed candidates, written by the harness). Run like the systems under test, it shows what
 * this machine, its loopback TCP and the load generator give by themselves: the CPU a server
 * pays the kernel per request, and the latency tail no server on this machine can beat.
 *
 * With --work-us W it also spins W microseconds of CPU per request before answering: a server
 * with no overhead of its own that spends what another server spends per request. Its latency
 * is then what that much CPU per request gets on this machine, whatever the implementation.
 *
 * One thread, epoll, non-blocking sockets; each connection's replies for one read leave in one
 * write (what bidfilter does too). It stops on SIGTERM or SIGINT, or when its parent exits.
 *
 * Usage: floor_server --port P --reply FILE [--host 127.0.0.1] [--work-us W]
 * Build: gcc -O2 -o floor_server floor_server.c   (Linux: epoll; no other library)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME (16u << 20)  /* a larger frame length closes the connection */
#define MAX_REPLY (1u << 20)
#define MAX_OUT (64u << 20)    /* replies not yet taken by a client that stopped reading */

typedef struct {
    int fd;
    uint8_t *in;
    size_t in_size, in_capacity;
    uint8_t *out;
    size_t out_start, out_end, out_capacity;
    int want_write;
} connection;

static uint8_t reply[MAX_REPLY];
static size_t reply_size;
static int epoll_fd;
static uint64_t work_ns;
static volatile sig_atomic_t stopping;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The stand-in for a request's work: busy, on the CPU, for work_ns. */
static void work(void) {
    if (work_ns == 0) return;
    uint64_t end = now_ns() + work_ns;
    while (now_ns() < end) {}
}

static void on_signal(int signal_number) { (void)signal_number; stopping = 1; }

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void fail(const char *message) {
    fprintf(stderr, "floor_server: %s\n", message);
    exit(2);
}

static void drop(connection *c) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static void set_want_write(connection *c, int want) {
    if (c->want_write == want) return;
    c->want_write = want;
    struct epoll_event event = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &event);
}

/* Write what is queued; 0 if the connection had to be dropped. */
static int flush(connection *c) {
    while (c->out_start < c->out_end) {
        ssize_t n = write(c->fd, c->out + c->out_start, c->out_end - c->out_start);
        if (n > 0) {
            c->out_start += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_want_write(c, 1);
            return 1;
        } else {
            drop(c);
            return 0;
        }
    }
    c->out_start = c->out_end = 0;
    set_want_write(c, 0);
    return 1;
}

/* Queue one reply; 0 if the client let too many pile up (it is dropped). */
static int queue_reply(connection *c) {
    if (c->out_end + reply_size > c->out_capacity) {
        memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
        c->out_end -= c->out_start;
        c->out_start = 0;
        while (c->out_end + reply_size > c->out_capacity) {
            if (c->out_capacity >= MAX_OUT) { drop(c); return 0; }
            c->out_capacity *= 2;
            c->out = realloc(c->out, c->out_capacity);
            if (!c->out) fail("out of memory");
        }
    }
    memcpy(c->out + c->out_end, reply, reply_size);
    c->out_end += reply_size;
    return 1;
}

/* Read what is there, queue a reply per complete frame, write; 0 if the connection is gone. */
static int serve(connection *c) {
    for (;;) {
        if (c->in_size == c->in_capacity) {
            c->in_capacity *= 2;
            c->in = realloc(c->in, c->in_capacity);
            if (!c->in) fail("out of memory");
        }
        size_t room = c->in_capacity - c->in_size;
        ssize_t n = read(c->fd, c->in + c->in_size, room);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) { drop(c); return 0; }
        c->in_size += (size_t)n;
        size_t pos = 0;
        while (c->in_size - pos >= 4) {
            const uint8_t *p = c->in + pos;
            uint32_t length = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            if (length > MAX_FRAME) { drop(c); return 0; }
            if (c->in_size - pos < 4 + (size_t)length) break;
            pos += 4 + (size_t)length;
            work();
            if (!queue_reply(c)) return 0;
        }
        memmove(c->in, c->in + pos, c->in_size - pos);
        c->in_size -= pos;
        if ((size_t)n < room) break; /* the socket had no more */
    }
    return flush(c);
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return; /* EAGAIN, or a client that left before we got to it */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        connection *c = calloc(1, sizeof *c);
        if (!c) fail("out of memory");
        c->fd = fd;
        c->in_capacity = c->out_capacity = 1 << 16;
        c->in = malloc(c->in_capacity);
        c->out = malloc(c->out_capacity);
        if (!c->in || !c->out) fail("out of memory");
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) die("epoll_ctl");
    }
}

static void usage(void) {
    fprintf(stderr, "usage: floor_server --port P --reply FILE [--host 127.0.0.1] [--work-us W]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *reply_path = NULL;
    int port = 0;
    double work_us = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--reply")) reply_path = v;
        else if (!strcmp(a, "--work-us")) work_us = atof(v);
        else usage();
    }
    if (!reply_path || port <= 0 || port > 65535) usage();
    if (!(work_us >= 0 && work_us <= 1e6)) fail("--work-us: 0 to 1000000 microseconds");
    work_ns = (uint64_t)(work_us * 1000.0);
    FILE *file = fopen(reply_path, "rb");
    if (!file) die(reply_path);
    reply_size = fread(reply, 1, sizeof reply, file);
    int too_big = fgetc(file) != EOF;
    fclose(file);
    if (reply_size < 4 || too_big) fail("--reply: one framed message of 4 bytes to 1 MiB");

    prctl(PR_SET_PDEATHSIG, SIGTERM);
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    signal(SIGPIPE, SIG_IGN);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (listener < 0) die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) fail("--host must be an IPv4 address");
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0) die("bind");
    if (listen(listener, 128) != 0) die("listen");
    epoll_fd = epoll_create1(0);
    if (epoll_fd < 0) die("epoll_create1");
    struct epoll_event listen_event = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &listen_event) != 0) die("epoll_ctl");
    fprintf(stderr, "floor_server: listening on %s:%d\n", host, port);

    struct epoll_event events[256];
    while (!stopping) {
        int n = epoll_wait(epoll_fd, events, 256, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            connection *c = events[i].data.ptr;
            if (!c) { accept_all(listener); continue; }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (!serve(c)) continue;
            }
            if (events[i].events & EPOLLOUT) flush(c);
        }
    }
    return 0;
}

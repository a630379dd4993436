/*
 * loadgen: an epoll MQTT 3.1.1 / 5 load generator for greenfly's benchmarks.
 *
 * One process, one thread, many non-blocking connections. It must never be the bottleneck,
 * so the hot path does no encoding: every publisher owns a pre-encoded batch of PUBLISH
 * packets (already framed and masked for WebSocket) and only patches a few fixed offsets
 * (packet id, sequence number, timestamp) before writing the whole batch with one send().
 *
 * Every payload starts with a 24-byte header: magic "GFLY", stream id (the publisher, or the
 * session in fill/drain mode), sequence number, send time (CLOCK_MONOTONIC ns). Subscribers
 * check the sequence numbers of each stream with a bitmap: late arrivals are reorders,
 * repeats are duplicates, and what never arrived by the end of the drain is lost. For QoS 1
 * and 2 (or with --strict) a loss, a reorder, or a message nobody sent fails the run.
 *
 * Modes (the runner, bench/run.py, drives them; --help lists the options):
 *   flow   P publishers -> S subscribers (fan-in: --pubs 10 --subs 1; fan-out: --pubs 1
 *          --subs 100), QoS 0, 1 or 2 (window W of unacknowledged PUBLISHes per publisher;
 *          a QoS 2 one is acknowledged by its PUBCOMP, and a subscriber answers PUBREC, then
 *          PUBCOMP to the PUBREL, as the spec's receiver does),
 *          for --duration seconds after --warmup, or --count messages per publisher;
 *          --rate R paces all publishers to R msgs/s in total (latency mode). --max-lead N
 *          keeps each QoS 0 publisher at most N messages ahead of its slowest subscriber,
 *          so a broker with unlimited queues measures its sustained rate instead of
 *          queueing without bound (and one that drops QoS 0 is not pushed into dropping).
 *   idle   open --conns K connections (keepalive 30) --parallel at a time, report
 *          connects/s, hold them --hold seconds (sending PINGREQ when due) and sample the
 *          broker's VmRSS (--broker-pid) before, when all are connected, and at the end.
 *   fill   --sessions N persistent sessions (clean session 0) subscribe to a topic each and
 *          disconnect; then --pubs publishers queue --per-session QoS 1 messages for each.
 *   drain  reconnect those sessions (after the broker restarted; --wait-port polls the port
 *          first) and check that every queued message arrives, in order; reports when the
 *          port accepted, when the first session got its first message, and when all did.
 *
 * MQTT 5 (--protocol-level 5) sends what MQTT.js and paho send with protocolVersion 5 and no
 * properties: CONNECT level 5 with property length 0 (a session expiry of 0xFFFFFFFF where
 * 3.1.1 would say clean session 0), SUBSCRIBE and PUBLISH with property length 0; it reads
 * v5 CONNACK, SUBACK and PUBACK (reason codes, properties skipped) and PUBLISHes with
 * properties. A CONNACK receive maximum below the QoS 1 window fails the run, and a server
 * DISCONNECT is reported with its reason code.
 *
 * Costs kept off the hot path: a QoS 1 window is refilled in steps of W/4 and a lead in
 * steps of a batch (not one message per PUBACK), and an unpaced run that reads only a few
 * bytes per recv() lets data gather for --coalesce-us before the next epoll_wait, because a
 * broker that writes one TCP segment per message would otherwise have us pay a wake-up and a
 * recv() per message or two. Paced runs never wait.
 *
 * Output: one JSON line on stdout. Exit status 0 ok, 1 the checker failed, 2 usage,
 * 3 connection, protocol or timeout failure. --selftest checks the checker and the parsers on
 * crafted input.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x594c4647u   /* "GFLY" read as a little-endian u32 */
#define PAYLOAD_HEADER 24   /* magic u32, stream u32, seq u64, send time u64 */
#define SEQ_LIMIT (1ull << 34)
#define MAX_EVENTS 1024
#define MAX_LIST 8          /* --pub-ports, --sub-ports, --cpu-pids */

enum { M_FLOW, M_IDLE, M_FILL, M_DRAIN };
enum { R_PUB, R_SUB, R_IDLE, R_SESS };
enum { S_NEW, S_TCP, S_WSHS, S_CONNACK, S_SUBACK, S_READY, S_BYE, S_CLOSED };
enum { PH_SETUP_SUBS, PH_SETUP_PUBS, PH_RUN, PH_DRAIN, PH_HOLD, PH_BYE, PH_FIRST, PH_REST,
       PH_DONE };

/* ---------------------------------------------------------------------------------------- */
/* small helpers                                                                              */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double now_s(void) { return (double)now_ns() / 1e9; }

static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) { /* xorshift64*: masks, keys and tags need no more */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* The broker's CPU seconds (utime + stime from /proc/PID/stat); -1 when unknown. */
static double proc_cpu(int pid) {
    char path[64], line[1024];
    if (pid <= 0) return -1;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt ut st */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Softirq seconds so far on CPU `cpu` (/proc/stat); -1 when unknown. Loopback TCP does the
   receiving side's protocol work in softirq on the sending CPU, which no process is charged
   for: a broker that writes one small segment per message pays much of its cost there.
   *busy: all non-idle time of that CPU, whoever used it. */
static double cpu_softirq(int cpu, double *busy) {
    char line[512], name[16];
    *busy = -1;
    if (cpu < 0) return -1;
    snprintf(name, sizeof name, "cpu%d ", cpu);
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    double v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, name, strlen(name))) {
            unsigned long long x[8]; /* user nice system idle iowait irq softirq steal */
            if (sscanf(line + strlen(name), "%llu %llu %llu %llu %llu %llu %llu %llu", &x[0],
                       &x[1], &x[2], &x[3], &x[4], &x[5], &x[6], &x[7]) == 8) {
                double tick = (double)sysconf(_SC_CLK_TCK);
                v = (double)x[6] / tick;
                *busy = (double)(x[0] + x[1] + x[2] + x[5] + x[6] + x[7]) / tick;
            }
            break;
        }
    fclose(f);
    return v;
}

/* A "VmRSS:"-style line of /proc/PID/status in KiB; -1 when unknown. */
static long proc_status_kib(int pid, const char *key) {
    char path[64], line[256];
    if (pid <= 0) return -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* options                                                                                    */

static struct {
    const char *host;
    int port, ws, ws_batch_frames;
    const char *ws_path;
    int mode, pubs, subs, qos, window, payload, batch;
    double duration, warmup, rate;
    uint64_t count, expect;
    int conns, parallel, keepalive;
    double hold;
    int sessions;
    uint64_t per_session;
    char tag[16];
    int sub_clean;
    double wait_port, timeout, drain_timeout, quiet, stall;
    int broker_pid, strict;
    uint64_t fault_swap, max_lead;
    int coalesce_us, broker_core;
    int level;            /* MQTT protocol level: 4 (3.1.1) or 5 */
    /* Several brokers (cluster nodes): connection i of a role goes to ports[i % n], and the
       CPU of every process in cpu_pids (nodes, redis-server) is reported per process. */
    int pub_ports[MAX_LIST], n_pub_ports, sub_ports[MAX_LIST], n_sub_ports;
    int cpu_pids[MAX_LIST], n_cpu_pids;
} O;

/* ---------------------------------------------------------------------------------------- */
/* byte buffers                                                                               */

typedef struct {
    uint8_t *p;
    size_t off, len, cap; /* live bytes are p[off..len) */
} buf_t;

static void buf_init(buf_t *b, size_t cap) {
    b->p = xmalloc(cap);
    b->off = b->len = 0;
    b->cap = cap;
}

static void buf_free(buf_t *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static size_t buf_used(const buf_t *b) { return b->len - b->off; }

/* Room for n more bytes at the end (compacting first, growing only if needed). */
static void buf_need(buf_t *b, size_t n) {
    if (b->off == b->len) b->off = b->len = 0;
    if (b->len + n <= b->cap) return;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_put(buf_t *b, const void *d, size_t n) {
    buf_need(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void buf_consume(buf_t *b, size_t n) {
    b->off += n;
    if (b->off == b->len) b->off = b->len = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* MQTT and WebSocket encoding                                                                */

static size_t varint_put(uint8_t *p, uint32_t v) {
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        p[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

/* 1..4 = bytes used, 0 = incomplete, -1 = malformed. */
static int varint_get(const uint8_t *p, size_t avail, uint32_t *v) {
    uint32_t val = 0;
    for (int i = 0; i < 4; i++) {
        if ((size_t)i >= avail) return 0;
        val |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = val;
            return i + 1;
        }
    }
    return -1;
}

static size_t put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

static size_t put_str(uint8_t *p, const char *s) {
    size_t n = strlen(s);
    put_u16(p, (uint16_t)n);
    memcpy(p + 2, s, n);
    return n + 2;
}

/* A packet from its first byte and body: returns the total length written to out. */
static size_t mqtt_packet(uint8_t *out, uint8_t first, const uint8_t *body, size_t n) {
    size_t h = 0;
    out[h++] = first;
    h += varint_put(out + h, (uint32_t)n);
    memcpy(out + h, body, n);
    return h + n;
}

static size_t put_u32(uint8_t *p, uint32_t v) {
    put_u16(p, (uint16_t)(v >> 16));
    put_u16(p + 2, (uint16_t)v);
    return 4;
}

static size_t mqtt_connect(uint8_t *out, const char *client_id, int clean, int keepalive) {
    uint8_t body[512];
    size_t n = 0;
    n += put_str(body, "MQTT");
    body[n++] = (uint8_t)O.level;
    body[n++] = clean ? 0x02 : 0x00;
    n += put_u16(body + n, (uint16_t)keepalive);
    if (O.level == 5) {
        if (clean) {
            body[n++] = 0; /* property length 0 */
        } else { /* a session that outlives the connection: session expiry "never" */
            body[n++] = 5;
            body[n++] = 0x11;
            n += put_u32(body + n, 0xFFFFFFFFu);
        }
    }
    n += put_str(body + n, client_id);
    return mqtt_packet(out, 0x10, body, n);
}

static size_t mqtt_subscribe(uint8_t *out, uint16_t pid, const char *filter, int qos) {
    uint8_t body[512];
    size_t n = put_u16(body, pid);
    if (O.level == 5) body[n++] = 0; /* property length 0 */
    n += put_str(body + n, filter);
    body[n++] = (uint8_t)qos;
    return mqtt_packet(out, 0x82, body, n);
}

static size_t mqtt_publish(uint8_t *out, const char *topic, int qos, uint16_t pid,
                           const uint8_t *payload, size_t plen, size_t *off_pid,
                           size_t *off_payload) {
    size_t tlen = strlen(topic);
    size_t rl = 2 + tlen + (qos ? 2 : 0) + (O.level == 5 ? 1 : 0) + plen;
    size_t h = 0;
    out[h++] = (uint8_t)(0x30 | (qos << 1));
    h += varint_put(out + h, (uint32_t)rl);
    h += put_str(out + h, topic);
    if (off_pid) *off_pid = h;
    if (qos) h += put_u16(out + h, pid);
    if (O.level == 5) out[h++] = 0; /* property length 0: what MQTT.js sends */
    if (off_payload) *off_payload = h;
    memcpy(out + h, payload, plen);
    return h + plen;
}

/* MQTT 5 properties: the wire size of one property's value after its identifier at p, or
   0 for an unknown identifier or one that runs past end. Only what the broker may send. */
static size_t prop_size(uint8_t id, const uint8_t *p, const uint8_t *end) {
    size_t avail = (size_t)(end - p);
    uint32_t v;
    switch (id) {
    case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A:
        return avail >= 1 ? 1 : 0;
    case 0x13: case 0x21: case 0x22: case 0x23:
        return avail >= 2 ? 2 : 0;
    case 0x02: case 0x11: case 0x18: case 0x27:
        return avail >= 4 ? 4 : 0;
    case 0x0B: {
        int k = varint_get(p, avail, &v);
        return k > 0 ? (size_t)k : 0;
    }
    case 0x03: case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1A: case 0x1C:
    case 0x1F: {
        size_t n = avail >= 2 ? 2 + ((size_t)p[0] << 8 | p[1]) : 0;
        return n && n <= avail ? n : 0;
    }
    case 0x26: {
        size_t a = avail >= 2 ? 2 + ((size_t)p[0] << 8 | p[1]) : 0;
        if (!a || a + 2 > avail) return 0;
        size_t b = 2 + ((size_t)p[a] << 8 | p[a + 1]);
        return a + b <= avail ? a + b : 0;
    }
    default:
        return 0;
    }
}

/* The property block at body[*pos] (length varint, then properties): moves *pos past it.
   With want != 0, stores the first value of that u16 property in *found (if present).
   Returns 0 when malformed. */
static int props_skip(const uint8_t *body, size_t n, size_t *pos, uint8_t want,
                      uint32_t *found) {
    uint32_t len;
    if (*pos > n) return 0;
    int k = varint_get(body + *pos, n - *pos, &len);
    if (k <= 0 || *pos + (size_t)k + len > n) return 0;
    const uint8_t *p = body + *pos + k, *end = p + len;
    while (p < end) {
        uint8_t id = *p++;
        size_t sz = prop_size(id, p, end);
        if (!sz) return 0;
        if (want && id == want && sz == 2) *found = (uint32_t)(p[0] << 8 | p[1]);
        p += sz;
    }
    *pos += (size_t)k + len;
    return 1;
}

static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4]) {
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = ((uint64_t)k32 << 32) | k32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { /* i stays a multiple of 4, so the key lines up */
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ key[i & 3];
}

static size_t ws_header_len(size_t n, int masked) {
    return (n < 126 ? 2 : n < 65536 ? 4 : 10) + (masked ? 4 : 0);
}

/* A client frame header (FIN, binary, masked) for n payload bytes; the key goes after it. */
static size_t ws_header(uint8_t *out, uint8_t opcode, size_t n, const uint8_t key[4]) {
    size_t h = 0;
    out[h++] = 0x80 | opcode;
    if (n < 126) {
        out[h++] = 0x80 | (uint8_t)n;
    } else if (n < 65536) {
        out[h++] = 0x80 | 126;
        h += put_u16(out + h, (uint16_t)n);
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) out[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(out + h, key, 4);
    return h + 4;
}

static void random_key(uint8_t key[4]) {
    uint32_t r = (uint32_t)rnd();
    memcpy(key, &r, 4);
}

/* ---------------------------------------------------------------------------------------- */
/* the sequence checker                                                                      */

typedef struct {
    uint64_t next;   /* highest sequence number seen + 1 */
    uint64_t unique, dups, late, gaps, bogus;
    uint8_t *seen;   /* one bit per sequence number */
    uint64_t seen_bits;
} stream_t;

static void stream_add(stream_t *s, uint64_t seq) {
    if (seq >= SEQ_LIMIT) {
        s->bogus++;
        return;
    }
    if (seq >= s->seen_bits) {
        uint64_t bits = s->seen_bits ? s->seen_bits * 2 : 8192;
        while (bits <= seq) bits *= 2;
        s->seen = xrealloc(s->seen, bits / 8);
        memset(s->seen + s->seen_bits / 8, 0, (bits - s->seen_bits) / 8);
        s->seen_bits = bits;
    }
    uint8_t bit = (uint8_t)(1u << (seq & 7));
    if (s->seen[seq >> 3] & bit) {
        s->dups++;
        return;
    }
    s->seen[seq >> 3] |= bit;
    s->unique++;
    if (seq >= s->next) {
        if (seq > s->next) s->gaps++;
        s->next = seq + 1;
    } else {
        s->late++; /* arrived after a later one: reordered */
    }
}

typedef struct {
    uint64_t expected, received, missing, reordered, duplicates, unsent;
} verdict_t;

/* What a stream got against what was sent (sequence numbers 0..expected-1). */
static verdict_t stream_verdict(const stream_t *s, uint64_t expected) {
    verdict_t v = {expected, s->unique, 0, s->late, s->dups, s->bogus};
    uint64_t beyond = 0;
    for (uint64_t q = expected; q < s->seen_bits && q < s->next; q++)
        if (s->seen[q >> 3] & (1u << (q & 7))) beyond++;
    v.unsent += beyond;
    uint64_t in_range = s->unique - beyond;
    v.missing = expected > in_range ? expected - in_range : 0;
    return v;
}

static void stream_free(stream_t *s) {
    free(s->seen);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------------------------------- */
/* latency histogram: 1 us buckets to 10 ms, 100 us buckets to 1 s, then one overflow        */

#define H_FINE 10000
#define H_COARSE 9900
static uint64_t hist[H_FINE + H_COARSE + 1];
static uint64_t h_n, h_max_ns;
static double h_sum_ns;

static void hist_reset(void) {
    memset(hist, 0, sizeof hist);
    h_n = h_max_ns = 0;
    h_sum_ns = 0;
}

static void hist_add(uint64_t ns) {
    uint64_t us = ns / 1000;
    size_t i = us < H_FINE ? (size_t)us
             : us < 1000000 ? H_FINE + (size_t)((us - H_FINE) / 100) : H_FINE + H_COARSE;
    hist[i]++;
    h_n++;
    h_sum_ns += (double)ns;
    if (ns > h_max_ns) h_max_ns = ns;
}

static double hist_pct(double q) { /* microseconds */
    if (!h_n) return 0;
    uint64_t target = (uint64_t)ceil(q * (double)h_n), acc = 0;
    if (target < 1) target = 1;
    for (size_t i = 0; i <= H_FINE + H_COARSE; i++) {
        acc += hist[i];
        if (acc >= target) {
            if (i < H_FINE) return (double)i + 0.5;
            if (i < H_FINE + H_COARSE) return (double)(H_FINE + (i - H_FINE) * 100) + 50;
            return (double)h_max_ns / 1000;
        }
    }
    return (double)h_max_ns / 1000;
}

/* ---------------------------------------------------------------------------------------- */
/* connections                                                                                */

typedef struct pubst {
    uint8_t *batch;       /* B units, each a packet (TCP), a masked frame (WS per packet), or a
                             plain packet to be framed as a whole batch (WS batch frames) */
    size_t unit, pkt, frame_hdr;  /* bytes per unit, per packet, before the packet in a unit */
    size_t off_pid, off_payload, off_topicnum;
    uint8_t *wsout;       /* WS batch frames: header + masked batch */
    uint64_t produced, acked, pidctr, owed, total; /* total: 0 = unlimited */
    uint32_t outstanding;
    uint8_t *inuse;       /* packet ids in flight (QoS 1), one byte each */
    int owned;            /* fill: sessions this publisher feeds */
} pubst_t;

typedef struct conn {
    int fd, role, idx, state, blocked, ws, want_out, port;
    uint32_t ev;
    buf_t rbuf, mq, out, ack;  /* raw input, MQTT bytes after WS deframing, output, PUBACKs */
    uint64_t ws_left;          /* payload bytes of the current data frame still to come */
    const uint8_t *data;       /* publisher batch being written */
    size_t data_len, data_off;
    pubst_t *pub;
    int session_present, subscribed;
    uint64_t received;
    double t_open, t_ready, t_first, t_last_tx;
} conn_t;

/* What the run had done at one instant; a measured window is the difference of two marks. */
typedef struct {
    int taken;
    double t, cpu, bcpu, sirq, busy;  /* cpu: ours; bcpu, sirq, busy: the broker's and its core's */
    double xcpu[MAX_LIST];            /* each of --cpu-pids */
    uint64_t delivered, produced;
} mark_t;

static struct {
    int ep, tfd, phase, fatal_code;
    char fatal[512];
    conn_t *conns;
    int nconns, npubs, nsubs;  /* conns: subscribers/sessions/idle first, then publishers */
    conn_t **pubs;
    stream_t *streams;
    int nstreams, row;         /* stream (sub, id) is streams[sub * row + id] */
    int next_open, opening, ready, closed_ok, closed_early, rr;
    int open_from, open_to;    /* the range of conns the current phase opens */
    double t_start, t_run, t_phase, t_last_delivery, t_connected, t_ping;
    double t_accept, t_first_msg, t_all;
    int producing, recording;
    mark_t w0, w1;             /* the measured window (idle mode: start and all connected) */
    uint64_t delivered;
    double cpu_at_start, cpu_start;
    uint64_t foreign, bad_acks, pings_sent, pingresp, late_conns;
    long rss_before, rss_connected, rss_held, hwm;
    double connect_secs;
    size_t iter_bytes, iter_reads;  /* bytes and reads in this loop iteration */
} R;

static void fatal(int code, const char *fmt, ...) {
    if (R.fatal[0]) return; /* keep the first cause */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(R.fatal, sizeof R.fatal, fmt, ap);
    va_end(ap);
    R.fatal_code = code;
    R.phase = PH_DONE;
}

static void conn_set_events(conn_t *c) {
    if (c->fd < 0) return;
    uint32_t ev = EPOLLIN | ((c->blocked || c->state == S_TCP) ? EPOLLOUT : 0);
    if (ev == c->ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(R.ep, EPOLL_CTL_MOD, c->fd, &e) < 0) fatal(3, "epoll_ctl: %s", strerror(errno));
    c->ev = ev;
}

static void conn_close(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(R.ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = S_CLOSED;
}

static const char *role_name(int role) {
    return role == R_PUB ? "publisher" : role == R_SUB ? "subscriber"
         : role == R_IDLE ? "idle connection" : "session";
}

static void conn_flush(conn_t *c);

/* Queue MQTT bytes on a connection (framed as one masked binary frame over WebSocket). */
static void send_mqtt(conn_t *c, const uint8_t *p, size_t n) {
    if (c->ws && c->state != S_WSHS && c->state != S_TCP) {
        uint8_t key[4], hdr[14];
        random_key(key);
        size_t h = ws_header(hdr, 0x2, n, key);
        buf_need(&c->out, h + n);
        memcpy(c->out.p + c->out.len, hdr, h);
        mask_copy(c->out.p + c->out.len + h, p, n, key);
        c->out.len += h + n;
    } else {
        buf_put(&c->out, p, n);
    }
}

static void client_id(char *out, size_t size, const conn_t *c) {
    const char *kind = c->role == R_PUB ? (O.mode == M_FILL ? "f" : "p")
                     : c->role == R_SUB ? "s" : c->role == R_IDLE ? "i" : "q";
    snprintf(out, size, "lg-%s-%s%d", O.tag, kind, c->idx);
}

static void send_connect(conn_t *c) {
    char id[64];
    uint8_t pkt[600];
    client_id(id, sizeof id, c);
    int clean = c->role == R_SESS ? 0 : c->role == R_SUB ? O.sub_clean : 1;
    send_mqtt(c, pkt, mqtt_connect(pkt, id, clean, O.keepalive));
    c->state = S_CONNACK;
}

static void tcp_connected(conn_t *c) {
    if (c->ws) {
        char req[512], key[25];
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        uint8_t raw[18];
        for (int i = 0; i < 18; i++) raw[i] = (uint8_t)rnd();
        for (int i = 0; i < 6; i++) { /* 16 random bytes -> 24 base64 chars (2 of padding) */
            uint32_t v = (uint32_t)raw[3 * i] << 16 | (uint32_t)raw[3 * i + 1] << 8 | raw[3 * i + 2];
            for (int j = 0; j < 4; j++) key[4 * i + j] = b64[(v >> (18 - 6 * j)) & 63];
        }
        key[22] = key[23] = '=';
        key[24] = 0;
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                         O.ws_path, O.host, c->port, key);
        buf_put(&c->out, req, (size_t)n);
        c->state = S_WSHS;
    } else {
        send_connect(c);
    }
    conn_flush(c);
}

static size_t rbuf_size(int role) {
    return role == R_SUB ? 256 * 1024 : role == R_SESS ? 64 * 1024 : role == R_PUB ? 16 * 1024
         : 2048;
}

static void conn_open(conn_t *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
    if (inet_pton(AF_INET, O.host, &sa.sin_addr) != 1) die("--host must be an IPv4 address");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fatal(3, "socket() for %s %d: %s (raise ulimit -n?)", role_name(c->role), c->idx,
              strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->t_open = now_s();
    if (!c->rbuf.p) buf_init(&c->rbuf, rbuf_size(c->role));
    if (c->ws && !c->mq.p) buf_init(&c->mq, 2 * rbuf_size(c->role));
    c->ev = EPOLLIN | EPOLLOUT;
    struct epoll_event e = {.events = c->ev, .data.ptr = c};
    if (epoll_ctl(R.ep, EPOLL_CTL_ADD, fd, &e) < 0) {
        fatal(3, "epoll_ctl add: %s", strerror(errno));
        return;
    }
    R.opening++;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        c->state = S_TCP; /* connected at once; the EPOLLOUT that follows is harmless */
        tcp_connected(c);
        conn_set_events(c);
    } else if (errno == EINPROGRESS) {
        c->state = S_TCP;
    } else {
        fatal(3, "connect %s:%d for %s %d: %s", O.host, c->port, role_name(c->role), c->idx,
              strerror(errno));
    }
}

/* Publisher batches are finished; the next refill may go. */
static void data_written(conn_t *c) {
    c->data = NULL;
    c->data_len = c->data_off = 0;
}

static void conn_lost(conn_t *c, const char *why);

static int send_some(conn_t *c, const uint8_t *p, size_t n, size_t *done) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->blocked = 1;
            return 0;
        }
        conn_lost(c, strerror(errno));
        return -1;
    }
    *done = (size_t)w;
    if ((size_t)w < n) c->blocked = 1;
    c->t_last_tx = 0; /* set lazily by the keepalive check */
    return 1;
}

static void conn_flush(conn_t *c) {
    while (c->fd >= 0 && !c->blocked && c->state != S_TCP) {
        size_t done = 0;
        /* A batch once started is finished before anything else (a PINGREQ) goes out, and
           queued control bytes go before a batch that has not started: packets never mix. */
        if (c->data && c->data_off) {
            if (send_some(c, c->data + c->data_off, c->data_len - c->data_off, &done) < 0)
                return;
            c->data_off += done;
            if (c->data_off == c->data_len) data_written(c);
        } else if (buf_used(&c->out)) {
            if (send_some(c, c->out.p + c->out.off, buf_used(&c->out), &done) < 0) return;
            buf_consume(&c->out, done);
        } else if (c->data) {
            if (send_some(c, c->data + c->data_off, c->data_len - c->data_off, &done) < 0)
                return;
            c->data_off += done;
            if (c->data_off == c->data_len) data_written(c);
        } else {
            break;
        }
    }
    conn_set_events(c);
}

/* ---------------------------------------------------------------------------------------- */
/* publishers                                                                                 */

static void patch(conn_t *c, size_t unit, size_t off, const void *src, size_t n) {
    pubst_t *pb = c->pub;
    uint8_t *base = pb->batch + unit * pb->unit;
    if (c->ws && !O.ws_batch_frames) { /* masked in place: XOR with the frame's own key */
        const uint8_t *key = base + pb->frame_hdr - 4;
        uint8_t *dst = base + pb->frame_hdr;
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++) dst[off + i] = s[i] ^ key[(off + i) & 3];
    } else {
        memcpy(base + off, src, n);
    }
}

static void pub_init(conn_t *c) {
    pubst_t *pb = xcalloc(1, sizeof *pb);
    c->pub = pb;
    char topic[128];
    if (O.mode == M_FILL)
        snprintf(topic, sizeof topic, "b/%s/q/s%05d", O.tag, 0);
    else
        snprintf(topic, sizeof topic, "b/%s/p%05d", O.tag, c->idx);
    uint8_t *payload = xmalloc((size_t)O.payload);
    memset(payload, 'x', (size_t)O.payload);
    uint32_t magic = MAGIC;
    memcpy(payload, &magic, 4);
    uint8_t pkt[1024 + 70000];
    pb->pkt = mqtt_publish(pkt, topic, O.qos, 1, payload, (size_t)O.payload, &pb->off_pid,
                           &pb->off_payload);
    free(payload);
    pb->off_topicnum = O.mode == M_FILL ? pb->off_pid - 5 : 0;
    int per_packet_frames = c->ws && !O.ws_batch_frames;
    pb->frame_hdr = per_packet_frames ? ws_header_len(pb->pkt, 1) : 0;
    pb->unit = pb->frame_hdr + pb->pkt;
    pb->batch = xmalloc(pb->unit * (size_t)O.batch);
    for (int i = 0; i < O.batch; i++) {
        uint8_t *u = pb->batch + (size_t)i * pb->unit;
        if (per_packet_frames) {
            uint8_t key[4];
            random_key(key);
            ws_header(u, 0x2, pb->pkt, key);
            mask_copy(u + pb->frame_hdr, pkt, pb->pkt, key);
        } else {
            memcpy(u, pkt, pb->pkt);
        }
    }
    if (c->ws && O.ws_batch_frames) pb->wsout = xmalloc(14 + pb->pkt * (size_t)O.batch);
    if (O.qos) pb->inuse = xcalloc(65536, 1);
    if (O.mode == M_FILL) {
        pb->owned = (O.sessions - c->idx + O.pubs - 1) / O.pubs;
        pb->total = (uint64_t)pb->owned * O.per_session;
    } else {
        pb->total = O.count;
    }
}

/* The stream, sequence number and topic number of the publisher's n-th message. */
static void message_of(const conn_t *c, uint64_t n, uint32_t *stream, uint64_t *seq,
                       int *topicnum) {
    if (O.mode == M_FILL) {
        uint64_t owned = (uint64_t)c->pub->owned;
        uint64_t m = n % owned;
        *seq = n / owned;
        *stream = (uint32_t)(c->idx + (uint64_t)O.pubs * m);
        *topicnum = (int)*stream;
        return;
    }
    *stream = (uint32_t)c->idx;
    *topicnum = -1;
    *seq = n;
    uint64_t k = O.fault_swap; /* deliberately swap each k-th pair: the checker must notice */
    if (k >= 2 && n % k == k - 2) *seq = n + 1;
    if (k >= 2 && n % k == k - 1) *seq = n - 1;
}

/* Fill the batch with as many messages as the window, pace and count allow; start writing. */
static void pub_produce(conn_t *c) {
    pubst_t *pb = c->pub;
    for (int round = 0; round < 4; round++) {
        if (!R.producing || c->data || c->blocked || c->state != S_READY) return;
        uint64_t k = (uint64_t)O.batch;
        if (pb->total && pb->total - pb->produced < k) k = pb->total - pb->produced;
        if (O.qos) { /* refill the window in steps of W/4, not one message per PUBACK */
            uint64_t credit = (uint64_t)(O.window - (int)pb->outstanding);
            uint64_t step = (uint64_t)(O.window / 4 ? O.window / 4 : 1);
            if (credit < k && credit < step) return;
            if (credit < k) k = credit;
        }
        if (O.rate > 0 && pb->owed < k) k = pb->owed;
        if (O.max_lead && O.mode == M_FLOW) { /* no further ahead of the slowest subscriber */
            uint64_t slowest = UINT64_MAX;
            for (int s = 0; s < O.subs; s++) {
                uint64_t got = R.streams[(size_t)s * (size_t)R.row + (size_t)c->idx].next;
                if (got < slowest) slowest = got;
            }
            uint64_t lead = pb->produced > slowest ? pb->produced - slowest : 0;
            uint64_t room = lead < O.max_lead ? O.max_lead - lead : 0;
            uint64_t step = O.max_lead / 2 < (uint64_t)O.batch ? O.max_lead / 2 : (uint64_t)O.batch;
            if (room < k && room < (step ? step : 1)) return; /* wait for a worthwhile batch */
            if (room < k) k = room;
        }
        if (!k) return;
        uint64_t ts = now_ns();
        size_t made = 0;
        for (; made < k; made++) {
            if (O.qos) {
                uint16_t pid = (uint16_t)(pb->pidctr % 65535 + 1);
                if (pb->inuse[pid]) break; /* an old id still unacknowledged: wait for it */
                pb->inuse[pid] = 1;
                pb->pidctr++;
                pb->outstanding++;
                uint8_t be[2] = {(uint8_t)(pid >> 8), (uint8_t)pid};
                patch(c, made, pb->off_pid, be, 2);
            }
            uint32_t stream;
            uint64_t seq;
            int topicnum;
            message_of(c, pb->produced + made, &stream, &seq, &topicnum);
            uint8_t hdr[20];
            memcpy(hdr, &stream, 4);
            memcpy(hdr + 4, &seq, 8);
            memcpy(hdr + 12, &ts, 8);
            patch(c, made, pb->off_payload + 4, hdr, 20);
            if (topicnum >= 0) {
                char digits[12];
                snprintf(digits, sizeof digits, "%05d", topicnum);
                patch(c, made, pb->off_topicnum, digits, 5);
            }
        }
        if (!made) return;
        pb->produced += made;
        if (O.rate > 0) pb->owed -= made;
        if (c->ws && O.ws_batch_frames) {
            uint8_t key[4];
            random_key(key);
            size_t n = made * pb->pkt;
            size_t h = ws_header(pb->wsout, 0x2, n, key);
            mask_copy(pb->wsout + h, pb->batch, n, key);
            c->data = pb->wsout;
            c->data_len = h + n;
        } else {
            c->data = pb->batch;
            c->data_len = made * pb->unit;
        }
        c->data_off = 0;
        conn_flush(c);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* receiving                                                                                  */

static stream_t *stream_for(const conn_t *c, uint32_t id) {
    if (O.mode == M_DRAIN) return (int)id == c->idx ? &R.streams[id] : NULL;
    if (c->role != R_SUB || (int)id >= R.row) return NULL;
    return &R.streams[(size_t)c->idx * (size_t)R.row + id];
}

static void on_publish(conn_t *c, uint8_t first, const uint8_t *body, size_t n, uint64_t t) {
    int qos = (first >> 1) & 3;
    if (n < 2) {
        fatal(3, "malformed PUBLISH to %s %d", role_name(c->role), c->idx);
        return;
    }
    size_t tlen = (size_t)body[0] << 8 | body[1];
    size_t pos = 2 + tlen;
    uint16_t pid = 0;
    if (qos) {
        if (pos + 2 > n) {
            fatal(3, "malformed PUBLISH to %s %d", role_name(c->role), c->idx);
            return;
        }
        pid = (uint16_t)(body[pos] << 8 | body[pos + 1]);
        pos += 2;
    }
    if (O.level == 5 && !props_skip(body, n, &pos, 0, NULL)) {
        fatal(3, "malformed PUBLISH properties to %s %d", role_name(c->role), c->idx);
        return;
    }
    if (pos > n || qos == 3) {
        fatal(3, "malformed PUBLISH to %s %d", role_name(c->role), c->idx);
        return;
    }
    if (qos) { /* QoS 1: PUBACK; QoS 2: PUBREC, and PUBCOMP when the PUBREL comes */
        uint8_t ack[4] = {qos == 1 ? 0x40 : 0x50, 2, (uint8_t)(pid >> 8), (uint8_t)pid};
        buf_put(&c->ack, ack, 4);
    }
    const uint8_t *pl = body + pos;
    size_t plen = n - pos;
    uint32_t magic, stream;
    uint64_t seq, ts;
    if (plen < PAYLOAD_HEADER || (memcpy(&magic, pl, 4), magic != MAGIC)) {
        R.foreign++;
        return;
    }
    memcpy(&stream, pl + 4, 4);
    memcpy(&seq, pl + 8, 8);
    memcpy(&ts, pl + 16, 8);
    stream_t *s = stream_for(c, stream);
    if (!s) {
        R.foreign++;
        return;
    }
    stream_add(s, seq);
    c->received++;
    R.delivered++;
    if (!c->t_first) c->t_first = (double)t / 1e9;
    R.t_last_delivery = (double)t / 1e9;
    if (R.recording && t >= ts) hist_add(t - ts);
}

static void on_puback(conn_t *c, uint16_t pid) {
    pubst_t *pb = c->pub;
    if (!pb || !O.qos || !pb->inuse[pid]) {
        R.bad_acks++;
        return;
    }
    pb->inuse[pid] = 0;
    pb->outstanding--;
    pb->acked++;
}

static void on_ready(conn_t *c) {
    c->state = S_READY;
    c->t_ready = now_s();
    R.ready++;
    R.opening--;
}

static void on_packet(conn_t *c, uint8_t first, const uint8_t *body, size_t n, uint64_t t) {
    switch (first >> 4) {
    case 3:
        on_publish(c, first, body, n, t);
        break;
    case 4: /* v5: a reason code (and properties) may follow; below 0x80 is success */
        if (O.level == 5 ? n < 2 : n != 2) {
            fatal(3, "malformed PUBACK");
            return;
        }
        if (n > 2 && body[2] >= 0x80) {
            fatal(3, "PUBACK refused on %s %d: reason code 0x%02x", role_name(c->role), c->idx,
                  body[2]);
            return;
        }
        if (O.qos == 2)
            R.bad_acks++; /* a QoS 2 flow ends with PUBCOMP */
        else
            on_puback(c, (uint16_t)(body[0] << 8 | body[1]));
        break;
    case 5: /* PUBREC of our QoS 2 PUBLISH: answer PUBREL; the id is free at PUBCOMP */
    case 7: { /* PUBCOMP */
        int comp = first >> 4 == 7;
        const char *name = comp ? "PUBCOMP" : "PUBREC";
        if (O.level == 5 ? n < 2 : n != 2) {
            fatal(3, "malformed %s", name);
            return;
        }
        if (n > 2 && body[2] >= 0x80) {
            fatal(3, "%s refused on %s %d: reason code 0x%02x", name, role_name(c->role), c->idx,
                  body[2]);
            return;
        }
        uint16_t pid = (uint16_t)(body[0] << 8 | body[1]);
        if (O.qos != 2) {
            R.bad_acks++;
        } else if (comp) {
            on_puback(c, pid);
        } else {
            uint8_t rel[4] = {0x62, 2, body[0], body[1]};
            buf_put(&c->ack, rel, 4);
        }
        break;
    }
    case 6: { /* PUBREL of a QoS 2 message we received: PUBCOMP */
        if (first != 0x62 || (O.level == 5 ? n < 2 : n != 2)) {
            fatal(3, "malformed PUBREL on %s %d", role_name(c->role), c->idx);
            return;
        }
        uint8_t comp[4] = {0x70, 2, body[0], body[1]};
        buf_put(&c->ack, comp, 4);
        break;
    }
    case 2:
        if (c->state != S_CONNACK || (O.level == 5 ? n < 3 : n != 2)) {
            fatal(3, "unexpected CONNACK on %s %d", role_name(c->role), c->idx);
            return;
        }
        if (body[1]) {
            fatal(3, "CONNACK refused %s %d: return code %d", role_name(c->role), c->idx,
                  body[1]);
            return;
        }
        if (O.level == 5) {
            size_t pos = 2;
            uint32_t receive_maximum = 65535;
            if (!props_skip(body, n, &pos, 0x21, &receive_maximum)) {
                fatal(3, "malformed CONNACK properties on %s %d", role_name(c->role), c->idx);
                return;
            }
            if (O.qos && c->role == R_PUB && (uint32_t)O.window > receive_maximum) {
                fatal(3, "--window %d exceeds the broker's receive maximum %u", O.window,
                      receive_maximum);
                return;
            }
        }
        c->session_present = body[0] & 1;
        if (c->role == R_SUB || (c->role == R_SESS && O.mode == M_FILL)) {
            char filter[128];
            uint8_t pkt[256];
            if (c->role == R_SUB)
                snprintf(filter, sizeof filter, "b/%s/+", O.tag);
            else
                snprintf(filter, sizeof filter, "b/%s/q/s%05d", O.tag, c->idx);
            send_mqtt(c, pkt, mqtt_subscribe(pkt, 1, filter, c->role == R_SESS ? 1 : O.qos));
            c->state = S_SUBACK;
        } else {
            on_ready(c);
        }
        break;
    case 9: {
        size_t pos = 2;
        if (c->state != S_SUBACK || n < 3 ||
            (O.level == 5 && (!props_skip(body, n, &pos, 0, NULL) || pos >= n))) {
            fatal(3, "unexpected SUBACK on %s %d", role_name(c->role), c->idx);
            return;
        }
        if (body[pos] >= 0x80) {
            fatal(3, "SUBSCRIBE refused for %s %d: 0x%02x", role_name(c->role), c->idx,
                  body[pos]);
            return;
        }
        c->subscribed = 1;
        on_ready(c);
        break;
    }
    case 13:
        R.pingresp++;
        break;
    case 14: /* only MQTT 5 servers send DISCONNECT: it says why */
        fatal(3, "DISCONNECT from the broker on %s %d: reason code 0x%02x", role_name(c->role),
              c->idx, n ? body[0] : 0);
        break;
    default:
        fatal(3, "unexpected packet type %d on %s %d", first >> 4, role_name(c->role), c->idx);
    }
}

/* Every complete MQTT packet in b; the partial tail stays. */
static void parse_mqtt(conn_t *c, buf_t *b, uint64_t t) {
    while (!R.fatal[0]) {
        const uint8_t *p = b->p + b->off;
        size_t avail = buf_used(b);
        if (avail < 2) break;
        uint32_t rl;
        int vl = varint_get(p + 1, avail - 1, &rl);
        if (vl < 0) {
            fatal(3, "malformed remaining length from the broker on %s %d", role_name(c->role),
                  c->idx);
            return;
        }
        if (vl == 0 || avail < 1 + (size_t)vl + rl) break; /* the reader grows the buffer */
        on_packet(c, p[0], p + 1 + vl, rl, t);
        buf_consume(b, 1 + (size_t)vl + rl);
        if (c->state == S_CLOSED) return;
    }
}

/* Server frames (unmasked) -> MQTT bytes in c->mq; answers pings, fails on close or text. */
static void ws_deframe(conn_t *c) {
    buf_t *in = &c->rbuf;
    for (;;) {
        size_t avail = buf_used(in);
        const uint8_t *p = in->p + in->off;
        if (c->ws_left) {
            size_t take = avail < c->ws_left ? avail : (size_t)c->ws_left;
            if (!take) return;
            buf_put(&c->mq, p, take);
            buf_consume(in, take);
            c->ws_left -= take;
            continue;
        }
        if (avail < 2) return;
        int op = p[0] & 0x0f, masked = p[1] & 0x80;
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (avail < 4) return;
            len = (uint64_t)p[2] << 8 | p[3];
            h = 4;
        } else if (len == 127) {
            if (avail < 10) return;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
            h = 10;
        }
        if (masked) {
            fatal(3, "the broker sent a masked WebSocket frame to %s %d", role_name(c->role),
                  c->idx);
            return;
        }
        if (op == 0 || op == 2) {
            buf_consume(in, h);
            c->ws_left = len;
            continue;
        }
        if (op == 1) {
            fatal(3, "the broker sent a text frame to %s %d", role_name(c->role), c->idx);
            return;
        }
        if (avail < h + len) return; /* control frames are small and whole */
        if (op == 8) {
            int code = len >= 2 ? p[h] << 8 | p[h + 1] : 0;
            conn_lost(c, code ? (code == 1000 ? "WebSocket close 1000" : "WebSocket close")
                              : "WebSocket close");
            return;
        }
        if (op == 9) { /* ping -> pong with the same payload */
            uint8_t key[4], hdr[14], body[125];
            random_key(key);
            size_t hl = ws_header(hdr, 0xA, (size_t)len, key);
            mask_copy(body, p + h, (size_t)len, key);
            buf_put(&c->out, hdr, hl);
            buf_put(&c->out, body, (size_t)len);
        }
        buf_consume(in, h + (size_t)len);
    }
}

static void process_input(conn_t *c, uint64_t t) {
    if (c->state == S_WSHS) {
        const uint8_t *p = c->rbuf.p + c->rbuf.off;
        size_t n = buf_used(&c->rbuf);
        const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) {
            if (n >= c->rbuf.cap - 1) fatal(3, "WebSocket handshake response too large");
            return;
        }
        size_t hl = (size_t)(end - p) + 4;
        char head[2048];
        size_t cp = hl < sizeof head - 1 ? hl : sizeof head - 1;
        memcpy(head, p, cp);
        head[cp] = 0;
        if (strncmp(head, "HTTP/1.1 101", 12)) {
            char *eol = strstr(head, "\r\n");
            if (eol) *eol = 0;
            fatal(3, "WebSocket upgrade refused: %s", head);
            return;
        }
        if (!strcasestr(head, "\nsec-websocket-protocol: mqtt")) {
            fatal(3, "WebSocket upgrade without the mqtt subprotocol");
            return;
        }
        buf_consume(&c->rbuf, hl);
        c->state = S_CONNACK;
        send_connect(c);
    }
    if (c->ws) {
        while (buf_used(&c->rbuf) && c->state != S_CLOSED && !R.fatal[0]) {
            size_t before = buf_used(&c->rbuf);
            buf_need(&c->mq, buf_used(&c->rbuf)); /* mq grows to take what rbuf holds */
            ws_deframe(c);
            if (c->state == S_CLOSED) return;
            parse_mqtt(c, &c->mq, t);
            if (buf_used(&c->rbuf) == before) break; /* a partial frame header */
        }
    } else {
        parse_mqtt(c, &c->rbuf, t);
    }
    if (c->state == S_CLOSED) return;
    if (buf_used(&c->ack)) {
        send_mqtt(c, c->ack.p + c->ack.off, buf_used(&c->ack));
        c->ack.off = c->ack.len = 0;
    }
    /* keep the raw buffer compact so the next read has room */
    if (c->rbuf.off) {
        memmove(c->rbuf.p, c->rbuf.p + c->rbuf.off, buf_used(&c->rbuf));
        c->rbuf.len -= c->rbuf.off;
        c->rbuf.off = 0;
    }
}

static void conn_read(conn_t *c) {
    for (int round = 0; round < 4 && c->fd >= 0; round++) {
        size_t room = c->rbuf.cap - c->rbuf.len;
        if (!room) {
            buf_need(&c->rbuf, c->rbuf.cap); /* a packet larger than the buffer */
            room = c->rbuf.cap - c->rbuf.len;
        }
        ssize_t r = recv(c->fd, c->rbuf.p + c->rbuf.len, room, MSG_DONTWAIT);
        if (r == 0) {
            conn_lost(c, "closed by the broker");
            return;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            conn_lost(c, strerror(errno));
            return;
        }
        c->rbuf.len += (size_t)r;
        R.iter_bytes += (size_t)r;
        R.iter_reads++;
        process_input(c, now_ns());
        if ((size_t)r < room) break;
    }
    if (c->fd >= 0) conn_flush(c);
}

static void conn_lost(conn_t *c, const char *why) {
    int expected = c->state == S_BYE || R.phase == PH_DONE;
    int was_ready = c->state == S_READY || c->state == S_BYE;
    conn_close(c);
    if (expected) {
        R.closed_ok++;
        return;
    }
    if (O.mode == M_IDLE && R.phase == PH_HOLD) {
        R.closed_early++;
        return;
    }
    if (!was_ready) R.opening--;
    fatal(3, "%s %d lost: %s (phase %d, %" PRIu64 " msgs received on it)", role_name(c->role),
          c->idx, why, R.phase, c->received);
}

static void on_event(conn_t *c, uint32_t ev) {
    if (c->fd < 0) return;
    if (c->state == S_TCP) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_close(c);
            R.opening--;
            fatal(3, "connect to %s:%d for %s %d: %s", O.host, c->port, role_name(c->role),
                  c->idx, strerror(err));
            return;
        }
        if (!(ev & (EPOLLOUT | EPOLLIN | EPOLLHUP))) return;
        tcp_connected(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn_read(c);
    if (c->fd >= 0 && (ev & EPOLLOUT)) {
        c->blocked = 0;
        conn_flush(c);
    }
    if (c->fd >= 0 && c->role == R_PUB) pub_produce(c);
}

/* ---------------------------------------------------------------------------------------- */
/* phases                                                                                     */

static void open_range(int from, int to) {
    R.open_from = from;
    R.next_open = from;
    R.open_to = to;
    R.ready = 0;
    R.t_phase = now_s();
}

static void open_more(void) {
    int limit = O.parallel > 0 ? O.parallel : 1 << 30;
    while (R.next_open < R.open_to && R.opening < limit && !R.fatal[0])
        conn_open(&R.conns[R.next_open++]);
}

static int all_ready(void) { return R.ready >= R.open_to - R.open_from; }

static void take_mark(mark_t *m, double t) {
    m->taken = 1;
    m->t = t;
    m->delivered = R.delivered;
    m->produced = 0;
    for (int i = 0; i < R.npubs; i++) m->produced += R.pubs[i]->pub->produced;
    m->cpu = cpu_self();
    m->bcpu = proc_cpu(O.broker_pid);
    for (int i = 0; i < O.n_cpu_pids; i++) m->xcpu[i] = proc_cpu(O.cpu_pids[i]);
    m->sirq = cpu_softirq(O.broker_core, &m->busy);
}

static void snapshot_window_start(double t) {
    take_mark(&R.w0, t);
    hist_reset();
    R.recording = 1;
}

static void snapshot_window_end(double t) {
    take_mark(&R.w1, t);
    R.recording = 0;
}

static uint64_t expected_for(int id) {
    if (O.mode == M_DRAIN) return O.per_session;
    if (O.expect) return O.expect;
    return R.pubs[id]->pub->produced;
}

static int streams_complete(void) {
    for (int s = 0; s < R.nstreams; s++) {
        int id = O.mode == M_DRAIN ? s : s % R.row;
        if (R.streams[s].unique < expected_for(id)) return 0;
    }
    return 1;
}

static int pubs_settled(void) {
    for (int i = 0; i < R.npubs; i++) {
        conn_t *c = R.pubs[i];
        if (c->data || buf_used(&c->out) || c->pub->outstanding) return 0;
    }
    return 1;
}

static int pubs_done_producing(void) {
    for (int i = 0; i < R.npubs; i++) {
        pubst_t *pb = R.pubs[i]->pub;
        if (!pb->total || pb->produced < pb->total) return 0;
    }
    return 1;
}

static void start_pubs(void) {
    R.phase = PH_SETUP_PUBS;
    open_range(R.nconns - R.npubs, R.nconns);
}

static void send_disconnect_all(void) {
    static const uint8_t disc[2] = {0xE0, 0};
    for (int i = 0; i < R.nconns; i++) {
        conn_t *c = &R.conns[i];
        if (c->fd < 0 || c->state != S_READY) continue;
        send_mqtt(c, disc, 2);
        c->state = S_BYE;
        conn_flush(c);
    }
}

static void keepalive_pings(double t) {
    if (O.keepalive <= 0 || t - R.t_ping < 1.0) return;
    R.t_ping = t;
    static const uint8_t ping[2] = {0xC0, 0};
    for (int i = 0; i < R.nconns; i++) {
        conn_t *c = &R.conns[i];
        if (c->fd < 0 || c->state != S_READY) continue;
        if (c->t_last_tx == 0) c->t_last_tx = t; /* first look after a write */
        if (t - c->t_last_tx >= O.keepalive / 2.0) {
            send_mqtt(c, ping, 2);
            conn_flush(c);
            c->t_last_tx = t;
            R.pings_sent++;
        }
    }
}

static void step(double t) {
    keepalive_pings(t);
    switch (R.phase) {
    case PH_SETUP_SUBS:
        open_more();
        if (all_ready()) {
            if (O.mode == M_FLOW) {
                start_pubs();
            } else if (O.mode == M_IDLE) {
                R.t_connected = t;
                R.connect_secs = t - R.t_start;
                R.rss_connected = proc_status_kib(O.broker_pid, "VmRSS");
                take_mark(&R.w1, t);
                R.phase = PH_HOLD;
                R.t_phase = t;
            } else if (O.mode == M_FILL) {
                send_disconnect_all();
                R.phase = PH_BYE;
                R.t_phase = t;
            }
        } else if (t - R.t_phase > O.timeout) {
            fatal(3, "setup timed out after %.0f s: %d of %d connections ready", O.timeout,
                  R.ready, R.open_to - R.open_from);
        }
        break;
    case PH_BYE: /* fill: wait until the broker has closed every session it was told to end */
        if (R.closed_ok >= O.sessions || t - R.t_phase > O.timeout) {
            if (R.closed_ok < O.sessions)
                fprintf(stderr, "loadgen: %d of %d sessions not closed by the broker after "
                        "DISCONNECT; closing them\n", O.sessions - R.closed_ok, O.sessions);
            for (int i = 0; i < O.sessions; i++) conn_close(&R.conns[i]);
            start_pubs();
        }
        break;
    case PH_SETUP_PUBS:
        open_more();
        if (all_ready()) {
            R.phase = PH_RUN;
            R.t_run = t;
            R.producing = 1;
            R.cpu_start = cpu_self();
            if (O.mode == M_FILL || O.count) snapshot_window_start(t);
            if (O.rate > 0) {
                long period = (long)(1e9 / O.rate);
                struct itimerspec its = {{period / 1000000000, period % 1000000000},
                                         {period / 1000000000, period % 1000000000}};
                if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
                timerfd_settime(R.tfd, 0, &its, NULL);
            }
        } else if (t - R.t_phase > O.timeout) {
            fatal(3, "setup timed out after %.0f s: %d of %d publishers ready", O.timeout,
                  R.ready, R.open_to - R.open_from);
        }
        break;
    case PH_RUN:
        if (O.mode == M_FILL || O.count) {
            if (pubs_done_producing()) {
                R.producing = 0;
                R.phase = PH_DRAIN;
                R.t_phase = t;
            }
        } else {
            if (!R.w0.taken && t >= R.t_run + O.warmup) snapshot_window_start(t);
            if (R.w0.taken && t >= R.w0.t + O.duration) {
                snapshot_window_end(t);
                R.producing = 0;
                R.phase = PH_DRAIN;
                R.t_phase = t;
            }
        }
        break;
    case PH_DRAIN: {
        int settled = pubs_settled();
        int complete = O.mode == M_FILL ? 1 : streams_complete();
        /* nothing arrives any more: QoS 0 after --quiet, QoS 1 (all acknowledged) after
           --stall; whatever is missing then is lost */
        double idle = t - (R.t_last_delivery > R.t_phase ? R.t_last_delivery : R.t_phase);
        int quiet = idle > (O.qos == 0 ? O.quiet : O.stall);
        if ((settled && complete) || (settled && quiet) || t - R.t_phase > O.drain_timeout) {
            if (!R.w1.taken) {
                double end = O.mode == M_FILL ? t : R.t_last_delivery > R.w0.t
                                                  ? R.t_last_delivery : t;
                snapshot_window_end(end);
            }
            if (!settled)
                fatal(3, "drain timed out after %.0f s with publishes unacknowledged",
                      O.drain_timeout);
            R.phase = PH_DONE;
        }
        break;
    }
    case PH_HOLD:
        if (t - R.t_phase >= O.hold) {
            R.rss_held = proc_status_kib(O.broker_pid, "VmRSS");
            R.hwm = proc_status_kib(O.broker_pid, "VmHWM");
            R.phase = PH_DONE;
        }
        break;
    case PH_FIRST: /* drain: session 0 alone, until its queue starts arriving */
        open_more();
        if (R.conns[0].t_first || (R.ready && O.per_session == 0)) {
            R.t_first_msg = R.conns[0].t_first;
            R.phase = PH_REST;
            R.t_phase = t;
            R.next_open = 1;
            R.open_from = 0;
            R.open_to = O.sessions;
        } else if (t - R.t_phase > O.timeout) {
            fatal(3, "no queued message reached session 0 within %.0f s (session present %d)",
                  O.timeout, R.conns[0].session_present);
        }
        break;
    case PH_REST: {
        open_more();
        double last = R.t_last_delivery > R.t_phase ? R.t_last_delivery : R.t_phase;
        if (all_ready() && streams_complete()) {
            R.t_all = R.t_last_delivery;
            R.phase = PH_DONE;
        } else if (all_ready() && t - last > O.stall) {
            R.t_all = t; /* every session connected and nothing more came: the verdict says */
            R.phase = PH_DONE;
        } else if (t - R.t_phase > O.drain_timeout) {
            R.t_all = t;
            R.phase = PH_DONE; /* the verdict reports what is missing */
        }
        break;
    }
    default:
        break;
    }
}

/* Poll the port until it accepts (for restart timing): the first session's socket. */
static void wait_for_port(void) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    inet_pton(AF_INET, O.host, &sa.sin_addr);
    double deadline = now_s() + O.wait_port;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            R.t_accept = now_s();
            close(fd);
            return;
        }
        close(fd);
        if (now_s() > deadline) {
            fatal(3, "nothing accepted on %s:%d within %.0f s", O.host, O.port, O.wait_port);
            return;
        }
        struct timespec ts = {0, 1000000}; /* 1 ms between attempts */
        nanosleep(&ts, NULL);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* report                                                                                     */

static int verdicts(FILE *js, int fail_on_loss) {
    verdict_t tot = {0, 0, 0, 0, 0, 0};
    int failed = 0, listed = 0;
    for (int s = 0; s < R.nstreams; s++) {
        int id = O.mode == M_DRAIN ? s : s % R.row;
        verdict_t v = stream_verdict(&R.streams[s], expected_for(id));
        tot.expected += v.expected;
        tot.received += v.received;
        tot.missing += v.missing;
        tot.reordered += v.reordered;
        tot.duplicates += v.duplicates;
        tot.unsent += v.unsent;
        int bad = v.unsent || (fail_on_loss && (v.missing || v.reordered));
        if (bad) {
            failed = 1;
            if (listed++ < 5) {
                if (O.mode == M_DRAIN)
                    fprintf(stderr, "loadgen: FAIL: session %d: ", s);
                else
                    fprintf(stderr, "loadgen: FAIL: subscriber %d <- publisher %d: ",
                            s / R.row, id);
                fprintf(stderr, "expected %" PRIu64 ", got %" PRIu64 " distinct: %" PRIu64
                        " missing, %" PRIu64 " reordered, %" PRIu64 " never sent, %" PRIu64
                        " duplicates\n", v.expected, v.received, v.missing, v.reordered,
                        v.unsent, v.duplicates);
            }
        }
    }
    if (listed > 5) fprintf(stderr, "loadgen: FAIL: ... and %d more streams\n", listed - 5);
    if (R.foreign) {
        failed = 1;
        fprintf(stderr, "loadgen: FAIL: %" PRIu64 " messages not from this run (bad payload "
                "or stream)\n", R.foreign);
    }
    if (R.bad_acks) {
        failed = 1;
        fprintf(stderr, "loadgen: FAIL: %" PRIu64 " PUBACKs for packet ids not in flight\n",
                R.bad_acks);
    }
    fprintf(js, ",\"expected\":%" PRIu64 ",\"received_distinct\":%" PRIu64 ",\"losses\":%"
            PRIu64 ",\"reorders\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"unsent\":%" PRIu64
            ",\"foreign\":%" PRIu64, tot.expected, tot.received, tot.missing, tot.reordered,
            tot.duplicates, tot.unsent, R.foreign);
    return failed;
}

static int report(void) {
    static const char *modes[] = {"flow", "idle", "fill", "drain"};
    double t_end = now_s();
    double cpu_total = cpu_self() - R.cpu_at_start; /* our CPU since the clock started */
    int failed = 0;
    FILE *js = stdout;
    fprintf(js, "{\"mode\":\"%s\",\"transport\":\"%s\",\"protocol_level\":%d,\"qos\":%d,"
            "\"pubs\":%d,\"subs\":%d,\"payload\":%d", modes[O.mode], O.ws ? "ws" : "tcp",
            O.level, O.qos, R.npubs,
            O.mode == M_FLOW ? R.nsubs : O.mode == M_IDLE ? O.conns : O.sessions, O.payload);
    if (O.mode == M_FLOW || O.mode == M_FILL) {
        int window = R.w0.taken && R.w1.taken;
        double wall = window ? R.w1.t - R.w0.t : 0;
        double cpu = window ? R.w1.cpu - R.w0.cpu : 0;
        uint64_t produced = 0, acked = 0;
        for (int i = 0; i < R.npubs; i++) {
            produced += R.pubs[i]->pub->produced;
            acked += R.pubs[i]->pub->acked;
        }
        uint64_t deliv = R.w1.delivered - R.w0.delivered;
        uint64_t sentw = R.w1.produced - R.w0.produced;
        fprintf(js, ",\"window\":%d,\"duration_s\":%.3f,\"sent\":%" PRIu64 ",\"acked\":%" PRIu64
                ",\"delivered\":%" PRIu64 ",\"rate\":%.1f,\"pub_rate\":%.1f",
                O.qos ? O.window : 0, wall, produced, acked, R.delivered,
                wall > 0 ? (double)(O.mode == M_FILL ? sentw : deliv) / wall : 0,
                wall > 0 ? (double)sentw / wall : 0);
        fprintf(js, ",\"lat_us\":{\"n\":%" PRIu64 ",\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
                "\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}", h_n, hist_pct(0.50),
                hist_pct(0.90), hist_pct(0.99), hist_pct(0.999), (double)h_max_ns / 1000,
                h_n ? h_sum_ns / (double)h_n / 1000 : 0);
        fprintf(js, ",\"loadgen_cpu_pct\":%.1f", wall > 0 ? 100 * cpu / wall : 0);
        if (R.w0.bcpu >= 0 && R.w1.bcpu >= 0 && wall > 0)
            fprintf(js, ",\"broker_cpu_pct\":%.1f", 100 * (R.w1.bcpu - R.w0.bcpu) / wall);
        if (O.n_cpu_pids && wall > 0) {
            fputs(",\"pids_cpu_pct\":[", js);
            for (int i = 0; i < O.n_cpu_pids; i++)
                fprintf(js, "%s%.1f", i ? "," : "",
                        R.w0.xcpu[i] >= 0 && R.w1.xcpu[i] >= 0
                            ? 100 * (R.w1.xcpu[i] - R.w0.xcpu[i]) / wall : -1.0);
            fputc(']', js);
        }
        if (R.w0.sirq >= 0 && R.w1.sirq >= 0 && wall > 0)
            fprintf(js, ",\"broker_core_softirq_pct\":%.1f,\"broker_core_busy_pct\":%.1f",
                    100 * (R.w1.sirq - R.w0.sirq) / wall, 100 * (R.w1.busy - R.w0.busy) / wall);
        if (O.mode == M_FLOW)
            failed |= verdicts(js, O.qos > 0 || O.strict);
        else if (R.bad_acks) {
            failed = 1;
            fprintf(stderr, "loadgen: FAIL: %" PRIu64 " unexpected PUBACKs\n", R.bad_acks);
        }
        if (O.mode == M_FILL && !R.fatal[0] && acked < produced) {
            failed = 1;
            fprintf(stderr, "loadgen: FAIL: %" PRIu64 " of %" PRIu64 " publishes unacknowledged\n",
                    produced - acked, produced);
        }
    } else if (O.mode == M_IDLE) {
        double secs = R.connect_secs;
        fprintf(js, ",\"connected\":%d,\"connect_s\":%.3f,\"connects_per_s\":%.1f,\"hold_s\":%.1f,"
                "\"closed_by_broker\":%d,\"pings_sent\":%" PRIu64 ",\"pingresp\":%" PRIu64,
                R.ready, secs, secs > 0 ? (double)R.ready / secs : 0, O.hold, R.closed_early,
                R.pings_sent, R.pingresp);
        if (O.broker_pid > 0 && R.rss_held > 0 && R.ready) {
            fprintf(js, ",\"rss_before_kib\":%ld,\"rss_connected_kib\":%ld,\"rss_held_kib\":%ld,"
                    "\"hwm_kib\":%ld,\"kib_per_conn\":%.3f,\"kib_per_conn_connected\":%.3f",
                    R.rss_before, R.rss_connected, R.rss_held, R.hwm,
                    (double)(R.rss_held - R.rss_before) / R.ready,
                    (double)(R.rss_connected - R.rss_before) / R.ready);
        }
        if (R.w0.bcpu >= 0 && R.w1.bcpu >= 0 && R.ready)
            fprintf(js, ",\"broker_cpu_us_per_connect\":%.1f",
                    1e6 * (R.w1.bcpu - R.w0.bcpu) / R.ready);
        if (R.w0.sirq >= 0 && R.w1.sirq >= 0 && R.ready)
            fprintf(js, ",\"broker_core_softirq_us_per_connect\":%.1f",
                    1e6 * (R.w1.sirq - R.w0.sirq) / R.ready);
        if (R.closed_early) {
            failed = 1;
            fprintf(stderr, "loadgen: FAIL: the broker closed %d idle connections during the "
                    "hold\n", R.closed_early);
        }
        fprintf(js, ",\"loadgen_cpu_pct\":%.1f",
                t_end > R.t_start ? 100 * cpu_total / (t_end - R.t_start) : 0);
    } else { /* drain */
        int present = 0;
        for (int i = 0; i < O.sessions; i++) present += R.conns[i].session_present;
        fprintf(js, ",\"started_at\":%.6f,\"accept_at\":%.6f,\"connack0_at\":%.6f,"
                "\"first_msg_at\":%.6f,\"all_at\":%.6f,\"first_msg_ms\":%.2f,\"all_ms\":%.2f,"
                "\"sessions_present\":%d,\"delivered\":%" PRIu64,
                R.t_start, R.t_accept, R.conns[0].t_ready, R.t_first_msg, R.t_all,
                R.t_first_msg > 0 ? 1000 * (R.t_first_msg - R.t_accept) : -1,
                R.t_all > 0 ? 1000 * (R.t_all - R.t_accept) : -1, present, R.delivered);
        if (present < O.sessions) {
            failed = 1;
            fprintf(stderr, "loadgen: FAIL: %d of %d sessions came back without session "
                    "present\n", O.sessions - present, O.sessions);
        }
        failed |= verdicts(js, 1);
        fprintf(js, ",\"loadgen_cpu_pct\":%.1f",
                t_end > R.t_start ? 100 * cpu_total / (t_end - R.t_start) : 0);
    }
    fprintf(js, ",\"loadgen_cpu_s\":%.3f,\"wall_s\":%.3f", cpu_total, t_end - R.t_start);
    if (R.fatal[0]) {
        fprintf(stderr, "loadgen: ERROR: %s\n", R.fatal);
        fprintf(js, ",\"error\":\"");
        for (const char *p = R.fatal; *p; p++)
            fputs(*p == '"' ? "\\\"" : *p == '\\' ? "\\\\" : (char[2]){*p, 0}, js);
        fputc('"', js);
    }
    int code = R.fatal[0] ? R.fatal_code : failed ? 1 : 0;
    fprintf(js, ",\"ok\":%s}\n", code ? "false" : "true");
    fflush(js);
    return code;
}

/* ---------------------------------------------------------------------------------------- */
/* self-test: the checker and the parsers on crafted input                                     */

static int st_checks, st_failures;

static void expect_eq(const char *what, uint64_t got, uint64_t want) {
    st_checks++;
    if (got != want) {
        st_failures++;
        fprintf(stderr, "selftest FAIL: %s: got %" PRIu64 ", want %" PRIu64 "\n", what, got,
                want);
    }
}

static verdict_t run_seq(const uint64_t *seqs, size_t n, uint64_t expected) {
    stream_t s;
    memset(&s, 0, sizeof s);
    for (size_t i = 0; i < n; i++) stream_add(&s, seqs[i]);
    verdict_t v = stream_verdict(&s, expected);
    stream_free(&s);
    return v;
}

static void selftest_checker(void) {
    struct {
        const char *name;
        uint64_t seqs[12];
        size_t n;
        uint64_t expected, missing, reordered, dups, unsent;
    } cases[] = {
        {"in order", {0, 1, 2, 3, 4}, 5, 5, 0, 0, 0, 0},
        {"swapped pair", {0, 2, 1, 3}, 4, 4, 0, 1, 0, 0},
        {"one lost in the middle", {0, 1, 3, 4}, 4, 5, 1, 0, 0, 0},
        {"tail lost", {0, 1, 2}, 3, 5, 2, 0, 0, 0},
        {"nothing arrived", {0}, 0, 3, 3, 0, 0, 0},
        {"duplicate", {0, 1, 1, 2}, 4, 3, 0, 0, 1, 0},
        {"redelivered window (dups)", {0, 1, 2, 1, 2, 3}, 6, 4, 0, 0, 2, 0},
        {"late and lost", {0, 3, 1, 4}, 4, 5, 1, 1, 0, 0},
        {"never sent", {0, 1, 2, 7}, 4, 3, 0, 0, 0, 1},
        {"reversed", {3, 2, 1, 0}, 4, 4, 0, 3, 0, 0},
        {"big gap", {0, 100000, 1}, 3, 2, 0, 1, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        verdict_t v = run_seq(cases[i].seqs, cases[i].n, cases[i].expected);
        char what[128];
        snprintf(what, sizeof what, "%s: missing", cases[i].name);
        expect_eq(what, v.missing, cases[i].missing);
        snprintf(what, sizeof what, "%s: reordered", cases[i].name);
        expect_eq(what, v.reordered, cases[i].reordered);
        snprintf(what, sizeof what, "%s: duplicates", cases[i].name);
        expect_eq(what, v.duplicates, cases[i].dups);
        snprintf(what, sizeof what, "%s: never sent", cases[i].name);
        expect_eq(what, v.unsent, cases[i].unsent);
    }
    /* a long stream with a bitmap that must grow several times */
    stream_t s;
    memset(&s, 0, sizeof s);
    for (uint64_t q = 0; q < 200000; q++)
        if (q != 150001) stream_add(&s, q);
    stream_add(&s, 150001);
    verdict_t v = stream_verdict(&s, 200000);
    expect_eq("long stream: missing", v.missing, 0);
    expect_eq("long stream: reordered", v.reordered, 1);
    stream_free(&s);
}

static void selftest_varint(void) {
    uint32_t vals[] = {0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t b[5];
        size_t n = varint_put(b, vals[i]);
        uint32_t back = 0;
        expect_eq("varint length", (uint64_t)varint_get(b, n, &back), n);
        expect_eq("varint value", back, vals[i]);
        expect_eq("varint incomplete", (uint64_t)varint_get(b, n - 1, &back), 0);
    }
    uint8_t bad[4] = {0xff, 0xff, 0xff, 0xff};
    uint32_t x;
    expect_eq("varint malformed", (uint64_t)(varint_get(bad, 4, &x) + 1), 0);
}

/* A fake subscriber (no socket) fed a crafted byte stream in chunks of `chunk` bytes. */
static void feed_fake(conn_t *c, const uint8_t *p, size_t n, size_t chunk) {
    for (size_t pos = 0; pos < n; pos += chunk) {
        size_t k = n - pos < chunk ? n - pos : chunk;
        memcpy(c->rbuf.p + c->rbuf.len, p + pos, k);
        c->rbuf.len += k;
        process_input(c, now_ns());
    }
}

/* A v5 PUBLISH carrying properties a broker may forward (expiry, subscription identifier
   300, topic alias, a user property, content type): the parser must step over them. */
static size_t publish_with_props(uint8_t *out, int qos, uint16_t pid, const uint8_t *payload,
                                 size_t plen) {
    static const uint8_t props[] = {0x02, 0, 0, 0, 60, 0x0B, 0xAC, 0x02, 0x23, 0, 1,
                                    0x26, 0, 1, 'k', 0, 1, 'v',
                                    0x03, 0, 6, 't', 'e', 'x', 't', '/', 'x'};
    uint8_t body[512];
    size_t n = put_str(body, "b/t/p00000");
    if (qos) n += put_u16(body + n, pid);
    n += varint_put(body + n, sizeof props);
    memcpy(body + n, props, sizeof props);
    n += sizeof props;
    memcpy(body + n, payload, plen);
    return mqtt_packet(out, (uint8_t)(0x30 | qos << 1), body, n + plen);
}

static size_t crafted_publish(uint8_t *out, int qos, uint16_t pid, uint32_t stream,
                              uint64_t seq) {
    uint8_t payload[64];
    memset(payload, 'x', sizeof payload);
    uint32_t magic = MAGIC;
    uint64_t ts = now_ns();
    memcpy(payload, &magic, 4);
    memcpy(payload + 4, &stream, 4);
    memcpy(payload + 8, &seq, 8);
    memcpy(payload + 16, &ts, 8);
    if (O.level == 5 && stream == 2) return publish_with_props(out, qos, pid, payload, sizeof payload);
    return mqtt_publish(out, "b/t/p00000", qos, pid, payload, sizeof payload, NULL, NULL);
}

static void selftest_parser(int ws) {
    /* stream 0: 0..49 in order; stream 1: 0..49 with 10 and 11 swapped and 20 repeated;
       stream 2: 0..49 without 30; then one foreign payload */
    uint8_t *wire = xmalloc(64 * 1024);
    size_t n = 0;
    uint16_t pid = 1;
    for (uint64_t q = 0; q < 50; q++) {
        n += crafted_publish(wire + n, 1, pid++, 0, q);
        uint64_t q1 = q == 10 ? 11 : q == 11 ? 10 : q;
        n += crafted_publish(wire + n, 1, pid++, 1, q1);
        if (q == 20) n += crafted_publish(wire + n, 1, pid++, 1, q1);
        if (q != 30) n += crafted_publish(wire + n, 0, 0, 2, q);
    }
    uint8_t junk[8] = "notgfly!";
    n += mqtt_publish(wire + n, "b/t/x", 0, 0, junk, sizeof junk, NULL, NULL);
    uint8_t *framed = wire;
    size_t fn = n;
    if (ws) { /* server frames of odd sizes, a ping among them, one split over continuations */
        framed = xmalloc(2 * n + 1024);
        fn = 0;
        size_t pos = 0, sizes[] = {1, 3, 200, 7, 126, 65, 1000, 2};
        int i = 0;
        while (pos < n) {
            size_t k = sizes[i % 8];
            if (k > n - pos) k = n - pos;
            /* frames 4..6: binary, continuation, final continuation */
            framed[fn++] = i == 4 ? 0x02 : i == 5 ? 0x00 : i == 6 ? 0x80 : 0x82;
            if (k < 126) {
                framed[fn++] = (uint8_t)k;
            } else {
                framed[fn++] = 126;
                fn += put_u16(framed + fn, (uint16_t)k);
            }
            memcpy(framed + fn, wire + pos, k);
            fn += k;
            pos += k;
            if (i == 2) { /* a ping: must be answered with a pong, not fed to MQTT */
                framed[fn++] = 0x89;
                framed[fn++] = 3;
                memcpy(framed + fn, "abc", 3);
                fn += 3;
            }
            i++;
        }
    }
    size_t chunks[] = {1, 2, 3, 5, 64, 1000, 65536};
    for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
        conn_t c;
        memset(&c, 0, sizeof c);
        c.fd = -1;
        c.role = R_SUB;
        c.ws = ws;
        c.state = S_READY;
        buf_init(&c.rbuf, 256 * 1024);
        if (ws) buf_init(&c.mq, 512 * 1024);
        R.row = 3;
        R.nstreams = 3;
        R.streams = xcalloc(3, sizeof(stream_t));
        R.foreign = 0;
        R.delivered = 0;
        feed_fake(&c, framed, fn, chunks[ci]);
        char what[96];
        const char *t = ws ? "ws" : "tcp";
        verdict_t v0 = stream_verdict(&R.streams[0], 50);
        verdict_t v1 = stream_verdict(&R.streams[1], 50);
        verdict_t v2 = stream_verdict(&R.streams[2], 50);
        snprintf(what, sizeof what, "%s parser chunk %zu: stream 0 received", t, chunks[ci]);
        expect_eq(what, v0.received, 50);
        snprintf(what, sizeof what, "%s parser chunk %zu: stream 0 clean", t, chunks[ci]);
        expect_eq(what, v0.missing + v0.reordered + v0.duplicates, 0);
        snprintf(what, sizeof what, "%s parser chunk %zu: stream 1 reordered", t, chunks[ci]);
        expect_eq(what, v1.reordered, 1);
        snprintf(what, sizeof what, "%s parser chunk %zu: stream 1 duplicates", t, chunks[ci]);
        expect_eq(what, v1.duplicates, 1);
        snprintf(what, sizeof what, "%s parser chunk %zu: stream 2 missing", t, chunks[ci]);
        expect_eq(what, v2.missing, 1);
        snprintf(what, sizeof what, "%s parser chunk %zu: foreign", t, chunks[ci]);
        expect_eq(what, R.foreign, 1);
        /* 101 QoS 1 publishes -> 101 PUBACKs with their packet ids, in order */
        buf_t acks;
        buf_init(&acks, 1024);
        const uint8_t *o = c.out.p + c.out.off;
        size_t on = buf_used(&c.out), op = 0;
        int pongs = 0;
        while (op < on) {
            if (ws) {
                int opcode = o[op] & 0x0f;
                size_t len = o[op + 1] & 0x7f, h = 2;
                if (len == 126) {
                    len = (size_t)o[op + 2] << 8 | o[op + 3];
                    h = 4;
                }
                expect_eq("client frames are masked", o[op + 1] >> 7, 1);
                uint8_t *plain = xmalloc(len + 1);
                mask_copy(plain, o + op + h + 4, len, o + op + h);
                if (opcode == 0xA) {
                    pongs++;
                    expect_eq("pong echoes the ping", (uint64_t)memcmp(plain, "abc", 3), 0);
                } else {
                    buf_put(&acks, plain, len);
                }
                free(plain);
                op += h + 4 + len;
            } else {
                buf_put(&acks, o, on);
                op = on;
            }
        }
        expect_eq("PUBACK bytes", buf_used(&acks), 101 * 4);
        int ok_ids = 1;
        for (size_t i = 0; i + 4 <= buf_used(&acks); i += 4)
            if (acks.p[i] != 0x40 || acks.p[i + 1] != 2 ||
                (size_t)(acks.p[i + 2] << 8 | acks.p[i + 3]) != i / 4 + 1)
                ok_ids = 0;
        expect_eq("PUBACK packet ids in order", (uint64_t)ok_ids, 1);
        if (ws) expect_eq("one pong", (uint64_t)pongs, 1);
        buf_free(&acks);
        for (int s = 0; s < 3; s++) stream_free(&R.streams[s]);
        free(R.streams);
        R.streams = NULL;
        buf_free(&c.rbuf);
        buf_free(&c.out);
        buf_free(&c.ack);
        if (ws) buf_free(&c.mq);
    }
    if (framed != wire) free(framed);
    free(wire);
}

/* A fake connection (no socket) in `state` fed one crafted packet: did it fail the run? */
static int fed_fails(int role, int state, const uint8_t *p, size_t n, conn_t *keep) {
    conn_t c;
    memset(&c, 0, sizeof c);
    c.fd = -1;
    c.role = role;
    c.state = state;
    buf_init(&c.rbuf, 4096);
    feed_fake(&c, p, n, 1);
    int failed = R.fatal[0] != 0;
    R.fatal[0] = 0;
    R.phase = PH_RUN;
    if (keep) {
        *keep = c;
    } else {
        buf_free(&c.rbuf);
        buf_free(&c.out);
        buf_free(&c.ack);
    }
    return failed;
}

static void selftest_v5_acks(void) {
    O.level = 5;
    O.qos = 1;
    O.window = 100;
    /* CONNACK with receive maximum 200, topic alias maximum 10, a reason string */
    static const uint8_t connack[] = {0x20, 0x0E, 0x00, 0x00, 0x0B, 0x21, 0x00, 0xC8,
                                      0x22, 0x00, 0x0A, 0x1F, 0x00, 0x02, 'o', 'k'};
    conn_t sub;
    expect_eq("v5 CONNACK accepted", (uint64_t)fed_fails(R_SUB, S_CONNACK, connack,
                                                         sizeof connack, &sub), 0);
    expect_eq("v5 CONNACK -> SUBSCRIBE", (uint64_t)sub.state, S_SUBACK);
    const uint8_t *o = sub.out.p + sub.out.off;
    expect_eq("v5 SUBSCRIBE has property length 0", (uint64_t)(o[0] == 0x82 && o[4] == 0), 1);
    buf_free(&sub.rbuf);
    buf_free(&sub.out);
    buf_free(&sub.ack);
    /* receive maximum 20 below the window of 100: a QoS 1 publisher must not start */
    static const uint8_t small[] = {0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x14};
    expect_eq("v5 receive maximum below the window fails",
              (uint64_t)fed_fails(R_PUB, S_CONNACK, small, sizeof small, NULL), 1);
    static const uint8_t refused[] = {0x20, 0x03, 0x00, 0x87, 0x00};
    expect_eq("v5 CONNACK 0x87 fails",
              (uint64_t)fed_fails(R_SUB, S_CONNACK, refused, sizeof refused, NULL), 1);
    static const uint8_t suback[] = {0x90, 0x07, 0x00, 0x01, 0x03, 0x1F, 0x00, 0x00, 0x01};
    expect_eq("v5 SUBACK granted QoS 1 with a reason string",
              (uint64_t)fed_fails(R_SUB, S_SUBACK, suback, sizeof suback, NULL), 0);
    static const uint8_t denied[] = {0x90, 0x04, 0x00, 0x01, 0x00, 0x87};
    expect_eq("v5 SUBACK 0x87 fails",
              (uint64_t)fed_fails(R_SUB, S_SUBACK, denied, sizeof denied, NULL), 1);
    static const uint8_t bye[] = {0xE0, 0x02, 0x8B, 0x00};
    expect_eq("server DISCONNECT fails",
              (uint64_t)fed_fails(R_SUB, S_READY, bye, sizeof bye, NULL), 1);
    static const uint8_t badprops[] = {0x30, 0x09, 0x00, 0x01, 'b', 0x05, 0x7F, 0, 0, 0, 0};
    expect_eq("v5 PUBLISH with an unknown property fails",
              (uint64_t)fed_fails(R_SUB, S_READY, badprops, sizeof badprops, NULL), 1);
    O.qos = 0;
    O.level = 4;
}

static void selftest_mask(void) {
    uint8_t src[1001], enc[1001], dec[1001], key[4] = {0x12, 0x34, 0x56, 0x78};
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 7);
    mask_copy(enc, src, sizeof src, key);
    int ok = 1;
    for (size_t i = 0; i < sizeof src; i++) ok &= enc[i] == (src[i] ^ key[i & 3]);
    mask_copy(dec, enc, sizeof enc, key);
    expect_eq("mask matches RFC 6455 5.3", (uint64_t)ok, 1);
    expect_eq("mask round trip", (uint64_t)memcmp(dec, src, sizeof src), 0);
}

static int selftest(void) {
    R.phase = PH_RUN;
    selftest_checker();
    selftest_varint();
    selftest_mask();
    selftest_parser(0);
    selftest_parser(1);
    O.level = 5; /* the same streams as MQTT 5 PUBLISHes, some with properties */
    selftest_parser(0);
    selftest_parser(1);
    O.level = 4;
    selftest_v5_acks();
    printf("{\"selftest\":true,\"checks\":%d,\"failures\":%d,\"ok\":%s}\n", st_checks,
           st_failures, st_failures ? "false" : "true");
    return st_failures ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* main                                                                                       */

/* "a,b,c" -> out[] (at most MAX_LIST positive integers); the count. */
static int int_list(const char *text, int *out, const char *what) {
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || v > 1 << 30 || n == MAX_LIST || (*end && *end != ','))
            die("%s takes up to %d positive integers separated by commas", what, MAX_LIST);
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return n;
}

static void usage(void) {
    fputs(
"usage: loadgen --port N [options]        (one JSON line on stdout)\n"
"  --host A            broker address (127.0.0.1)\n"
"  --ws                WebSocket transport (--ws-path /mqtt, subprotocol mqtt)\n"
"  --ws-frames F       packet: one masked frame per PUBLISH (as MQTT.js); batch: one frame\n"
"                      per write holding a whole batch (default packet)\n"
"  --mode M            flow | idle | fill | drain (flow)\n"
"  --pubs N --subs N   publishers and subscribers (flow: 1, 1; fill: 10 publishers)\n"
"  --qos Q             0, 1 or 2 (0)    --window W    QoS 1/2 unacknowledged per publisher (100)\n"
"  --payload B         payload bytes, >= 24 (64)    --batch B   packets per write (256)\n"
"  --duration S        measured seconds (5)         --warmup S  seconds before (1)\n"
"  --count N           send N per publisher instead (rate over first send..last delivery)\n"
"  --rate R            pace all publishers to R msgs/s in total (latency runs)\n"
"  --expect N          claim N were sent per publisher (proves the checker can fail)\n"
"  --fault-swap K      swap the sequence numbers of each K-th pair (a reorder on purpose)\n"
"  --strict            QoS 0 losses and reorders fail the run too\n"
"  --max-lead N        a publisher stays at most N messages ahead of its slowest\n"
"                      subscriber (0 = unbounded; QoS 0 brokers may queue without limit)\n"
"  --coalesce-us U     unpaced runs: after a small read, let data gather U us (200; 0 = off)\n"
"  --sub-clean 0|1     subscribers' clean session flag (1)\n"
"  --protocol-level L  4 (MQTT 3.1.1) or 5 (MQTT 5, property length 0 everywhere) (4)\n"
"  --conns K --parallel P --keepalive S --hold S    idle mode (10000, 100, 30, 3)\n"
"  --sessions N --per-session M --tag T             fill/drain (1000, 100, random)\n"
"  --wait-port S       drain: poll the port for up to S seconds first\n"
"  --broker-pid PID    sample the broker's CPU and VmRSS from /proc\n"
"  --broker-core N     the CPU the broker is pinned to: report its softirq time too\n"
"  --pub-ports P,P     several brokers (cluster nodes): publisher i connects to the\n"
"  --sub-ports P,P     (i mod n)-th port, subscriber i likewise (default --port)\n"
"  --cpu-pids A,B      report each process's CPU over the window (pids_cpu_pct)\n"
"  --timeout S         setup/first-message timeout (30)   --drain-timeout S (30)\n"
"  --quiet S           QoS 0 drain ends after S s without deliveries (1)\n"
"  --stall S           QoS 1 and drain mode: give up S s after the last delivery once\n"
"                      all is acknowledged / connected (10); what is missing then is lost\n"
"  --selftest          check the sequence checker and parsers on crafted input\n", stderr);
    exit(2);
}

static void raise_nofile(int want) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur >= (rlim_t)want) return;
    if (rl.rlim_max < (rlim_t)want) rl.rlim_max = (rlim_t)want; /* works as root */
    rl.rlim_cur = (rlim_t)want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)want)
            die("need %d file descriptors, RLIMIT_NOFILE allows %llu (raise ulimit -n)", want,
                (unsigned long long)rl.rlim_cur);
    }
}

int main(int argc, char **argv) {
    enum { O_HOST = 1, O_PORT, O_WS, O_WSPATH, O_WSFRAMES, O_MODE, O_PUBS, O_SUBS, O_QOS,
           O_WINDOW, O_PAYLOAD, O_BATCH, O_DURATION, O_WARMUP, O_COUNT, O_RATE, O_EXPECT,
           O_FAULT, O_STRICT, O_SUBCLEAN, O_CONNS, O_PARALLEL, O_KEEPALIVE, O_HOLD,
           O_SESSIONS, O_PERSESSION, O_TAG, O_WAITPORT, O_BPID, O_TIMEOUT, O_DTIMEOUT, O_QUIET,
           O_SELFTEST, O_HELP, O_LEAD, O_COALESCE, O_STALL, O_BCORE, O_LEVEL, O_PUBPORTS,
           O_SUBPORTS, O_CPUPIDS };
    static const struct option longopts[] = {
        {"host", 1, 0, O_HOST}, {"port", 1, 0, O_PORT}, {"ws", 0, 0, O_WS},
        {"ws-path", 1, 0, O_WSPATH}, {"ws-frames", 1, 0, O_WSFRAMES}, {"mode", 1, 0, O_MODE},
        {"pubs", 1, 0, O_PUBS}, {"subs", 1, 0, O_SUBS}, {"qos", 1, 0, O_QOS},
        {"window", 1, 0, O_WINDOW}, {"payload", 1, 0, O_PAYLOAD}, {"batch", 1, 0, O_BATCH},
        {"duration", 1, 0, O_DURATION}, {"warmup", 1, 0, O_WARMUP}, {"count", 1, 0, O_COUNT},
        {"rate", 1, 0, O_RATE}, {"expect", 1, 0, O_EXPECT}, {"fault-swap", 1, 0, O_FAULT},
        {"strict", 0, 0, O_STRICT}, {"sub-clean", 1, 0, O_SUBCLEAN},
        {"conns", 1, 0, O_CONNS}, {"parallel", 1, 0, O_PARALLEL},
        {"keepalive", 1, 0, O_KEEPALIVE}, {"hold", 1, 0, O_HOLD},
        {"sessions", 1, 0, O_SESSIONS}, {"per-session", 1, 0, O_PERSESSION},
        {"tag", 1, 0, O_TAG}, {"wait-port", 1, 0, O_WAITPORT}, {"broker-pid", 1, 0, O_BPID},
        {"timeout", 1, 0, O_TIMEOUT}, {"drain-timeout", 1, 0, O_DTIMEOUT},
        {"quiet", 1, 0, O_QUIET}, {"selftest", 0, 0, O_SELFTEST}, {"help", 0, 0, O_HELP},
        {"max-lead", 1, 0, O_LEAD}, {"coalesce-us", 1, 0, O_COALESCE},
        {"stall", 1, 0, O_STALL}, {"broker-core", 1, 0, O_BCORE},
        {"protocol-level", 1, 0, O_LEVEL}, {"pub-ports", 1, 0, O_PUBPORTS},
        {"sub-ports", 1, 0, O_SUBPORTS}, {"cpu-pids", 1, 0, O_CPUPIDS},
        {0, 0, 0, 0}};
    O.host = "127.0.0.1";
    O.ws_path = "/mqtt";
    O.mode = M_FLOW;
    O.pubs = -1;
    O.subs = 1;
    O.window = 100;
    O.payload = 64;
    O.batch = 256;
    O.duration = 5;
    O.warmup = 1;
    O.conns = 10000;
    O.parallel = -1;
    O.keepalive = 30;
    O.hold = 3;
    O.sessions = 1000;
    O.per_session = 100;
    O.sub_clean = 1;
    O.timeout = 30;
    O.drain_timeout = 30;
    O.quiet = 1;
    O.coalesce_us = 200;
    O.stall = 10;
    O.broker_core = -1;
    O.level = 4;
    int do_selftest = 0;
    rng_state ^= now_ns() ^ ((uint64_t)getpid() << 32);
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case O_HOST: O.host = optarg; break;
        case O_PORT: O.port = atoi(optarg); break;
        case O_WS: O.ws = 1; break;
        case O_WSPATH: O.ws_path = optarg; break;
        case O_WSFRAMES:
            if (!strcmp(optarg, "batch")) O.ws_batch_frames = 1;
            else if (strcmp(optarg, "packet")) die("--ws-frames is packet or batch");
            break;
        case O_MODE:
            if (!strcmp(optarg, "flow")) O.mode = M_FLOW;
            else if (!strcmp(optarg, "idle")) O.mode = M_IDLE;
            else if (!strcmp(optarg, "fill")) O.mode = M_FILL;
            else if (!strcmp(optarg, "drain")) O.mode = M_DRAIN;
            else die("--mode is flow, idle, fill or drain");
            break;
        case O_PUBS: O.pubs = atoi(optarg); break;
        case O_SUBS: O.subs = atoi(optarg); break;
        case O_QOS: O.qos = atoi(optarg); break;
        case O_WINDOW: O.window = atoi(optarg); break;
        case O_PAYLOAD: O.payload = atoi(optarg); break;
        case O_BATCH: O.batch = atoi(optarg); break;
        case O_DURATION: O.duration = atof(optarg); break;
        case O_WARMUP: O.warmup = atof(optarg); break;
        case O_COUNT: O.count = strtoull(optarg, NULL, 10); break;
        case O_RATE: O.rate = atof(optarg); break;
        case O_EXPECT: O.expect = strtoull(optarg, NULL, 10); break;
        case O_FAULT: O.fault_swap = strtoull(optarg, NULL, 10); break;
        case O_STRICT: O.strict = 1; break;
        case O_SUBCLEAN: O.sub_clean = atoi(optarg) != 0; break;
        case O_CONNS: O.conns = atoi(optarg); break;
        case O_PARALLEL: O.parallel = atoi(optarg); break;
        case O_KEEPALIVE: O.keepalive = atoi(optarg); break;
        case O_HOLD: O.hold = atof(optarg); break;
        case O_SESSIONS: O.sessions = atoi(optarg); break;
        case O_PERSESSION: O.per_session = strtoull(optarg, NULL, 10); break;
        case O_TAG: snprintf(O.tag, sizeof O.tag, "%s", optarg); break;
        case O_WAITPORT: O.wait_port = atof(optarg); break;
        case O_BPID: O.broker_pid = atoi(optarg); break;
        case O_TIMEOUT: O.timeout = atof(optarg); break;
        case O_DTIMEOUT: O.drain_timeout = atof(optarg); break;
        case O_QUIET: O.quiet = atof(optarg); break;
        case O_SELFTEST: do_selftest = 1; break;
        case O_LEAD: O.max_lead = strtoull(optarg, NULL, 10); break;
        case O_COALESCE: O.coalesce_us = atoi(optarg); break;
        case O_STALL: O.stall = atof(optarg); break;
        case O_BCORE: O.broker_core = atoi(optarg); break;
        case O_LEVEL: O.level = atoi(optarg); break;
        case O_PUBPORTS: O.n_pub_ports = int_list(optarg, O.pub_ports, "--pub-ports"); break;
        case O_SUBPORTS: O.n_sub_ports = int_list(optarg, O.sub_ports, "--sub-ports"); break;
        case O_CPUPIDS: O.n_cpu_pids = int_list(optarg, O.cpu_pids, "--cpu-pids"); break;
        default: usage();
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (do_selftest) return selftest(); /* before the checks below: it sets O.level itself */
    if (!O.port && O.n_sub_ports) O.port = O.sub_ports[0];
    if (O.port <= 0 || O.port > 65535) usage();
    if (O.qos < 0 || O.qos > 2) die("--qos is 0, 1 or 2");
    if (O.level != 4 && O.level != 5) die("--protocol-level is 4 or 5");
    if (O.payload < PAYLOAD_HEADER || O.payload > 65536) die("--payload is 24..65536");
    if (O.batch < 1 || O.batch > 65535) die("--batch is 1..65535");
    if (O.window < 1 || O.window > 65535) die("--window is 1..65535");
    if (O.fault_swap == 1) die("--fault-swap needs K >= 2");
    if (!O.tag[0]) snprintf(O.tag, sizeof O.tag, "%06llx", (unsigned long long)(rnd() & 0xffffff));
    if (strlen(O.tag) > 8) die("--tag is at most 8 characters");
    if (O.pubs < 0) O.pubs = O.mode == M_FILL ? 10 : 1;
    if (O.mode == M_FILL) O.qos = 1;
    if (O.mode == M_DRAIN) O.pubs = 0;
    if (O.mode == M_FILL && (O.pubs < 1 || O.pubs > O.sessions)) die("fill: 1 <= --pubs <= --sessions");
    if (O.mode == M_FLOW && (O.pubs < 1 || O.subs < 1)) die("flow needs --pubs and --subs >= 1");
    if (O.mode == M_FLOW && O.pubs > 99999) die("--pubs is at most 99999");
    if (O.sessions > 99999) die("--sessions is at most 99999");

    int n_first = O.mode == M_FLOW ? O.subs : O.mode == M_IDLE ? O.conns : O.sessions;
    int n_pubs = O.mode == M_IDLE || O.mode == M_DRAIN ? 0 : O.pubs;
    R.nconns = n_first + n_pubs;
    R.npubs = n_pubs;
    R.nsubs = O.mode == M_FLOW ? O.subs : 0;
    raise_nofile(R.nconns + 64);
    R.conns = xcalloc((size_t)R.nconns, sizeof(conn_t));
    R.pubs = xcalloc((size_t)(n_pubs ? n_pubs : 1), sizeof(conn_t *));
    for (int i = 0; i < R.nconns; i++) {
        conn_t *c = &R.conns[i];
        c->fd = -1;
        c->ws = O.ws;
        if (i < n_first) {
            c->idx = i;
            c->role = O.mode == M_FLOW ? R_SUB : O.mode == M_IDLE ? R_IDLE : R_SESS;
            c->port = O.n_sub_ports ? O.sub_ports[i % O.n_sub_ports] : O.port;
        } else {
            c->idx = i - n_first;
            c->role = R_PUB;
            c->port = O.n_pub_ports ? O.pub_ports[c->idx % O.n_pub_ports] : O.port;
            R.pubs[c->idx] = c;
            pub_init(c);
        }
    }
    if (O.mode == M_FLOW) {
        R.row = O.pubs;
        R.nstreams = O.subs * O.pubs;
    } else if (O.mode == M_DRAIN) {
        R.row = O.sessions;
        R.nstreams = O.sessions;
    }
    if (R.nstreams) R.streams = xcalloc((size_t)R.nstreams, sizeof(stream_t));
    if (O.parallel < 0) O.parallel = O.mode == M_FLOW ? 0 : 100;

    R.ep = epoll_create1(EPOLL_CLOEXEC);
    R.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (R.ep < 0 || R.tfd < 0) die("epoll/timerfd: %s", strerror(errno));
    struct epoll_event te = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(R.ep, EPOLL_CTL_ADD, R.tfd, &te);

    R.t_start = now_s();
    R.cpu_at_start = cpu_self();
    R.rss_before = proc_status_kib(O.broker_pid, "VmRSS");
    if (O.mode == M_IDLE) take_mark(&R.w0, R.t_start);  /* flow modes mark after warm-up */
    if (O.mode == M_DRAIN) {
        R.t_accept = R.t_start;
        if (O.wait_port > 0) wait_for_port();
        R.phase = PH_FIRST;
        open_range(0, 1);
    } else {
        R.phase = PH_SETUP_SUBS;
        open_range(0, n_first);
    }
    struct epoll_event evs[MAX_EVENTS];
    while (R.phase != PH_DONE) {
        double t = now_s();
        step(t);
        if (R.phase == PH_DONE) break;
        /* A broker that writes one small segment per message would have us wake (and pay a
           recv) per few messages; letting a trickle gather for a moment costs throughput runs
           nothing and keeps our CPU low. Paced (latency) runs never wait. */
        if (O.coalesce_us > 0 && O.rate <= 0 && (R.phase == PH_RUN || R.phase == PH_REST) &&
            R.iter_reads && R.iter_bytes / R.iter_reads < 8192) {
            struct timespec ts = {0, (long)O.coalesce_us * 1000};
            nanosleep(&ts, NULL);
        }
        R.iter_bytes = R.iter_reads = 0;
        int n = epoll_wait(R.ep, evs, MAX_EVENTS, 5);
        if (n < 0 && errno != EINTR) fatal(3, "epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n && !R.fatal[0]; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) { /* the pacing timer: hand out the messages now due, round robin */
                uint64_t ticks = 0;
                if (read(R.tfd, &ticks, sizeof ticks) == (ssize_t)sizeof ticks && R.producing)
                    for (uint64_t k = 0; k < ticks; k++)
                        R.pubs[R.rr++ % R.npubs]->pub->owed++;
                continue;
            }
            on_event(c, evs[i].events);
        }
        if (R.producing)
            for (int i = 0; i < R.npubs; i++) pub_produce(R.pubs[i]);
        else if (R.phase == PH_DRAIN)
            for (int i = 0; i < R.npubs; i++)
                if (R.pubs[i]->fd >= 0 && !R.pubs[i]->blocked) conn_flush(R.pubs[i]);
    }
    int code = report();
    /* leave politely: DISCONNECT and close (the broker sees a clean end, not a reset) */
    static const uint8_t disc[2] = {0xE0, 0};
    for (int i = 0; i < R.nconns; i++) {
        conn_t *c = &R.conns[i];
        if (c->fd < 0) continue;
        if (c->state == S_READY) {
            buf_t *o = &c->out;
            o->off = o->len = 0; /* drop unsent acks; nothing else may follow DISCONNECT */
            if (!c->data) {
                send_mqtt(c, disc, 2);
                ssize_t w = send(c->fd, o->p, o->len, MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)w;
            }
        }
        close(c->fd);
        c->fd = -1;
    }
    return code;
}

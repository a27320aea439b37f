/*
 * The bench's load generator in C: the same operations and replies as bench/load.ts, for a
 * fraction of its CPU, so that on a small machine the proxies, not the load, set the ceiling.
 * run.ts compiles it with cc at bench time (into a cache directory outside the checkout) and
 * talks to it over Node's IPC channel: one JSON request per line in on NODE_CHANNEL_FD, one JSON
 * reply per line out. Streams use blocking sockets (one connection); sessions and idle
 * connections are many nonblocking sockets driven by one epoll loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_SIZE (64 * 1024)
#define PAYLOAD_SIZE 64

static unsigned char chunk[CHUNK_SIZE];
static unsigned char last_chunk[CHUNK_SIZE]; /* its "E" tells the sink to answer (targets.ts) */
static unsigned char payload[PAYLOAD_SIZE];
static int ipc = -1;

/* ---- clocks ------------------------------------------------------------------------------ */

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double cpu_ms(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

/* ---- a growable output buffer for the JSON replies --------------------------------------- */

static char *out;
static size_t out_len, out_cap;

static void emit(const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + out_len, out_cap - out_len, fmt, ap);
    va_end(ap);
    if (n >= 0 && out_len + (size_t)n < out_cap) {
      out_len += (size_t)n;
      return;
    }
    out_cap = out_cap * 2 + (size_t)n + 256;
    out = realloc(out, out_cap);
    if (!out) abort();
  }
}

/* Appends a JSON string (the messages are ours or strerror's: plain ASCII, quote-escaped). */
static void emit_string(const char *s) {
  emit("\"");
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') emit("\\%c", *s);
    else if ((unsigned char)*s < 0x20) emit(" ");
    else emit("%c", *s);
  }
  emit("\"");
}

static void send_reply(void) {
  emit("\n");
  size_t at = 0;
  while (at < out_len) {
    ssize_t n = write(ipc, out + at, out_len - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) exit(1);
    at += (size_t)n;
  }
  out_len = 0;
}

/* ---- the request: the JSON that run.ts sends, read by key ------------------------------- */

struct request {
  long id;
  char op[16];
  int direct;   /* via.kind == "direct" */
  int via_port; /* via.port when socks5 */
  int port;
  double seconds;
  long count, concurrency, timeout_ms;
};

static double number_after(const char *text, const char *key, double fallback) {
  const char *at = strstr(text, key);
  return at ? strtod(at + strlen(key), NULL) : fallback;
}

/*
 * JSON.stringify writes no spaces, so keys are found as `"key":`. The `via` object is read first
 * and blanked out, because its "port" is not the target's.
 */
static int parse_request(char *line, struct request *r) {
  memset(r, 0, sizeof *r);
  r->id = (long)number_after(line, "\"id\":", -1);
  const char *op = strstr(line, "\"op\":\"");
  if (r->id < 0 || !op) return -1;
  op += 6;
  size_t n = strcspn(op, "\"");
  if (n >= sizeof r->op) return -1;
  memcpy(r->op, op, n);
  char *via = strstr(line, "\"via\":{");
  if (via) {
    char *end = strchr(via, '}');
    if (!end) return -1;
    *end = 0;
    r->direct = strstr(via, "\"direct\"") != NULL;
    r->via_port = (int)number_after(via, "\"port\":", 0);
    memset(via, ' ', (size_t)(end - via + 1));
  }
  r->port = (int)number_after(line, "\"port\":", 0);
  r->seconds = number_after(line, "\"seconds\":", 0);
  r->count = (long)number_after(line, "\"count\":", 0);
  r->concurrency = (long)number_after(line, "\"concurrency\":", 1);
  r->timeout_ms = (long)number_after(line, "\"timeoutMs\":", 60000);
  return 0;
}

/* ---- connections ------------------------------------------------------------------------- */

/*
 * Sessions (nonblocking) send small messages and want them out at once: TCP_NODELAY, as load.ts.
 * Streams (blocking) leave Nagle on: with it off, each 64 KiB write leaves loopback as a 65,483
 * byte segment and a 53-byte runt, and a proxy that relays the runt on its own (with Nagle on,
 * as all of them have) waits for an ACK the receiver delays; the rate then measures that
 * stall, not the relay. load.ts meets it less, because Node coalesces queued writes (writev).
 */
static int socket_to(int port, int nonblocking) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  int one = 1;
  if (nonblocking) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

static void connect_request(unsigned char b[10], int port) {
  const unsigned char req[10] = {5, 1, 0, 1, 127, 0, 0, 1, (unsigned char)(port >> 8), (unsigned char)port};
  memcpy(b, req, 10);
}

/* Length of a SOCKS5 reply in buf, or 0 while incomplete. */
static size_t reply_length(const unsigned char *buf, size_t len) {
  if (len < 5) return 0;
  size_t need = buf[3] == 1 ? 10 : buf[3] == 4 ? 22 : 7 + (size_t)buf[4];
  return len >= need ? need : 0;
}

static int read_exact(int fd, unsigned char *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ECONNRESET;
      return -1;
    }
    got += (size_t)n;
  }
  return 0;
}

/* Whole records only, so that they stay 64 KiB-aligned on the stream. */
static int write_all(int fd, const unsigned char *b, size_t len) {
  size_t at = 0;
  while (at < len) {
    ssize_t n = write(fd, b + at, len - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    at += (size_t)n;
  }
  return 0;
}

static void timeouts(int fd, int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* A blocking connection ready for data: greeting, wait, CONNECT, wait (not pipelined). */
static int open_blocking(const struct request *r, int port, char *err, size_t errlen) {
  int fd = socket_to(r->direct ? port : r->via_port, 0);
  if (fd < 0) {
    snprintf(err, errlen, "connect: %s", strerror(errno));
    return -1;
  }
  timeouts(fd, 10000);
  if (r->direct) return fd;
  unsigned char buf[32];
  if (write(fd, "\x05\x01\x00", 3) != 3 || read_exact(fd, buf, 2) < 0) {
    snprintf(err, errlen, "greeting: %s", strerror(errno));
    close(fd);
    return -1;
  }
  if (buf[0] != 5 || buf[1] != 0) {
    snprintf(err, errlen, "method selection %d", buf[1]);
    close(fd);
    return -1;
  }
  unsigned char req[10];
  connect_request(req, port);
  if (write(fd, req, 10) != 10 || read_exact(fd, buf, 5) < 0) {
    snprintf(err, errlen, "CONNECT: %s", strerror(errno));
    close(fd);
    return -1;
  }
  size_t need = buf[3] == 1 ? 10 : buf[3] == 4 ? 22 : 7 + (size_t)buf[4];
  if (need > sizeof buf || read_exact(fd, buf + 5, need - 5) < 0) {
    snprintf(err, errlen, "CONNECT reply: %s", strerror(errno));
    close(fd);
    return -1;
  }
  if (buf[1] != 0) {
    snprintf(err, errlen, "CONNECT reply %d", buf[1]);
    close(fd);
    return -1;
  }
  return fd;
}

/* ---- upload / download ------------------------------------------------------------------- */

static void throughput_reply(const struct request *r, double bytes, double seconds, double cpu0, double wall0) {
  emit("{\"id\":%ld,\"ok\":true,\"result\":{\"bytes\":%.0f,\"seconds\":%.6f,\"cpuMs\":%.3f,\"wallMs\":%.3f}}",
       r->id, bytes, seconds, cpu_ms() - cpu0, now_ms() - wall0);
}

static void error_reply(const struct request *r, const char *message) {
  emit("{\"id\":%ld,\"ok\":false,\"error\":", r->id);
  emit_string(message);
  emit("}");
}

/*
 * Writes 64 KiB records for `seconds`, then the last record; the sink answers how much arrived.
 */
static void upload(const struct request *r) {
  char err[256];
  int fd = open_blocking(r, r->port, err, sizeof err);
  if (fd < 0) return error_reply(r, err);
  timeouts(fd, 30000);
  double cpu0 = cpu_ms(), start = now_ms(), stop = start + r->seconds * 1000;
  int failed = 0;
  while (!failed && now_ms() < stop) failed = write_all(fd, chunk, CHUNK_SIZE);
  /* Nagle off now pushes out what it holds, so the last record is not kept waiting for an ACK. */
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (failed || write_all(fd, last_chunk, CHUNK_SIZE)) {
    snprintf(err, sizeof err, "upload write: %s", strerror(errno));
    close(fd);
    return error_reply(r, err);
  }
  unsigned char answer[16];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(fd, answer + got, sizeof answer - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
    if (got == sizeof answer) break;
  }
  double elapsed = (now_ms() - start) / 1000;
  close(fd);
  if (got != 8) {
    snprintf(err, sizeof err, "sink answered %zu bytes", got);
    return error_reply(r, err);
  }
  uint64_t bytes = 0;
  for (int i = 0; i < 8; i++) bytes = bytes << 8 | answer[i];
  throughput_reply(r, (double)bytes, elapsed, cpu0, start);
}

/* Reads from the source for `seconds`, then drops the connection. */
static void download(const struct request *r) {
  static unsigned char buf[CHUNK_SIZE];
  char err[256];
  int fd = open_blocking(r, r->port, err, sizeof err);
  if (fd < 0) return error_reply(r, err);
  timeouts(fd, 200); /* so the clock is looked at even if the data stalls */
  double cpu0 = cpu_ms(), start = now_ms(), stop = start + r->seconds * 1000;
  double bytes = 0;
  while (now_ms() < stop) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) bytes += (double)n;
    else if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    else {
      snprintf(err, sizeof err, "download: %s", n == 0 ? "the source closed" : strerror(errno));
      close(fd);
      return error_reply(r, err);
    }
  }
  double elapsed = (now_ms() - start) / 1000;
  close(fd);
  throughput_reply(r, bytes, elapsed, cpu0, start);
}

/* ---- many connections: sessions and idle ones -------------------------------------------- */

enum stage { CONNECTING, GREETING, REPLY, ECHO, CLOSING };

struct conn {
  int fd;
  enum stage stage;
  long slot; /* index in many.live */
  double t0;
  size_t got;
  unsigned char buf[64];
};

struct many {
  const struct request *r;
  int hold; /* 1: one byte echoed, then keep the connection; 0: whole sessions */
  int epoll;
  long started, finished, errors;
  char first_error[256];
  double *latencies;
  long ok;
  struct conn **live; /* by start order; NULL once finished */
};

static void done(struct many *m, struct conn *c) {
  m->live[c->slot] = NULL;
  free(c);
  m->finished++;
}

static int *held;
static long held_count, held_cap;

static void fail(struct many *m, struct conn *c, const char *what, int err) {
  m->errors++;
  if (!m->first_error[0]) {
    if (err) snprintf(m->first_error, sizeof m->first_error, "%s: %s", what, strerror(err));
    else snprintf(m->first_error, sizeof m->first_error, "%s", what);
  }
  close(c->fd);
  done(m, c);
}

static void start_one(struct many *m) {
  const struct request *r = m->r;
  m->started++;
  struct conn *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->t0 = now_ms();
  c->slot = m->started - 1;
  c->fd = socket_to(r->direct ? r->port : r->via_port, 1);
  if (c->fd < 0) {
    m->errors++;
    m->finished++;
    if (!m->first_error[0]) snprintf(m->first_error, sizeof m->first_error, "connect: %s", strerror(errno));
    free(c);
    return;
  }
  m->live[c->slot] = c;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
  epoll_ctl(m->epoll, EPOLL_CTL_ADD, c->fd, &ev);
}

static int send_all(int fd, const void *b, size_t len) {
  return write(fd, b, len) == (ssize_t)len ? 0 : -1; /* tiny writes to an empty socket buffer */
}

/* The data step once the path to the target is up: 64 bytes (sessions) or one byte (hold). */
static int send_payload(struct many *m, struct conn *c) {
  c->stage = ECHO;
  c->got = 0;
  return m->hold ? send_all(c->fd, "x", 1) : send_all(c->fd, payload, PAYLOAD_SIZE);
}

/* Advances one connection on an epoll event; returns 1 when it is finished (ok or failed). */
static int step(struct many *m, struct conn *c, uint32_t events) {
  if (c->stage == CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (events & EPOLLERR)) return fail(m, c, "connect", err), 1;
    if (!(events & EPOLLOUT)) return 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(m->epoll, EPOLL_CTL_MOD, c->fd, &ev);
    if (m->r->direct) {
      if (send_payload(m, c) < 0) return fail(m, c, "write", errno), 1;
    } else {
      c->stage = GREETING;
      if (send_all(c->fd, "\x05\x01\x00", 3) < 0) return fail(m, c, "greeting", errno), 1;
    }
    return 0;
  }
  unsigned char tmp[256];
  ssize_t n = read(c->fd, tmp, sizeof tmp);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  if (n < 0) return fail(m, c, "read", errno), 1;
  if (n == 0) {
    if (c->stage != CLOSING) {
      char what[96];
      snprintf(what, sizeof what, c->stage == ECHO ? "session closed after %zu of %d echoed bytes"
                                                   : "closed during the handshake (%zu bytes)",
               c->got, m->hold ? 1 : PAYLOAD_SIZE);
      return fail(m, c, what, 0), 1;
    }
    m->latencies[m->ok++] = now_ms() - c->t0;
    close(c->fd);
    done(m, c);
    return 1;
  }
  if (c->stage == CLOSING) return fail(m, c, "data after the echo", 0), 1;
  if (c->stage == ECHO) {
    size_t want = m->hold ? 1 : PAYLOAD_SIZE;
    if (c->got + (size_t)n > want || (!m->hold && memcmp(tmp, payload + c->got, (size_t)n) != 0))
      return fail(m, c, "echo mismatch", 0), 1;
    c->got += (size_t)n;
    if (c->got < want) return 0;
    if (m->hold) {
      /* Up and idle: kept until "release". */
      epoll_ctl(m->epoll, EPOLL_CTL_DEL, c->fd, NULL);
      if (held_count == held_cap) {
        held_cap = held_cap * 2 + 1024;
        held = realloc(held, (size_t)held_cap * sizeof *held);
        if (!held) abort();
      }
      held[held_count++] = c->fd;
      done(m, c);
      return 1;
    }
    shutdown(c->fd, SHUT_WR);
    c->stage = CLOSING;
    return 0;
  }
  /* GREETING or REPLY: gather the server's answer. */
  if (c->got + (size_t)n > sizeof c->buf) return fail(m, c, "handshake answer too long", 0), 1;
  memcpy(c->buf + c->got, tmp, (size_t)n);
  c->got += (size_t)n;
  if (c->stage == GREETING) {
    if (c->got < 2) return 0;
    if (c->buf[0] != 5 || c->buf[1] != 0) return fail(m, c, "method selection refused", 0), 1;
    if (c->got > 2) return fail(m, c, "bytes after the method selection", 0), 1;
    unsigned char req[10];
    connect_request(req, m->r->port);
    c->stage = REPLY;
    c->got = 0;
    if (send_all(c->fd, req, 10) < 0) return fail(m, c, "CONNECT", errno), 1;
    return 0;
  }
  size_t len = reply_length(c->buf, c->got);
  if (len == 0) return 0;
  if (c->buf[1] != 0) {
    char what[64];
    snprintf(what, sizeof what, "CONNECT reply %d", c->buf[1]);
    return fail(m, c, what, 0), 1;
  }
  if (c->got > len) return fail(m, c, "bytes after the CONNECT reply", 0), 1;
  if (send_payload(m, c) < 0) return fail(m, c, "write", errno), 1;
  return 0;
}

/* `count` connections, `concurrency` at a time, until all are done or the time is up. */
static void run_many(const struct request *r, int hold) {
  struct many m = {.r = r, .hold = hold};
  m.epoll = epoll_create1(EPOLL_CLOEXEC);
  size_t slots = (size_t)(r->count > 0 ? r->count : 1);
  m.latencies = malloc(sizeof(double) * slots);
  m.live = calloc(slots, sizeof *m.live);
  if (m.epoll < 0 || !m.latencies || !m.live) abort();
  double cpu0 = cpu_ms(), start = now_ms(), deadline = start + (double)r->timeout_ms;
  for (long i = 0; i < r->concurrency && m.started < r->count; i++) start_one(&m);
  struct epoll_event events[256];
  while (m.finished < r->count) {
    while (m.started < r->count && m.started - m.finished < r->concurrency) start_one(&m);
    if (m.finished >= r->count) break;
    double left = deadline - now_ms();
    if (left <= 0) break;
    int n = epoll_wait(m.epoll, events, 256, (int)left + 1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; i++) step(&m, events[i].data.ptr, events[i].events);
  }
  if (m.finished < r->count) {
    /* Time is up: the unfinished connections count as errors and are dropped. */
    long unfinished = r->count - m.finished;
    for (long i = 0; i < m.started; i++) {
      if (!m.live[i]) continue;
      close(m.live[i]->fd);
      free(m.live[i]);
    }
    m.errors += unfinished;
    if (!m.first_error[0])
      snprintf(m.first_error, sizeof m.first_error, "timed out after %ld ms with %ld unfinished", r->timeout_ms,
               unfinished);
  }
  close(m.epoll);
  double cpu = cpu_ms() - cpu0, wall = now_ms() - start;
  emit("{\"id\":%ld,\"ok\":true,\"result\":{", r->id);
  if (hold) {
    emit("\"open\":%ld,\"errors\":%ld,", held_count, m.errors);
  } else {
    emit("\"ok\":%ld,\"errors\":%ld,\"latencies\":[", m.ok, m.errors);
    for (long i = 0; i < m.ok; i++) emit(i ? ",%.3f" : "%.3f", m.latencies[i]);
    emit("],");
  }
  if (m.first_error[0]) {
    emit("\"firstError\":");
    emit_string(m.first_error);
    emit(",");
  }
  emit("\"cpuMs\":%.3f,\"wallMs\":%.3f}}", cpu, wall);
  free(m.latencies);
  free(m.live);
}

static void release(const struct request *r) {
  for (long i = 0; i < held_count; i++) close(held[i]);
  held_count = 0;
  emit("{\"id\":%ld,\"ok\":true,\"result\":null}", r->id);
}

/* ---- the IPC loop ------------------------------------------------------------------------ */

static void handle(char *line) {
  struct request r;
  if (parse_request(line, &r) < 0) return; /* not a request of ours (Node's internal messages) */
  if (!strcmp(r.op, "upload")) upload(&r);
  else if (!strcmp(r.op, "download")) download(&r);
  else if (!strcmp(r.op, "sessions")) run_many(&r, 0);
  else if (!strcmp(r.op, "hold")) run_many(&r, 1);
  else if (!strcmp(r.op, "release")) release(&r);
  else if (!strcmp(r.op, "exit")) exit(0);
  else error_reply(&r, "unknown op");
  send_reply();
}

int main(void) {
  const char *fd = getenv("NODE_CHANNEL_FD");
  if (!fd) {
    fprintf(stderr, "load: start me from run.ts (no NODE_CHANNEL_FD)\n");
    return 2;
  }
  ipc = atoi(fd);
  signal(SIGPIPE, SIG_IGN);
  const char *fill = "ferry-bench-upload;";
  const char *end = "End-of-upload;";
  for (size_t i = 0; i < CHUNK_SIZE; i++) {
    chunk[i] = (unsigned char)fill[i % strlen(fill)];
    last_chunk[i] = (unsigned char)end[i % strlen(end)];
  }
  for (size_t i = 0; i < PAYLOAD_SIZE; i++) payload[i] = (unsigned char)"0123456789abcdef"[i % 16];
  emit("{\"ready\":true}");
  send_reply();
  static char in[1 << 16];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(ipc, in + have, sizeof in - 1 - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0; /* the orchestrator went away */
    have += (size_t)n;
    in[have] = 0;
    char *line = in, *nl;
    while ((nl = strchr(line, '\n'))) {
      *nl = 0;
      handle(line);
      line = nl + 1;
    }
    have = (size_t)(in + have - line);
    memmove(in, line, have);
    if (have == sizeof in - 1) have = 0; /* an absurd line: drop it */
  }
}

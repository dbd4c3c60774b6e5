// The floor for a proxy written natively: one thread, epoll, read(2)/write(2) both ways, no parsing, no audit.
// `make bench` compiles it (cc -O2) into its temp dir and runs it as the `native-pipe` leg beside the Node.js bare
// pipe, so the report shows how far the Node floor itself sits above a native one on the same machine and hour.
// Usage: native-pipe --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

// One direction's socket. Bytes read from `fd` go to `peer->fd`; what the peer's socket would not take yet waits in
// `pending`, and `fd` is not read again until it has gone (backpressure, as Node's pipe() does).
typedef struct side {
  int fd;
  struct side *peer;
  char *pending;
  size_t pending_len, pending_off;
  int closed;
} side;

static int ep;
static char buf[65536];

static int parse_addr(const char *s, struct sockaddr_in *a) {
  const char *colon = s ? strrchr(s, ':') : NULL;
  char host[64];
  if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
  memcpy(host, s, colon - s);
  host[colon - s] = 0;
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons((unsigned short)atoi(colon + 1));
  return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

// A side is read while nothing it read waits for its peer, and watched for room while its peer's bytes wait for it.
static void watch(side *s) {
  struct epoll_event ev = {.events = (s->pending_len ? 0 : EPOLLIN) | (s->peer->pending_len ? EPOLLOUT : 0),
                           .data.ptr = s};
  epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void close_pair(side *s) {
  side *p = s->peer;
  if (s->closed) return;
  s->closed = p->closed = 1;
  close(s->fd);
  close(p->fd);
  // Freed after the current epoll batch (see main): a later event of the same batch may still name either side.
}

// Writes what `from` holds for its peer; returns 0 when all of it went, 1 when the peer is full, -1 on error.
static int flush(side *from) {
  side *to = from->peer;
  while (from->pending_off < from->pending_len) {
    ssize_t w = write(to->fd, from->pending + from->pending_off, from->pending_len - from->pending_off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 1 : -1;
    }
    from->pending_off += (size_t)w;
  }
  from->pending_len = from->pending_off = 0;
  return 0;
}

static int relay(side *from, const char *data, size_t len) {
  side *to = from->peer;
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(to->fd, data + off, len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -1;
      from->pending = realloc(from->pending, len - off);
      memcpy(from->pending, data + off, len - off);
      from->pending_len = len - off;
      from->pending_off = 0;
      watch(from);
      watch(to);
      return 1;
    }
    off += (size_t)w;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *listen_at = NULL, *upstream_at = NULL;
  struct sockaddr_in la, ua;
  for (int i = 1; i + 1 < argc; i++) {
    if (!strcmp(argv[i], "--listen")) listen_at = argv[i + 1];
    if (!strcmp(argv[i], "--upstream")) upstream_at = argv[i + 1];
  }
  if (parse_addr(listen_at, &la) || parse_addr(upstream_at, &ua)) {
    fprintf(stderr, "native-pipe: --listen and --upstream IPv4:port are required\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 128)) {
    perror("native-pipe: listen");
    return 1;
  }
  ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
  printf("native-pipe listening on %s\n", listen_at);
  fflush(stdout);

  struct epoll_event events[64];
  side *dead[128];
  for (;;) {
    int n = epoll_wait(ep, events, 64, -1);
    int ndead = 0;
    for (int i = 0; i < n; i++) {
      side *s = events[i].data.ptr;
      if (!s) {
        int cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (cfd < 0) continue;
        // The upstream connect blocks: only the benchmark's pgbench connects, once per client at its start.
        int ufd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(ufd, (struct sockaddr *)&ua, sizeof ua)) {
          close(cfd);
          close(ufd);
          continue;
        }
        fcntl(ufd, F_SETFL, fcntl(ufd, F_GETFL) | O_NONBLOCK);
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        side *c = calloc(1, sizeof *c), *u = calloc(1, sizeof *u);
        c->fd = cfd;
        u->fd = ufd;
        c->peer = u;
        u->peer = c;
        struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c}, ue = {.events = EPOLLIN, .data.ptr = u};
        epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ce);
        epoll_ctl(ep, EPOLL_CTL_ADD, ufd, &ue);
        continue;
      }
      if (s->closed) continue;
      int broken = 0;
      if (events[i].events & EPOLLOUT) {
        // s's peer had bytes waiting for s: send them, then let the peer be read again.
        int r = flush(s->peer);
        if (r < 0) broken = 1;
        if (r == 0) {
          watch(s);
          watch(s->peer);
        }
      }
      if (!broken && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && s->pending_len == 0) {
        ssize_t r = read(s->fd, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) broken = 1;
        else if (r > 0 && relay(s, buf, (size_t)r) < 0) broken = 1;
      }
      if (broken) {
        close_pair(s);
        // At most 64 events per batch, so at most 128 sides to free.
        dead[ndead++] = s;
        dead[ndead++] = s->peer;
      }
    }
    for (int i = 0; i < ndead; i++) {
      free(dead[i]->pending);
      free(dead[i]);
    }
  }
}

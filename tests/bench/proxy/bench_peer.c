/* The client and the sink of the proxy benchmark, in C so that neither eats the CPU the proxy
 * under test needs (a Python client and sink took most of the two cores we measure on).
 * bench_proxy.py compiles it with cc and uses the same binary for every path.
 *
 *   bench_peer sink ADDRESS               listens on ADDRESS (an IPv4 literal), prints its port,
 *                                         then serves connections one by one: an 8-byte
 *                                         big-endian length, that many bytes; answers with the
 *                                         count in decimal and closes.
 *   bench_peer setup PROXY ADDRESS TARGET COUNT   COUNT sequential set-ups; prints each in µs
 *   bench_peer throughput PROXY ADDRESS TARGET MIB  sends MIB MiB through one connection;
 *                                         prints the seconds from the length to the sink's
 *                                         answer
 *
 * PROXY is the proxy's port on 127.0.0.1, or 0 for a direct connection; ADDRESS and TARGET
 * are the sink's address and port (the proxy is asked to CONNECT to them).
 * A set-up is connect() for a direct connection, and connect() + CONNECT + "200" through a
 * proxy.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static struct sockaddr_in ipv4(const char *host, int port) {
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
    fprintf(stderr, "bench_peer: not an IPv4 address: %s\n", host);
    exit(2);
  }
  return address;
}

static void send_all(int fd, const char *data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) die("send");
    data += n;
    size -= (size_t)n;
  }
}

/* Reads until the peer closes; returns what it said (small answers only). */
static long read_answer(int fd) {
  char text[64] = {0};
  size_t got = 0;
  ssize_t n;
  while (got < sizeof text - 1 && (n = recv(fd, text + got, sizeof text - 1 - got, 0)) > 0)
    got += (size_t)n;
  return got ? atol(text) : -1;
}

/* A socket to the sink, directly or through the proxy's CONNECT tunnel. */
static int open_path(int proxy_port, const char *target, int target_port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in address =
      proxy_port ? ipv4("127.0.0.1", proxy_port) : ipv4(target, target_port);
  if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect");
  if (!proxy_port) return fd;

  char request[160];
  int length = snprintf(request, sizeof request,
                        "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", target,
                        target_port, target, target_port);
  send_all(fd, request, (size_t)length);
  char head[1024];
  size_t got = 0;
  while (got < sizeof head - 1) {
    ssize_t n = recv(fd, head + got, sizeof head - 1 - got, 0);
    if (n <= 0) die("proxy closed during CONNECT");
    got += (size_t)n;
    head[got] = '\0';
    if (strstr(head, "\r\n\r\n")) break;
  }
  if (strncmp(head, "HTTP/1.1 200", 12) != 0 && strncmp(head, "HTTP/1.0 200", 12) != 0) {
    fprintf(stderr, "proxy refused: %.80s\n", head);
    exit(1);
  }
  return fd;
}

static void send_length(int fd, uint64_t length) {
  unsigned char header[8];
  for (int i = 0; i < 8; ++i) header[i] = (unsigned char)(length >> (56 - 8 * i));
  send_all(fd, (const char *)header, sizeof header);
}

static int run_setups(int proxy_port, const char *target, int target_port, long count) {
  for (long i = 0; i < count; ++i) {
    double started = now_us();
    int fd = open_path(proxy_port, target, target_port);
    printf("%.1f\n", now_us() - started);
    send_length(fd, 0); /* the sink's answer tells us the tunnel is done with */
    if (read_answer(fd) != 0) die("sink answer");
    close(fd);
  }
  return 0;
}

static int run_throughput(int proxy_port, const char *target, int target_port, long mib) {
  static char chunk[CHUNK];
  int fd = open_path(proxy_port, target, target_port);
  double started = now_us();
  send_length(fd, (uint64_t)mib * CHUNK);
  for (long i = 0; i < mib; ++i) send_all(fd, chunk, sizeof chunk);
  long answer = read_answer(fd);
  double seconds = (now_us() - started) / 1e6;
  if (answer != mib * CHUNK) die("sink counted a different number of bytes");
  close(fd);
  printf("%.6f\n", seconds);
  return 0;
}

static void serve_one(int fd) {
  static char buffer[CHUNK];
  unsigned char header[8];
  size_t got = 0;
  ssize_t n;
  while (got < sizeof header && (n = recv(fd, header + got, sizeof header - got, 0)) > 0)
    got += (size_t)n;
  if (got < sizeof header) return;
  uint64_t expected = 0;
  for (int i = 0; i < 8; ++i) expected = expected << 8 | header[i];
  uint64_t total = 0;
  while (total < expected && (n = recv(fd, buffer, sizeof buffer, 0)) > 0) total += (size_t)n;
  char answer[32];
  int length = snprintf(answer, sizeof answer, "%llu", (unsigned long long)total);
  send(fd, answer, (size_t)length, MSG_NOSIGNAL);
}

/* One connection at a time: the client is sequential, and a thread per connection would
 * cost CPU on the path being measured. */
static _Noreturn void run_sink(const char *host) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = ipv4(host, 0);
  socklen_t length = sizeof address;
  if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 ||
      listen(listener, 1024) != 0 ||
      getsockname(listener, (struct sockaddr *)&address, &length) != 0)
    die("listen");
  printf("%d\n", ntohs(address.sin_port));
  fflush(stdout);
  struct timeval patience = {.tv_sec = 30};
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience); /* a lost client */
    serve_one(fd);
    close(fd);
  }
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "sink") == 0) run_sink(argv[2]);
  if (argc == 6 && strcmp(argv[1], "setup") == 0)
    return run_setups(atoi(argv[2]), argv[3], atoi(argv[4]), atol(argv[5]));
  if (argc == 6 && strcmp(argv[1], "throughput") == 0)
    return run_throughput(atoi(argv[2]), argv[3], atoi(argv[4]), atol(argv[5]));
  fprintf(stderr, "usage: bench_peer sink ADDRESS | setup|throughput PROXY_PORT ADDRESS "
                  "TARGET_PORT N\n");
  return 2;
}

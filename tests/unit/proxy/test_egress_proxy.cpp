// EgressProxy in this process against real TCP servers on 127.0.0.1: CONNECT tunnels and the
// gateway relay. The proxy runs its loop on a thread of this process, which keeps SIGPIPE at
// its default action, so a SIGPIPE escaping the proxy would kill the test.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/sys.hpp"
#include "proxy/egress_proxy.hpp"

using namespace oshpc::proxy;
using namespace std::chrono_literals;
using oshpc::sys::UniqueFd;

namespace {

UniqueFd listen_loopback(std::uint16_t& port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length) == 0);
  REQUIRE(::listen(fd.get(), 64) == 0);
  REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
  port = ntohs(address.sin_port);
  return fd;
}

// A blocking client socket that gives up reading after 5 s (a hung proxy fails the test).
UniqueFd connect_loopback(std::uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  timeval patience{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
  return fd;
}

void send_all(int fd, const std::string& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    REQUIRE(n > 0);
    sent += static_cast<std::size_t>(n);
  }
}

// Reads until the peer's end of stream; a reset also ends it. Fails on the 5 s timeout.
std::string read_to_eof(int fd) {
  std::string out;
  char chunk[65536];
  for (;;) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      out.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    REQUIRE_FALSE((n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)));
    return out;
  }
}

// Echoes each connection (a thread each); at the client's end of stream, ends its own.
class EchoServer {
 public:
  EchoServer() : listener_(listen_loopback(port_)), acceptor_([this] { accept_loop(); }) {}
  ~EchoServer() {
    ::shutdown(listener_.get(), SHUT_RDWR);  // wakes accept()
    acceptor_.join();
    for (auto& worker : workers_) worker.join();
  }
  std::uint16_t port() const { return port_; }

 private:
  void accept_loop() {
    for (;;) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      workers_.emplace_back([fd] { echo(UniqueFd(fd)); });
    }
  }
  static void echo(UniqueFd fd) {
    char chunk[65536];
    ssize_t n;
    while ((n = ::recv(fd.get(), chunk, sizeof chunk, 0)) > 0) {
      for (ssize_t sent = 0; sent < n;) {
        ssize_t m =
            ::send(fd.get(), chunk + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
        if (m <= 0) return;
        sent += m;
      }
    }
    ::shutdown(fd.get(), SHUT_WR);
  }

  std::uint16_t port_ = 0;
  UniqueFd listener_;
  std::thread acceptor_;
  std::vector<std::thread> workers_;
};

// An EgressProxy served by its own thread, as the node agent's loop would; calls into the
// proxy go through call() so that only that thread touches it.
class ProxyLoop {
 public:
  explicit ProxyLoop(ProxyOptions options = {}, Policy policy = {})
      : proxy_(std::move(policy), std::move(options),
               [this](const ProxyDecision& d) {
                 std::lock_guard lock(mutex_);
                 decisions_.push_back(d);
                 changed_.notify_all();
               }),
        thread_([this] { run(); }) {}
  ~ProxyLoop() {
    stop_ = true;
    thread_.join();
  }

  void call(std::function<void(EgressProxy&)> task) {
    std::packaged_task<void()> job([&] { task(proxy_); });
    auto done = job.get_future();
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(job));
    }
    done.get();  // rethrows what the task threw
  }

  // Serves a new proxy listener on 127.0.0.1 for sandbox_id; returns its port.
  std::uint16_t add_listener(const std::string& sandbox_id) {
    std::uint16_t port = 0;
    UniqueFd listener = listen_loopback(port);
    call([&](EgressProxy& proxy) { proxy.add_listener(std::move(listener), sandbox_id); });
    return port;
  }

  // Serves a new relay listener on 127.0.0.1 for sandbox_id; returns its port.
  std::uint16_t add_relay(const std::string& sandbox_id, RelayTarget target) {
    std::uint16_t port = 0;
    UniqueFd listener = listen_loopback(port);
    call([&](EgressProxy& proxy) {
      proxy.add_relay_listener(std::move(listener), sandbox_id, target);
    });
    return port;
  }

  std::vector<ProxyDecision> wait_for_decisions(std::size_t count) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 5s, [&] { return decisions_.size() >= count; });
    return decisions_;
  }

 private:
  void run() {
    while (!stop_) {
      std::vector<std::packaged_task<void()>> tasks;
      {
        std::lock_guard lock(mutex_);
        tasks.swap(tasks_);
      }
      for (auto& task : tasks) task();
      proxy_.handle_ready(10);
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<ProxyDecision> decisions_;
  std::vector<std::packaged_task<void()>> tasks_;
  std::atomic<bool> stop_ = false;
  EgressProxy proxy_;
  std::thread thread_;
};

// A policy that allows 127.0.0.1:port, loopback included.
Policy allow_loopback(std::uint16_t port) {
  return parse_policy(
      "network_policies:\n  local:\n    endpoints:\n      - host: 127.0.0.1\n"
      "        port: " +
      std::to_string(port) + "\n        allowed_ips: [127.0.0.1]\n");
}

// A client through the proxy on proxy_port, CONNECTed to 127.0.0.1:target_port.
UniqueFd open_tunnel(std::uint16_t proxy_port, std::uint16_t target_port) {
  UniqueFd fd = connect_loopback(proxy_port);
  std::string target = "127.0.0.1:" + std::to_string(target_port);
  send_all(fd.get(), "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n");
  std::string head;
  char byte;
  while (head.find("\r\n\r\n") == std::string::npos && ::recv(fd.get(), &byte, 1, 0) == 1) {
    head += byte;  // one byte at a time: nothing after the head may be taken
  }
  REQUIRE(head.starts_with("HTTP/1.1 200"));
  return fd;
}

// Sends payload, half-closes, and returns everything the other end sent until its end.
std::string exchange(int fd, const std::string& payload) {
  std::thread writer([&] {
    send_all(fd, payload);
    ::shutdown(fd, SHUT_WR);
  });
  std::string answer = read_to_eof(fd);
  writer.join();
  return answer;
}

std::string pattern(std::size_t size) {
  std::string text(size, ' ');
  for (std::size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + i % 26);
  return text;
}

void check_relay_decision(const ProxyDecision& d, std::uint16_t port) {
  CHECK(d.sandbox_id == "sandbox-1");
  CHECK(d.allowed);
  CHECK(d.method == "RELAY");
  CHECK(d.rule == "gateway-relay");
  CHECK(d.port == port);
  CHECK(d.status == 0);
}

}  // namespace

TEST_CASE("a CONNECT tunnel carries bytes both ways and passes half-closes on") {
  ::signal(SIGPIPE, SIG_DFL);
  bool splice = GENERATE(true, false);
  CAPTURE(splice);
  EchoServer echo;
  ProxyOptions options;
  options.splice = splice;
  ProxyLoop loop(options, allow_loopback(echo.port()));
  std::uint16_t port = loop.add_listener("sandbox-1");

  UniqueFd client = open_tunnel(port, echo.port());
  std::string payload = pattern(300'000);  // more than a pipe or buffer holds
  CHECK(exchange(client.get(), payload) == payload);
  auto decisions = loop.wait_for_decisions(1);
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].method == "CONNECT");
  CHECK(decisions[0].status == 200);
  CHECK(decisions[0].reason == "");
  CHECK(decisions[0].bytes_up == payload.size());
  CHECK(decisions[0].bytes_down == payload.size());
}

TEST_CASE("a destination gone while the sandbox still sends ends the tunnel, not the process") {
  // Spliced into a socket whose peer has closed and then reset it, the kernel raises SIGPIPE.
  ::signal(SIGPIPE, SIG_DFL);
  std::uint16_t server_port = 0;
  UniqueFd server = listen_loopback(server_port);
  ProxyLoop loop({}, allow_loopback(server_port));
  UniqueFd client = open_tunnel(loop.add_listener("sandbox-1"), server_port);
  UniqueFd accepted(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
  accepted.reset();  // nothing unread: a FIN, and a reset for whatever comes after it
  CHECK(read_to_eof(client.get()).empty());  // the tunnel passed the end on

  std::string chunk(16384, 'z');
  for (int i = 0; i < 200; ++i) {
    if (::send(client.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;
    std::this_thread::sleep_for(1ms);
  }
  auto decisions = loop.wait_for_decisions(1);
  REQUIRE(decisions.size() == 1);
  CHECK_THAT(decisions[0].reason, Catch::StartsWith("destination: "));
}

TEST_CASE("a relay listener passes bytes both ways and passes half-closes on") {
  ::signal(SIGPIPE, SIG_DFL);
  bool splice = GENERATE(true, false);
  CAPTURE(splice);
  EchoServer echo;
  ProxyOptions options;
  options.splice = splice;
  ProxyLoop loop(options);
  std::uint16_t port = loop.add_relay("sandbox-1", {"127.0.0.1", echo.port()});

  UniqueFd client = connect_loopback(port);
  std::string payload = pattern(300'000);
  CHECK(exchange(client.get(), payload) == payload);  // the echo server ends after our end

  auto decisions = loop.wait_for_decisions(1);
  REQUIRE(decisions.size() == 1);
  check_relay_decision(decisions[0], echo.port());
  CHECK(decisions[0].host == "127.0.0.1");
  CHECK(decisions[0].reason == "");
  CHECK(decisions[0].bytes_up == payload.size());
  CHECK(decisions[0].bytes_down == payload.size());
}

TEST_CASE("a relay target given by name is resolved, falling through to the address that works") {
  EchoServer echo;  // on 127.0.0.1 only: "localhost" may resolve to ::1 first
  ProxyLoop loop;
  std::uint16_t port = loop.add_relay("sandbox-1", {"localhost", echo.port()});
  UniqueFd client = connect_loopback(port);
  send_all(client.get(), "hello gateway");
  ::shutdown(client.get(), SHUT_WR);
  CHECK(read_to_eof(client.get()) == "hello gateway");
  auto decisions = loop.wait_for_decisions(1);
  REQUIRE(decisions.size() == 1);
  check_relay_decision(decisions[0], echo.port());
  CHECK(decisions[0].host == "localhost");
}

TEST_CASE("a relay target that refuses closes the client connection") {
  std::uint16_t closed_port = 0;
  listen_loopback(closed_port);  // bound and closed again: nothing listens there now
  ProxyLoop loop;
  std::uint16_t port = loop.add_relay("sandbox-1", {"127.0.0.1", closed_port});
  UniqueFd client = connect_loopback(port);
  CHECK(read_to_eof(client.get()).empty());
  auto decisions = loop.wait_for_decisions(1);
  REQUIRE(decisions.size() == 1);
  check_relay_decision(decisions[0], closed_port);
  CHECK_THAT(decisions[0].reason, Catch::Contains("Connection refused"));
}

TEST_CASE("remove_sandbox closes relay listeners and their connections") {
  EchoServer echo;
  ProxyLoop loop;
  std::uint16_t port = loop.add_relay("sandbox-1", {"127.0.0.1", echo.port()});
  UniqueFd client = connect_loopback(port);
  send_all(client.get(), "ping");
  char answer[4];
  REQUIRE(::recv(client.get(), answer, sizeof answer, MSG_WAITALL) == 4);

  loop.call([](EgressProxy& proxy) { proxy.remove_sandbox("sandbox-1"); });
  CHECK(read_to_eof(client.get()).empty());
  auto decisions = loop.wait_for_decisions(1);
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].reason == "sandbox removed");
  CHECK(decisions[0].bytes_up == 4);

  UniqueFd again(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(::connect(again.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0);
}

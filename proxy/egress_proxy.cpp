#include "proxy/egress_proxy.hpp"

#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

#include "common/clock.hpp"
#include "common/json_text.hpp"
#include "common/log.hpp"
#include "proxy/http_request.hpp"
#include "proxy/relay_channel.hpp"
#include "proxy/resolver.hpp"

namespace oshpc::proxy {
namespace {

// epoll tokens: an id shifted left, and what the id names in the low two bits. Ids are never
// reused, so an event for a connection closed earlier in the same batch finds nothing.
constexpr std::uint64_t kTagClient = 0;
constexpr std::uint64_t kTagUpstream = 1;
constexpr std::uint64_t kTagListener = 2;
constexpr std::uint64_t kTagResolver = 3;
constexpr int kMaxEvents = 256;
constexpr int kAcceptBatch = 64;
constexpr std::int64_t kSweepIntervalUs = 100'000;
constexpr std::int64_t kLingerUs = 2'000'000;  // draining a refused client before closing
constexpr std::int64_t kListenerPauseUs = 100'000;
constexpr std::size_t kIdlePipes = 32;  // empty pipes kept for reuse (2 descriptors each)
constexpr const char* kRelayMethod = "RELAY";
constexpr const char* kRelayRule = "gateway-relay";

std::uint64_t token(std::uint64_t id, std::uint64_t tag) {
  return (id << 2) | tag;
}

enum class Stage { kRequest, kResolving, kConnecting, kUpstreamHandshake, kRelaying, kClosing };

struct Listener {
  sys::UniqueFd fd;
  std::string sandbox_id;
  std::string unix_path;  // removed when the listener goes
  std::int64_t paused_until_us = 0;
  std::optional<RelayTarget> relay;  // set: a relay listener, not an HTTP proxy one
};

struct Connection {
  Connection(std::uint64_t id_, std::string sandbox, sys::UniqueFd fd, std::size_t buffer_bytes)
      : id(id_),
        sandbox_id(std::move(sandbox)),
        client(std::move(fd)),
        to_upstream(buffer_bytes),
        to_client(buffer_bytes) {}

  std::uint64_t id;
  std::string sandbox_id;
  sys::UniqueFd client;
  sys::UniqueFd upstream;
  Stage stage = Stage::kRequest;
  std::string head;  // request head being read, then the site proxy's answer
  RelayChannel to_upstream;
  RelayChannel to_client;
  bool client_eof = false;
  bool upstream_eof = false;
  bool upstream_shut = false;
  bool client_shut = false;
  bool dead = false;
  bool reported = false;
  bool is_relay = false;       // from a relay listener: no HTTP, no policy
  bool client_paused = false;  // the client spoke while we wait on DNS or the destination

  std::shared_ptr<const Policy> policy;  // the policy the decision points into
  Decision decision;
  ProxyRequest request;
  std::string method;
  std::vector<IpAddress> targets;  // checked addresses of the destination
  std::vector<IpAddress> dials;    // what we connect to: targets, or the site proxy
  std::size_t next_dial = 0;
  bool via_upstream = false;
  std::string upstream_target;  // host:port sent in CONNECT to the site proxy
  std::string last_error;

  std::int64_t started_us = 0;
  std::int64_t deadline_us = 0;
  int status = 0;
  std::string reason;
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;
  // What each socket is registered for in epoll; a socket is added on first interest, so a
  // request served at once costs one epoll_ctl per socket.
  std::uint32_t client_events = 0;
  std::uint32_t upstream_events = 0;
  bool client_watched = false;
  bool upstream_watched = false;
};

std::string http_response(int status, const std::string& body) {
  const char* text = status == 403   ? "Forbidden"
                     : status == 400 ? "Bad Request"
                     : status == 408 ? "Request Timeout"
                     : status == 431 ? "Request Header Fields Too Large"
                     : status == 503 ? "Service Unavailable"
                     : status == 504 ? "Gateway Timeout"
                                     : "Bad Gateway";
  return "HTTP/1.1 " + std::to_string(status) + " " + text +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

std::string error_body(int status, const Connection& c) {
  std::string body = "{\"error\":";
  json_text::append_string(body, status == 403   ? "denied"
                                 : status == 400 ? "bad request"
                                 : status == 408 ? "timeout"
                                 : status == 503 ? "limit"
                                                 : "upstream");
  if (!c.request.host.empty()) {
    body += ",\"host\":";
    json_text::append_string(body, c.request.host);
    body += ",\"port\":" + std::to_string(c.request.port);
  }
  body += ",\"reason\":";
  json_text::append_string(body, c.reason);
  body += "}\n";
  return body;
}

std::string bracket_host(const IpAddress& address) {
  return address.family == AF_INET6 ? "[" + address.to_string() + "]" : address.to_string();
}

// A non-blocking connect to address:port; the fd, or -1 with errno set.
int start_connect(const IpAddress& address, std::uint16_t port) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (address.family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, address.bytes.data(), 4);
    length = sizeof *in;
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    std::memcpy(&in6->sin6_addr, address.bytes.data(), 16);
    length = sizeof *in6;
  }
  int fd = ::socket(address.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 && errno != EINPROGRESS) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

// Whether a connect started with start_connect has finished, well or not. On loopback the
// handshake is over by the time connect() returns, and asking saves a trip through epoll.
bool connect_settled(int fd) {
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, 0) == 1;
}

// The outcome of a finished connect: 0 or an errno value.
int connect_error(int fd) {
  int error = 0;
  socklen_t length = sizeof error;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  return error;
}

std::vector<IpAddress> resolve_now(const std::string& host) {
  Resolution result = resolve_blocking(host);
  if (!result.error.empty()) {
    throw std::invalid_argument("cannot resolve upstream proxy " + host + ": " + result.error);
  }
  return result.addresses;
}

}  // namespace

class EgressProxy::Impl {
 public:
  Impl(Policy policy, ProxyOptions options, DecisionCallback on_decision)
      : policy_(std::make_shared<const Policy>(std::move(policy))),
        options_(std::move(options)),
        on_decision_(std::move(on_decision)),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        resolver_(options_.resolver_threads),
        pipes_(options_.buffer_bytes, kIdlePipes, options_.bulk_pipe_bytes, options_.bulk_pipes),
        log_(log::get("proxy")) {
    if (!epoll_.is_open()) sys::throw_errno("create the proxy epoll fd");
    watch(resolver_.event_fd(), token(0, kTagResolver), EPOLLIN, EPOLL_CTL_ADD);
    for (const auto& [name, texts] : options_.static_hosts) {
      for (const auto& text : texts) {
        auto address = IpAddress::parse(text);
        if (!address) {
          throw std::invalid_argument("static host " + name + ": '" + text +
                                      "' is not an IP address");
        }
        static_hosts_[name].push_back(*address);
      }
    }
    if (options_.upstream) upstream_addresses_ = resolve_now(options_.upstream->host);
  }

  int epoll_fd() const { return epoll_.get(); }
  std::size_t connection_count() const { return connections_.size(); }

  void set_policy(Policy policy) { policy_ = std::make_shared<const Policy>(std::move(policy)); }

  void add_listener(sys::UniqueFd fd, std::string sandbox_id, std::string unix_path = "",
                    std::optional<RelayTarget> relay = std::nullopt) {
    sys::set_nonblocking(fd.get(), true);
    std::uint64_t id = next_id_++;
    watch(fd.get(), token(id, kTagListener), EPOLLIN, EPOLL_CTL_ADD);
    listeners_[id] =
        Listener{std::move(fd), std::move(sandbox_id), std::move(unix_path), 0, std::move(relay)};
  }

  void add_relay_listener(sys::UniqueFd fd, std::string sandbox_id, RelayTarget target) {
    if (target.host.empty() || target.port == 0) {
      throw std::invalid_argument("relay target '" + target.host + ":" +
                                  std::to_string(target.port) + "' needs a host and a port");
    }
    add_listener(std::move(fd), std::move(sandbox_id), "", std::move(target));
  }

  void listen_unix(const std::string& path, std::string sandbox_id) {
    std::string dir = path.substr(0, path.rfind('/'));
    if (!dir.empty()) {
      sys::make_directories(dir, 0700);
      if (::chmod(dir.c_str(), 0700) != 0) sys::throw_errno("make " + dir + " private (0700)");
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof address.sun_path) {
      throw sys::SysError(ENAMETOOLONG, "listen on " + path);
    }
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    sys::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.is_open()) sys::throw_errno("create a UNIX socket for " + path);
    ::unlink(path.c_str());  // a socket left by an earlier run
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      sys::throw_errno("bind " + path);
    }
    if (::chmod(path.c_str(), 0600) != 0) sys::throw_errno("set mode 0600 on " + path);
    if (::listen(fd.get(), SOMAXCONN) != 0) sys::throw_errno("listen on " + path);
    add_listener(std::move(fd), std::move(sandbox_id), path);
  }

  void remove_sandbox(const std::string& sandbox_id) {
    for (auto it = listeners_.begin(); it != listeners_.end();) {
      if (it->second.sandbox_id != sandbox_id) {
        ++it;
        continue;
      }
      if (!it->second.unix_path.empty()) ::unlink(it->second.unix_path.c_str());
      it = listeners_.erase(it);
    }
    for (auto& [id, connection] : connections_) {
      if (connection->sandbox_id == sandbox_id && !connection->dead) {
        if (connection->reason.empty()) connection->reason = "sandbox removed";
        close(*connection);
      }
    }
    collect_dead();
  }

  void handle_ready(int timeout_ms) {
    SigpipeBlock sigpipe_blocked;  // splicing into a socket whose peer has gone raises SIGPIPE
    std::int64_t now = clock::mono_us();
    auto until_sweep = static_cast<int>(std::max<std::int64_t>(0, next_sweep_us_ - now) / 1000);
    epoll_event events[kMaxEvents];
    int wait_ms = timeout_ms < 0 ? until_sweep + 1 : std::min(timeout_ms, until_sweep + 1);
    int count = ::epoll_wait(epoll_.get(), events, kMaxEvents, wait_ms);
    if (count < 0 && errno != EINTR) sys::throw_errno("wait for proxy events");
    for (int i = 0; i < count; ++i) dispatch(events[i].data.u64, events[i].events);
    if (clock::mono_us() >= next_sweep_us_) sweep_timeouts();
    collect_dead();
  }

 private:
  // ---- plumbing ----

  void watch(int fd, std::uint64_t key, std::uint32_t events, int op) {
    epoll_event event{};
    event.events = events;
    event.data.u64 = key;
    if (::epoll_ctl(epoll_.get(), op, fd, &event) != 0) sys::throw_errno("watch a proxy socket");
  }

  void dispatch(std::uint64_t key, std::uint32_t events) {
    std::uint64_t id = key >> 2;
    switch (key & 3) {
      case kTagResolver:
        on_resolutions();
        return;
      case kTagListener: {
        auto it = listeners_.find(id);
        if (it != listeners_.end()) accept_from(it->first, it->second);
        return;
      }
      default:
        break;
    }
    auto it = connections_.find(id);
    if (it == connections_.end() || it->second->dead) return;
    Connection& c = *it->second;
    if ((key & 3) == kTagClient) {
      on_client_ready(c, events);
    } else {
      on_upstream_ready(c, events);
    }
    if (!c.dead) update_interest(c);
  }

  void update_interest(Connection& c) {
    std::uint32_t client = 0;
    std::uint32_t upstream = 0;
    // While DNS or the destination is awaited the client stays registered for input as it was
    // (a CONNECT client waits for our answer; only an early talker gets paused, see
    // on_client_ready): two epoll_ctl calls fewer per request.
    std::uint32_t waiting_client = c.client_paused ? 0 : static_cast<std::uint32_t>(EPOLLIN);
    switch (c.stage) {
      case Stage::kRequest:
        client = EPOLLIN;
        break;
      case Stage::kResolving:
        client = waiting_client;
        break;
      case Stage::kConnecting:
        client = waiting_client;
        upstream = EPOLLOUT;
        break;
      case Stage::kUpstreamHandshake:
        // Sending our CONNECT until upstream_target is cleared, then reading the answer.
        client = waiting_client;
        upstream = c.upstream_target.empty() ? EPOLLIN : EPOLLOUT;
        break;
      case Stage::kRelaying:
        if (!c.client_eof && c.to_upstream.can_fill()) client |= EPOLLIN;
        if (!c.to_client.empty()) client |= EPOLLOUT;
        if (!c.upstream_eof && c.to_client.can_fill()) upstream |= EPOLLIN;
        if (!c.to_upstream.empty()) upstream |= EPOLLOUT;
        break;
      case Stage::kClosing:
        client = EPOLLIN | (c.to_client.empty() ? 0u : static_cast<std::uint32_t>(EPOLLOUT));
        break;
    }
    set_interest(c.client, token(c.id, kTagClient), client, c.client_events, c.client_watched);
    set_interest(c.upstream, token(c.id, kTagUpstream), upstream, c.upstream_events,
                 c.upstream_watched);
  }

  // Registers fd on first interest, then changes what it waits for only when that changes.
  // (Closing a socket removes it from epoll: nothing here deletes.)
  void set_interest(const sys::UniqueFd& fd, std::uint64_t key, std::uint32_t wanted,
                    std::uint32_t& current, bool& watched) {
    if (!fd.is_open() || (watched && wanted == current) || (!watched && wanted == 0)) return;
    watch(fd.get(), key, wanted, watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD);
    current = wanted;
    watched = true;
  }

  // ---- accepting ----

  void accept_from(std::uint64_t listener_id, Listener& listener) {
    for (int i = 0; i < kAcceptBatch; ++i) {
      sys::UniqueFd fd(
          ::accept4(listener.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd.is_open()) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          pause_listener(listener_id, listener);
        }
        return;
      }
      admit(std::move(fd), listener);
    }
  }

  // Out of descriptors: stop watching the listener for a moment instead of spinning on it.
  void pause_listener(std::uint64_t id, Listener& listener) {
    log::get("proxy")->warn("cannot accept proxy connections for sandbox {}: {}",
                            listener.sandbox_id, std::strerror(errno));
    listener.paused_until_us = clock::mono_us() + kListenerPauseUs;
    watch(listener.fd.get(), token(id, kTagListener), 0, EPOLL_CTL_MOD);
  }

  void admit(sys::UniqueFd fd, const Listener& listener) {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails on UNIX: fine
    std::uint64_t id = next_id_++;
    auto connection =
        std::make_unique<Connection>(id, listener.sandbox_id, std::move(fd), options_.buffer_bytes);
    Connection& c = *connection;
    c.policy = policy_;
    c.started_us = clock::mono_us();
    c.deadline_us = c.started_us + options_.request_timeout_ms * 1000LL;
    connections_[id] = std::move(connection);
    std::size_t& count = per_sandbox_[listener.sandbox_id];
    ++count;
    if (listener.relay) mark_relay(c, *listener.relay);

    if (count > options_.max_connections_per_sandbox) {
      refuse(c, 503,
             "sandbox connection limit (" + std::to_string(options_.max_connections_per_sandbox) +
                 ") reached");
    } else if (connections_.size() > options_.max_connections) {
      refuse(c, 503,
             "proxy connection limit (" + std::to_string(options_.max_connections) + ") reached");
    } else if (c.is_relay) {
      resolve(c);
    } else {
      // The client usually sent its request right after connecting: read it now instead of
      // waiting for epoll to say so.
      read_request(c);
    }
    if (!c.dead) update_interest(c);
  }

  // A relay connection is decided by the operator's configuration, not by a request.
  void mark_relay(Connection& c, const RelayTarget& target) {
    c.is_relay = true;
    c.method = kRelayMethod;
    c.request.kind = RequestKind::kConnect;
    c.request.host = target.host;
    c.request.port = target.port;
    c.decision.allowed = true;
    c.decision.rule = kRelayRule;
  }

  // ---- the request ----

  void on_client_ready(Connection& c, std::uint32_t events) {
    switch (c.stage) {
      case Stage::kRequest:
        read_request(c);
        break;
      case Stage::kRelaying:
        relay(c);
        break;
      case Stage::kClosing:
        linger(c);
        break;
      default:
        // Waiting on DNS or the destination: only a hang-up matters now. Early bytes wait in
        // the socket until the tunnel is up; stop listening to them meanwhile.
        if (events & (EPOLLHUP | EPOLLERR)) {
          c.reason = "client went away before the destination answered";
          close(c);
        } else {
          c.client_paused = true;
        }
        break;
    }
  }

  void read_request(Connection& c) {
    char chunk[4096];
    std::size_t room = kMaxRequestHead + 1 - std::min(c.head.size(), kMaxRequestHead);
    ssize_t n = ::read(c.client.get(), chunk, std::min(sizeof chunk, room));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      if (!c.head.empty()) c.reason = "client closed before sending a complete request";
      close(c);
      return;
    }
    c.head.append(chunk, static_cast<std::size_t>(n));
    HeadParse parse = parse_request_head(c.head);
    if (parse.status == HeadStatus::kIncomplete) return;
    if (parse.status != HeadStatus::kComplete) {
      refuse(c, parse.status == HeadStatus::kTooLarge ? 431 : 400, parse.error);
      return;
    }
    start_request(c, parse.head);
  }

  void start_request(Connection& c, const RequestHead& head) {
    c.method = head.method;
    c.request = interpret_request(head);
    if (!c.request.ok) {
      refuse(c, c.request.status, c.request.error);
      return;
    }
    c.decision = decide(*c.policy, c.request.host, c.request.port);
    if (!c.decision.allowed) {
      refuse(c, 403, c.decision.reason);
      return;
    }
    // Bytes after the head (a pipelined body or an early TLS hello) go to the destination.
    if (c.request.kind == RequestKind::kForward) {
      c.to_upstream.append(c.request.forward_head);
      c.bytes_up += c.request.forward_head.size();
    }
    c.to_upstream.append(std::string_view(c.head).substr(head.size));
    c.bytes_up += c.head.size() - head.size;
    c.head.clear();
    resolve(c);
  }

  void resolve(Connection& c) {
    if (auto literal = IpAddress::parse(c.request.host)) {
      on_addresses(c, {*literal}, "");
      return;
    }
    auto pinned = static_hosts_.find(c.request.host);
    if (pinned != static_hosts_.end()) {
      on_addresses(c, pinned->second, "");
      return;
    }
    c.stage = Stage::kResolving;
    c.deadline_us = clock::mono_us() + options_.resolve_timeout_ms * 1000LL;
    resolver_.submit(c.id, c.request.host);
  }

  void on_resolutions() {
    for (Resolution& result : resolver_.take_results()) {
      auto it = connections_.find(result.id);
      if (it == connections_.end() || it->second->dead) continue;
      Connection& c = *it->second;
      if (c.stage != Stage::kResolving) continue;  // timed out meanwhile
      on_addresses(c, result.addresses, result.error);
      if (!c.dead) update_interest(c);
    }
  }

  void on_addresses(Connection& c, const std::vector<IpAddress>& addresses,
                    const std::string& error) {
    if (c.is_relay) {
      relay_to_addresses(c, addresses, error);
      return;
    }
    std::string target_port = ":" + std::to_string(c.request.port);
    if (addresses.empty() && options_.upstream) {
      // LIMITATION: a name this node cannot resolve is passed by name to the site proxy,
      // so its address is not checked here. Clusters often resolve external names only there.
      c.via_upstream = true;
      c.upstream_target = c.request.host + target_port;
      c.reason = "not resolvable here (" + error + "): resolved by the upstream proxy";
      connect_upstream(c);
      return;
    }
    if (addresses.empty()) {
      fail(c, 502, "cannot resolve " + c.request.host + ": " + error);
      return;
    }
    AddressCheck check = check_addresses(c.decision, addresses);
    if (check.allowed.empty()) {
      refuse(c, 403, check.reason);
      return;
    }
    c.targets = std::move(check.allowed);
    if (options_.upstream) {
      c.via_upstream = true;
      c.upstream_target = options_.upstream->connect_by_hostname
                              ? c.request.host + target_port
                              : bracket_host(c.targets.front()) + target_port;
    }
    connect_upstream(c);
  }

  // The gateway is the operator's own configuration: every address it resolves to is fine,
  // private ones included, and it is reached directly, not through the site proxy.
  void relay_to_addresses(Connection& c, const std::vector<IpAddress>& addresses,
                          const std::string& error) {
    if (addresses.empty()) {
      fail(c, 502, "cannot resolve " + c.request.host + ": " + error);
      return;
    }
    c.targets = addresses;
    connect_upstream(c);
  }

  // ---- connecting ----

  void connect_upstream(Connection& c) {
    c.dials = c.via_upstream ? upstream_addresses_ : c.targets;
    c.next_dial = 0;
    dial_next(c);
  }

  std::uint16_t dial_port(const Connection& c) const {
    return c.via_upstream ? options_.upstream->port : c.request.port;
  }

  // Connects to the next address that takes it. Waits in kConnecting (the caller's
  // update_interest asks for EPOLLOUT) unless the connect has settled already.
  void dial_next(Connection& c) {
    while (c.next_dial < c.dials.size()) {
      const IpAddress& address = c.dials[c.next_dial++];
      int fd = start_connect(address, dial_port(c));
      if (fd < 0) {
        note_connect_error(c, errno);
        continue;
      }
      c.upstream.reset(fd);  // closing an earlier attempt also took it out of epoll
      c.upstream_events = 0;
      c.upstream_watched = false;
      c.stage = Stage::kConnecting;
      c.deadline_us = clock::mono_us() + options_.connect_timeout_ms * 1000LL;
      if (!connect_settled(fd)) return;
      int error = connect_error(fd);
      if (error == 0) {
        on_connected(c);
        return;
      }
      note_connect_error(c, error);
    }
    fail(c, 502, c.last_error.empty() ? "no address to connect to" : c.last_error);
  }

  void note_connect_error(Connection& c, int error) {
    const IpAddress& address = c.dials[c.next_dial - 1];
    c.last_error = "connect to " + bracket_host(address) + ":" + std::to_string(dial_port(c)) +
                   ": " + std::strerror(error);
  }

  void on_upstream_ready(Connection& c, std::uint32_t events) {
    switch (c.stage) {
      case Stage::kConnecting:
        on_connect_done(c);
        break;
      case Stage::kUpstreamHandshake:
        continue_handshake(c, events);
        break;
      case Stage::kRelaying:
        relay(c);
        break;
      default:
        break;
    }
  }

  void on_connect_done(Connection& c) {
    int error = connect_error(c.upstream.get());
    if (error != 0) {
      note_connect_error(c, error);
      dial_next(c);
      return;
    }
    on_connected(c);
  }

  // Only now may the client hear "200": the destination (or site proxy) has accepted.
  void on_connected(Connection& c) {
    if (c.via_upstream) {
      start_handshake(c);
    } else {
      begin_relay(c);
    }
  }

  void start_handshake(Connection& c) {
    std::string connect =
        "CONNECT " + c.upstream_target + " HTTP/1.1\r\nHost: " + c.upstream_target + "\r\n\r\n";
    c.head = connect;  // outgoing CONNECT until sent, then the site proxy's answer
    c.stage = Stage::kUpstreamHandshake;
    c.deadline_us = clock::mono_us() + options_.connect_timeout_ms * 1000LL;
    continue_handshake(c, EPOLLOUT);
  }

  void continue_handshake(Connection& c, std::uint32_t events) {
    if (!c.upstream_target.empty() && (events & EPOLLOUT)) {
      ssize_t n = ::send(c.upstream.get(), c.head.data(), c.head.size(), MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        fail(c, 502, std::string("upstream proxy: ") + std::strerror(errno));
        return;
      }
      if (n > 0) c.head.erase(0, static_cast<std::size_t>(n));
      if (!c.head.empty()) return;
      c.upstream_target.clear();  // sent: now wait for the answer
      return;
    }
    if (!c.upstream_target.empty()) return;
    read_handshake_answer(c);
  }

  void read_handshake_answer(Connection& c) {
    char chunk[4096];
    ssize_t n = ::read(c.upstream.get(), chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      fail(c, 502, "upstream proxy closed the connection during CONNECT");
      return;
    }
    c.head.append(chunk, static_cast<std::size_t>(n));
    std::size_t head_size = 0;
    int status = parse_response_status(c.head, head_size);
    if (status < 0 && c.head.size() < kMaxRequestHead) return;
    if (status != 200) {
      fail(c, 502,
           "upstream proxy answered " +
               (status > 0 ? std::to_string(status) : std::string("garbage")) + " to CONNECT");
      return;
    }
    std::string early = c.head.substr(head_size);
    c.head.clear();
    c.to_client.append(early);
    c.bytes_down += early.size();
    begin_relay(c);
  }

  // ---- relaying ----

  void begin_relay(Connection& c) {
    c.stage = Stage::kRelaying;
    if (c.request.kind == RequestKind::kConnect && !c.is_relay) {
      c.status = 200;
      c.to_client.append("HTTP/1.1 200 Connection established\r\n\r\n");
    }
    if (options_.splice) {
      c.to_upstream.start_splicing(pipes_);
      c.to_client.start_splicing(pipes_);
    }
    c.deadline_us = clock::mono_us() + options_.idle_timeout_ms * 1000LL;
    // Only send what is queued (the "200", a forwarded head): a socket with something to read
    // says so through epoll, and asking both now would cost two reads that find nothing.
    relay(c, false);
  }

  // Moves what can move in both directions, then handles end of stream and errors.
  void relay(Connection& c, bool read = true) {
    bool moved = pump(c, c.client, c.to_upstream, c.client_eof, c.upstream, c.bytes_up, read);
    if (c.dead) return;
    moved = pump(c, c.upstream, c.to_client, c.upstream_eof, c.client, c.bytes_down, read) || moved;
    if (c.dead) return;
    if (moved) c.deadline_us = clock::mono_us() + options_.idle_timeout_ms * 1000LL;
    // A half-close travels on once everything before it has been delivered.
    if (c.client_eof && c.to_upstream.empty() && !c.upstream_shut) {
      ::shutdown(c.upstream.get(), SHUT_WR);
      c.upstream_shut = true;
    }
    if (c.upstream_eof && c.to_client.empty() && !c.client_shut) {
      ::shutdown(c.client.get(), SHUT_WR);
      c.client_shut = true;
    }
    if (c.client_shut && c.upstream_shut) close(c);
  }

  // from → channel → to, as far as each side allows (read: false only sends what is queued).
  // Returns whether any byte moved.
  bool pump(Connection& c, sys::UniqueFd& from, RelayChannel& channel, bool& from_eof,
            sys::UniqueFd& to, std::uint64_t& counter, bool read) {
    bool moved = false;
    for (int round = 0; round < 4; ++round) {
      IoResult in{IoResult::kWouldBlock};
      if (!from_eof && read) in = channel.fill_from(from.get());
      if (in.kind == IoResult::kEof) from_eof = true;
      IoResult out = channel.drain_to(to.get());
      if (in.kind == IoResult::kError || out.kind == IoResult::kError) {
        // Named after the socket that failed: reading from it, or writing to it.
        bool failed_from = in.kind == IoResult::kError;
        const sys::UniqueFd& failed = failed_from ? from : to;
        int error = failed_from ? in.error : out.error;
        const char* side = &failed == &c.client ? "sandbox" : "destination";
        if (c.reason.empty()) c.reason = std::string(side) + ": " + std::strerror(error);
        close(c);
        return moved;
      }
      counter += in.bytes;  // what the peer sent, not what the proxy itself said
      moved = moved || in.bytes > 0 || out.bytes > 0;
      if (in.kind != IoResult::kMoved && out.kind != IoResult::kMoved) break;
    }
    return moved;
  }

  // ---- refusing and closing ----

  // Refused by policy or malformed: answer, report now, and drain the client briefly so the
  // answer is not lost to a reset (closing with unread input sends RST).
  void refuse(Connection& c, int status, const std::string& reason) {
    c.decision.allowed = false;
    answer(c, status, reason);
    report(c);
  }

  // Allowed but could not be served (DNS, connect, site proxy): answer; report on close.
  void fail(Connection& c, int status, const std::string& reason) { answer(c, status, reason); }

  void answer(Connection& c, int status, const std::string& reason) {
    if (c.is_relay) {
      // Not an HTTP client: closing is the only answer it understands.
      c.reason = reason;
      close(c);
      return;
    }
    c.status = status;
    c.reason = reason;
    if (c.upstream.is_open()) c.upstream.reset();  // closing also removes it from epoll
    c.upstream_events = 0;
    c.upstream_watched = false;
    c.stage = Stage::kClosing;
    c.to_client.clear();
    c.to_client.append(http_response(status, error_body(status, c)));
    c.deadline_us = clock::mono_us() + kLingerUs;
    linger(c);
  }

  void linger(Connection& c) {
    IoResult out = c.to_client.drain_to(c.client.get());
    if (out.kind == IoResult::kError) {
      close(c);
      return;
    }
    if (!c.to_client.empty()) return;
    if (!c.client_shut) {
      ::shutdown(c.client.get(), SHUT_WR);
      c.client_shut = true;
    }
    char discard[4096];
    for (;;) {
      ssize_t n = ::read(c.client.get(), discard, sizeof discard);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      close(c);
      return;
    }
  }

  void report(Connection& c) {
    if (c.reported) return;
    c.reported = true;
    ProxyDecision d;
    d.sandbox_id = c.sandbox_id;
    d.allowed = c.decision.allowed;
    d.method = c.method;
    d.host = c.request.host;
    d.port = c.request.port;
    d.rule = c.decision.rule;
    d.reason = c.reason;
    d.status = c.status;
    d.bytes_up = c.bytes_up;
    d.bytes_down = c.bytes_down;
    d.duration_ms = (clock::mono_us() - c.started_us) / 1000;
    if (log_->should_log(spdlog::level::debug)) log_->debug("{}", to_json(d));
    if (on_decision_) on_decision_(d);
  }

  void close(Connection& c) {
    if (c.dead) return;
    c.dead = true;
    // A connection that never got as far as a request is not a decision.
    if (!c.method.empty() || !c.reason.empty()) report(c);
    c.client.reset();
    c.upstream.reset();
    dead_.push_back(c.id);
    auto it = per_sandbox_.find(c.sandbox_id);
    if (it != per_sandbox_.end() && --it->second == 0) per_sandbox_.erase(it);
  }

  void collect_dead() {
    for (std::uint64_t id : dead_) connections_.erase(id);
    dead_.clear();
  }

  void sweep_timeouts() {
    std::int64_t now = clock::mono_us();
    next_sweep_us_ = now + kSweepIntervalUs;
    for (auto& [id, listener] : listeners_) {
      if (listener.paused_until_us != 0 && now >= listener.paused_until_us) {
        listener.paused_until_us = 0;
        watch(listener.fd.get(), token(id, kTagListener), EPOLLIN, EPOLL_CTL_MOD);
      }
    }
    for (auto& [id, connection] : connections_) {
      Connection& c = *connection;
      if (c.dead || now < c.deadline_us) continue;
      expire(c);
      if (!c.dead) update_interest(c);
    }
  }

  void expire(Connection& c) {
    switch (c.stage) {
      case Stage::kRequest:
        if (c.head.empty()) {
          close(c);  // never said anything: not worth a report
        } else {
          refuse(
              c, 408,
              "no complete request within " + std::to_string(options_.request_timeout_ms) + " ms");
        }
        break;
      case Stage::kResolving:
        fail(c, 504,
             "resolving " + c.request.host + " took longer than " +
                 std::to_string(options_.resolve_timeout_ms) + " ms");
        break;
      case Stage::kConnecting:
      case Stage::kUpstreamHandshake:
        fail(c, 504,
             (c.via_upstream ? std::string("upstream proxy") : c.request.host) +
                 " did not answer within " + std::to_string(options_.connect_timeout_ms) + " ms");
        break;
      case Stage::kRelaying:
        c.reason = "idle for " + std::to_string(options_.idle_timeout_ms) + " ms";
        close(c);
        break;
      case Stage::kClosing:
        close(c);
        break;
    }
  }

  std::shared_ptr<const Policy> policy_;
  ProxyOptions options_;
  DecisionCallback on_decision_;
  sys::UniqueFd epoll_;
  Resolver resolver_;
  PipePool pipes_;  // declared before connections_: their channels give pipes back to it
  std::shared_ptr<spdlog::logger> log_;
  std::unordered_map<std::string, std::vector<IpAddress>> static_hosts_;
  std::vector<IpAddress> upstream_addresses_;
  std::unordered_map<std::uint64_t, Listener> listeners_;
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections_;
  std::unordered_map<std::string, std::size_t> per_sandbox_;
  std::vector<std::uint64_t> dead_;
  std::uint64_t next_id_ = 1;
  std::int64_t next_sweep_us_ = 0;
};

UpstreamProxy parse_upstream_proxy(std::string_view url) {
  std::string_view rest = url;
  if (!rest.starts_with("http://")) {
    throw std::invalid_argument("upstream proxy '" + std::string(url) +
                                "' must look like http://HOST:PORT");
  }
  rest.remove_prefix(7);
  if (rest.ends_with("/")) rest.remove_suffix(1);
  Authority authority = parse_authority(rest, 0);
  if (!authority.ok) {
    throw std::invalid_argument("upstream proxy '" + std::string(url) +
                                "' needs a host and an explicit port (http://HOST:PORT)");
  }
  return UpstreamProxy{authority.host, authority.port, false};
}

std::string to_json(const ProxyDecision& d) {
  std::string out = "{\"sandbox_id\":";
  json_text::append_string(out, d.sandbox_id);
  out += ",\"allowed\":";
  out += d.allowed ? "true" : "false";
  out += ",\"method\":";
  json_text::append_string(out, d.method);
  out += ",\"host\":";
  json_text::append_string(out, d.host);
  out += ",\"port\":" + std::to_string(d.port) + ",\"rule\":";
  json_text::append_string(out, d.rule);
  out += ",\"reason\":";
  json_text::append_string(out, d.reason);
  out += ",\"status\":" + std::to_string(d.status) + ",\"bytes_up\":" + std::to_string(d.bytes_up) +
         ",\"bytes_down\":" + std::to_string(d.bytes_down) +
         ",\"duration_ms\":" + std::to_string(d.duration_ms) + "}";
  return out;
}

EgressProxy::EgressProxy(Policy policy, ProxyOptions options, DecisionCallback on_decision)
    : impl_(std::make_unique<Impl>(std::move(policy), std::move(options), std::move(on_decision))) {
}
EgressProxy::~EgressProxy() = default;

void EgressProxy::add_listener(sys::UniqueFd listening_fd, std::string sandbox_id) {
  impl_->add_listener(std::move(listening_fd), std::move(sandbox_id));
}
void EgressProxy::add_relay_listener(sys::UniqueFd listening_fd, std::string sandbox_id,
                                     RelayTarget target) {
  impl_->add_relay_listener(std::move(listening_fd), std::move(sandbox_id), std::move(target));
}
void EgressProxy::listen_unix(const std::string& path, std::string sandbox_id) {
  impl_->listen_unix(path, std::move(sandbox_id));
}
void EgressProxy::remove_sandbox(const std::string& sandbox_id) {
  impl_->remove_sandbox(sandbox_id);
}
void EgressProxy::set_policy(Policy policy) {
  impl_->set_policy(std::move(policy));
}
int EgressProxy::epoll_fd() const {
  return impl_->epoll_fd();
}
void EgressProxy::handle_ready(int timeout_ms) {
  impl_->handle_ready(timeout_ms);
}
std::size_t EgressProxy::connection_count() const {
  return impl_->connection_count();
}

}  // namespace oshpc::proxy

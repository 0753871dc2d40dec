// The per-node egress proxy. It lives inside the node agent's event loop: one epoll fd that the
// agent polls, no threads of its own except the name resolver's. Every listener belongs to one
// sandbox, so every connection is attributed to the sandbox it came from.
//
//   EgressProxy proxy(load_policy_file(path), options, [](const ProxyDecision& d) { ... });
//   proxy.add_listener(open_listener_in_sandbox(pid, 3128, helper), "sandbox-7");
//   proxy.add_relay_listener(open_listener_in_sandbox(pid, 8080, helper), "sandbox-7",
//                            {"gateway.example", 8080});  // the OpenShell service mode
//   ... poll proxy.epoll_fd() with the agent's other fds; when readable:
//   proxy.handle_ready();
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/sys.hpp"
#include "proxy/policy.hpp"

namespace oshpc::proxy {

// A site proxy that allowed traffic is CONNECTed through ("http://HOST:PORT").
struct UpstreamProxy {
  std::string host;
  std::uint16_t port = 0;
  // CONNECT the site proxy to the host name instead of the address we checked (some site
  // proxies filter by name). The name is still resolved and checked here first.
  bool connect_by_hostname = false;
};

// Parses "http://HOST:PORT" (the port is required). Throws std::invalid_argument saying why.
UpstreamProxy parse_upstream_proxy(std::string_view url);

// Where a relay listener sends every connection: the OpenShell gateway, seen from the node.
struct RelayTarget {
  std::string host;
  std::uint16_t port = 0;
};

struct ProxyOptions {
  std::optional<UpstreamProxy> upstream;
  std::size_t max_connections_per_sandbox = 256;
  std::size_t max_connections = 16384;   // all sandboxes together (fd budget)
  std::size_t buffer_bytes = 64 * 1024;  // per direction per connection (buffer or pipe)
  // A spliced direction that streams (its source has not run dry for two buffers' worth)
  // moves through a pipe of bulk_pipe_bytes while one of bulk_pipes is free: fewer, larger
  // splices when the proxy is the limit. 1 MiB is the most an ordinary user may ask
  // (/proc/sys/fs/pipe-max-size); the kernel charges every pipe's capacity to its user,
  // sandboxes included, so they are few.
  std::size_t bulk_pipe_bytes = 1024 * 1024;
  std::size_t bulk_pipes = 16;
  // Relay established tunnels with splice(2) through a pipe per direction (no copy through
  // the proxy's memory). false: copy through buffers, as sockets that cannot splice do anyway.
  bool splice = true;
  int request_timeout_ms = 10'000;  // from accept to a complete request head
  int resolve_timeout_ms = 5'000;
  int connect_timeout_ms = 10'000;  // per address, and for the upstream proxy's answer
  int idle_timeout_ms = 300'000;    // an established tunnel with no traffic either way
  int resolver_threads = 2;
  // Names answered without DNS (tests; sites that pin names). Checked like DNS answers.
  std::map<std::string, std::vector<std::string>> static_hosts;
};

// One decision, reported when a request is refused and when an allowed connection closes.
struct ProxyDecision {
  std::string sandbox_id;
  bool allowed = false;
  std::string method;  // "CONNECT", "GET", ..., "RELAY" (relay listener); "" when none read
  std::string host;
  std::uint16_t port = 0;
  std::string rule;    // matching policy rule ("network_policies.x.endpoints[0]") or ""
  std::string reason;  // why denied or why it failed; "" for a clean allowed connection
  int status = 0;      // the proxy's own HTTP answer (200 tunnel, 403, 502, ...); 0: none sent
  std::uint64_t bytes_up = 0;    // sandbox → destination
  std::uint64_t bytes_down = 0;  // destination → sandbox
  std::int64_t duration_ms = 0;
};

using DecisionCallback = std::function<void(const ProxyDecision&)>;

// ProxyDecision as one JSON object without a newline (for event streams). Never throws.
std::string to_json(const ProxyDecision& decision);

class EgressProxy {
 public:
  // Throws SysError when epoll or the resolver cannot be set up, and std::invalid_argument when
  // a static_hosts address is not an IP literal.
  EgressProxy(Policy policy, ProxyOptions options, DecisionCallback on_decision);
  ~EgressProxy();
  EgressProxy(const EgressProxy&) = delete;
  EgressProxy& operator=(const EgressProxy&) = delete;

  // Serves a listening socket (TCP or UNIX) for sandbox_id; the proxy makes it non-blocking.
  // Throws SysError.
  void add_listener(sys::UniqueFd listening_fd, std::string sandbox_id);
  // Creates a UNIX listener at path (parent directory made 0700, socket 0600) and serves it.
  // Throws SysError naming the path.
  void listen_unix(const std::string& path, std::string sandbox_id);
  // Serves a listening socket for sandbox_id whose connections are not HTTP proxy requests but
  // plain TCP streams relayed to `target` as they are (no policy, no private-range check: the
  // target is the operator's own configuration; nor the site proxy: the gateway is reached
  // directly from the node). Throws SysError, or std::invalid_argument for an empty host or
  // port 0.
  void add_relay_listener(sys::UniqueFd listening_fd, std::string sandbox_id, RelayTarget target);
  // Closes sandbox_id's listeners (relay listeners too) and connections (reporting those that
  // were open).
  void remove_sandbox(const std::string& sandbox_id);
  // Replaces the policy for new requests; requests already decided keep their decision.
  void set_policy(Policy policy);

  // The fd to poll for readability; then call handle_ready().
  int epoll_fd() const;
  // Handles whatever is ready, waiting up to timeout_ms (0: do not wait), and expires timeouts.
  // Errors on single connections are handled (reported, connection closed); throws SysError
  // only when epoll itself fails. SIGPIPE is blocked in the calling thread meanwhile (see
  // SigpipeBlock in relay_channel.hpp), so the process needs no SIGPIPE disposition of its own.
  void handle_ready(int timeout_ms = 0);

  std::size_t connection_count() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace oshpc::proxy

// Name resolution off the event loop: getaddrinfo blocks for seconds when DNS is slow, so a few
// worker threads run it and report through an eventfd the proxy polls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/ip_address.hpp"

namespace oshpc::proxy {

struct Resolution {
  std::uint64_t id = 0;
  std::vector<IpAddress> addresses;  // in getaddrinfo's (RFC 6724) order
  std::string error;                 // gai_strerror text when addresses is empty
};

// Resolves host now, on the calling thread (getaddrinfo), without duplicates. Never throws
// except bad_alloc; a failure is the result's error.
Resolution resolve_blocking(const std::string& host, std::uint64_t id = 0);

class Resolver {
 public:
  // Starts threads workers. Throws SysError when the eventfd cannot be made.
  explicit Resolver(int threads);
  // Stops taking work. Workers busy in getaddrinfo finish it on their own (detached), so a
  // slow DNS server never delays the node agent's shutdown.
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Readable when results are waiting.
  int event_fd() const;
  // Queues a lookup of host; its result comes back with id. Never throws except bad_alloc.
  void submit(std::uint64_t id, const std::string& host);
  // Takes the finished lookups (and clears the eventfd). Never throws except bad_alloc.
  std::vector<Resolution> take_results();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace oshpc::proxy

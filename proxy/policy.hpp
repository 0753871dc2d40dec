// The egress policy: which host:port pairs a sandbox may reach, in OpenShell's sandbox policy
// shape (a top-level network_policies map of named rules, each with a list of endpoints).
// Matching is pure; the proxy calls decide() on the requested name, resolves it itself, then
// check_addresses() on what the name resolved to.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/ip_address.hpp"

namespace oshpc::proxy {

// One allowed destination pattern.
struct Endpoint {
  std::string host;                       // "api.example.com", "*.example.com", "**.example.com"
  std::vector<std::uint16_t> ports;       // never empty
  std::vector<AddressRange> allowed_ips;  // special ranges this endpoint may reach
  std::string rule;                       // "network_policies.<name>.endpoints[<i>]"
  int line = 0;                           // 1-based line in the policy file
};

struct Policy {
  std::vector<Endpoint> endpoints;    // empty: deny everything
  std::vector<std::string> warnings;  // keys understood by OpenShell that we do not enforce
};

// A policy file that cannot be used; what() reads "FILE:LINE: problem".
class PolicyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads and validates a policy file. Throws PolicyError (one message, with the line) for a
// malformed file and sys::SysError when it cannot be read.
Policy load_policy_file(const std::string& path);

// Same, from text; source names it in messages. Throws PolicyError.
Policy parse_policy(std::string_view text, const std::string& source = "<policy>");

// True if host matches pattern: exact (case-insensitive, trailing dot ignored), "*.d" one
// label below d, "**.d" one or more labels below d. Never throws.
bool host_matches(std::string_view pattern, std::string_view host);

struct Decision {
  bool allowed = false;
  std::string rule;    // the first matching endpoint's rule, or "" when denied
  std::string reason;  // why denied, e.g. "no network_policies endpoint matches x:443"
  std::vector<const Endpoint*> matches;  // every endpoint matching host:port (points into policy)
};

// The name-level decision for a request to host:port. Never throws.
Decision decide(const Policy& policy, std::string_view host, std::uint16_t port);

struct AddressCheck {
  std::vector<IpAddress> allowed;  // the addresses the proxy may connect to, in resolver order
  std::string reason;              // when none are allowed: why the first one was refused
};

// Filters resolved addresses: special ones (loopback, private, link-local, metadata, CGNAT,
// unspecified, multicast, reserved) survive only if a matching endpoint's allowed_ips contains
// them. decision must be an allowed one from decide(). Never throws.
AddressCheck check_addresses(const Decision& decision, const std::vector<IpAddress>& addresses);

}  // namespace oshpc::proxy

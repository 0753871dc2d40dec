#include "proxy/policy.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "common/sys.hpp"

namespace oshpc::proxy {
namespace {

// The top-level keys of an OpenShell sandbox policy; only network_policies concerns egress.
constexpr std::string_view kPolicyKeys[] = {"version", "filesystem_policy", "landlock", "process",
                                            "network_policies"};

// Endpoint keys OpenShell defines that this proxy cannot enforce without terminating TLS.
constexpr std::string_view kUnenforcedKeys[] = {"protocol", "tls",   "enforcement",
                                                "access",   "rules", "deny_rules"};

class PolicyParser {
 public:
  explicit PolicyParser(std::string source) : source_(std::move(source)) {}

  Policy parse(std::string_view text) {
    YAML::Node root = load(text);
    if (!root || root.IsNull()) return std::move(policy_);
    if (!root.IsMap()) fail(root, "the policy must be a mapping with a network_policies key");
    note_unknown_keys(root);
    YAML::Node rules = root["network_policies"];
    if (!rules) {
      // A misspelt key would otherwise deny everything without a word.
      policy_.warnings.push_back(source_ + ": no network_policies key: all egress is denied");
    }
    if (!rules || rules.IsNull()) return std::move(policy_);
    if (!rules.IsMap()) fail(rules, "network_policies must be a mapping of named rules");
    for (const auto& entry : rules) parse_rule(entry.first, entry.second);
    return std::move(policy_);
  }

 private:
  YAML::Node load(std::string_view text) {
    try {
      return YAML::Load(std::string(text));
    } catch (const YAML::ParserException& e) {
      throw PolicyError(source_ + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
  }

  [[noreturn]] void fail(const YAML::Node& node, const std::string& message) const {
    throw PolicyError(source_ + ":" + std::to_string(node.Mark().line + 1) + ": " + message);
  }

  std::string scalar(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) fail(node, what + " must be a single value");
    return node.Scalar();
  }

  void parse_rule(const YAML::Node& key, const YAML::Node& body) {
    std::string name = scalar(key, "a network_policies key");
    if (!body.IsMap()) fail(body.IsNull() ? key : body, "rule '" + name + "' must be a mapping");
    YAML::Node endpoints = body["endpoints"];
    if (!endpoints) fail(key, "rule '" + name + "' has no endpoints list");
    if (!endpoints.IsSequence()) fail(endpoints, "endpoints of '" + name + "' must be a list");
    std::size_t index = 0;
    for (const auto& node : endpoints) {
      parse_endpoint(node,
                     "network_policies." + name + ".endpoints[" + std::to_string(index++) + "]");
    }
  }

  void parse_endpoint(const YAML::Node& node, const std::string& rule) {
    if (!node.IsMap()) fail(node, rule + " must be a mapping with host and port");
    Endpoint endpoint;
    endpoint.rule = rule;
    endpoint.line = node.Mark().line + 1;
    endpoint.host = parse_host(node, rule);
    endpoint.ports = parse_ports(node, rule);
    if (YAML::Node ips = node["allowed_ips"]) endpoint.allowed_ips = parse_ranges(ips, rule);
    note_unenforced_keys(node, rule);
    policy_.endpoints.push_back(std::move(endpoint));
  }

  std::string parse_host(const YAML::Node& node, const std::string& rule) const {
    YAML::Node host = node["host"];
    if (!host) fail(node, rule + " has no host");
    std::string text = scalar(host, rule + ".host");
    std::string problem = host_pattern_problem(text);
    if (!problem.empty()) fail(host, rule + ".host '" + text + "': " + problem);
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!text.empty() && text.back() == '.') text.pop_back();
    return text;
  }

  static std::string host_pattern_problem(const std::string& text) {
    if (text.empty()) return "is empty";
    std::string_view rest = text;
    if (rest.starts_with("**.")) {
      rest.remove_prefix(3);
    } else if (rest.starts_with("*.")) {
      rest.remove_prefix(2);
    }
    if (rest.empty()) return "a glob needs a domain after it";
    if (rest.find('*') != std::string_view::npos) {
      return "'*' is allowed only as a leading '*.' or '**.' label";
    }
    for (char c : rest) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_' &&
          c != ':') {
        return std::string("character '") + c + "' cannot appear in a host name";
      }
    }
    return "";
  }

  std::uint16_t parse_port(const YAML::Node& node, const std::string& what) const {
    long value = -1;
    std::string text = scalar(node, what);
    try {
      std::size_t used = 0;
      value = std::stol(text, &used);
      if (used != text.size()) value = -1;
    } catch (const std::exception&) {
      value = -1;
    }
    if (value < 1 || value > 65535) fail(node, what + " '" + text + "' is not a port (1-65535)");
    return static_cast<std::uint16_t>(value);
  }

  std::vector<std::uint16_t> parse_ports(const YAML::Node& node, const std::string& rule) const {
    YAML::Node port = node["port"];
    YAML::Node ports = node["ports"];
    if (port && ports) fail(ports, rule + " has both port and ports; use one");
    if (port) return {parse_port(port, rule + ".port")};
    if (!ports) fail(node, rule + " has no port or ports");
    if (!ports.IsSequence() || ports.size() == 0) {
      fail(ports, rule + ".ports must be a non-empty list of ports");
    }
    std::vector<std::uint16_t> result;
    for (const auto& item : ports) result.push_back(parse_port(item, rule + ".ports entry"));
    return result;
  }

  std::vector<AddressRange> parse_ranges(const YAML::Node& node, const std::string& rule) const {
    if (!node.IsSequence()) fail(node, rule + ".allowed_ips must be a list of CIDR ranges");
    std::vector<AddressRange> ranges;
    for (const auto& item : node) {
      std::string text = scalar(item, rule + ".allowed_ips entry");
      auto range = AddressRange::parse(text);
      if (!range) {
        fail(item, rule + ".allowed_ips entry '" + text +
                       "' is not an address or CIDR range with a clean prefix");
      }
      ranges.push_back(*range);
    }
    return ranges;
  }

  void note_unknown_keys(const YAML::Node& root) {
    for (const auto& entry : root) {
      if (!entry.first.IsScalar()) continue;
      const std::string& key = entry.first.Scalar();
      if (std::find(std::begin(kPolicyKeys), std::end(kPolicyKeys), key) != std::end(kPolicyKeys))
        continue;
      policy_.warnings.push_back(source_ + ":" + std::to_string(entry.first.Mark().line + 1) +
                                 ": unknown top-level key '" + key + "' (ignored)");
    }
  }

  void note_unenforced_keys(const YAML::Node& node, const std::string& rule) {
    for (std::string_view key : kUnenforcedKeys) {
      if (node[std::string(key)]) {
        policy_.warnings.push_back(source_ + ":" +
                                   std::to_string(node[std::string(key)].Mark().line + 1) + ": " +
                                   rule + "." + std::string(key) +
                                   " is not enforced (no TLS termination): the endpoint allows "
                                   "any traffic to its host and ports");
      }
    }
  }

  std::string source_;
  Policy policy_;
};

std::string lower_host(std::string_view host) {
  std::string result(host);
  std::transform(result.begin(), result.end(), result.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!result.empty() && result.back() == '.') result.pop_back();
  return result;
}

bool endpoint_allows_address(const Endpoint& endpoint, const IpAddress& address) {
  return std::any_of(endpoint.allowed_ips.begin(), endpoint.allowed_ips.end(),
                     [&](const AddressRange& range) { return range.contains(address); });
}

}  // namespace

Policy load_policy_file(const std::string& path) {
  sys::UniqueFd fd = sys::open_file(path, O_RDONLY);
  std::string text;
  char buffer[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) sys::throw_errno("read policy file " + path);
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  return parse_policy(text, path);
}

Policy parse_policy(std::string_view text, const std::string& source) {
  return PolicyParser(source).parse(text);
}

bool host_matches(std::string_view pattern, std::string_view host) {
  std::string name = lower_host(host);
  if (pattern.starts_with("**.")) {
    std::string_view domain = pattern.substr(3);
    return name.size() > domain.size() + 1 && std::string_view(name).ends_with(domain) &&
           name[name.size() - domain.size() - 1] == '.';
  }
  if (pattern.starts_with("*.")) {
    std::string_view domain = pattern.substr(2);
    if (name.size() <= domain.size() + 1 || !std::string_view(name).ends_with(domain)) {
      return false;
    }
    std::size_t label_end = name.size() - domain.size() - 1;
    return name[label_end] == '.' && name.find('.') == label_end && label_end > 0;
  }
  return name == pattern;
}

Decision decide(const Policy& policy, std::string_view host, std::uint16_t port) {
  Decision decision;
  bool host_known = false;
  for (const auto& endpoint : policy.endpoints) {
    if (!host_matches(endpoint.host, host)) continue;
    host_known = true;
    if (std::find(endpoint.ports.begin(), endpoint.ports.end(), port) == endpoint.ports.end()) {
      continue;
    }
    decision.matches.push_back(&endpoint);
  }
  if (!decision.matches.empty()) {
    decision.allowed = true;
    decision.rule = decision.matches.front()->rule;
    return decision;
  }
  std::string target = std::string(host) + ":" + std::to_string(port);
  decision.reason =
      policy.endpoints.empty() ? "no policy: all egress is denied"
      : host_known ? "port " + std::to_string(port) + " is not allowed for " + std::string(host)
                   : "no network_policies endpoint matches " + target;
  return decision;
}

AddressCheck check_addresses(const Decision& decision, const std::vector<IpAddress>& addresses) {
  AddressCheck check;
  for (const auto& address : addresses) {
    auto kind = special_address_kind(address);
    bool exempt =
        std::any_of(decision.matches.begin(), decision.matches.end(),
                    [&](const Endpoint* e) { return endpoint_allows_address(*e, address); });
    if (!kind || exempt) {
      check.allowed.push_back(address);
    } else if (check.reason.empty()) {
      check.reason = address.to_string() + " is a " + std::string(*kind) +
                     " address and no allowed_ips of the matching endpoint contains it";
    }
  }
  if (addresses.empty()) check.reason = "the name resolved to no address";
  return check;
}

}  // namespace oshpc::proxy

#include <catch2/catch.hpp>
#include <fstream>

#include "common/sys.hpp"
#include "proxy/policy.hpp"

using namespace oshpc::proxy;

namespace {

IpAddress ip(const char* text) {
  return *IpAddress::parse(text);
}

const char* kPolicy = R"(version: 1
filesystem_policy:
  read_only: [/usr]
network_policies:
  github:
    name: github
    endpoints:
      - host: api.github.com
        port: 443
      - host: "*.githubusercontent.com"
        ports: [443, 80]
    binaries:
      - path: /usr/bin/curl
  internal:
    endpoints:
      - host: "**.corp.example"
        port: 8080
        allowed_ips: ["10.0.0.0/8", "fd00::/8"]
      - host: 127.0.0.1
        port: 9000
        allowed_ips: [127.0.0.1]
)";

// The message of the PolicyError that text raises.
std::string error_of(const std::string& text) {
  try {
    parse_policy(text, "p.yaml");
  } catch (const PolicyError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("a full OpenShell policy parses; other top-level keys are ignored") {
  Policy policy = parse_policy(kPolicy, "p.yaml");
  REQUIRE(policy.endpoints.size() == 4);
  CHECK(policy.endpoints[0].host == "api.github.com");
  CHECK(policy.endpoints[0].ports == std::vector<std::uint16_t>{443});
  CHECK(policy.endpoints[0].rule == "network_policies.github.endpoints[0]");
  CHECK(policy.endpoints[0].line == 8);
  CHECK(policy.endpoints[1].ports == std::vector<std::uint16_t>{443, 80});
  CHECK(policy.endpoints[2].allowed_ips.size() == 2);
  CHECK(policy.warnings.empty());
}

TEST_CASE("an empty policy or one without network_policies denies everything") {
  for (const char* text : {"", "version: 1\n", "network_policies:\n", "network_policies: {}\n"}) {
    Policy policy = parse_policy(text);
    CHECK(policy.endpoints.empty());
    Decision decision = decide(policy, "example.com", 443);
    CHECK_FALSE(decision.allowed);
    CHECK(decision.reason == "no policy: all egress is denied");
  }
}

TEST_CASE("each broken policy gives one error naming the line") {
  CHECK(error_of("network_policies:\n  a:\n    endpoints: [\n").find("p.yaml:4:") == 0);
  CHECK(error_of("network_policies: [1, 2]\n") ==
        "p.yaml:1: network_policies must be a mapping of named rules");
  CHECK(error_of("- a\n- b\n") ==
        "p.yaml:1: the policy must be a mapping with a network_policies key");
  CHECK(error_of("network_policies:\n  a: 3\n") == "p.yaml:2: rule 'a' must be a mapping");
  CHECK(error_of("network_policies:\n  a:\n    name: a\n") ==
        "p.yaml:2: rule 'a' has no endpoints list");
  CHECK(error_of("network_policies:\n  a:\n    endpoints: 5\n") ==
        "p.yaml:3: endpoints of 'a' must be a list");
  CHECK(error_of("network_policies:\n  a:\n    endpoints:\n      - port: 443\n") ==
        "p.yaml:4: network_policies.a.endpoints[0] has no host");
  CHECK(error_of("network_policies:\n  a:\n    endpoints:\n      - host: x.com\n") ==
        "p.yaml:4: network_policies.a.endpoints[0] has no port or ports");
  CHECK(
      error_of(
          "network_policies:\n  a:\n    endpoints:\n      - host: x.com\n        port: 70000\n") ==
      "p.yaml:5: network_policies.a.endpoints[0].port '70000' is not a port (1-65535)");
  CHECK(
      error_of(
          "network_policies:\n  a:\n    endpoints:\n      - host: x.com\n        port: https\n") ==
      "p.yaml:5: network_policies.a.endpoints[0].port 'https' is not a port (1-65535)");
  CHECK(error_of("network_policies:\n  a:\n    endpoints:\n      - host: x.com\n        port: 1\n"
                 "        ports: [2]\n") ==
        "p.yaml:6: network_policies.a.endpoints[0] has both port and ports; use one");
  CHECK(error_of(
            "network_policies:\n  a:\n    endpoints:\n      - host: x.com\n        ports: []\n") ==
        "p.yaml:5: network_policies.a.endpoints[0].ports must be a non-empty list of ports");
  CHECK(
      error_of(
          "network_policies:\n  a:\n    endpoints:\n      - host: 'x.*.com'\n        port: 1\n") ==
      "p.yaml:4: network_policies.a.endpoints[0].host 'x.*.com': '*' is allowed only as a "
      "leading '*.' or '**.' label");
  CHECK(
      error_of("network_policies:\n  a:\n    endpoints:\n      - host: '*.'\n        port: 1\n") ==
      "p.yaml:4: network_policies.a.endpoints[0].host '*.': a glob needs a domain after it");
  CHECK(error_of("network_policies:\n  a:\n    endpoints:\n      - host: x.com\n        port: 1\n"
                 "        allowed_ips: [10.0.0.1/8]\n") ==
        "p.yaml:6: network_policies.a.endpoints[0].allowed_ips entry '10.0.0.1/8' is not an "
        "address or CIDR range with a clean prefix");
  CHECK(error_of("network_policies:\n  a:\n    endpoints:\n      - host: x.com\n        port: 1\n"
                 "        allowed_ips: 10.0.0.0/8\n") ==
        "p.yaml:6: network_policies.a.endpoints[0].allowed_ips must be a list of CIDR ranges");
  CHECK(error_of("network_policies:\n  a:\n    endpoints:\n      - host: [x]\n        port: 1\n") ==
        "p.yaml:4: network_policies.a.endpoints[0].host must be a single value");
}

TEST_CASE("L7 keys are accepted with a warning that they are not enforced") {
  Policy policy = parse_policy(
      "network_policies:\n  a:\n    endpoints:\n      - host: x.com\n        port: 443\n"
      "        protocol: rest\n        rules:\n          - allow: {method: GET, path: /}\n",
      "p.yaml");
  REQUIRE(policy.warnings.size() == 2);
  CHECK(policy.warnings[0].find("p.yaml:6: network_policies.a.endpoints[0].protocol") == 0);
}

TEST_CASE("a misspelt or unknown top-level key is named in a warning") {
  Policy typo = parse_policy("version: 1\nnetwork_policy:\n  a: {}\n", "p.yaml");
  CHECK(typo.endpoints.empty());
  REQUIRE(typo.warnings.size() == 2);
  CHECK(typo.warnings[0] == "p.yaml:2: unknown top-level key 'network_policy' (ignored)");
  CHECK(typo.warnings[1] == "p.yaml: no network_policies key: all egress is denied");
  // An explicitly empty rule set denies everything too, as meant: no warning.
  CHECK(parse_policy("network_policies: {}\n", "p.yaml").warnings.empty());
}

TEST_CASE("a missing policy file is a system error naming the path") {
  CHECK_THROWS_WITH(load_policy_file("/nonexistent/p.yaml"),
                    Catch::Contains("/nonexistent/p.yaml") && Catch::Contains("No such file"));
}

TEST_CASE("host globs: exact, one label, any depth") {
  CHECK(host_matches("api.example.com", "api.example.com"));
  CHECK(host_matches("api.example.com", "API.Example.COM."));
  CHECK_FALSE(host_matches("api.example.com", "xapi.example.com"));
  CHECK(host_matches("*.example.com", "a.example.com"));
  CHECK_FALSE(host_matches("*.example.com", "a.b.example.com"));
  CHECK_FALSE(host_matches("*.example.com", "example.com"));
  CHECK_FALSE(host_matches("*.example.com", ".example.com"));
  CHECK_FALSE(host_matches("*.example.com", "aexample.com"));
  CHECK(host_matches("**.example.com", "a.example.com"));
  CHECK(host_matches("**.example.com", "a.b.c.example.com"));
  CHECK_FALSE(host_matches("**.example.com", "example.com"));
  CHECK_FALSE(host_matches("**.example.com", "badexample.com"));
}

TEST_CASE("decide matches host and port and names the rule or the reason") {
  Policy policy = parse_policy(kPolicy);
  Decision ok = decide(policy, "api.github.com", 443);
  CHECK(ok.allowed);
  CHECK(ok.rule == "network_policies.github.endpoints[0]");
  CHECK(decide(policy, "raw.githubusercontent.com", 80).allowed);
  CHECK(decide(policy, "a.b.corp.example", 8080).allowed);

  Decision wrong_port = decide(policy, "api.github.com", 22);
  CHECK_FALSE(wrong_port.allowed);
  CHECK(wrong_port.reason == "port 22 is not allowed for api.github.com");
  Decision unknown = decide(policy, "evil.com", 443);
  CHECK(unknown.reason == "no network_policies endpoint matches evil.com:443");
}

TEST_CASE("special addresses are denied unless the endpoint's allowed_ips holds them") {
  Policy policy = parse_policy(kPolicy);
  Decision github = decide(policy, "api.github.com", 443);
  AddressCheck rebinding = check_addresses(github, {ip("127.0.0.1")});
  CHECK(rebinding.allowed.empty());
  CHECK(rebinding.reason ==
        "127.0.0.1 is a loopback address and no allowed_ips of the matching endpoint contains it");
  CHECK(check_addresses(github, {ip("169.254.169.254")}).reason.find("metadata") !=
        std::string::npos);

  AddressCheck mixed = check_addresses(github, {ip("10.1.1.1"), ip("140.82.112.5")});
  REQUIRE(mixed.allowed.size() == 1);
  CHECK(mixed.allowed[0] == ip("140.82.112.5"));

  Decision internal = decide(policy, "git.corp.example", 8080);
  CHECK(check_addresses(internal, {ip("10.2.3.4")}).allowed.size() == 1);
  CHECK(check_addresses(internal, {ip("fd12::1")}).allowed.size() == 1);
  CHECK(check_addresses(internal, {ip("192.168.1.1")}).allowed.empty());
  CHECK(check_addresses(internal, {ip("::ffff:10.2.3.4")}).allowed.size() == 1);
  CHECK(check_addresses(github, {}).reason == "the name resolved to no address");
}

TEST_CASE("special ranges cover the usual suspects, mapped and NAT64 forms included") {
  CHECK(special_address_kind(ip("127.0.0.53")) == "loopback");
  CHECK(special_address_kind(ip("10.0.0.1")) == "private");
  CHECK(special_address_kind(ip("172.31.255.255")) == "private");
  CHECK_FALSE(special_address_kind(ip("172.32.0.1")));
  CHECK(special_address_kind(ip("192.168.0.1")) == "private");
  CHECK(special_address_kind(ip("100.64.0.1")) == "CGNAT");
  CHECK(special_address_kind(ip("169.254.169.254")) == "metadata");
  CHECK(special_address_kind(ip("169.254.1.1")) == "link-local");
  CHECK(special_address_kind(ip("0.0.0.0")) == "unspecified");
  CHECK(special_address_kind(ip("224.0.0.1")) == "multicast");
  CHECK(special_address_kind(ip("::1")) == "loopback");
  CHECK(special_address_kind(ip("::")) == "unspecified");
  CHECK(special_address_kind(ip("fe80::1")) == "link-local");
  CHECK(special_address_kind(ip("fd00::1")) == "unique-local");
  CHECK(special_address_kind(ip("ff02::1")) == "multicast");
  CHECK(special_address_kind(ip("::ffff:127.0.0.1")) == "loopback");
  CHECK(special_address_kind(ip("64:ff9b::a9fe:a9fe")) == "metadata");
  CHECK_FALSE(special_address_kind(ip("8.8.8.8")));
  CHECK_FALSE(special_address_kind(ip("2606:4700::1111")));
}

TEST_CASE("address ranges parse CIDR and refuse sloppy prefixes") {
  CHECK(AddressRange::parse("10.0.0.0/8")->contains(ip("10.255.0.1")));
  CHECK_FALSE(AddressRange::parse("10.0.0.0/8")->contains(ip("11.0.0.1")));
  CHECK(AddressRange::parse("10.1.2.3")->prefix_length == 32);
  CHECK(AddressRange::parse("0.0.0.0/0")->contains(ip("8.8.8.8")));
  CHECK(AddressRange::parse("2001:db8::/32")->contains(ip("2001:db8:1::1")));
  CHECK_FALSE(AddressRange::parse("10.0.0.0/33"));
  CHECK_FALSE(AddressRange::parse("10.0.0.1/8"));
  CHECK_FALSE(AddressRange::parse("10.0.0.0/"));
  CHECK_FALSE(AddressRange::parse("host/8"));
  CHECK_FALSE(AddressRange::parse("10.0.0.0/8x"));
}

// IP addresses and ranges for the egress policy: parsing, CIDR matching, and the special ranges
// (loopback, private, link-local, ...) that the proxy refuses unless a policy allows them.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace oshpc::proxy {

// An IPv4 or IPv6 address (IPv4 kept as 4 bytes, never as a mapped IPv6 address).
struct IpAddress {
  int family = AF_INET;  // AF_INET or AF_INET6
  std::array<std::uint8_t, 16> bytes{};

  // Parses a literal ("10.0.0.1", "::1", "[::1]" is not accepted). Never throws.
  static std::optional<IpAddress> parse(std::string_view text);
  // From a sockaddr_in / sockaddr_in6; nullopt for other families. Never throws.
  static std::optional<IpAddress> from_sockaddr(const sockaddr* address);

  std::string to_string() const;
  std::size_t size() const { return family == AF_INET ? 4 : 16; }
  // The embedded IPv4 address of an IPv4-mapped (::ffff:a.b.c.d) IPv6 address.
  std::optional<IpAddress> mapped_ipv4() const;
  bool operator==(const IpAddress& other) const = default;
};

// A CIDR range: "10.0.0.0/8", "fd00::/8", or one address ("10.1.2.3" = /32).
struct AddressRange {
  IpAddress base;
  int prefix_length = 0;

  // Parses CIDR text; nullopt when malformed or when host bits are set past the prefix.
  static std::optional<AddressRange> parse(std::string_view text);
  bool contains(const IpAddress& address) const;
  std::string to_string() const;
};

// Why an address is special ("loopback", "private", "link-local", "metadata", "CGNAT",
// "unspecified", "multicast", "reserved", "unique-local"), or nullopt for an ordinary public
// address. IPv4-mapped IPv6 addresses are classified by their IPv4 address. Never throws.
std::optional<std::string_view> special_address_kind(const IpAddress& address);

}  // namespace oshpc::proxy

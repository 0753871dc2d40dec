#include "proxy/ip_address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <vector>

namespace oshpc::proxy {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
  std::string copy(text);
  IpAddress address;
  if (::inet_pton(AF_INET, copy.c_str(), address.bytes.data()) == 1) {
    address.family = AF_INET;
    return address;
  }
  if (::inet_pton(AF_INET6, copy.c_str(), address.bytes.data()) == 1) {
    address.family = AF_INET6;
    return address;
  }
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::from_sockaddr(const sockaddr* address) {
  IpAddress result;
  if (address->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(address);
    result.family = AF_INET;
    std::memcpy(result.bytes.data(), &in->sin_addr, 4);
    return result;
  }
  if (address->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    result.family = AF_INET6;
    std::memcpy(result.bytes.data(), &in6->sin6_addr, 16);
    return result;
  }
  return std::nullopt;
}

std::string IpAddress::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, bytes.data(), text, sizeof text);
  return text;
}

std::optional<IpAddress> IpAddress::mapped_ipv4() const {
  static constexpr std::uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family != AF_INET6 || std::memcmp(bytes.data(), kMappedPrefix, 12) != 0) return std::nullopt;
  IpAddress v4;
  std::memcpy(v4.bytes.data(), bytes.data() + 12, 4);
  return v4;
}

std::optional<AddressRange> AddressRange::parse(std::string_view text) {
  std::size_t slash = text.find('/');
  auto base = IpAddress::parse(text.substr(0, slash));
  if (!base) return std::nullopt;
  int max_length = static_cast<int>(base->size() * 8);
  int length = max_length;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), length);
    if (error != std::errc() || end != digits.data() + digits.size() || digits.empty() ||
        length < 0 || length > max_length) {
      return std::nullopt;
    }
  }
  // "10.1.0.0/8" is almost always a typo for a narrower range: refuse it rather than guess.
  AddressRange range{*base, length};
  IpAddress masked = *base;
  for (std::size_t i = 0; i < masked.size(); ++i) {
    int bits = std::clamp(length - static_cast<int>(i) * 8, 0, 8);
    masked.bytes[i] &= static_cast<std::uint8_t>((0xff00 >> bits) & 0xff);
  }
  if (masked != *base) return std::nullopt;
  return range;
}

bool AddressRange::contains(const IpAddress& address) const {
  const IpAddress* candidate = &address;
  std::optional<IpAddress> v4;
  if (address.family != base.family) {
    // An IPv4 range also covers the same addresses written as IPv4-mapped IPv6.
    v4 = address.mapped_ipv4();
    if (!v4 || base.family != AF_INET) return false;
    candidate = &*v4;
  }
  int remaining = prefix_length;
  for (std::size_t i = 0; i < base.size() && remaining > 0; ++i, remaining -= 8) {
    int bits = std::min(8, remaining);
    auto mask = static_cast<std::uint8_t>((0xff << (8 - bits)) & 0xff);
    if ((candidate->bytes[i] & mask) != (base.bytes[i] & mask)) return false;
  }
  return true;
}

std::string AddressRange::to_string() const {
  return base.to_string() + "/" + std::to_string(prefix_length);
}

namespace {

struct SpecialRange {
  AddressRange range;
  std::string_view kind;
};

std::vector<SpecialRange> make_special_ranges() {
  // Most specific first: the metadata address sits inside link-local.
  const std::pair<const char*, std::string_view> table[] = {
      {"169.254.169.254/32", "metadata"},
      {"fd00:ec2::254/128", "metadata"},
      {"0.0.0.0/8", "unspecified"},
      {"127.0.0.0/8", "loopback"},
      {"10.0.0.0/8", "private"},
      {"172.16.0.0/12", "private"},
      {"192.168.0.0/16", "private"},
      {"100.64.0.0/10", "CGNAT"},
      {"169.254.0.0/16", "link-local"},
      {"192.0.0.0/24", "reserved"},
      {"198.18.0.0/15", "reserved"},
      {"224.0.0.0/4", "multicast"},
      {"240.0.0.0/4", "reserved"},
      {"::/128", "unspecified"},
      {"::1/128", "loopback"},
      {"fe80::/10", "link-local"},
      {"fec0::/10", "link-local"},
      {"fc00::/7", "unique-local"},
      {"ff00::/8", "multicast"},
      {"64:ff9b:1::/48", "private"},
  };
  std::vector<SpecialRange> ranges;
  for (const auto& [text, kind] : table) ranges.push_back({*AddressRange::parse(text), kind});
  return ranges;
}

}  // namespace

std::optional<std::string_view> special_address_kind(const IpAddress& address) {
  static const std::vector<SpecialRange> kRanges = make_special_ranges();
  // Mapped and NAT64 (64:ff9b::/96) addresses reach an IPv4 host: judge that host.
  IpAddress subject = address.mapped_ipv4().value_or(address);
  static const AddressRange kNat64 = *AddressRange::parse("64:ff9b::/96");
  if (kNat64.contains(address)) {
    subject = IpAddress{};
    std::memcpy(subject.bytes.data(), address.bytes.data() + 12, 4);
  }
  for (const auto& special : kRanges) {
    if (special.range.contains(subject)) return special.kind;
  }
  return std::nullopt;
}

}  // namespace oshpc::proxy

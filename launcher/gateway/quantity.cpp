#include "launcher/gateway/quantity.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <utility>

// The grammar is Kubernetes' (k8s.io/apimachinery resource.Quantity):
//   quantity := [sign] number [suffix]
//   number   := digits | digits "." digits | digits "." | "." digits
//   suffix   := binary (Ki Mi Gi Ti Pi Ei) | decimal (n u m k M G T P E)
//             | ("e" | "E") [sign] digits
// The value is held as a decimal digit string with a power of ten, so that any fraction the
// user wrote is exact; only the final result has to fit an int64.

namespace oshpc::gateway {
namespace {

// A parsed quantity: digits * 2^binary_power * 10^decimal_power, digits without a sign.
struct Exact {
  std::string digits;
  std::int64_t decimal_power = 0;
  int binary_power = 0;
};

// Exponents beyond this bound are clamped: any non-zero value is then far out of int64 range
// (or far below one unit), and the clamp keeps the power arithmetic below within int64.
constexpr std::int64_t kExponentClamp = 1'000'000'000'000'000;

[[noreturn]] void fail(std::string_view text, std::string_view why) {
  throw QuantityError("quantity \"" + std::string(text) + "\": " + std::string(why));
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Reads a run of digits at text[pos...]; returns them (maybe empty) and advances pos.
std::string_view take_digits(std::string_view text, std::size_t& pos) {
  std::size_t start = pos;
  while (pos < text.size() && is_digit(text[pos])) ++pos;
  return text.substr(start, pos - start);
}

// A unit suffix: a power of two (binary) or of ten (decimal).
struct Suffix {
  bool is_binary = false;
  int power = 0;
};

// Returns the unit a suffix names, or nothing for an unknown one. No suffix is 10^0.
std::optional<Suffix> unit_suffix(std::string_view suffix) {
  struct Entry {
    std::string_view name;
    Suffix value;
  };
  static constexpr std::array<Entry, 16> kTable{{
      {"", {false, 0}},
      {"n", {false, -9}},
      {"u", {false, -6}},
      {"m", {false, -3}},
      {"k", {false, 3}},
      {"M", {false, 6}},
      {"G", {false, 9}},
      {"T", {false, 12}},
      {"P", {false, 15}},
      {"E", {false, 18}},
      {"Ki", {true, 10}},
      {"Mi", {true, 20}},
      {"Gi", {true, 30}},
      {"Ti", {true, 40}},
      {"Pi", {true, 50}},
      {"Ei", {true, 60}},
  }};
  for (const auto& entry : kTable) {
    if (entry.name == suffix) return entry.value;
  }
  return std::nullopt;
}

// A hint for suffixes people write out of habit from other tools ("1KB", "1gi").
std::string suffix_error(std::string_view suffix) {
  std::string why = "unknown suffix \"" + std::string(suffix) +
                    "\" (expected n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or e<N>)";
  std::string lower(suffix);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](char c) { return static_cast<char>(c | 0x20); });
  for (std::string_view binary : {"ki", "mi", "gi", "ti", "pi", "ei"}) {
    if (lower == binary) {
      why += "; suffixes are case-sensitive: binary ones are written like " +
             std::string(1, static_cast<char>(binary[0] & ~0x20)) + "i";
    }
  }
  if (lower.size() == 2 && lower[1] == 'b') why += "; there is no B: write k or Ki, M or Mi, ...";
  return why;
}

// Parses an exponent's signed digits, clamped to +-kExponentClamp.
std::int64_t parse_exponent(std::string_view text, std::string_view exponent) {
  std::size_t pos = 0;
  bool negative = false;
  if (pos < exponent.size() && (exponent[pos] == '+' || exponent[pos] == '-')) {
    negative = exponent[pos] == '-';
    ++pos;
  }
  std::string_view digits = take_digits(exponent, pos);
  if (digits.empty() || pos != exponent.size()) {
    fail(text, "exponent \"" + std::string(exponent) + "\" is not an integer");
  }
  std::int64_t value = 0;
  for (char c : digits) value = std::min(kExponentClamp, value * 10 + (c - '0'));
  return negative ? -value : value;
}

// Splits text into its exact value; throws QuantityError on any syntax error.
Exact parse_exact(std::string_view text) {
  if (text.empty()) fail(text, "empty (expected a number such as 500m, 1.5 or 4Gi)");
  // Kubernetes refuses surrounding spaces too; naming them beats "no digits".
  if (text.find_first_of(" \t\n\r\f\v") != std::string_view::npos) {
    fail(text, "contains whitespace");
  }
  std::size_t pos = 0;
  if (text[0] == '+' || text[0] == '-') {
    if (text[0] == '-') fail(text, "negative quantities are not allowed");
    ++pos;
  }

  std::string_view whole = take_digits(text, pos);
  std::string_view fraction;
  bool has_point = pos < text.size() && text[pos] == '.';
  if (has_point) {
    ++pos;
    fraction = take_digits(text, pos);
  }
  if (whole.empty() && fraction.empty()) fail(text, "no digits before the suffix");
  if (pos < text.size() && text[pos] == '.') fail(text, "more than one decimal point");

  Exact exact;
  exact.digits = std::string(whole) + std::string(fraction);
  exact.decimal_power = -static_cast<std::int64_t>(fraction.size());

  std::string_view suffix = text.substr(pos);
  std::optional<Suffix> unit = unit_suffix(suffix);
  // "E" and "Ei" are units; "e" or "E" followed by anything else is a decimal exponent.
  if (!unit && (suffix[0] == 'e' || suffix[0] == 'E')) {
    exact.decimal_power += parse_exponent(text, suffix.substr(1));
    return exact;
  }
  if (!unit) fail(text, suffix_error(suffix));
  if (unit->is_binary) {
    exact.binary_power = unit->power;
  } else {
    exact.decimal_power += unit->power;
  }
  return exact;
}

// Multiplies a decimal digit string by two, in place.
void double_digits(std::string& digits) {
  int carry = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    int d = (*it - '0') * 2 + carry;
    *it = static_cast<char>('0' + d % 10);
    carry = d / 10;
  }
  if (carry) digits.insert(digits.begin(), static_cast<char>('0' + carry));
}

void strip_leading_zeros(std::string& digits) {
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size()));
}

// Reads a digit string that must fit an int64; nothing if it does not.
std::optional<std::int64_t> to_int64(const std::string& digits) {
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  std::int64_t value = 0;
  for (char c : digits) {
    int d = c - '0';
    if (value > (kMax - d) / 10) return std::nullopt;
    value = value * 10 + d;
  }
  return value;
}

// digits * 2^binary_power * 10^decimal_power, rounded up to a whole unit (named in errors).
std::int64_t round_up(std::string_view text, Exact exact, std::string_view unit) {
  const std::string too_large = "too large (more than 2^63-1 " + std::string(unit) + ")";
  for (int i = 0; i < exact.binary_power; ++i) double_digits(exact.digits);
  strip_leading_zeros(exact.digits);
  if (exact.digits.empty()) return 0;

  std::string integer = exact.digits;
  bool has_fraction = false;
  if (exact.decimal_power >= 0) {
    // 19 digits already reach int64's range; don't append a million zeros to find out.
    if (static_cast<std::int64_t>(integer.size()) + exact.decimal_power > 19) {
      fail(text, too_large);
    }
    integer.append(static_cast<std::size_t>(exact.decimal_power), '0');
  } else {
    auto drop = static_cast<std::size_t>(-exact.decimal_power);
    std::size_t keep = integer.size() > drop ? integer.size() - drop : 0;
    has_fraction = integer.find_first_not_of('0', keep) != std::string::npos;
    integer.resize(keep);
  }

  std::optional<std::int64_t> value = to_int64(integer);
  if (!value || (has_fraction && *value == std::numeric_limits<std::int64_t>::max())) {
    fail(text, too_large);
  }
  return *value + (has_fraction ? 1 : 0);
}

}  // namespace

std::int64_t parse_cpu_millis(std::string_view text) {
  Exact exact = parse_exact(text);
  exact.decimal_power += 3;
  return round_up(text, std::move(exact), "millicores");
}

std::int64_t parse_memory_bytes(std::string_view text) {
  return round_up(text, parse_exact(text), "bytes");
}

}  // namespace oshpc::gateway

// Kubernetes resource quantities ("500m", "1.5", "4Gi", "1e3"), as the OpenShell gateway passes
// CPU and memory requests and limits. Parsed exactly (no floating point), so that what a user
// wrote is what placement compares.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string_view>

namespace oshpc::gateway {

// A malformed or out-of-range quantity. what() quotes the text and says what is wrong.
class QuantityError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// CPU in millicores: "2" -> 2000, "500m" -> 500, "0.25" -> 250; finer fractions round up to
// the next millicore, as Kubernetes does. Throws QuantityError for bad syntax, a negative value
// or one that overflows.
std::int64_t parse_cpu_millis(std::string_view text);

// Memory in bytes: "4Gi", "512Mi", "1G", "129M", "1e9", "128974848"; fractions of a byte round
// up. Throws QuantityError for bad syntax, a negative value or one that overflows.
std::int64_t parse_memory_bytes(std::string_view text);

}  // namespace oshpc::gateway

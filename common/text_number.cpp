#include "common/text_number.hpp"

#include <cmath>
#include <stdexcept>

namespace oshpc {

std::optional<double> parse_seconds_text(const std::string& text) {
  std::size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::logic_error&) {  // invalid_argument, out_of_range
    return std::nullopt;
  }
  if (used == 0 || used != text.size() || !(value >= 0) || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

}  // namespace oshpc

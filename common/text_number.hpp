// Numbers given as option text, parsed whole: "1x" or "1e999" is an error, not 1 or infinity
// (std::stod and cxxopts accept a valid prefix).
#pragma once

#include <optional>
#include <string>

namespace oshpc {

// A finite number of seconds, 0 or more, from all of text; nullopt otherwise.
std::optional<double> parse_seconds_text(const std::string& text);

}  // namespace oshpc

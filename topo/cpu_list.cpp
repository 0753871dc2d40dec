#include "topo/cpu_list.hpp"

#include <algorithm>
#include <charconv>

#include "topo/error.hpp"

namespace oshpc::topo {
namespace {

// The largest CPU number accepted, so that "0-2000000000" cannot exhaust memory.
constexpr int kMaxCpu = 1 << 20;

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

[[noreturn]] void throw_bad(std::string_view text, std::string_view part, const char* why) {
  throw PlacementError("cannot parse cpu list \"" + std::string(text) + "\": \"" +
                       std::string(part) + "\" " + why + " (expected e.g. \"0-3,8\")");
}

int parse_cpu(std::string_view text, std::string_view number) {
  int value = -1;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (number.empty() || error != std::errc{} || end != number.data() + number.size()) {
    throw_bad(text, number, "is not a cpu number");
  }
  if (value > kMaxCpu) throw_bad(text, number, "is beyond the largest cpu number");
  return value;
}

}  // namespace

std::string format_cpu_list(const std::vector<int>& cpus) {
  std::vector<int> sorted(cpus);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());

  std::string out;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(sorted[i]);
    if (j > i) out += '-' + std::to_string(sorted[j]);
    i = j + 1;
  }
  return out;
}

std::vector<int> parse_cpu_list(std::string_view text) {
  const std::string_view list = trim(text);
  std::vector<int> cpus;
  if (list.empty()) return cpus;

  std::size_t start = 0;
  while (start <= list.size()) {
    const auto comma = list.find(',', start);
    const std::string_view part = list.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const auto dash = part.find('-');
    if (dash == std::string_view::npos) {
      cpus.push_back(parse_cpu(text, part));
    } else {
      const int first = parse_cpu(text, part.substr(0, dash));
      const int last = parse_cpu(text, part.substr(dash + 1));
      if (last < first) throw_bad(text, part, "ends below its start");
      for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

}  // namespace oshpc::topo

// CPU lists in the kernel's list format ("0-3,8"), as taskset -c, cpuset.cpus and Slurm use.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace oshpc::topo {

// Formats cpus as ascending ranges, "0-3,8"; duplicates collapse, order does not matter,
// an empty list gives "". Never fails.
std::string format_cpu_list(const std::vector<int>& cpus);

// Parses "0-3,8" (whitespace and a trailing newline around it allowed) into ascending, unique
// cpus. Throws PlacementError quoting the text and the bad part for any other syntax,
// negative numbers, or a range whose end is below its start.
std::vector<int> parse_cpu_list(std::string_view text);

}  // namespace oshpc::topo

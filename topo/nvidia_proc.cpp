#include "topo/nvidia_proc.hpp"

#include <charconv>
#include <fstream>
#include <sstream>

namespace oshpc::topo {
namespace {

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

}  // namespace

NvidiaProcInfo parse_nvidia_information(std::string_view text) {
  NvidiaProcInfo info;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);

    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view key = trim(line.substr(0, colon));
    const std::string_view value = trim(line.substr(colon + 1));
    if (key == "Model") {
      info.model = value;
    } else if (key == "GPU UUID") {
      info.uuid = value;
    } else if (key == "Device Minor") {
      int minor = -1;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), minor);
      if (ec == std::errc{} && ptr == value.data() + value.size()) info.minor = minor;
    }
  }
  return info;
}

std::optional<NvidiaProcInfo> read_nvidia_information(const std::string& proc_root,
                                                      const std::string& pci) {
  std::ifstream in(proc_root + "/gpus/" + pci + "/information");
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return parse_nvidia_information(text.str());
}

}  // namespace oshpc::topo

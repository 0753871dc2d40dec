// The NVIDIA driver's per-GPU file, /proc/driver/nvidia/gpus/<pci>/information. hwloc builds
// without the NVML plugin (Debian's among them) see NVIDIA GPUs only as PCI devices; this file
// adds what placement needs: the device minor (/dev/nvidiaN) and the UUID.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace oshpc::topo {

struct NvidiaProcInfo {
  std::string model;
  std::string uuid;  // "" when the file has no "GPU UUID" line
  int minor = -1;    // -1 when the file has no readable "Device Minor" line
};

// Parses the text of an information file; unknown lines are ignored. Never fails.
NvidiaProcInfo parse_nvidia_information(std::string_view text);

// Reads <proc_root>/gpus/<pci>/information; std::nullopt when it does not exist or cannot be
// read (no driver loaded, or not an NVIDIA device). Never throws.
std::optional<NvidiaProcInfo> read_nvidia_information(const std::string& proc_root,
                                                      const std::string& pci);

}  // namespace oshpc::topo

// The host's NVIDIA driver user-space (libcuda, libnvidia-ml, nvidia-smi, ...) made visible to
// sandboxes that have GPUs: the files are bound read-only under /.oshpc/nvidia and the library
// path points there, so any image works without its own copy of the driver (which must match
// the host's kernel module exactly).
#pragma once

#include <string>
#include <vector>

#include "node-agent/sandbox_spec.hpp"

namespace oshpc::node_agent {

inline constexpr const char* kDriverLibDir = "/.oshpc/nvidia/lib";
inline constexpr const char* kDriverBinDir = "/.oshpc/nvidia/bin";

struct DriverFiles {
  std::vector<std::string> bind_args;  // --ro-bind HOST /.oshpc/nvidia/{lib,bin}/NAME ...
  EnvironmentList environment;         // LD_LIBRARY_PATH, PATH
  std::size_t libraries = 0;
  std::size_t tools = 0;
};

// Looks for driver libraries in lib_dirs and tools in bin_dirs (the defaults are the usual
// distribution and /usr/local/nvidia places). Finding nothing is not an error: the result is
// then empty. Never throws.
DriverFiles find_nvidia_driver_files(const std::vector<std::string>& lib_dirs = {},
                                     const std::vector<std::string>& bin_dirs = {});

}  // namespace oshpc::node_agent

#include "node-agent/gpu_driver.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <set>

namespace oshpc::node_agent {
namespace {

const std::vector<std::string> kDefaultLibDirs = {"/usr/lib/x86_64-linux-gnu",
                                                  "/usr/lib/x86_64-linux-gnu/nvidia/current",
                                                  "/usr/lib/aarch64-linux-gnu",
                                                  "/usr/lib64",
                                                  "/usr/lib",
                                                  "/usr/local/nvidia/lib64"};
const std::vector<std::string> kDefaultBinDirs = {"/usr/bin", "/usr/local/nvidia/bin"};

// Library name prefixes of the driver's user-space; CUDA toolkit libraries are not the
// driver's and belong to the image.
const std::vector<std::string> kLibraryPrefixes = {"libcuda.so", "libnvidia-", "libnvcuvid.so",
                                                   "libnvoptix.so", "libcudadebugger.so"};
const std::vector<std::string> kTools = {"nvidia-smi", "nvidia-debugdump",
                                         "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"};

bool is_driver_library(const std::string& name) {
  return name.find(".so") != std::string::npos &&
         std::any_of(kLibraryPrefixes.begin(), kLibraryPrefixes.end(),
                     [&](const std::string& prefix) { return name.rfind(prefix, 0) == 0; });
}

std::vector<std::string> list_directory(const std::string& path) {
  std::vector<std::string> names;
  if (DIR* dir = ::opendir(path.c_str())) {
    while (dirent* entry = ::readdir(dir)) names.emplace_back(entry->d_name);
    ::closedir(dir);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

DriverFiles find_nvidia_driver_files(const std::vector<std::string>& lib_dirs,
                                     const std::vector<std::string>& bin_dirs) {
  DriverFiles files;
  std::set<std::string> seen;  // the first directory holding a name wins, like the loader
  for (const auto& dir : lib_dirs.empty() ? kDefaultLibDirs : lib_dirs) {
    for (const auto& name : list_directory(dir)) {
      if (!is_driver_library(name) || !seen.insert(name).second) continue;
      files.bind_args.insert(files.bind_args.end(), {"--ro-bind", dir + "/" + name,
                                                     std::string(kDriverLibDir) + "/" + name});
      ++files.libraries;
    }
  }
  for (const auto& tool : kTools) {
    for (const auto& dir : bin_dirs.empty() ? kDefaultBinDirs : bin_dirs) {
      std::string path = dir + "/" + tool;
      if (::access(path.c_str(), X_OK) != 0) continue;
      files.bind_args.insert(files.bind_args.end(),
                             {"--ro-bind", path, std::string(kDriverBinDir) + "/" + tool});
      ++files.tools;
      break;
    }
  }
  if (files.libraries > 0) files.environment.emplace_back("LD_LIBRARY_PATH", kDriverLibDir);
  if (files.tools > 0) {
    files.environment.emplace_back(
        "PATH", std::string("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:") +
                    kDriverBinDir);
  }
  return files;
}

}  // namespace oshpc::node_agent

#include "topo/gpu_binding.hpp"

#include <filesystem>

namespace oshpc::topo {
namespace {

bool exists(const std::string& path) {
  std::error_code error;
  return std::filesystem::exists(path, error);
}

std::string base_name(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

void add_bind(std::vector<std::string>& args, const std::string& source, const std::string& name) {
  args.insert(args.end(), {"--dev-bind-try", source, "/dev/" + name});
}

}  // namespace

std::vector<std::string> gpu_device_bind_args(const Slot& slot, const std::string& dev_root) {
  std::vector<std::string> args;
  if (slot.gpus.empty()) return args;

  for (const auto& gpu : slot.gpus) {
    const std::string name = base_name(gpu.device_path);
    const std::string source = dev_root + "/" + name;
    if (name.empty() || !exists(source)) {
      throw PlacementError("cannot give GPU " + std::to_string(gpu.index) + " (" + gpu.pci +
                           ") to a sandbox: its device node " + source +
                           " does not exist (is the NVIDIA driver loaded? see 'oshpc check')");
    }
    add_bind(args, source, name);
  }

  // LIMITATION: /dev/nvidia-caps (MIG instances) is not bound; a sandbox sees whole GPUs only.
  for (const char* name : kNvidiaControlNodes) {
    const std::string source = dev_root + "/" + name;
    if (exists(source)) add_bind(args, source, name);
  }
  return args;
}

std::vector<std::pair<std::string, std::string>> gpu_environment(const Slot& slot) {
  if (slot.gpus.empty()) return {};
  bool has_all_uuids = true;
  for (const auto& gpu : slot.gpus) has_all_uuids = has_all_uuids && !gpu.uuid.empty();

  std::string visible;
  for (const auto& gpu : slot.gpus) {
    if (!visible.empty()) visible += ',';
    visible += has_all_uuids ? gpu.uuid : std::to_string(gpu.index);
  }
  return {{"CUDA_VISIBLE_DEVICES", visible},
          {"NVIDIA_VISIBLE_DEVICES", visible},
          {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}};
}

}  // namespace oshpc::topo

// What a sandbox needs to reach its GPUs, and only them: bubblewrap device binds for its own
// /dev/nvidiaN nodes and the driver's shared control nodes, and the CUDA environment.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "topo/placement.hpp"

namespace oshpc::topo {

// The driver nodes every CUDA process opens besides its GPUs' own /dev/nvidiaN.
inline constexpr const char* kNvidiaControlNodes[] = {"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools",
                                                      "nvidia-modeset"};

// bubblewrap arguments, to follow `--dev /dev`: "--dev-bind-try SRC /dev/NAME" for each of the
// slot's GPU nodes and each control node that exists under dev_root (SRC is dev_root/NAME).
// Empty for a slot without GPUs. Throws PlacementError naming the GPU and the path when one
// of the slot's own GPU nodes is missing under dev_root.
std::vector<std::string> gpu_device_bind_args(const Slot& slot,
                                              const std::string& dev_root = "/dev");

// CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES (UUIDs when every GPU of the slot has one,
// which stay right however the driver numbers the GPUs the sandbox sees; else indices) and
// CUDA_DEVICE_ORDER=PCI_BUS_ID, so that indices follow NVML's order. Empty for a slot without
// GPUs. Never fails.
std::vector<std::pair<std::string, std::string>> gpu_environment(const Slot& slot);

}  // namespace oshpc::topo

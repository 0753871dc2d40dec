// The hardware a node offers to sandboxes, read once through hwloc: packages, cores, PUs, NUMA
// nodes and the NVIDIA GPUs with the package each one is attached to.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "topo/error.hpp"

struct hwloc_topology;
struct hwloc_bitmap_s;

namespace oshpc::topo {

// One NVIDIA GPU a sandbox can be given.
struct Gpu {
  int index = -1;           // NVML index (nvmlN), else CUDA index (cudaN), else PCI order
  std::string uuid;         // "GPU-…" when NVML or the driver's /proc entry reports it, else ""
  std::string pci;          // PCI bus id, "0000:34:00.0"
  std::string name;         // model, "Tesla V100-SXM3-32GB-H"
  int package = -1;         // OS index of the package the GPU's PCI path is attached to
  std::string device_path;  // "/dev/nvidiaN"; N is the driver minor where known, else index
};

// Everything placement needs about one package, restricted to the allowed PUs.
struct PackageInfo {
  int os_index = -1;
  // Allowed PUs (OS indices) grouped by core, in hwloc's logical order, so neighbours in this
  // list share caches. Cores with no allowed PU are left out.
  std::vector<std::vector<int>> cores;
  int pu_count = 0;
};

// A loaded hwloc topology. Move-only; destroys the hwloc topology on destruction.
class Topology {
 public:
  // The machine this process runs on, limited to the PUs the process may use: the cgroup
  // cpuset (Slurm task/cgroup) and the process CPU binding (taskset, srun --cpu-bind).
  // GPUs come from hwloc's NVML/CUDA OS devices (where hwloc has those plugins) and from
  // /proc/driver/nvidia/gpus.
  // Throws PlacementError when hwloc cannot read the machine.
  static Topology load_this_machine();

  // A topology exported by `lstopo --of xml` (or `hwloc-gather-topology`), to plan for a
  // machine one is not on. Throws PlacementError naming the path when it cannot be read.
  static Topology load_xml(const std::string& path);

  Topology(Topology&& other) noexcept;
  Topology& operator=(Topology&& other) noexcept;
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;
  ~Topology();

  // Narrows the allowed PUs to os_cpus (e.g. an allocation's cpuset). Throws PlacementError
  // naming the cpus that are not allowed PUs of this topology; the topology is then unchanged.
  void restrict_to(const std::vector<int>& os_cpus);

  // Where the topology came from, for messages: "this machine" or the XML path. Never fails.
  const std::string& source() const { return source_; }

  // What was searched for GPUs, for the message when none is found. Never fails.
  const std::string& gpu_search() const { return gpu_search_; }

  // Counts over allowed PUs only; a package or NUMA node without one does not count.
  // Never fail.
  int package_count() const { return static_cast<int>(packages_.size()); }
  int core_count() const;
  int pu_count() const;
  int numa_count() const;

  // Allowed PUs (OS indices), ascending. Never fails.
  std::vector<int> allowed_cpus() const;

  // Packages with at least one allowed PU, in hwloc's logical order. Never fails.
  const std::vector<PackageInfo>& packages() const { return packages_; }

  // NVIDIA GPUs in index order, whatever the allowed PUs. Never fails.
  const std::vector<Gpu>& gpus() const { return gpus_; }

  // OS index of the NUMA node holding PU os_cpu (the first one when several do); -1 when the
  // PU is unknown. Never fails.
  int numa_of_cpu(int os_cpu) const;

  // Memory of NUMA node numa_os_index in bytes; 0 when hwloc does not report it. Never fails.
  std::int64_t numa_memory(int numa_os_index) const;

  // The hwloc handle, for callers (and tests) that ask hwloc directly. Never fails.
  hwloc_topology* hwloc_handle() const { return topology_; }

 private:
  Topology(hwloc_topology* topology, std::string source);
  void intersect_allowed(const hwloc_bitmap_s* set);
  void index_packages();
  void find_gpus(bool is_this_machine);

  hwloc_topology* topology_ = nullptr;
  hwloc_bitmap_s* allowed_ = nullptr;  // PUs placement may use
  std::string source_;
  std::string gpu_search_;
  std::vector<PackageInfo> packages_;
  std::vector<Gpu> gpus_;
};

}  // namespace oshpc::topo

#include "topo/topology.hpp"

#include <hwloc.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "topo/cpu_list.hpp"
#include "topo/nvidia_proc.hpp"

namespace oshpc::topo {
namespace {

constexpr unsigned kNvidiaVendorId = 0x10de;
constexpr unsigned kDisplayControllerClass = 0x03;  // PCI base class: VGA (0300), 3D (0302)
constexpr const char* kNvidiaProcRoot = "/proc/driver/nvidia";

// Owns a bitmap for the length of a function.
struct BitmapGuard {
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  BitmapGuard() = default;
  BitmapGuard(const BitmapGuard&) = delete;
  BitmapGuard& operator=(const BitmapGuard&) = delete;
  ~BitmapGuard() { hwloc_bitmap_free(set); }
};

// Owns a topology until it is loaded and handed to a Topology.
struct TopologyGuard {
  hwloc_topology_t topology = nullptr;
  TopologyGuard(const TopologyGuard&) = delete;
  TopologyGuard& operator=(const TopologyGuard&) = delete;
  TopologyGuard() = default;
  ~TopologyGuard() {
    if (topology) hwloc_topology_destroy(topology);
  }
  hwloc_topology_t release() { return std::exchange(topology, nullptr); }
};

std::string errno_text(int error) {
  return std::strerror(error);
}

// Sets up what both loaders share. I/O discovery is off by default in hwloc 2, and the XML
// reader applies the same filters, so without this call no PCI or OS device (no GPU) would
// survive. Disallowed PUs are kept in the tree (and left out of allowed_) so that removing
// them never moves a GPU's attachment point to another package.
void init_topology(TopologyGuard& guard, const std::string& what) {
  if (hwloc_topology_init(&guard.topology) != 0) {
    throw PlacementError("cannot initialise hwloc for " + what + ": " + errno_text(errno));
  }
  hwloc_topology_set_io_types_filter(guard.topology, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  hwloc_topology_set_flags(guard.topology, HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED);
}

// Leaves out discovery components a launcher should not pay for on every rank. hwloc's Linux
// backend reads PCI devices from sysfs by itself; the "pci" component (libpciaccess) only adds
// names, and leaks memory each load. "opencl" initialises every GPU driver through the OpenCL
// ICDs, which is slow and creates contexts; "gl" connects to X displays. NVIDIA GPUs are
// found through the driver's /proc entries instead.
void skip_costly_components(TopologyGuard& guard) {
  for (const char* name : {"pci", "opencl", "gl"}) {
    hwloc_topology_set_components(guard.topology, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, name);
  }
}

void load_or_throw(TopologyGuard& guard, const std::string& what) {
  if (hwloc_topology_load(guard.topology) != 0) {
    throw PlacementError("cannot load the hwloc topology of " + what + ": " + errno_text(errno));
  }
}

std::string pci_busid(hwloc_obj_t pci) {
  char text[32];
  std::snprintf(text, sizeof text, "%04x:%02x:%02x.%01x", pci->attr->pcidev.domain,
                pci->attr->pcidev.bus, pci->attr->pcidev.dev, pci->attr->pcidev.func);
  return text;
}

// The number after prefix in an OS device name such as "nvml3"; -1 when it is not one.
int name_suffix_index(const char* name, std::string_view prefix) {
  if (!name) return -1;
  const std::string_view text(name);
  if (!text.starts_with(prefix) || text.size() == prefix.size()) return -1;
  int value = 0;
  for (char c : text.substr(prefix.size())) {
    if (c < '0' || c > '9') return -1;
    value = value * 10 + (c - '0');
  }
  return value;
}

std::string info_or_empty(hwloc_obj_t obj, const char* key) {
  const char* value = hwloc_obj_get_info_by_name(obj, key);
  return value ? value : "";
}

bool is_package(hwloc_obj_t obj) {
  return obj && obj->type == HWLOC_OBJ_PACKAGE;
}

// The package a PCI device is local to: the package above its first non-I/O ancestor. An
// ancestor above the packages (a device attached to the whole machine) has no single local
// package; it is counted with the package of the first PU it is local to.
int package_of_io(hwloc_topology_t topology, hwloc_obj_t io) {
  hwloc_obj_t anchor = hwloc_get_non_io_ancestor_obj(topology, io);
  if (!anchor) return -1;
  hwloc_obj_t package = is_package(anchor)
                            ? anchor
                            : hwloc_get_ancestor_obj_by_type(topology, HWLOC_OBJ_PACKAGE, anchor);
  if (!package) {
    const int first_pu = hwloc_bitmap_first(anchor->cpuset);
    hwloc_obj_t pu = first_pu < 0
                         ? nullptr
                         : hwloc_get_pu_obj_by_os_index(topology, static_cast<unsigned>(first_pu));
    package = pu ? hwloc_get_ancestor_obj_by_type(topology, HWLOC_OBJ_PACKAGE, pu) : nullptr;
  }
  return package ? static_cast<int>(package->os_index) : 0;
}

// What hwloc's OS devices below one PCI device say about it.
struct OsDeviceFacts {
  int nvml_index = -1;
  int cuda_index = -1;
  bool has_opencl = false;
  std::string uuid;
  std::string model;
};

OsDeviceFacts os_device_facts(hwloc_obj_t pci) {
  OsDeviceFacts facts;
  for (hwloc_obj_t child = pci->io_first_child; child; child = child->next_sibling) {
    if (child->type != HWLOC_OBJ_OS_DEVICE) continue;
    const auto type = child->attr->osdev.type;
    if (type != HWLOC_OBJ_OSDEV_GPU && type != HWLOC_OBJ_OSDEV_COPROC) continue;

    const std::string backend = info_or_empty(child, "Backend");
    if (backend == "NVML") {
      facts.nvml_index = name_suffix_index(child->name, "nvml");
      facts.uuid = info_or_empty(child, "NVIDIAUUID");
    } else if (backend == "CUDA") {
      facts.cuda_index = name_suffix_index(child->name, "cuda");
    } else if (backend == "OpenCL") {
      facts.has_opencl = true;
    } else {
      continue;  // e.g. a DRM "card0": says nothing about CUDA
    }
    if (facts.model.empty()) facts.model = info_or_empty(child, "GPUModel");
  }
  return facts;
}

bool is_nvidia_gpu_pci(hwloc_obj_t pci) {
  return pci->attr->pcidev.vendor_id == kNvidiaVendorId &&
         (pci->attr->pcidev.class_id >> 8) == kDisplayControllerClass;
}

}  // namespace

Topology::Topology(hwloc_topology* topology, std::string source)
    : topology_(topology), allowed_(hwloc_bitmap_alloc()), source_(std::move(source)) {
  hwloc_bitmap_copy(allowed_, hwloc_topology_get_topology_cpuset(topology_));
  hwloc_bitmap_and(allowed_, allowed_, hwloc_topology_get_allowed_cpuset(topology_));
}

Topology::Topology(Topology&& other) noexcept
    : topology_(std::exchange(other.topology_, nullptr)),
      allowed_(std::exchange(other.allowed_, nullptr)),
      source_(std::move(other.source_)),
      gpu_search_(std::move(other.gpu_search_)),
      packages_(std::move(other.packages_)),
      gpus_(std::move(other.gpus_)) {}

Topology& Topology::operator=(Topology&& other) noexcept {
  if (this != &other) {
    Topology old(std::move(*this));
    topology_ = std::exchange(other.topology_, nullptr);
    allowed_ = std::exchange(other.allowed_, nullptr);
    source_ = std::move(other.source_);
    gpu_search_ = std::move(other.gpu_search_);
    packages_ = std::move(other.packages_);
    gpus_ = std::move(other.gpus_);
  }
  return *this;
}

Topology::~Topology() {
  if (allowed_) hwloc_bitmap_free(allowed_);
  if (topology_) hwloc_topology_destroy(topology_);
}

Topology Topology::load_this_machine() {
  const std::string what = "this machine";
  TopologyGuard guard;
  init_topology(guard, what);
  skip_costly_components(guard);
  load_or_throw(guard, what);
  Topology topology(guard.release(), what);
  topology.gpu_search_ =
      "NVIDIA PCI devices with hwloc OS devices of type GPU or CoProc from the NVML and CUDA "
      "backends (where hwloc has those plugins), I/O discovery enabled, and the driver's "
      "/proc/driver/nvidia/gpus";

  // The cgroup cpuset is already in hwloc's allowed set; the CPU binding (taskset, srun
  // --cpu-bind) is not. A failure to read the binding (unsupported OS) leaves it out.
  BitmapGuard binding;
  if (hwloc_get_cpubind(topology.topology_, binding.set, HWLOC_CPUBIND_PROCESS) == 0 &&
      !hwloc_bitmap_iszero(binding.set)) {
    topology.intersect_allowed(binding.set);
  }
  topology.index_packages();
  topology.find_gpus(true);
  return topology;
}

Topology Topology::load_xml(const std::string& path) {
  const std::string what = "topology XML " + path;
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    const std::string why = error ? error.message() : "not a regular file";
    throw PlacementError("cannot read " + what + ": " + why +
                         " (export one with 'lstopo --of xml FILE')");
  }

  TopologyGuard guard;
  init_topology(guard, what);
  if (hwloc_topology_set_xml(guard.topology, path.c_str()) != 0) {
    throw PlacementError("cannot read " + what + ": " + errno_text(errno));
  }
  load_or_throw(guard, what);
  Topology topology(guard.release(), path);
  topology.gpu_search_ =
      "NVIDIA PCI devices with hwloc OS devices of type GPU or CoProc from the NVML, CUDA and "
      "OpenCL backends, I/O discovery enabled";
  topology.index_packages();
  topology.find_gpus(false);
  return topology;
}

void Topology::intersect_allowed(const hwloc_bitmap_s* set) {
  hwloc_bitmap_and(allowed_, allowed_, set);
}

void Topology::restrict_to(const std::vector<int>& os_cpus) {
  BitmapGuard wanted;
  std::vector<int> refused;
  for (int cpu : os_cpus) {
    if (cpu < 0 || !hwloc_bitmap_isset(allowed_, static_cast<unsigned>(cpu))) {
      refused.push_back(cpu);
    } else {
      hwloc_bitmap_set(wanted.set, static_cast<unsigned>(cpu));
    }
  }
  if (!refused.empty() || os_cpus.empty()) {
    throw PlacementError("cannot restrict " + source_ + " to cpus " + format_cpu_list(os_cpus) +
                         ": " +
                         (os_cpus.empty() ? std::string("the list is empty")
                                          : "not allowed online PUs: " + format_cpu_list(refused)) +
                         " (allowed: " + format_cpu_list(allowed_cpus()) + ")");
  }
  hwloc_bitmap_copy(allowed_, wanted.set);
  index_packages();
}

// Walks the PUs once in logical order, which visits packages and cores contiguously.
void Topology::index_packages() {
  packages_.clear();
  hwloc_obj_t last_package = nullptr;
  hwloc_obj_t last_core = nullptr;
  for (hwloc_obj_t pu = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_PU, nullptr); pu;
       pu = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_PU, pu)) {
    if (!hwloc_bitmap_isset(allowed_, pu->os_index)) continue;

    // A machine without Package objects is one package; one without cores has one PU each.
    hwloc_obj_t package = hwloc_get_ancestor_obj_by_type(topology_, HWLOC_OBJ_PACKAGE, pu);
    if (!package) package = hwloc_get_root_obj(topology_);
    hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(topology_, HWLOC_OBJ_CORE, pu);
    if (!core) core = pu;

    if (package != last_package) {
      PackageInfo info;
      info.os_index = is_package(package) ? static_cast<int>(package->os_index) : 0;
      packages_.push_back(std::move(info));
      last_package = package;
      last_core = nullptr;
    }
    PackageInfo& info = packages_.back();
    if (core != last_core) {
      info.cores.emplace_back();
      last_core = core;
    }
    info.cores.back().push_back(static_cast<int>(pu->os_index));
    ++info.pu_count;
  }
}

void Topology::find_gpus(bool is_this_machine) {
  gpus_.clear();
  int ordinal = 0;
  for (hwloc_obj_t pci = hwloc_get_next_pcidev(topology_, nullptr); pci;
       pci = hwloc_get_next_pcidev(topology_, pci)) {
    if (!is_nvidia_gpu_pci(pci)) continue;
    const std::string busid = pci_busid(pci);
    const OsDeviceFacts facts = os_device_facts(pci);
    const auto proc =
        is_this_machine ? read_nvidia_information(kNvidiaProcRoot, busid) : std::nullopt;
    const bool is_usable =
        facts.nvml_index >= 0 || facts.cuda_index >= 0 || facts.has_opencl || proc;
    if (!is_usable) continue;  // a card no GPU backend reports (no driver bound)

    Gpu gpu;
    gpu.index = facts.nvml_index >= 0   ? facts.nvml_index
                : facts.cuda_index >= 0 ? facts.cuda_index
                                        : ordinal;
    gpu.uuid = !facts.uuid.empty() ? facts.uuid : proc ? proc->uuid : "";
    gpu.pci = busid;
    gpu.name = !facts.model.empty() ? facts.model
               : proc               ? proc->model
                                    : info_or_empty(pci, "PCIDevice");
    gpu.package = package_of_io(topology_, pci);
    // LIMITATION: without the driver's /proc entry the minor is assumed equal to the NVML (or
    // CUDA) index; the driver numbers minors in PCI order, as NVML does, so they agree on
    // common machines, but nothing guarantees it.
    const int minor = proc && proc->minor >= 0 ? proc->minor : gpu.index;
    gpu.device_path = "/dev/nvidia" + std::to_string(minor);
    gpus_.push_back(std::move(gpu));
    ++ordinal;
  }
  std::stable_sort(gpus_.begin(), gpus_.end(),
                   [](const Gpu& a, const Gpu& b) { return a.index < b.index; });
}

int Topology::core_count() const {
  int count = 0;
  for (const auto& package : packages_) count += static_cast<int>(package.cores.size());
  return count;
}

int Topology::pu_count() const {
  return hwloc_bitmap_weight(allowed_);
}

int Topology::numa_count() const {
  int count = 0;
  for (hwloc_obj_t node = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, nullptr); node;
       node = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, node)) {
    if (hwloc_bitmap_intersects(node->cpuset, allowed_)) ++count;
  }
  return count;
}

std::vector<int> Topology::allowed_cpus() const {
  std::vector<int> cpus;
  for (int cpu = hwloc_bitmap_first(allowed_); cpu >= 0; cpu = hwloc_bitmap_next(allowed_, cpu)) {
    cpus.push_back(cpu);
  }
  return cpus;
}

int Topology::numa_of_cpu(int os_cpu) const {
  if (os_cpu < 0) return -1;
  for (hwloc_obj_t node = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, nullptr); node;
       node = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, node)) {
    if (hwloc_bitmap_isset(node->cpuset, static_cast<unsigned>(os_cpu))) {
      return static_cast<int>(node->os_index);
    }
  }
  return -1;
}

std::int64_t Topology::numa_memory(int numa_os_index) const {
  if (numa_os_index < 0) return 0;
  hwloc_obj_t node =
      hwloc_get_numanode_obj_by_os_index(topology_, static_cast<unsigned>(numa_os_index));
  return node ? static_cast<std::int64_t>(node->attr->numanode.local_memory) : 0;
}

}  // namespace oshpc::topo

// Placement of sandboxes on one node: the node's allowed PUs and GPUs are cut into slots, one
// sandbox per slot at a time, each slot inside one package with GPUs local to that package.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "topo/error.hpp"
#include "topo/topology.hpp"

namespace oshpc::topo {

enum class PlacementPolicy {
  kPack,    // fill package 0's slots before package 1's
  kSpread,  // round-robin over packages: slot 0 on package 0, slot 1 on package 1, ...
};

// What each sandbox needs.
struct SlotRequest {
  // Cores per sandbox; the slot holds every allowed PU (hardware thread) of those cores. A
  // package with fewer cores than this gives slots of this many PUs instead (see
  // docs/topology.md).
  int cpus_per_sandbox = 1;
  int gpus_per_sandbox = 0;
  // Bytes of the slot's NUMA node each sandbox may use; 0 places without a memory bound.
  std::int64_t mem_per_sandbox = 0;
  PlacementPolicy policy = PlacementPolicy::kPack;
  // Package OS index: a rank bound to one package places only there.
  std::optional<int> only_package;
};

// Where one sandbox runs.
struct Slot {
  int id = 0;             // position in the node's placement order
  int package = -1;       // package OS index
  int numa = -1;          // NUMA node OS index of the slot's first cpu: its memory node
  std::vector<int> cpus;  // OS PU indices, ascending
  std::vector<Gpu> gpus;  // all attached to `package`
};

// How many slots one package gave, and what bounded it.
struct PackageCapacity {
  int package = -1;
  int cores = 0;
  int pus = 0;
  int gpus = 0;
  int slots = 0;
  std::string bound_by;  // "cores", "PUs", "GPUs" or "memory"
};

struct NodePlan {
  std::vector<Slot> slots;                // in placement order; slots[i].id == i
  std::vector<PackageCapacity> packages;  // the packages placed on, in hwloc order

  // One line: slots used and left per package when `sandboxes` run here at once (sandbox i
  // takes slot i % slots.size(); more sandboxes than slots run in waves). Never fails.
  std::string summary(std::int64_t sandboxes) const;
};

// Cuts the topology's allowed PUs and GPUs into slots for request. Throws PlacementError,
// naming the numbers, for a malformed request, an unknown only_package, no GPU at all, more
// GPUs or cores per sandbox than one package holds, more memory than one NUMA node holds, or
// any other request that leaves zero slots.
NodePlan plan_node(const Topology& topology, const SlotRequest& request);

// The slot with only its first `count` GPUs (the gateway service gives a sandbox that asks for
// fewer GPUs than its slot holds just those; they stay local to the slot's package). Throws
// PlacementError naming both numbers when count is negative or above the slot's GPUs.
Slot with_first_gpus(const Slot& slot, int count);

// One JSON object (no newline) for --plan output:
// {"index":7,"node":"n1","rank":1,"package":0,"numa":0,"cpus":"0-3,8",
//  "gpus":[{"index":0,"uuid":"GPU-…","pci":"0000:34:00.0"}]}. Never fails.
std::string plan_line_json(std::int64_t index, const std::string& node, int rank, const Slot& slot);

// Appends plan_line_json(...) to out, reusing out's buffer (a million-line --plan). Never
// fails.
void append_plan_line_json(std::string& out, std::int64_t index, std::string_view node, int rank,
                           const Slot& slot);

}  // namespace oshpc::topo

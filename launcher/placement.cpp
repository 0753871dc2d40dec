#include "launcher/placement.hpp"

#include <algorithm>

#include "common/log.hpp"
#include "node-agent/gpu_driver.hpp"
#include "topo/cpu_list.hpp"
#include "topo/gpu_binding.hpp"

namespace oshpc::launcher {
namespace {

auto logger() {
  return log::get("launcher");
}

std::uint64_t hash_cpus(const std::vector<int>& cpus) {
  std::uint64_t hash = 1469598103934665603ULL;
  for (int cpu : cpus) hash = (hash ^ static_cast<std::uint64_t>(cpu)) * 1099511628211ULL;
  return hash;
}

// True when every rank on the node may use the same CPUs (nobody bound the ranks), so the
// ranks must divide the node's slots rather than each use all of them. Collective.
bool ranks_share_cpus(const std::vector<int>& mine, MPI_Comm node_comm) {
  std::uint64_t hash = hash_cpus(mine);
  std::uint64_t low = 0, high = 0;
  MPI_Allreduce(&hash, &low, 1, MPI_UINT64_T, MPI_MIN, node_comm);
  MPI_Allreduce(&hash, &high, 1, MPI_UINT64_T, MPI_MAX, node_comm);
  return low == high;
}

topo::SlotRequest slot_request(const Options& options) {
  topo::SlotRequest request;
  request.cpus_per_sandbox = options.cpus_per_sandbox;
  request.gpus_per_sandbox = options.gpus_per_sandbox;
  request.mem_per_sandbox = options.mem_per_sandbox;
  request.policy = options.placement;
  return request;
}

}  // namespace

std::vector<topo::Slot> share_slots(const std::vector<topo::Slot>& node_slots, int node_rank,
                                    int node_size, std::optional<int> slots_override) {
  std::vector<topo::Slot> mine;
  for (std::size_t i = static_cast<std::size_t>(node_rank); i < node_slots.size();
       i += static_cast<std::size_t>(node_size)) {
    mine.push_back(node_slots[i]);
  }
  if (mine.empty() && !node_slots.empty()) {
    mine.push_back(node_slots[static_cast<std::size_t>(node_rank) % node_slots.size()]);
  }
  if (!slots_override || mine.empty()) return mine;
  std::vector<topo::Slot> repeated;
  for (int i = 0; i < *slots_override; ++i) {
    repeated.push_back(mine[static_cast<std::size_t>(i) % mine.size()]);
  }
  return repeated;
}

node_agent::SlotResources slot_resources(const topo::Slot& slot) {
  node_agent::SlotResources resources;
  resources.cpus = slot.cpus;
  resources.numa = slot.numa;
  if (slot.gpus.empty()) return resources;

  resources.device_args = topo::gpu_device_bind_args(slot);
  static const node_agent::DriverFiles kDriver = node_agent::find_nvidia_driver_files();
  resources.device_args.insert(resources.device_args.end(), kDriver.bind_args.begin(),
                               kDriver.bind_args.end());
  resources.environment = topo::gpu_environment(slot);
  resources.environment.insert(resources.environment.end(), kDriver.environment.begin(),
                               kDriver.environment.end());
  for (const auto& gpu : slot.gpus) {
    if (!resources.gpus.empty()) resources.gpus += ',';
    resources.gpus += gpu.uuid.empty() ? std::to_string(gpu.index) : gpu.uuid;
  }
  return resources;
}

std::optional<RankPlacement> place_rank(const Options& options, const MpiSession& mpi) {
  std::optional<RankPlacement> placement;
  std::vector<int> cpus;
  try {
    topo::Topology topology = options.topology_xml.empty()
                                  ? topo::Topology::load_this_machine()
                                  : topo::Topology::load_xml(options.topology_xml);
    cpus = topology.allowed_cpus();
    placement = RankPlacement{topo::plan_node(topology, slot_request(options)), {}};
  } catch (const std::exception& e) {
    // Every rank of a node finds the same problem; its leader says it once.
    if (mpi.is_node_leader()) {
      logger()->error("cannot place sandboxes on {}: {}", mpi.node_name(), e.what());
    }
  }

  int ok = placement ? 1 : 0, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all_ok) return std::nullopt;

  // A plan from another machine's description is shared by all ranks alike.
  bool share = options.topology_xml.empty() ? ranks_share_cpus(cpus, mpi.node_comm()) : true;
  placement->slots = share_slots(placement->node_plan.slots, share ? mpi.node_rank() : 0,
                                 share ? mpi.node_size() : 1, options.slots_per_rank);
  return placement;
}

}  // namespace oshpc::launcher

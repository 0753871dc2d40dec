#include "launcher/node_setup.hpp"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.hpp"
#include "launcher/node_staging.hpp"
#include "common/sys.hpp"

namespace oshpc::launcher {
namespace {

auto logger() { return log::get("launcher"); }

std::uint64_t hash_cpus(const std::vector<int>& cpus) {
  std::uint64_t hash = 1469598103934665603ULL;
  for (int cpu : cpus) hash = (hash ^ static_cast<std::uint64_t>(cpu)) * 1099511628211ULL;
  return hash;
}

// True when every rank on the node may use the same CPUs (nobody bound the ranks), so the
// ranks must divide the CPUs among themselves rather than each use all of them.
bool ranks_share_cpus(const std::vector<int>& mine, MPI_Comm node_comm) {
  std::uint64_t hash = hash_cpus(mine);
  std::uint64_t low = 0, high = 0;
  MPI_Allreduce(&hash, &low, 1, MPI_UINT64_T, MPI_MIN, node_comm);
  MPI_Allreduce(&hash, &high, 1, MPI_UINT64_T, MPI_MAX, node_comm);
  return low == high;
}

}  // namespace

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) {
    for (long cpu = 0; cpu < ::sysconf(_SC_NPROCESSORS_ONLN); ++cpu) {
      cpus.push_back(static_cast<int>(cpu));
    }
    return cpus;
  }
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

std::vector<std::vector<int>> plan_slots(const std::vector<int>& node_cpus, int node_rank,
                                         int node_size, int cpus_per_sandbox,
                                         std::optional<int> slots_override) {
  // This rank's share: a contiguous block, or one shared CPU when ranks outnumber CPUs.
  std::vector<int> mine;
  auto total = static_cast<int>(node_cpus.size());
  if (total == 0) {
    mine = {};
  } else if (total >= node_size) {
    int block = total / node_size, extra = total % node_size;
    int begin = node_rank * block + std::min(node_rank, extra);
    int length = block + (node_rank < extra ? 1 : 0);
    mine.assign(node_cpus.begin() + begin, node_cpus.begin() + begin + length);
  } else {
    mine = {node_cpus[static_cast<std::size_t>(node_rank % total)]};
  }

  std::vector<std::vector<int>> natural;
  for (std::size_t i = 0; i + static_cast<std::size_t>(cpus_per_sandbox) <= mine.size();
       i += static_cast<std::size_t>(cpus_per_sandbox)) {
    natural.emplace_back(mine.begin() + static_cast<std::ptrdiff_t>(i),
                         mine.begin() + static_cast<std::ptrdiff_t>(i) + cpus_per_sandbox);
  }
  if (natural.empty()) natural.push_back(mine);  // fewer CPUs than asked: share what there is

  if (!slots_override) return natural;
  std::vector<std::vector<int>> slots;
  for (int i = 0; i < *slots_override; ++i) {
    slots.push_back(natural[static_cast<std::size_t>(i) % natural.size()]);
  }
  return slots;
}

NodeSetup set_up_node(const Options& options, const MpiSession& mpi, const std::string& job_tag) {
  NodeSetup setup;
  std::string cache_dir =
      options.cache_dir.empty() ? rootfs_cache::default_cache_dir() : options.cache_dir;
  setup.job_dir = cache_dir + "/jobs/" + job_tag;
  setup.workspace_root = setup.job_dir + "/rank-" + std::to_string(mpi.rank());

  stage_on_node(options, mpi, setup);

  std::vector<int> cpus = allowed_cpus();
  bool share = ranks_share_cpus(cpus, mpi.node_comm());
  setup.slot_cpus = plan_slots(cpus, share ? mpi.node_rank() : 0, share ? mpi.node_size() : 1,
                               options.cpus_per_sandbox, options.slots_per_rank);
  if (setup.slot_cpus.front().size() < static_cast<std::size_t>(options.cpus_per_sandbox)) {
    logger()->warn("only {} CPUs available to this rank; --cpus-per-sandbox {} is shared",
                   setup.slot_cpus.front().size(), options.cpus_per_sandbox);
  }
  if (!setup.failure.empty()) return setup;

  try {
    sys::make_directories(setup.workspace_root, 0700);
    std::vector<std::string> destinations;
    for (const auto& bind : options.binds) destinations.push_back(bind.destination);
    setup.layout = node_agent::plan_root_layout(setup.rootfs, destinations);
  } catch (const std::exception& e) {
    setup.failure = e.what();
  }
  return setup;
}

void tear_down_node(NodeSetup& setup, const MpiSession& mpi) {
  if (!sys::remove_tree(setup.workspace_root)) {
    logger()->warn("cannot remove {} completely", setup.workspace_root);
  }
  if (!mpi.is_node_leader()) return;
  if (setup.staged) setup.staged->release();
  if (!sys::remove_tree(setup.job_dir)) logger()->warn("cannot remove {} completely", setup.job_dir);
}

}  // namespace oshpc::launcher

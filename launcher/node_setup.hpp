// What a rank prepares on its node before running sandboxes: the job's node-local directory,
// the staged image (one stager per node, the node leader), the root layout and its slots.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "launcher/mpi_session.hpp"
#include "launcher/options.hpp"
#include "node-agent/root_layout.hpp"
#include "node-agent/sandbox_event.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::launcher {

struct NodeSetup {
  std::string job_dir;         // <cache>/jobs/<job tag>, shared by the node's ranks
  std::string workspace_root;  // <job_dir>/rank-<r>
  std::optional<rootfs_cache::StagedImage> staged;  // held by the node leader only
  std::string rootfs;          // empty when the node failed
  std::string failure;         // why the node cannot run sandboxes
  node_agent::RootLayout layout;
  std::vector<std::vector<int>> slot_cpus;
  std::optional<node_agent::SandboxEvent> staged_event;  // leader only
};

// Collective over the node communicator. Never throws: a failure is recorded in `failure`
// and logged, so the rest of the job can go on without this node.
NodeSetup set_up_node(const Options& options, const MpiSession& mpi, const std::string& job_tag);

// Removes the rank's workspaces; the node leader also unmounts and removes the job directory.
// Never throws.
void tear_down_node(NodeSetup& setup, const MpiSession& mpi);

// The CPUs this process may run on (its affinity mask). Never throws.
std::vector<int> allowed_cpus();

// Splits the node's allowed CPUs among its ranks and then into slots of cpus_per_sandbox.
// When there are fewer CPUs than ranks, ranks share CPUs. `slots_override` replaces the count
// (slots then reuse CPUs round-robin). Never fails; always at least one slot.
std::vector<std::vector<int>> plan_slots(const std::vector<int>& node_cpus, int node_rank,
                                         int node_size, int cpus_per_sandbox,
                                         std::optional<int> slots_override);

}  // namespace oshpc::launcher

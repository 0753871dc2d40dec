// Where this rank's sandboxes run: the node's hwloc topology cut into slots (topo/), this
// rank's share of them, and what each slot gives a sandbox (CPUs, memory node, GPU devices).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "launcher/mpi_session.hpp"
#include "launcher/options.hpp"
#include "node-agent/sandbox_spec.hpp"
#include "topo/placement.hpp"

namespace oshpc::launcher {

struct RankPlacement {
  topo::NodePlan node_plan;       // the whole node's slots
  std::vector<topo::Slot> slots;  // this rank's share
};

// Collective over MPI_COMM_WORLD. Plans every rank's node; an impossible request is logged by
// the ranks that found it and returns std::nullopt on every rank, before anything exists.
std::optional<RankPlacement> place_rank(const Options& options, const MpiSession& mpi);

// The slots of rank `node_rank` of `node_size` ranks sharing a node's plan: every
// node_size-th slot, or one shared slot when ranks outnumber slots. `slots_override`
// repeats the share round-robin to that many. Never fails.
std::vector<topo::Slot> share_slots(const std::vector<topo::Slot>& node_slots, int node_rank,
                                    int node_size, std::optional<int> slots_override);

// What a slot gives the sandbox running in it; GPU slots also get the host's driver files.
// Throws topo::PlacementError when a GPU's device node is missing.
node_agent::SlotResources slot_resources(const topo::Slot& slot);

}  // namespace oshpc::launcher

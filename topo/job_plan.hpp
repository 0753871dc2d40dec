// Placement of a whole job: sandbox index -> (node, slot, wave) by arithmetic over one node
// plan, so a million sandboxes cost no per-sandbox allocation.
#pragma once

#include <cstdint>

#include "topo/placement.hpp"

namespace oshpc::topo {

// Where one sandbox runs.
struct Assignment {
  std::int32_t node = 0;  // 0..nodes-1 (a rank, when ranks are per package)
  std::int32_t slot = 0;  // index into the node plan's slots
  std::int64_t wave = 0;  // 0 for the first sandbox on a slot, 1 for the next one after it...
};

// Sandboxes spread in contiguous blocks over identical nodes: node n runs a block of
// sandboxes/nodes (the first sandboxes%nodes nodes one more), local sandbox j on slot
// j % slots in wave j / slots. Copies nothing per sandbox.
class JobPlan {
 public:
  JobPlan(std::int32_t nodes, std::int32_t slots_per_node, std::int64_t sandboxes);

  std::int32_t nodes() const { return nodes_; }
  std::int32_t slots_per_node() const { return slots_per_node_; }
  std::int64_t sandboxes() const { return sandboxes_; }
  // Waves the busiest node runs: 1 when every sandbox has a slot of its own. Never fails.
  std::int64_t waves() const;

  // The node, slot and wave of sandbox index (0 <= index < sandboxes()); O(1). Throws
  // PlacementError naming the index and the job size when it is out of range.
  Assignment at(std::int64_t index) const;

  // The first sandbox index of node and how many it runs; O(1). Throws PlacementError
  // naming the node and the node count when it is out of range.
  std::int64_t first_on_node(std::int32_t node) const;
  std::int64_t count_on_node(std::int32_t node) const;

 private:
  void check_node(std::int32_t node) const;

  std::int32_t nodes_;
  std::int32_t slots_per_node_;
  std::int64_t sandboxes_;
  std::int64_t base_;   // sandboxes every node runs
  std::int64_t extra_;  // nodes that run one more
};

// Plans sandboxes over nodes that all have per_node's slots (plan each distinct topology
// once). Throws PlacementError naming the numbers when nodes < 1, sandboxes < 0 or per_node
// has no slot.
JobPlan plan_job(const NodePlan& per_node, std::int32_t nodes, std::int64_t sandboxes);

}  // namespace oshpc::topo

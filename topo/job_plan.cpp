#include "topo/job_plan.hpp"

#include <algorithm>
#include <string>

namespace oshpc::topo {

JobPlan::JobPlan(std::int32_t nodes, std::int32_t slots_per_node, std::int64_t sandboxes)
    : nodes_(nodes), slots_per_node_(slots_per_node), sandboxes_(sandboxes) {
  if (nodes < 1 || slots_per_node < 1 || sandboxes < 0) {
    throw PlacementError("cannot plan " + std::to_string(sandboxes) + " sandboxes on " +
                         std::to_string(nodes) + " nodes of " + std::to_string(slots_per_node) +
                         " slots: nodes and slots must be at least 1, sandboxes at least 0");
  }
  base_ = sandboxes / nodes;
  extra_ = sandboxes % nodes;
}

std::int64_t JobPlan::waves() const {
  const std::int64_t busiest = base_ + (extra_ > 0 ? 1 : 0);
  return (busiest + slots_per_node_ - 1) / slots_per_node_;
}

Assignment JobPlan::at(std::int64_t index) const {
  if (index < 0 || index >= sandboxes_) {
    throw PlacementError("sandbox index " + std::to_string(index) + " is outside the job of " +
                         std::to_string(sandboxes_) + " sandboxes");
  }
  // The first extra_ nodes hold base_ + 1 sandboxes each, the rest base_.
  const std::int64_t big_block = (base_ + 1) * extra_;
  std::int64_t node = 0;
  std::int64_t local = 0;
  if (index < big_block) {
    node = index / (base_ + 1);
    local = index % (base_ + 1);
  } else {
    node = extra_ + (index - big_block) / base_;
    local = (index - big_block) % base_;
  }
  return Assignment{.node = static_cast<std::int32_t>(node),
                    .slot = static_cast<std::int32_t>(local % slots_per_node_),
                    .wave = local / slots_per_node_};
}

void JobPlan::check_node(std::int32_t node) const {
  if (node < 0 || node >= nodes_) {
    throw PlacementError("node " + std::to_string(node) + " is outside the job of " +
                         std::to_string(nodes_) + " nodes");
  }
}

std::int64_t JobPlan::first_on_node(std::int32_t node) const {
  check_node(node);
  return node * base_ + std::min<std::int64_t>(node, extra_);
}

std::int64_t JobPlan::count_on_node(std::int32_t node) const {
  check_node(node);
  return base_ + (node < extra_ ? 1 : 0);
}

JobPlan plan_job(const NodePlan& per_node, std::int32_t nodes, std::int64_t sandboxes) {
  return JobPlan(nodes, static_cast<std::int32_t>(per_node.slots.size()), sandboxes);
}

}  // namespace oshpc::topo

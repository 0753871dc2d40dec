// What a rank prepares on its node before running sandboxes: the job's node-local directory,
// the staged image (one stager per node, the node leader), the root layout, its slots, the
// seccomp program and, with a policy, its egress proxy.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launcher/mpi_session.hpp"
#include "launcher/options.hpp"
#include "launcher/placement.hpp"
#include "launcher/signals.hpp"
#include "node-agent/root_layout.hpp"
#include "node-agent/sandbox_event.hpp"
#include "node-agent/seccomp/seccomp_filter.hpp"
#include "proxy/egress_proxy.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::launcher {

struct NodeSetup {
  std::string job_dir;         // <cache>/jobs/<run id>, shared by the node's ranks
  std::string workspace_root;  // <job_dir>/rank-<r>
  std::optional<rootfs_cache::StagedImage> staged;  // held by the node leader only
  std::string rootfs;                               // empty when the node failed
  std::string failure;                              // why the node cannot run sandboxes
  // The failure came with the job's own stop signal, which the scheduler sends to every
  // process of the job (the image's unsquashfs too): a cancellation, not a node failure.
  bool stopped = false;
  node_agent::RootLayout layout;
  std::vector<node_agent::SlotResources> slots;
  std::optional<node_agent::SandboxEvent> staged_event;  // leader only
  std::optional<seccomp::SeccompProgram> seccomp;
  std::unique_ptr<proxy::EgressProxy> proxy;  // with --policy
};

// Collective over the node communicator. Never throws: a failure is recorded in `failure`
// and logged, so the rest of the job can go on without this node. Egress decisions are
// reported through on_egress.
// `extra_mount_points` are sandbox paths the root layout must make room for besides the
// binds' destinations. With --serve the node always runs a proxy (deny-all without --policy).
NodeSetup set_up_node(const Options& options, const MpiSession& mpi, const std::string& run_id,
                      const RankPlacement& placement, proxy::DecisionCallback on_egress,
                      const std::vector<std::string>& extra_mount_points = {});

// After set_up_node: a missing oshpc-exec fails the node too; a failure that came with the
// job's own stop signal is marked `stopped` (the scheduler signals the image's stager with
// the job); the node leader logs a real failure. Never throws.
void settle_node_setup(NodeSetup& setup, const MpiSession& mpi, SignalChannel& signals,
                       bool has_exec_helper);

// The node leader unmounts the image and removes the job directory (every rank's workspaces).
// Never throws.
void tear_down_node(NodeSetup& setup, const MpiSession& mpi);

}  // namespace oshpc::launcher

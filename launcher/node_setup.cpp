#include "launcher/node_setup.hpp"

#include "common/log.hpp"
#include "common/sys.hpp"
#include "launcher/node_staging.hpp"
#include "proxy/policy.hpp"

namespace oshpc::launcher {
namespace {

auto logger() {
  return log::get("launcher");
}

std::unique_ptr<proxy::EgressProxy> start_proxy(const Options& options,
                                                proxy::DecisionCallback on_egress) {
  proxy::Policy policy;  // without a file: deny everything
  // Its warnings were logged once, by rank 0, when the inputs were checked.
  if (!options.policy_path.empty()) policy = proxy::load_policy_file(options.policy_path);
  proxy::ProxyOptions proxy_options;
  if (!options.upstream_proxy.empty()) {
    proxy_options.upstream = proxy::parse_upstream_proxy(options.upstream_proxy);
  }
  return std::make_unique<proxy::EgressProxy>(std::move(policy), proxy_options,
                                              std::move(on_egress));
}

}  // namespace

NodeSetup set_up_node(const Options& options, const MpiSession& mpi, const std::string& run_id,
                      const RankPlacement& placement, proxy::DecisionCallback on_egress,
                      const std::vector<std::string>& extra_mount_points) {
  NodeSetup setup;
  std::string cache_dir =
      options.cache_dir.empty() ? rootfs_cache::default_cache_dir() : options.cache_dir;
  setup.job_dir = cache_dir + "/jobs/" + run_id;
  setup.workspace_root = setup.job_dir + "/rank-" + std::to_string(mpi.rank());

  stage_on_node(options, mpi, setup);
  if (!setup.failure.empty()) return setup;

  try {
    sys::make_directories(setup.workspace_root, 0700);
    std::vector<std::string> destinations;
    for (const auto& bind : options.binds) destinations.push_back(bind.destination);
    destinations.insert(destinations.end(), extra_mount_points.begin(), extra_mount_points.end());
    node_agent::check_bind_kinds(setup.rootfs, options.binds);
    setup.layout =
        node_agent::plan_root_layout(setup.rootfs, destinations, setup.workspace_root + "/.root");
    if (mpi.is_node_leader()) {
      logger()->debug("sandbox root on {}: {}", mpi.node_name(),
                      setup.layout.whole_root ? "the image bound whole"
                                              : "the image bound entry by entry on a tmpfs");
    }
    for (const auto& slot : placement.slots) setup.slots.push_back(slot_resources(slot));
    if (options.seccomp != seccomp::SeccompProfile::kNone) {
      setup.seccomp = seccomp::build_seccomp_program(options.seccomp);
    }
    if (!options.policy_path.empty() || options.action == Action::kServe) {
      setup.proxy = start_proxy(options, std::move(on_egress));
    }
  } catch (const std::exception& e) {
    setup.failure = e.what();
  }
  return setup;
}

void settle_node_setup(NodeSetup& setup, const MpiSession& mpi, SignalChannel& signals,
                       bool has_exec_helper) {
  if (setup.failure.empty() && !has_exec_helper) setup.failure = "oshpc-exec is missing";
  // The scheduler signals one process group after another: the rank whose stager died of
  // the signal has it, its node peers may not yet. They agree on what the node saw.
  int stop_seen = signals.stop_pending() ? 1 : 0;
  int node_saw_stop = 0;
  MPI_Allreduce(&stop_seen, &node_saw_stop, 1, MPI_INT, MPI_MAX, mpi.node_comm());
  if (setup.failure.empty()) return;
  setup.stopped = node_saw_stop != 0;
  if (!mpi.is_node_leader()) return;
  if (setup.stopped) {
    logger()->info("node {} stopped while setting up: {}", mpi.node_name(), setup.failure);
  } else {
    logger()->error("node {} cannot run sandboxes: {}", mpi.node_name(), setup.failure);
  }
}

void tear_down_node(NodeSetup& setup, const MpiSession& mpi) {
  setup.proxy.reset();
  // The leader removes the whole job directory, the other ranks' workspaces included: two
  // ranks removing the same tree at once each find entries vanishing under them.
  if (!mpi.is_node_leader()) return;
  if (setup.staged) setup.staged->release();
  if (!sys::remove_tree(setup.job_dir))
    logger()->warn("cannot remove {} completely", setup.job_dir);
}

}  // namespace oshpc::launcher

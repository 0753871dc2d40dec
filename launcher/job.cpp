#include "launcher/job.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <random>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/sys.hpp"
#include "launcher/coordinator.hpp"
#include "launcher/node_runner.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/placement.hpp"
#include "launcher/worker.hpp"
#include "proxy/netns_listener.hpp"
#include "proxy/policy.hpp"
#include "rootfs-cache/image_import.hpp"

namespace oshpc::launcher {
namespace {

auto logger() {
  return log::get("launcher");
}

std::string make_job_tag(const Options& options) {
  if (!options.job_name.empty()) return options.job_name;
  std::random_device random;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%06x", random() & 0xffffff);
  // With Slurm the job id makes the tag recognisable; the suffix keeps two steps apart.
  if (const char* job = std::getenv("SLURM_JOB_ID"); job && *job) {
    std::string tag = std::string("slurm") + job;
    if (const char* step = std::getenv("SLURM_ARRAY_TASK_ID"); step && *step) {
      tag += std::string("_") + step;
    }
    return tag + "-" + suffix;
  }
  return std::string("job-") + suffix;
}

// What rank 0 checked before anything started, shared with every rank.
struct JobAgreement {
  ExitCode status = ExitCode::kOk;
  std::string job_tag;
  // Unique to this run even when job tags repeat (the same --job-name in every task of an
  // array): names the node-local state, which one run must never share with another.
  std::string run_id;
  std::string output_dir;
  std::string events_path;
};

JobAgreement agree_on_job(const Options& options, const MpiSession& mpi,
                          std::optional<EventLog>& event_log) {
  JobAgreement agreement;
  int status = 0;
  if (mpi.rank() == 0) {
    try {
      rootfs_cache::inspect_image(options.image);
      rootfs_cache::load_image_metadata(options.image);
      if (!options.policy_path.empty()) proxy::load_policy_file(options.policy_path);
      agreement.job_tag = make_job_tag(options);
      std::random_device random;
      char unique[32];
      std::snprintf(unique, sizeof unique, ".%d.%08x", static_cast<int>(::getpid()),
                    static_cast<unsigned>(random()));
      agreement.run_id = agreement.job_tag + unique;
      agreement.output_dir =
          options.output_dir.empty() ? "oshpc-" + agreement.job_tag : options.output_dir;
      sys::make_directories(agreement.output_dir, 0755);
      agreement.events_path = options.events_path.empty() ? agreement.output_dir + "/events.jsonl"
                                                          : options.events_path;
      event_log.emplace(agreement.events_path,
                        EventContext{agreement.job_tag, mpi.node_of_rank(), options.index_offset},
                        options.count);
    } catch (const rootfs_cache::ImageError& e) {
      logger()->error("{}", e.what());
      status = to_int(ExitCode::kBadInput);
    } catch (const std::exception& e) {
      logger()->error("{}", e.what());
      status = to_int(ExitCode::kBadInput);
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  agreement.status = static_cast<ExitCode>(status);
  if (status != 0) return agreement;
  agreement.job_tag = broadcast_string(agreement.job_tag, 0, MPI_COMM_WORLD);
  agreement.run_id = broadcast_string(agreement.run_id, 0, MPI_COMM_WORLD);
  agreement.output_dir = broadcast_string(agreement.output_dir, 0, MPI_COMM_WORLD);
  return agreement;
}

}  // namespace

ExitCode run_job(const Options& options, MpiSession& mpi, SignalChannel& signals) {
  // Placement first: an impossible request stops the job before anything is created.
  std::optional<RankPlacement> placement = place_rank(options, mpi);
  if (!placement) return ExitCode::kUsage;

  std::optional<EventLog> event_log;
  JobAgreement job = agree_on_job(options, mpi, event_log);
  if (job.status != ExitCode::kOk) return job.status;

  std::string exec_helper;
  try {
    exec_helper = find_exec_helper();
  } catch (const std::exception& e) {
    logger()->error("{}", e.what());
  }

  // Events reach the role's sink once it exists; proxy decisions may come from set-up on.
  std::function<void(const node_agent::SandboxEvent&)> sink;
  auto on_egress = [&sink, &mpi, &options](const proxy::ProxyDecision& decision) {
    if (sink) sink(egress_event(decision, mpi.rank(), options.index_offset));
  };
  NodeSetup setup = set_up_node(options, mpi, job.run_id, *placement, on_egress);
  if (setup.failure.empty() && exec_helper.empty()) setup.failure = "oshpc-exec is missing";
  if (!setup.failure.empty() && mpi.is_node_leader()) {
    logger()->error("node {} cannot run sandboxes: {}", mpi.node_name(), setup.failure);
  }
  sys::make_directories(job.output_dir, 0755);

  std::unique_ptr<node_agent::SandboxRunner> runner;
  if (setup.failure.empty()) {
    try {
      runner = std::make_unique<node_agent::SandboxRunner>(
          runner_config(options, mpi, {job.job_tag, job.output_dir}, setup, exec_helper),
          [&sink](node_agent::SandboxEvent&& e) { sink(e); });
    } catch (const std::exception& e) {
      setup.failure = e.what();
      logger()->error("node {} cannot run sandboxes: {}", mpi.node_name(), setup.failure);
    }
  }
  LocalNode node{runner.get(), setup.proxy.get()};

  RankOutcome outcome;
  if (mpi.rank() == 0) {
    Coordinator coordinator(options, mpi, signals, *event_log);
    sink = [&](const node_agent::SandboxEvent& e) { coordinator.record(e); };
    outcome = coordinator.run(node, setup);
  } else {
    Worker worker(mpi, signals);
    sink = [&](const node_agent::SandboxEvent& e) { worker.record(e); };
    outcome = worker.run(node, setup);
  }
  sink = nullptr;
  runner.reset();

  wait_for_node_peers(mpi, signals, outcome.cancelled ? 1'000'000 : 0);
  tear_down_node(setup, mpi);
  return mpi.rank() == 0 ? outcome.exit_code : ExitCode::kOk;
}

}  // namespace oshpc::launcher

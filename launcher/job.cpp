#include "launcher/job.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <functional>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/sys.hpp"
#include "launcher/coordinator.hpp"
#include "launcher/node_runner.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/placement.hpp"
#include "launcher/run_agreement.hpp"
#include "launcher/worker.hpp"
#include "proxy/netns_listener.hpp"

namespace oshpc::launcher {
namespace {

auto logger() {
  return log::get("launcher");
}

struct JobAgreement : RunAgreement {
  std::string events_path;
};

JobAgreement agree_on_job(const Options& options, const MpiSession& mpi,
                          std::optional<EventLog>& event_log) {
  JobAgreement agreement;
  int status = 0;
  if (mpi.rank() == 0) {
    try {
      check_inputs_and_name_run(options, RunKind::kBatchJob, agreement);
      create_run_outputs(options, agreement, [&](const std::string& events_path) {
        agreement.events_path = events_path;
        event_log.emplace(events_path,
                          EventContext{agreement.job_tag, mpi.node_of_rank(), options.index_offset},
                          options.count);
      });
    } catch (const std::exception& e) {
      logger()->error("{}", e.what());
      status = to_int(ExitCode::kBadInput);
    }
  }
  share_run_agreement(status, agreement);
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
  settle_node_setup(setup, mpi, signals, !exec_helper.empty());
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

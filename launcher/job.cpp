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

// Where a sandbox finds its UNIX socket to the egress proxy.
constexpr const char* kSandboxProxySocket = "/run/oshpc/proxy.sock";

node_agent::RunnerConfig runner_config(const Options& options, const MpiSession& mpi,
                                       const JobAgreement& job, NodeSetup& setup,
                                       const std::string& exec_helper) {
  node_agent::RunnerConfig config;
  config.profile.rootfs = setup.rootfs;
  config.profile.exec_helper = exec_helper;
  config.profile.identity = options.identity;
  config.profile.binds = options.binds;
  config.profile.command = options.command;
  // An imported image's own defaults (oshpc image import writes them beside the image).
  rootfs_cache::ImageMetadata metadata = rootfs_cache::load_image_metadata(options.image);
  for (const auto& assignment : metadata.env) {
    auto eq = assignment.find('=');
    if (eq != std::string::npos) {
      config.profile.environment.emplace_back(assignment.substr(0, eq), assignment.substr(eq + 1));
    }
  }
  config.profile.working_dir = metadata.working_dir;
  config.layout = setup.layout;
  config.job_tag = job.job_tag;
  config.node = mpi.node_name();
  config.rank = mpi.rank();
  config.count = options.count;
  config.index_offset = options.index_offset;
  config.workspace_root = setup.workspace_root;
  config.output_dir = job.output_dir;
  config.timeout_us = static_cast<std::int64_t>(options.timeout_seconds * 1e6);
  config.slots = setup.slots;
  config.keep_workspaces = options.keep_workspaces;
  if (setup.seccomp) {
    const seccomp::SeccompProgram* program = &*setup.seccomp;
    config.seccomp_reader = [program] { return program->reader(); };
  }
  if (setup.proxy) {
    proxy::EgressProxy* egress = setup.proxy.get();
    std::string helper = proxy::default_netns_helper_path();
    config.attach_network = [egress, helper](const std::string& id, pid_t pid) {
      egress->add_listener(proxy::open_listener_in_sandbox(pid, proxy::kSandboxProxyPort, helper),
                           id);
    };
    // Each sandbox also gets its own UNIX socket to the proxy at kSandboxProxySocket, for
    // clients that speak to a proxy socket rather than a TCP port.
    std::string socket_dir = setup.job_dir + "/p" + std::to_string(mpi.rank());
    auto socket_of = [socket_dir](const std::string& id) {
      return socket_dir + "/" + id.substr(id.rfind('-') + 1) + ".s";
    };
    config.prepare_network = [egress, socket_of](const std::string& id) {
      std::string path = socket_of(id);
      egress->listen_unix(path, id);
      return std::vector<std::string>{"--bind", path, kSandboxProxySocket};
    };
    config.detach_network = [egress, socket_of](const std::string& id) {
      egress->remove_sandbox(id);
      ::unlink(socket_of(id).c_str());
    };
    config.profile.environment.emplace_back("OSHPC_PROXY_SOCKET", kSandboxProxySocket);
    for (const auto& assignment : proxy::proxy_environment(proxy::kSandboxProxyPort)) {
      auto eq = assignment.find('=');
      config.profile.environment.emplace_back(assignment.substr(0, eq), assignment.substr(eq + 1));
    }
  }
  // The user's variables come last, so they can override ours.
  config.profile.environment.insert(config.profile.environment.end(), options.environment.begin(),
                                    options.environment.end());
  return config;
}

// A proxy decision as an event; the sandbox index comes back out of its id.
node_agent::SandboxEvent egress_event(const proxy::ProxyDecision& decision, int rank,
                                      std::int64_t index_offset) {
  node_agent::SandboxEvent event;
  event.type = node_agent::EventType::kEgress;
  event.wall_us = clock::wall_us();
  event.rank = rank;
  auto dash = decision.sandbox_id.rfind('-');
  event.index = std::atoll(decision.sandbox_id.c_str() + dash + 1) - index_offset;
  event.allowed = decision.allowed;
  event.request_method = decision.method;
  event.host = decision.host;
  event.port = decision.port;
  event.rule = decision.rule;
  event.message = decision.reason;
  event.status = decision.status;
  event.bytes_up = static_cast<std::int64_t>(decision.bytes_up);
  event.bytes_down = static_cast<std::int64_t>(decision.bytes_down);
  event.duration_us = decision.duration_ms * 1000;
  return event;
}

// oshpc-exec lives next to oshpc-fanout (build tree and install tree alike).
std::string find_exec_helper() {
  char self[4096] = {};
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir = n > 0 ? std::string(self, static_cast<std::size_t>(n)) : "";
  dir = dir.substr(0, dir.rfind('/'));
  for (const std::string& candidate : {dir + "/oshpc-exec", dir + "/../libexec/oshpc/oshpc-exec"}) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error("cannot find oshpc-exec next to " + dir +
                           "/oshpc-fanout (is the installation complete?)");
}

// Waits until every rank of the node is done with the staged image, so the leader does not
// unmount it under running sandboxes. Gives up on a stop signal, or after `limit_us` if set.
void wait_for_node_peers(const MpiSession& mpi, SignalChannel& signals, std::int64_t limit_us) {
  MPI_Request request;
  MPI_Ibarrier(mpi.node_comm(), &request);
  std::int64_t deadline = limit_us > 0 ? clock::mono_us() + limit_us : 0;
  int done = 0;
  while (!done) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    if (signals.drain().stop_signal != 0) break;
    if (deadline && clock::mono_us() > deadline) break;
    ::usleep(1000);
  }
  // An unfinished barrier is left behind on purpose: the job is ending anyway.
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
          runner_config(options, mpi, job, setup, exec_helper),
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

#include "launcher/node_runner.hpp"

#include <unistd.h>

#include "common/clock.hpp"
#include "proxy/netns_listener.hpp"
#include "rootfs-cache/image_import.hpp"

namespace oshpc::launcher {

node_agent::RunnerConfig runner_config(const Options& options, const MpiSession& mpi,
                                       const JobNames& job, NodeSetup& setup,
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

void wait_for_node_peers(const MpiSession& mpi, SignalChannel& signals, std::int64_t limit_us) {
  MPI_Request request;
  MPI_Ibarrier(mpi.node_comm(), &request);
  if (!mpi.is_node_leader()) {
    // Only the leader has something to wait for. The others must not give up: an abandoned
    // barrier crashes MPI_Finalize once its communicator is freed (seen as a segfault that
    // made mpirun kill the leader mid tear-down and leave the job directory behind).
    MPI_Wait(&request, MPI_STATUS_IGNORE);
    return;
  }
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

}  // namespace oshpc::launcher

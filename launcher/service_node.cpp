#include "launcher/service_node.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/sys.hpp"
#include "node-agent/bwrap_argv.hpp"

namespace oshpc::launcher {
namespace {

using gateway::NodeCommand;
using gateway::NodeCommandKind;
using node_agent::EventType;
using node_agent::FailureReason;

auto logger() {
  return log::get("service");
}

// What the stock supervisor is given by the container drivers: it builds a network namespace
// and veth pair, applies Landlock and seccomp, reads other processes' /proc entries and
// clears its children's bounding set. Inside an unprivileged user namespace these reach no
// further than the sandbox's own namespaces.
constexpr const char* kSupervisorCapabilities[] = {"CAP_SYS_ADMIN",       "CAP_NET_ADMIN",
                                                   "CAP_SYS_PTRACE",      "CAP_SYSLOG",
                                                   "CAP_DAC_READ_SEARCH", "CAP_SETPCAP"};
// Writable places the supervisor expects; /run is already a tmpfs of its own.
constexpr const char* kRunOpenShell = "/run/openshell";
constexpr const char* kRunNetns = "/run/netns";
constexpr const char* kSupervisorCaDir = "/etc/openshell-tls";

const char* kind_name(NodeCommandKind kind) {
  switch (kind) {
    case NodeCommandKind::kLaunch:
      return "launch";
    case NodeCommandKind::kStop:
      return "stop";
    case NodeCommandKind::kRemove:
      return "remove";
  }
  return "?";
}

NodeCommandKind kind_of(const std::string& name) {
  if (name == "launch") return NodeCommandKind::kLaunch;
  if (name == "stop") return NodeCommandKind::kStop;
  if (name == "remove") return NodeCommandKind::kRemove;
  throw std::runtime_error("unknown node command '" + name + "'");
}

}  // namespace

std::string encode_command(const NodeCommand& command) {
  nlohmann::json json = {{"op", kind_name(command.kind)},
                         {"handle", command.handle},
                         {"slot", command.slot},
                         {"name", command.sandbox_name}};
  if (command.kind == NodeCommandKind::kLaunch) {
    json["env"] = command.workload.environment;
    json["command"] = command.workload.command;
    json["token"] = command.workload.token;
    json["gpus"] = command.workload.gpu_count;
  }
  return json.dump();
}

NodeCommand decode_command(const std::string& text) {
  try {
    nlohmann::json json = nlohmann::json::parse(text);
    NodeCommand command;
    command.kind = kind_of(json.at("op").get<std::string>());
    command.handle = json.at("handle").get<std::int64_t>();
    command.slot = json.at("slot").get<int>();
    command.sandbox_name = json.at("name").get<std::string>();
    if (command.kind == NodeCommandKind::kLaunch) {
      json.at("env").get_to(command.workload.environment);
      json.at("command").get_to(command.workload.command);
      command.workload.token = json.at("token").get<std::string>();
      command.workload.gpu_count = json.at("gpus").get<int>();
    }
    return command;
  } catch (const nlohmann::json::exception& e) {
    // Not e.what(): a parse error quotes the text around it, which may hold a token.
    throw std::runtime_error("malformed node command from rank 0 (json error " +
                             std::to_string(e.id) + ")");
  }
}

void add_service_profile(const Options& options, node_agent::SandboxProfile& profile) {
  if (!options.supervisor.empty()) {
    profile.binds.push_back({options.supervisor, gateway::kSupervisorPath, false});
  }
  if (!options.tls_dir.empty()) profile.binds.push_back({options.tls_dir, gateway::kTlsDir, false});
  node_agent::order_binds(profile.binds);
  profile.tmpfs_dirs = {kRunOpenShell, kRunNetns, kSupervisorCaDir};
  if (options.supervisor_caps) {
    profile.capabilities.assign(std::begin(kSupervisorCapabilities),
                                std::end(kSupervisorCapabilities));
  }
}

std::vector<std::string> service_mount_points(const Options& options) {
  std::vector<std::string> points = {gateway::kTokenDir, kSupervisorCaDir};
  if (!options.supervisor.empty()) points.push_back(gateway::kSupervisorPath);
  if (!options.tls_dir.empty()) points.push_back(gateway::kTlsDir);
  return points;
}

ServiceNode::ServiceNode(const NodeSetup& setup, const RankPlacement& placement, int rank,
                         std::string node, node_agent::SandboxProfile base_profile,
                         std::string output_dir, EventSink sink)
    : setup_(setup),
      placement_(placement),
      rank_(rank),
      node_(std::move(node)),
      base_profile_(std::move(base_profile)),
      output_dir_(std::move(output_dir)),
      sink_(std::move(sink)) {}

void ServiceNode::apply(const NodeCommand& command) {
  switch (command.kind) {
    case NodeCommandKind::kLaunch:
      launch(command);
      break;
    case NodeCommandKind::kStop:
      // Not running any more means its terminal event is already on its way.
      if (runner_) runner_->stop(command.handle);
      break;
    case NodeCommandKind::kRemove:
      remove(command);
      break;
  }
}

void ServiceNode::emit(EventType type, std::int64_t handle, FailureReason reason,
                       const std::string& message) {
  node_agent::SandboxEvent event;
  event.type = type;
  event.wall_us = clock::wall_us();
  event.index = handle;
  event.rank = rank_;
  event.reason = reason;
  event.message = message;
  sink_(event);
}

// The token goes into a file of its own, owner-only, in a directory bound read-only at
// /etc/openshell/auth: never into the environment, argv or a log line.
std::vector<std::string> ServiceNode::write_token(const std::string& name,
                                                  const std::string& token) {
  std::string dir = setup_.job_dir + "/secrets/" + name;
  sys::make_directories(dir, 0700);
  std::string path = dir + "/sandbox.jwt";
  ::unlink(path.c_str());
  sys::UniqueFd fd(
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.is_open()) sys::throw_errno("write the sandbox token file " + path);
  sys::write_all(fd.get(), token, "the sandbox token file " + path);
  return {"--ro-bind", dir, gateway::kTokenDir};
}

void ServiceNode::launch(const NodeCommand& command) {
  if (!runner_) {
    emit(EventType::kFailed, command.handle, FailureReason::kNodeFailed,
         "node " + node_ + " cannot run sandboxes: " + setup_.failure);
    return;
  }
  node_agent::NamedSandbox sandbox;
  sandbox.handle = command.handle;
  sandbox.id = command.sandbox_name;
  sandbox.slot = command.slot;
  sandbox.workspace = setup_.workspace_root + "/" + command.sandbox_name;
  try {
    auto profile = std::make_shared<node_agent::SandboxProfile>(base_profile_);
    profile->environment.insert(profile->environment.end(), command.workload.environment.begin(),
                                command.workload.environment.end());
    profile->command = command.workload.command;
    sandbox.profile = std::move(profile);
    if (!command.workload.token.empty()) {
      sandbox.mount_args = write_token(command.sandbox_name, command.workload.token);
    }
    // Fewer GPUs than the slot has: bind only the first ones (all local to its package).
    const topo::Slot& slot = placement_.slots.at(static_cast<std::size_t>(command.slot));
    if (command.workload.gpu_count != static_cast<int>(slot.gpus.size())) {
      sandbox.resources = slot_resources(topo::with_first_gpus(slot, command.workload.gpu_count));
    }
  } catch (const std::exception& e) {
    emit(EventType::kFailed, command.handle, FailureReason::kSpawnFailed, e.what());
    return;
  }
  runner_->launch(std::move(sandbox));
}

void ServiceNode::remove(const NodeCommand& command) {
  if (runner_ && runner_->stop(command.handle)) {
    // Its files go once the kill has been reaped (on_runner_event).
    removing_[command.handle] = command.sandbox_name;
    return;
  }
  remove_files(command.handle, command.sandbox_name);
}

void ServiceNode::remove_files(std::int64_t handle, const std::string& name) {
  bool complete = true;
  for (const std::string& path :
       {setup_.workspace_root + "/" + name, setup_.job_dir + "/secrets/" + name,
        output_dir_.empty() ? "" : output_dir_ + "/" + name}) {
    if (!path.empty() && !sys::remove_tree(path)) complete = false;
  }
  if (!complete) logger()->warn("cannot remove every file of sandbox {}", name);
  emit(EventType::kRemoved, handle, FailureReason::kNone, "");
}

void ServiceNode::on_runner_event(const node_agent::SandboxEvent& event) {
  sink_(event);
  if (!node_agent::is_terminal(event.type)) return;
  auto removing = removing_.find(event.index);
  if (removing == removing_.end()) return;
  std::string name = removing->second;
  removing_.erase(removing);
  remove_files(event.index, name);
}

}  // namespace oshpc::launcher

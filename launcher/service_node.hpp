// One rank's part of the gateway service: it turns rank 0's commands (launch, stop, remove)
// into named sandboxes on this node, materialising the OpenShell workload: the token file,
// the supervisor's mounts and capabilities, and the gateway relay. Also the wire form of the
// commands between ranks.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "launcher/gateway/sandbox_registry.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/options.hpp"
#include "launcher/placement.hpp"
#include "node-agent/sandbox_runner.hpp"

namespace oshpc::launcher {

// A node command as JSON text and back. The token travels inside (between the job's own
// processes only). decode throws std::runtime_error for malformed text.
std::string encode_command(const gateway::NodeCommand& command);
gateway::NodeCommand decode_command(const std::string& text);

// The part of every service sandbox's profile that does not depend on the request: the
// supervisor's binds and capabilities and the OpenShell mount points, added to `profile`.
void add_service_profile(const Options& options, node_agent::SandboxProfile& profile);

// Bind destinations the root layout must make room for in service mode.
std::vector<std::string> service_mount_points(const Options& options);

class ServiceNode {
 public:
  using EventSink = std::function<void(const node_agent::SandboxEvent&)>;

  // `runner` may be null: a node that failed to set up answers every launch with a failure
  // naming `failure`.
  ServiceNode(const NodeSetup& setup, const RankPlacement& placement, int rank, std::string node,
              node_agent::SandboxProfile base_profile, std::string output_dir, EventSink sink);

  void set_runner(node_agent::SandboxRunner* runner) { runner_ = runner; }
  // Carries out one command. Never throws: a failure becomes the sandbox's terminal event.
  void apply(const gateway::NodeCommand& command);
  // Every event of this rank's runner passes here on its way to rank 0.
  void on_runner_event(const node_agent::SandboxEvent& event);

 private:
  void launch(const gateway::NodeCommand& command);
  void remove(const gateway::NodeCommand& command);
  void remove_files(std::int64_t handle, const std::string& name);
  std::vector<std::string> write_token(const std::string& name, const std::string& token);
  void emit(node_agent::EventType type, std::int64_t handle, node_agent::FailureReason reason,
            const std::string& message);

  const NodeSetup& setup_;
  const RankPlacement& placement_;
  int rank_;
  std::string node_;
  node_agent::SandboxProfile base_profile_;
  std::string output_dir_;
  EventSink sink_;
  node_agent::SandboxRunner* runner_ = nullptr;
  std::map<std::int64_t, std::string> removing_;  // handle -> name, waiting for the kill
};

}  // namespace oshpc::launcher

// What one sandbox is, before anything is created: the immutable input to argv building and
// spawning. Built by the launcher's plan; never modified by the node agent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace oshpc::node_agent {

struct BindMount {
  std::string source;       // host path
  std::string destination;  // absolute path inside the sandbox
  bool writable = false;
};

// How the sandbox's user appears inside: uid 0 (default) or the caller's own uid.
enum class IdentityMode { kRoot, kSelf };

using EnvironmentList = std::vector<std::pair<std::string, std::string>>;

// The profile every sandbox shares within one job (same image, same options).
struct SandboxProfile {
  std::string rootfs;           // host directory holding the staged image root
  std::string exec_helper;      // host path of the static oshpc-exec program
  std::string bwrap = "bwrap";  // bubblewrap executable
  IdentityMode identity = IdentityMode::kRoot;
  std::vector<BindMount> binds;      // user binds, after validation
  EnvironmentList environment;       // user environment (placeholders not yet expanded)
  std::vector<std::string> command;  // COMMAND [ARG...] (placeholders not yet expanded)
  std::string working_dir;           // where the command starts; "" for /sandbox
  // Capabilities granted inside the sandbox's user namespace ("CAP_SYS_ADMIN"); empty: none.
  // Granting any also allows the nested user namespace that bubblewrap would otherwise
  // forbid with --disable-userns (a process holding CAP_NET_ADMIN must own the network
  // namespace it configures); the seccomp filter still refuses new user namespaces.
  std::vector<std::string> capabilities;
  std::vector<std::string> tmpfs_dirs;  // more tmpfs mounts, e.g. /run/netns
};

// What one slot gives the sandbox running in it, from the node's placement (topo/).
struct SlotResources {
  std::vector<int> cpus;                 // host CPUs (empty: unpinned)
  int numa = -1;                         // memory node to bind to (-1: none)
  std::vector<std::string> device_args;  // bubblewrap args binding its GPU device nodes
  EnvironmentList environment;           // CUDA_VISIBLE_DEVICES and the like
  std::string gpus;                      // for events: its GPUs, "0,1" or UUIDs
};

// One sandbox instance: who it is and where its files go.
struct SandboxInstance {
  std::string id;          // job-unique, safe as a file name
  std::int64_t index = 0;  // 0..count-1
  std::int64_t count = 0;
  std::string node;
  int rank = 0;
  std::string workspace;                // host directory bound writable at /sandbox
  const SlotResources* slot = nullptr;  // where it runs (never null once placed)
  std::vector<std::string> mount_args;  // its own extra mounts (e.g. its proxy socket)
};

// Where a sandbox sees itself and its tools.
inline constexpr const char* kWorkspaceDir = "/sandbox";
inline constexpr const char* kExecHelperPath = "/.oshpc/exec";

}  // namespace oshpc::node_agent

namespace oshpc::node_agent {

// The id of sandbox `index` in job `job_tag`: "<job_tag>-<index>". Safe as a file name.
inline std::string sandbox_id(const std::string& job_tag, std::int64_t index) {
  return job_tag + "-" + std::to_string(index);
}

}  // namespace oshpc::node_agent

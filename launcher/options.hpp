// oshpc-fanout's command line -> an immutable Options value. Everything a user can get wrong
// on the command line is rejected here, on every rank alike, before anything is created.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "node-agent/sandbox_spec.hpp"
#include "node-agent/seccomp/seccomp_filter.hpp"
#include "rootfs-cache/staging.hpp"
#include "topo/placement.hpp"

namespace oshpc::launcher {

// A bad command line. what() is one line naming the option and the problem.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Action { kRun, kPlan, kServe, kHelp, kVersion, kCheck };

struct Options {
  Action action = Action::kRun;
  std::string image;
  std::int64_t count = 0;
  int cpus_per_sandbox = 1;
  int gpus_per_sandbox = 0;
  std::int64_t mem_per_sandbox = 0;  // bytes; 0: no memory bound in placement
  topo::PlacementPolicy placement = topo::PlacementPolicy::kPack;
  std::string topology_xml;           // plan against this machine description (--plan only)
  std::optional<int> slots_per_rank;  // overrides the CPU-derived slot count
  std::int64_t index_offset = 0;      // sandbox indices start here (job array slices)
  seccomp::SeccompProfile seccomp = seccomp::SeccompProfile::kDefault;
  std::string policy_path;     // egress policy; "" denies all egress (no proxy at all)
  std::string upstream_proxy;  // chain allowed traffic through http://HOST:PORT
  double timeout_seconds = 0;  // 0: none
  node_agent::EnvironmentList environment;
  std::vector<node_agent::BindMount> binds;
  std::string events_path;  // "" -> <output-dir>/events.jsonl; "-" -> stdout
  std::string output_dir;   // "" -> ./oshpc-<job>
  std::string cache_dir;    // "" -> rootfs_cache::default_cache_dir()
  rootfs_cache::StageMethod stage_method = rootfs_cache::StageMethod::kAuto;
  rootfs_cache::StageFrom stage_from = rootfs_cache::StageFrom::kBroadcast;
  node_agent::IdentityMode identity = node_agent::IdentityMode::kRoot;
  std::string job_name;  // "" -> generated on rank 0
  bool keep_workspaces = false;
  int verbosity = 0;  // -q: -1, -v: 1, -vv: 2
  std::vector<std::string> command;

  // The OpenShell gateway service (--serve): sandboxes come from the gateway, not --count.
  std::string serve_socket;      // UNIX socket rank 0 serves the compute-driver API on
  std::string supervisor;        // host path of the supervisor binary; "" runs spec commands
  std::string gateway_endpoint;  // http(s)://HOST:PORT of the gateway, as nodes reach it
  std::string tls_dir;           // holds ca.crt, tls.crt, tls.key for the supervisor
  bool supervisor_caps = true;   // grant the supervisor the capabilities it needs
};

// Parses argv (argv[0] is the program). Throws UsageError. Does not touch the file system
// beyond what the options name (bind sources are checked to exist).
Options parse_options(int argc, const char* const argv[]);

// The --help text.
std::string help_text();

// Parses "KEY=VALUE"; throws UsageError naming the option.
std::pair<std::string, std::string> parse_env_assignment(const std::string& text);

// Parses a size: bytes, or with K, M, G, T (powers of 1024; "Ki", "KiB" too); throws UsageError.
std::int64_t parse_size(const std::string& option, const std::string& text);

// Parses "SRC:DST[:ro|rw]"; throws UsageError naming the option. Read-only by default.
node_agent::BindMount parse_bind(const std::string& text);

}  // namespace oshpc::launcher

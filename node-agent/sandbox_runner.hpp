// Runs this rank's sandboxes: a queue of indices, a fixed number of slots, one bubblewrap per
// running sandbox. Driven by the launcher's event loop (no threads): it starts work in free
// slots, reads each sandbox's oshpc-exec reports, reaps on SIGCHLD, enforces timeouts and
// cancels. Every sandbox it is given produces exactly one terminal event through the sink.
#pragma once

#include <poll.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/sys.hpp"
#include "node-agent/root_layout.hpp"
#include "node-agent/sandbox_event.hpp"
#include "node-agent/sandbox_spec.hpp"

namespace oshpc::node_agent {

struct RunnerConfig {
  SandboxProfile profile;
  RootLayout layout;
  std::string job_tag;
  std::string node;
  int rank = 0;
  std::int64_t count = 0;            // sandboxes in the whole job
  std::int64_t index_offset = 0;     // the first sandbox's index (job-array slices)
  std::string workspace_root;        // node-local; one sub-directory per sandbox
  std::string output_dir;            // per sandbox <dir>/<id>/stdout, stderr; "" for none
  std::int64_t timeout_us = 0;       // per sandbox; 0 for none
  std::vector<SlotResources> slots;  // one entry per slot (at least one)
  bool keep_workspaces = false;
  // A fresh descriptor of the seccomp BPF program for each sandbox (empty: no filter).
  std::function<sys::UniqueFd()> seccomp_reader;
  // Called before a sandbox is spawned; returns its own extra bubblewrap mount arguments (the
  // proxy's UNIX socket for it). Throwing fails that sandbox. Empty: none.
  std::function<std::vector<std::string>(const std::string& sandbox_id)> prepare_network;
  // Called once the sandbox's namespaces exist and before its command runs, with the pid of a
  // process inside it (the egress proxy opens the sandbox's loopback listener here). Throwing
  // fails that sandbox. Empty: none (the sandbox still starts only once its pid is known).
  std::function<void(const std::string& sandbox_id, pid_t pid)> attach_network;
  // Called when a sandbox prepared or attached above has ended (or failed to start).
  std::function<void(const std::string& sandbox_id)> detach_network;
};

// A long-lived sandbox of the service mode: its own profile, started and stopped on request
// in a slot that the caller chose, with a workspace that outlives each run.
struct NamedSandbox {
  std::int64_t handle = 0;  // the caller's number for it; its events carry it as their index
  std::string id;           // hostname, proxy attribution, output sub-directory
  int slot = 0;             // a free slot of this runner
  std::shared_ptr<const SandboxProfile> profile;
  std::vector<std::string> mount_args;     // its own extra bubblewrap mounts (secrets)
  std::optional<SlotResources> resources;  // replaces the slot's own (e.g. fewer GPUs)
  std::string workspace;                   // bound at /sandbox; kept when the sandbox ends
};

class SandboxRunner {
 public:
  using EventSink = std::function<void(SandboxEvent&&)>;

  // Throws std::invalid_argument when the config has no slots.
  SandboxRunner(RunnerConfig config, EventSink sink);
  ~SandboxRunner();
  SandboxRunner(const SandboxRunner&) = delete;
  SandboxRunner& operator=(const SandboxRunner&) = delete;

  void enqueue(std::int64_t first_index, std::int64_t count);
  int slot_count() const { return static_cast<int>(config_.slots.size()); }
  int running() const { return static_cast<int>(running_.size()); }
  std::size_t queued() const;
  bool is_idle() const { return running_.empty() && held_.empty() && queued() == 0; }

  // Starts queued sandboxes while slots are free. A sandbox that cannot be started gets its
  // terminal event at once; the runner goes on with the next. Never throws.
  void start_ready();

  // The descriptors to poll for reports, and the handler for what poll found.
  void append_poll_fds(std::vector<pollfd>& fds) const;
  void handle_readable(const std::vector<pollfd>& fds, std::size_t first);

  // Reaps finished sandboxes (call on SIGCHLD). Never throws.
  void reap();

  // Kills sandboxes past their deadline and sends held events that are due; returns
  // microseconds until the next deadline (-1 when none). Never throws.
  std::int64_t enforce_timeouts();

  // Starts a named sandbox now, in its slot. A sandbox that cannot be started (slot busy,
  // spawn failed) gets its terminal event at once. Never throws.
  void launch(NamedSandbox sandbox);
  // Kills the named sandbox `handle`; its terminal event (reason `stopped`, unless its command
  // had already ended on its own) follows from reap(). False when it is not running. Never
  // throws.
  bool stop(std::int64_t handle);

  // Stops everything: running sandboxes are killed and reaped, queued ones dropped; each gets
  // a terminal event with reason `cancelled`. Never throws.
  void cancel_all();

 private:
  struct Running;
  struct IndexRange {
    std::int64_t first;
    std::int64_t count;
  };

  std::int64_t pop_index();
  void start_one(std::int64_t index, int slot);
  void spawn(std::unique_ptr<Running> sandbox, const SandboxProfile& profile);
  void read_reports(Running& sandbox);
  void read_info(Running& sandbox);
  static void drain_info(Running& sandbox);
  static std::optional<std::uint64_t> info_number(const Running& sandbox, std::string_view key);
  struct InitHandle {
    sys::UniqueFd pidfd;    // empty without pidfd support, or when not verified
    bool verified = false;  // the pid is the sandbox's pid 1
  };
  static InitHandle open_sandbox_init(const Running& sandbox, pid_t pid, bool bwrap_reaped);
  static bool init_has_exited(const Running& sandbox);
  bool kill_sandbox(Running& sandbox);
  void wait_for_namespace_end(Running& sandbox);
  void finish(pid_t pid, int wait_status);
  SandboxEvent make_event(EventType type, const Running& sandbox) const;
  SandboxEvent terminal_event(Running& sandbox, int wait_status) const;
  void fail_unstarted(std::int64_t index, FailureReason reason, std::string message);

  RunnerConfig config_;
  EventSink sink_;
  std::deque<IndexRange> queue_;
  std::vector<int> free_slots_;
  std::unordered_map<pid_t, std::unique_ptr<Running>> running_;

  // Terminal events of commands killed by SIGTERM, SIGINT or SIGHUP, held back briefly: a
  // scheduler stopping the job signals every process at once, and a sandbox that died of that
  // signal just before this rank heard of the stop is cancelled, not a command that failed.
  struct HeldEvent {
    SandboxEvent event;
    std::int64_t release_mono_us;
  };
  std::vector<HeldEvent> held_;
};

}  // namespace oshpc::node_agent

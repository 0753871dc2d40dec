// Spawning and owning child processes without fork(): an MPI rank may have registered memory
// that fork() would have to copy or could corrupt, so children are started with vfork()-style
// spawning and only async-signal-safe calls run before exec.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace oshpc::node_agent {

struct SpawnOptions {
  int stdin_fd = -1;             // -1: /dev/null
  int stdout_fd = -1;            // -1: inherit
  int stderr_fd = -1;            // -1: inherit
  std::vector<int> inherit_fds;  // kept open across exec at the same numbers; all others closed
  std::vector<int> cpus;         // CPU affinity for the child (empty: inherit)
  int numa_node = -1;            // bind the child's memory to this NUMA node (best effort)
  bool new_process_group = false;
  // Sent to the child when the thread that spawned it dies (PR_SET_PDEATHSIG); 0: none. For
  // helpers that must not outlive a launcher killed with SIGKILL: spawn them from the main
  // thread. A child whose parent is already gone by then exits at once.
  int parent_death_signal = 0;
  // The child's whole environment ("KEY=VALUE"); unset: it inherits ours. An environment,
  // unlike an argv, is readable in /proc by its owner only.
  std::optional<std::vector<std::string>> environment;
};

// A child process. Move-only; the destructor kills (SIGKILL) and reaps a child still running,
// so no process outlives its owner by accident. A child started in its own process group is
// signalled as a group, so that its own children (which may not have set up their
// parent-death signal yet) go with it.
class ChildProcess {
 public:
  ChildProcess() = default;
  explicit ChildProcess(pid_t pid, bool leads_group = false)
      : pid_(pid), leads_group_(leads_group) {}
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool is_running() const { return pid_ > 0; }
  // Sends a signal; returns false if the process is already gone. Never throws.
  bool signal(int signo) const;
  // Marks the child as reaped by someone else (the agent's SIGCHLD loop).
  void mark_reaped() { pid_ = -1; }
  // Waits for the child and returns its raw wait status; throws SysError.
  int wait();
  // Gives up ownership without killing.
  pid_t release();

 private:
  pid_t pid_ = -1;
  bool leads_group_ = false;
};

// Starts argv[0] (searched on PATH) with the given options. Throws SysError naming the program
// when it cannot be started (the exec errno is reported, not a generic failure).
ChildProcess spawn_process(const std::vector<std::string>& argv, const SpawnOptions& options);

// Runs a command to completion, capturing stderr (at most 64 KiB); returns the wait status.
// For short helper tools (unsquashfs, fusermount3). Throws SysError if it cannot start.
int run_command(const std::vector<std::string>& argv, std::string* stderr_text = nullptr);

}  // namespace oshpc::node_agent

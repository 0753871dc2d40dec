#include "node-agent/sandbox_runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/pidfd.hpp"
#include "common/sys.hpp"
#include "node-agent/bwrap_argv.hpp"
#include "node-agent/process.hpp"

namespace oshpc::node_agent {

// What oshpc-exec told us about one sandbox (see oshpc_exec.c for the line format).
struct ExecReport {
  std::int64_t started_mono_us = -1;
  int exec_errno = 0;
  std::string exec_command;
  bool has_status = false;
  int wait_status = 0;
  std::int64_t user_us = 0;
  std::int64_t system_us = 0;
  std::int64_t max_rss_kib = 0;
};

struct SandboxRunner::Running {
  SandboxInstance instance;
  int slot = -1;
  std::int64_t event_index = 0;  // the index its events carry
  // A named sandbox's own profile and resources; batch sandboxes share the runner's.
  std::shared_ptr<const SandboxProfile> own_profile;
  std::optional<SlotResources> own_resources;
  bool is_named = false;  // keeps its workspace, appends to its output files
  bool stop_requested = false;
  ChildProcess process;
  sys::UniqueFd report_fd;
  std::string report_buffer;
  ExecReport report;
  std::int64_t spawn_mono_us = 0;
  std::int64_t deadline_mono_us = 0;  // 0: none
  bool timed_out = false;
  bool cancelled = false;
  std::string stderr_path;
  // bubblewrap reports the sandbox's pid on info_fd, then waits on block_fd until we have a
  // handle on that pid (and, with attach_network, have attached its network). block_fd is a
  // socket, so that a start signal sent after bubblewrap died fails with EPIPE, not SIGPIPE.
  sys::UniqueFd info_fd;
  sys::UniqueFd block_fd;
  std::string info_buffer;
  std::string attach_error;
  // The sandbox's pid 1 (bubblewrap's child-pid), once known. It is not our child, and it
  // outlives the bubblewrap we reap by as long as the kernel takes to kill everything else in
  // its pid namespace: it exits last (pid_namespaces(7)), so its end means the sandbox's end.
  sys::UniqueFd namespace_init;
};

namespace {

auto logger() {
  return log::get("node-agent");
}

// How long a command's death by a stop signal waits for this rank's own stop to arrive.
constexpr std::int64_t kStopSignalHoldUs = 300'000;

// How long a killed sandbox's pid 1 may take to see the rest of its pid namespace die. A
// process in uninterruptible sleep (a hung NFS server) delays it; past this we go on and warn.
constexpr int kNamespaceEndWaitMs = 10'000;

void parse_report_line(const std::string& line, ExecReport& report) {
  std::istringstream in(line);
  char kind = 0;
  in >> kind;
  switch (kind) {
    case 'S':
      in >> report.started_mono_us;
      break;
    case 'E':
      in >> report.exec_errno;
      in.ignore(1);
      std::getline(in, report.exec_command);
      break;
    case 'X':
      in >> report.wait_status >> report.user_us >> report.system_us >> report.max_rss_kib;
      report.has_status = !in.fail();
      break;
    default:
      break;  // a future line kind: ignore rather than fail the sandbox
  }
}

// The last non-empty line of a (bubblewrap) stderr file: why a sandbox could not be built.
std::string last_line_of(const std::string& path) {
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.is_open()) return "";
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  off_t from = size > 512 ? size - 512 : 0;
  char buf[513] = {};
  ssize_t n = ::pread(fd.get(), buf, 512, from);
  if (n <= 0) return "";
  std::string text(buf, static_cast<std::size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  auto pos = text.rfind('\n');
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

std::string cpu_list_text(const std::vector<int>& cpus) {
  std::string out;
  for (std::size_t i = 0; i < cpus.size(); ++i) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += "-" + std::to_string(cpus[j]);
    i = j;
  }
  return out;
}

// The parent pid of pid (field 4 of /proc/PID/stat); -1 when the process is gone.
pid_t parent_of(pid_t pid) {
  char path[40];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  sys::UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.is_open()) return -1;
  char buf[1024];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* close = std::strrchr(buf, ')');  // the command name may hold anything
  char state = 0;
  int parent = -1;
  if (!close || std::sscanf(close + 1, " %c %d", &state, &parent) != 2) return -1;
  return parent;
}

// The inode of pid's pid namespace; 0 when the process is gone.
std::uint64_t pid_namespace_of(pid_t pid) {
  char path[40];
  std::snprintf(path, sizeof path, "/proc/%d/ns/pid", static_cast<int>(pid));
  struct stat st {};
  return ::stat(path, &st) == 0 ? st.st_ino : 0;
}

}  // namespace

// A handle on the sandbox's pid 1, which bubblewrap named on info_fd; empty when that
// process is not (or no longer) the sandbox's. It may have died (a mount that failed) and its
// pid been taken by another process of the user, another sandbox's even: the pid counts as
// the sandbox's only while it is bubblewrap's child (bubblewrap, not yet reaped, keeps its
// own pid) or lives in the pid namespace bubblewrap reported. Kernels without pidfds (before
// 5.3) get no handle, and the sandbox's end is its bubblewrap's.
SandboxRunner::InitHandle SandboxRunner::open_sandbox_init(const Running& sandbox, pid_t pid,
                                                           bool bwrap_reaped) {
  InitHandle init;
  init.pidfd = sys::UniqueFd(::pidfd_open(pid, 0));
  if (!init.pidfd.is_open() && errno != ENOSYS) return init;
  std::uint64_t expected_namespace = info_number(sandbox, "pid-namespace").value_or(0);
  bool ours = (!bwrap_reaped && parent_of(pid) == sandbox.process.pid()) ||
              (expected_namespace != 0 && pid_namespace_of(pid) == expected_namespace);
  // Alive after the check: the pid was its own while /proc was read.
  if (ours && init.pidfd.is_open() && ::pidfd_send_signal(init.pidfd.get(), 0, nullptr, 0) != 0) {
    ours = false;
  }
  init.verified = ours;
  if (!ours) init.pidfd.reset();
  return init;
}

namespace {

// A memfd holding bubblewrap's --setenv arguments (read with --args FD): the environment
// reaches the sandbox without being bubblewrap's own environment, where the host's dynamic
// loader would honour LD_PRELOAD, LD_LIBRARY_PATH and the like for bubblewrap itself, and
// without being in its argv, which every user can read in /proc/PID/cmdline.
sys::UniqueFd environment_args(const EnvironmentList& environment) {
  if (environment.size() > kMaxSandboxVariables) {
    throw std::invalid_argument("the sandbox has " + std::to_string(environment.size()) +
                                " environment variables; at most " +
                                std::to_string(kMaxSandboxVariables) + " fit");
  }
  std::string args;
  for (const auto& [key, value] : environment) {
    // A NUL would end the argument early and make the rest bubblewrap options of its own.
    if (key.empty() || key.find_first_of(std::string_view("=\0", 2)) != std::string::npos ||
        value.find('\0') != std::string::npos) {
      throw std::invalid_argument("the environment variable '" + key.substr(0, key.find('\0')) +
                                  "' has a NUL byte or an invalid name");
    }
    args.append("--setenv").push_back('\0');
    args.append(key).push_back('\0');
    args.append(value).push_back('\0');
  }
  sys::UniqueFd memfd(::memfd_create("oshpc-environment", MFD_CLOEXEC));
  if (!memfd.is_open()) sys::throw_errno("create a memfd for the sandbox environment");
  sys::write_all(memfd.get(), args, "the sandbox environment");
  if (::lseek(memfd.get(), 0, SEEK_SET) != 0) sys::throw_errno("rewind the sandbox environment");
  return memfd;
}

}  // namespace

SandboxRunner::SandboxRunner(RunnerConfig config, EventSink sink)
    : config_(std::move(config)), sink_(std::move(sink)) {
  if (config_.slots.empty()) throw std::invalid_argument("a sandbox runner needs slots");
  // Slot 0 is handed out first: pop_back takes from the end.
  for (int slot = slot_count() - 1; slot >= 0; --slot) free_slots_.push_back(slot);
}

// Running sandboxes are killed and reaped by their ChildProcess destructors; no events then,
// since the sink may already be gone.
SandboxRunner::~SandboxRunner() = default;

void SandboxRunner::enqueue(std::int64_t first_index, std::int64_t count) {
  if (count > 0) queue_.push_back({first_index, count});
}

std::size_t SandboxRunner::queued() const {
  std::size_t total = 0;
  for (const auto& range : queue_) total += static_cast<std::size_t>(range.count);
  return total;
}

std::int64_t SandboxRunner::pop_index() {
  IndexRange& range = queue_.front();
  std::int64_t index = range.first++;
  if (--range.count == 0) queue_.pop_front();
  return index;
}

void SandboxRunner::start_ready() {
  while (!free_slots_.empty() && !queue_.empty()) {
    int slot = free_slots_.back();
    free_slots_.pop_back();
    start_one(pop_index(), slot);
  }
}

void SandboxRunner::start_one(std::int64_t index, int slot) {
  auto sandbox = std::make_unique<Running>();
  sandbox->slot = slot;
  sandbox->event_index = index;
  SandboxInstance& instance = sandbox->instance;
  // Internally (queue, events) indices run 0..count-1; the sandbox sees the offset one.
  instance.index = index + config_.index_offset;
  instance.id = sandbox_id(config_.job_tag, instance.index);
  instance.count = config_.count;
  instance.workspace = config_.workspace_root + "/" + instance.id;
  instance.slot = &config_.slots[static_cast<std::size_t>(slot)];
  spawn(std::move(sandbox), config_.profile);
}

void SandboxRunner::launch(NamedSandbox named) {
  auto free = std::find(free_slots_.begin(), free_slots_.end(), named.slot);
  if (free == free_slots_.end()) {
    fail_unstarted(named.handle, FailureReason::kSpawnFailed,
                   "slot " + std::to_string(named.slot) + " of rank " +
                       std::to_string(config_.rank) + " is not free");
    return;
  }
  free_slots_.erase(free);
  auto sandbox = std::make_unique<Running>();
  sandbox->slot = named.slot;
  sandbox->event_index = named.handle;
  sandbox->is_named = true;
  sandbox->own_profile = std::move(named.profile);
  sandbox->own_resources = std::move(named.resources);
  SandboxInstance& instance = sandbox->instance;
  instance.index = named.handle;
  instance.id = std::move(named.id);
  instance.workspace = std::move(named.workspace);
  instance.mount_args = std::move(named.mount_args);
  instance.slot = sandbox->own_resources ? &*sandbox->own_resources
                                         : &config_.slots[static_cast<std::size_t>(named.slot)];
  const SandboxProfile& profile = *sandbox->own_profile;
  spawn(std::move(sandbox), profile);
}

bool SandboxRunner::stop(std::int64_t handle) {
  for (auto& [pid, sandbox] : running_) {
    if (!sandbox->is_named || sandbox->event_index != handle) continue;
    sandbox->stop_requested = true;
    kill_sandbox(*sandbox);
    return true;
  }
  return false;
}

void SandboxRunner::spawn(std::unique_ptr<Running> sandbox, const SandboxProfile& profile) {
  sandbox->spawn_mono_us = clock::mono_us();
  SandboxInstance& instance = sandbox->instance;
  instance.node = config_.node;
  instance.rank = config_.rank;
  const int slot = sandbox->slot;

  try {
    sys::make_directories(instance.workspace, 0700);
    sys::UniqueFd out_fd, err_fd;
    if (!config_.output_dir.empty()) {
      std::string dir = config_.output_dir + "/" + instance.id;
      sys::make_directories(dir, 0755);
      // A named sandbox keeps one log across its runs.
      int mode = O_WRONLY | O_CREAT | (sandbox->is_named ? O_APPEND : O_TRUNC);
      out_fd = sys::open_file(dir + "/stdout", mode);
      sandbox->stderr_path = dir + "/stderr";
      err_fd = sys::open_file(sandbox->stderr_path, mode);
    } else {
      out_fd = sys::open_file("/dev/null", O_WRONLY);
      err_fd = sys::open_file("/dev/null", O_WRONLY);
    }
    sys::Pipe report = sys::make_pipe();
    sys::set_nonblocking(report.read_end.get(), true);
    InheritedFds fds{report.write_end.get()};
    SpawnOptions options;
    options.stdout_fd = out_fd.get();
    options.stderr_fd = err_fd.get();
    options.inherit_fds = {report.write_end.get()};

    sys::UniqueFd seccomp;
    if (config_.seccomp_reader) {
      seccomp = config_.seccomp_reader();
      fds.seccomp = seccomp.get();
      options.inherit_fds.push_back(seccomp.get());
    }
    sys::Pipe info = sys::make_pipe();
    sys::set_nonblocking(info.read_end.get(), true);
    int block[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, block) != 0) {
      sys::throw_errno("create the sandbox's start signal");
    }
    sys::UniqueFd block_read(block[0]), block_write(block[1]);
    fds.info = info.write_end.get();
    fds.block = block_read.get();
    options.inherit_fds.push_back(fds.info);
    options.inherit_fds.push_back(fds.block);

    if (config_.prepare_network) {
      auto network_args = config_.prepare_network(instance.id);
      instance.mount_args.insert(instance.mount_args.end(), network_args.begin(),
                                 network_args.end());
    }
    sys::UniqueFd environment = environment_args(sandbox_environment(profile, instance));
    fds.environment_args = environment.get();
    options.inherit_fds.push_back(fds.environment_args);
    auto argv = build_bwrap_argv(profile, config_.layout, instance, fds, ::getuid(), ::getgid());
    // bubblewrap itself runs with no environment at all: see environment_args.
    options.environment.emplace();
    options.cpus = instance.slot->cpus;
    options.numa_node = instance.slot->numa;
    // Its own process group: a signal meant for this rank's group (mpirun, srun) must reach
    // the agent, which then stops the sandbox and records why, not the sandbox directly.
    options.new_process_group = true;
    sandbox->process = spawn_process(argv, options);
    sandbox->report_fd = std::move(report.read_end);
    sandbox->info_fd = std::move(info.read_end);
    sandbox->block_fd = std::move(block_write);
  } catch (const std::exception& e) {
    free_slots_.push_back(slot);
    if (config_.detach_network) config_.detach_network(instance.id);
    if (!sandbox->is_named) sys::remove_tree(instance.workspace);
    fail_unstarted(sandbox->event_index, FailureReason::kSpawnFailed, e.what());
    return;
  }

  if (config_.timeout_us > 0 && !sandbox->is_named)
    sandbox->deadline_mono_us = sandbox->spawn_mono_us + config_.timeout_us;
  pid_t pid = sandbox->process.pid();
  running_.emplace(pid, std::move(sandbox));
}

void SandboxRunner::append_poll_fds(std::vector<pollfd>& fds) const {
  for (const auto& [pid, sandbox] : running_) {
    if (sandbox->report_fd.is_open()) fds.push_back({sandbox->report_fd.get(), POLLIN, 0});
    if (sandbox->info_fd.is_open()) fds.push_back({sandbox->info_fd.get(), POLLIN, 0});
  }
}

void SandboxRunner::handle_readable(const std::vector<pollfd>& fds, std::size_t first) {
  // Only a few fds are ready at a time; look each one up by descriptor.
  for (std::size_t i = first; i < fds.size(); ++i) {
    if (fds[i].revents == 0) continue;
    for (auto& [pid, sandbox] : running_) {
      if (sandbox->report_fd.get() == fds[i].fd) {
        read_reports(*sandbox);
        break;
      }
      if (sandbox->info_fd.is_open() && sandbox->info_fd.get() == fds[i].fd) {
        read_info(*sandbox);
        break;
      }
    }
  }
}

void SandboxRunner::read_reports(Running& sandbox) {
  char buf[512];
  for (;;) {
    ssize_t n = ::read(sandbox.report_fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // EAGAIN: nothing more for now
    if (n == 0) {
      sandbox.report_fd.reset();  // every writer is gone
      return;
    }
    sandbox.report_buffer.append(buf, static_cast<std::size_t>(n));
    std::size_t newline;
    while ((newline = sandbox.report_buffer.find('\n')) != std::string::npos) {
      bool was_started = sandbox.report.started_mono_us >= 0;
      parse_report_line(sandbox.report_buffer.substr(0, newline), sandbox.report);
      sandbox.report_buffer.erase(0, newline + 1);
      if (!was_started && sandbox.report.started_mono_us >= 0) {
        sink_(make_event(EventType::kStarted, sandbox));
      }
    }
  }
}

// bubblewrap's --info-fd JSON names the sandbox's pid once its namespaces exist; we take a
// pidfd on it and attach the network then, and only afterwards is bubblewrap let go on
// (--block-fd) to run the command.
void SandboxRunner::read_info(Running& sandbox) {
  drain_info(sandbox);
  if (!sandbox.block_fd.is_open()) return;  // let go already
  std::optional<std::uint64_t> child = info_number(sandbox, "child-pid");
  if (!child) return;  // not written yet
  auto pid = static_cast<pid_t>(*child);

  InitHandle init = open_sandbox_init(sandbox, pid, false);
  if (!init.verified) {
    logger()->debug("sandbox {}: pid {} from bubblewrap is not its child (any more)",
                    sandbox.instance.id, pid);
    // Gone already (bubblewrap's exit will say why) or not the sandbox's: nothing may be
    // attached to that pid, and the sandbox must not start. block_fd stays open until the
    // sandbox is reaped: bubblewrap's child would take its closing as the start signal.
    sandbox.process.signal(SIGKILL);
    return;
  }
  sandbox.namespace_init = std::move(init.pidfd);
  bool attached = true;
  if (config_.attach_network) {
    try {
      config_.attach_network(sandbox.instance.id, pid);
    } catch (const std::exception& e) {
      // A sandbox that died meanwhile (a mount it could not make) is bubblewrap's failure,
      // which its exit explains, not the proxy's.
      if (!init_has_exited(sandbox)) sandbox.attach_error = e.what();
      attached = false;
      kill_sandbox(sandbox);
    }
  }
  if (attached) {
    // Fails only when the sandbox is already gone (a mount it could not make, a kill): its
    // bubblewrap's exit then tells why.
    ssize_t sent;
    do {
      sent = ::send(sandbox.block_fd.get(), "x", 1, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
  }
  sandbox.block_fd.reset();
  sandbox.info_buffer.clear();
}

// Reads what bubblewrap has written to info_fd. Our end stays open until bubblewrap closes
// its own: it writes the rest of the JSON after the pid, and a write to a pipe whose reader
// is gone would kill it with SIGPIPE.
void SandboxRunner::drain_info(Running& sandbox) {
  char buf[256];
  for (;;) {
    ssize_t n = ::read(sandbox.info_fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) sandbox.info_fd.reset();
    if (n <= 0) return;
    // Once let go, the rest is of no use.
    if (sandbox.block_fd.is_open()) sandbox.info_buffer.append(buf, static_cast<std::size_t>(n));
  }
}

// A number from bubblewrap's info JSON ({"child-pid": N, "pid-namespace": M, ...}), once
// it is there whole; nullopt before, or when bubblewrap does not write that key.
std::optional<std::uint64_t> SandboxRunner::info_number(const Running& sandbox,
                                                        std::string_view key) {
  const std::string& info = sandbox.info_buffer;
  auto at = info.find("\"" + std::string(key) + "\"");
  if (at == std::string::npos) return std::nullopt;
  auto colon = info.find(':', at);
  if (colon == std::string::npos || info.find_first_of(",}", colon) == std::string::npos) {
    return std::nullopt;
  }
  return std::strtoull(info.c_str() + colon + 1, nullptr, 10);
}

// True once the sandbox's pid 1 has exited (its pidfd turns readable then), waiting up to
// 200 ms: a process loses its namespaces before its exit is signalled, so a dying sandbox
// can fail an attach a moment before its pidfd says so. False when there is no pidfd.
bool SandboxRunner::init_has_exited(const Running& sandbox) {
  if (!sandbox.namespace_init.is_open()) return false;
  pollfd ended{sandbox.namespace_init.get(), POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&ended, 1, 200);
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

// Killing bubblewrap kills the whole sandbox (--die-with-parent, then the pid namespace);
// its pid 1 is killed directly as well, in case it has not set its parent-death signal yet.
bool SandboxRunner::kill_sandbox(Running& sandbox) {
  if (sandbox.namespace_init.is_open()) {
    ::pidfd_send_signal(sandbox.namespace_init.get(), SIGKILL, nullptr, 0);
  }
  return sandbox.process.signal(SIGKILL);
}

// Once the bubblewrap we started is reaped, its sandbox may still be dying: the pid
// namespace's pid 1 exits only after every other process in it has (pid_namespaces(7)), so
// waiting for it means that no process of the sandbox is left when its terminal event goes
// out, when StopSandbox returns, and before its workspace is removed.
void SandboxRunner::wait_for_namespace_end(Running& sandbox) {
  if (!sandbox.namespace_init.is_open()) return;
  ::pidfd_send_signal(sandbox.namespace_init.get(), SIGKILL, nullptr, 0);
  pollfd ended{sandbox.namespace_init.get(), POLLIN, 0};
  std::int64_t deadline = clock::mono_us() + std::int64_t{kNamespaceEndWaitMs} * 1000;
  for (;;) {
    int left_ms = static_cast<int>((deadline - clock::mono_us()) / 1000);
    int ready = ::poll(&ended, 1, std::max(left_ms, 0));
    if (ready > 0) break;
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      logger()->warn("the processes of sandbox {} are still exiting after {} s",
                     sandbox.instance.id, kNamespaceEndWaitMs / 1000);
    }
    break;
  }
  sandbox.namespace_init.reset();
}

void SandboxRunner::reap() {
  std::vector<std::pair<pid_t, int>> finished;
  for (const auto& [pid, sandbox] : running_) {
    int status = 0;
    pid_t got;
    do {
      got = ::waitpid(pid, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == pid) finished.emplace_back(pid, status);
  }
  for (auto [pid, status] : finished) finish(pid, status);
}

void SandboxRunner::finish(pid_t pid, int wait_status) {
  auto node = running_.extract(pid);
  Running& sandbox = *node.mapped();
  sandbox.process.mark_reaped();
  if (sandbox.block_fd.is_open() && !sandbox.namespace_init.is_open()) {
    // Its bubblewrap died before we let the sandbox go on (killed while starting, or its pid
    // not verified): the sandbox's pid 1 may be waiting on block_fd, and would run the
    // command once we close it. bubblewrap is gone, so its info is complete by now.
    if (sandbox.info_fd.is_open()) drain_info(sandbox);
    if (auto init_pid = info_number(sandbox, "child-pid")) {
      sandbox.namespace_init =
          open_sandbox_init(sandbox, static_cast<pid_t>(*init_pid), true).pidfd;
    }
  }
  wait_for_namespace_end(sandbox);
  if (sandbox.report_fd.is_open()) read_reports(sandbox);

  SandboxEvent event = terminal_event(sandbox, wait_status);
  if (event.type == EventType::kExited &&
      (event.signal == SIGTERM || event.signal == SIGINT || event.signal == SIGHUP)) {
    held_.push_back({std::move(event), clock::mono_us() + kStopSignalHoldUs});
  } else {
    sink_(std::move(event));
  }
  if (config_.detach_network) {
    config_.detach_network(sandbox.instance.id);
  }
  if (!config_.keep_workspaces && !sandbox.is_named &&
      !sys::remove_tree(sandbox.instance.workspace)) {
    logger()->warn("cannot remove workspace {} completely", sandbox.instance.workspace);
  }
  free_slots_.push_back(sandbox.slot);
}

SandboxEvent SandboxRunner::make_event(EventType type, const Running& sandbox) const {
  SandboxEvent event;
  event.type = type;
  event.wall_us = clock::wall_us();
  event.index = sandbox.event_index;
  event.rank = config_.rank;
  event.pid = sandbox.process.pid();
  if (type == EventType::kStarted) {
    event.start_latency_us = sandbox.report.started_mono_us - sandbox.spawn_mono_us;
    event.cpus = cpu_list_text(sandbox.instance.slot->cpus);
    event.gpus = sandbox.instance.slot->gpus;
  }
  return event;
}

SandboxEvent SandboxRunner::terminal_event(Running& sandbox, int wait_status) const {
  const ExecReport& report = sandbox.report;
  std::int64_t now = clock::mono_us();
  std::int64_t began = report.started_mono_us >= 0 ? report.started_mono_us : sandbox.spawn_mono_us;

  SandboxEvent event = make_event(EventType::kFailed, sandbox);
  event.pid = 0;
  event.duration_us = now - began;
  // When we killed the sandbox, its reporter may still see the command die of that SIGKILL
  // before it dies itself; that is our kill, not the command's own end.
  bool killed_by_us = sandbox.cancelled || sandbox.timed_out || sandbox.stop_requested;
  if (report.exec_errno != 0) {
    // The command never ran (its exec failed), whatever status the reporter saw afterwards.
    event.reason =
        report.exec_errno == ENOENT ? FailureReason::kCommandNotFound : FailureReason::kExecFailed;
    event.message =
        "cannot run " + report.exec_command + " in the image: " + std::strerror(report.exec_errno);
  } else if (report.has_status && (!killed_by_us || WIFEXITED(report.wait_status))) {
    // The command ended on its own, even if a cancel or timeout raced with it.
    event.type = EventType::kExited;
    event.cpu_user_us = report.user_us;
    event.cpu_system_us = report.system_us;
    event.max_rss_kib = report.max_rss_kib;
    if (WIFSIGNALED(report.wait_status)) {
      event.signal = WTERMSIG(report.wait_status);
    } else {
      event.exit_code = WEXITSTATUS(report.wait_status);
    }
  } else if (!sandbox.attach_error.empty()) {
    event.reason = FailureReason::kSpawnFailed;
    event.message = "cannot connect the sandbox to the egress proxy: " + sandbox.attach_error;
  } else if (sandbox.cancelled) {
    event.reason = FailureReason::kCancelled;
    event.message = "the job was stopped before the sandbox finished";
  } else if (sandbox.stop_requested) {
    event.reason = FailureReason::kStopped;
    event.message = "stopped on request";
  } else if (sandbox.timed_out) {
    event.reason = FailureReason::kTimeout;
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", static_cast<double>(config_.timeout_us) / 1e6);
    event.message = std::string("killed after the --timeout of ") + seconds + " s";
  } else if (report.started_mono_us >= 0) {
    // The command started but its reporter did not outlive it: the sandbox itself was killed.
    event.type = EventType::kExited;
    if (WIFSIGNALED(wait_status)) {
      event.signal = WTERMSIG(wait_status);
    } else {
      event.exit_code = WEXITSTATUS(wait_status);
    }
  } else {
    event.reason = FailureReason::kSpawnFailed;
    std::string why = sandbox.stderr_path.empty() ? "" : last_line_of(sandbox.stderr_path);
    event.message = why.empty() ? "bubblewrap could not build the sandbox" : why;
  }
  return event;
}

void SandboxRunner::fail_unstarted(std::int64_t index, FailureReason reason, std::string message) {
  sink_(failed_event(index, config_.rank, reason, std::move(message)));
}

std::int64_t SandboxRunner::enforce_timeouts() {
  std::int64_t now = clock::mono_us();
  std::int64_t next = -1;
  for (auto it = held_.begin(); it != held_.end();) {
    if (now >= it->release_mono_us) {
      sink_(std::move(it->event));
      it = held_.erase(it);
    } else {
      std::int64_t left = it->release_mono_us - now;
      if (next < 0 || left < next) next = left;
      ++it;
    }
  }
  if (config_.timeout_us <= 0) return next;
  for (auto& [pid, sandbox] : running_) {
    if (sandbox->timed_out || sandbox->deadline_mono_us == 0) continue;
    if (now >= sandbox->deadline_mono_us) {
      sandbox->timed_out = kill_sandbox(*sandbox);
      continue;
    }
    std::int64_t left = sandbox->deadline_mono_us - now;
    if (next < 0 || left < next) next = left;
  }
  return next;
}

void SandboxRunner::cancel_all() {
  for (auto& [pid, sandbox] : running_) {
    sandbox->cancelled = true;
    kill_sandbox(*sandbox);
  }
  while (!running_.empty()) {
    pid_t pid = running_.begin()->first;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    finish(pid, status);
  }
  for (auto& held : held_) {
    SandboxEvent& event = held.event;
    event.type = EventType::kFailed;
    event.reason = FailureReason::kCancelled;
    event.message = "stopped by signal " + std::to_string(event.signal) + " with the job";
    event.signal = 0;
    sink_(std::move(event));
  }
  held_.clear();
  while (!queue_.empty()) {
    fail_unstarted(pop_index(), FailureReason::kCancelled,
                   "the job was stopped before the sandbox started");
  }
}

}  // namespace oshpc::node_agent

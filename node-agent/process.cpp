#include "node-agent/process.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "common/sys.hpp"

namespace oshpc::node_agent {
namespace {

// Closes (by marking close-on-exec) every descriptor from 3 up, except those to keep. Runs in
// the vfork child, so it may only use system calls: no allocation, no locks.
void mark_cloexec_except(const std::vector<int>& keep) {
#ifdef SYS_close_range
  // Linux >= 5.11; older kernels answer ENOSYS and we fall back to the loop.
  if (::syscall(SYS_close_range, 3U, UINT_MAX, 4U /* CLOSE_RANGE_CLOEXEC */) != 0)
#endif
  {
    long max_fd = ::sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
    for (int fd = 3; fd < max_fd; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  for (int fd : keep) ::fcntl(fd, F_SETFD, 0);
}

bool move_fd(int from, int to) {
  if (from < 0 || from == to) return from == to ? ::fcntl(to, F_SETFD, 0) == 0 : true;
  return ::dup2(from, to) == to;
}

}  // namespace

ChildProcess::ChildProcess(ChildProcess&& other) noexcept : leads_group_(other.leads_group_) {
  pid_ = other.release();
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    this->~ChildProcess();
    leads_group_ = other.leads_group_;
    pid_ = other.release();
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
  int saved = errno;
  signal(SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  errno = saved;
}

bool ChildProcess::signal(int signo) const {
  if (pid_ <= 0) return false;
  if (leads_group_) ::kill(-pid_, signo);  // its descendants that stayed in the group
  return ::kill(pid_, signo) == 0;
}

int ChildProcess::wait() {
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) sys::throw_errno("wait for process " + std::to_string(pid_));
  }
  pid_ = -1;
  return status;
}

pid_t ChildProcess::release() {
  return std::exchange(pid_, -1);
}

namespace {

// Everything the vfork child needs, prepared by the parent: the child may not allocate.
struct ChildPlan {
  char* const* argv;
  char* const* envp;  // null: inherit
  const SpawnOptions* options;
  const cpu_set_t* cpus;
  const unsigned long* numa_mask;  // null: leave the memory policy alone
  int stdin_fd;
  pid_t parent;
  volatile int* exec_errno;  // vfork shares our memory until exec: the child reports here
};

[[noreturn]] __attribute__((noinline)) void run_child(const ChildPlan& plan) {
  // The agent blocks signals to read them from a signalfd; the child must not inherit that.
  sigset_t all_unblocked;
  sigemptyset(&all_unblocked);
  ::sigprocmask(SIG_SETMASK, &all_unblocked, nullptr);
  const SpawnOptions& options = *plan.options;
  if (options.new_process_group) ::setpgid(0, 0);
  if (options.parent_death_signal != 0) {
    ::prctl(PR_SET_PDEATHSIG, options.parent_death_signal);
    if (::getppid() != plan.parent) ::_exit(127);  // it died before the line above
  }
  if (!options.cpus.empty() && ::sched_setaffinity(0, sizeof(cpu_set_t), plan.cpus) != 0) {
    *plan.exec_errno = errno;
    ::_exit(127);
  }
  if (plan.numa_mask) {
    // Best effort: a kernel without NUMA support or a restricted mems set refuses it, and the
    // sandbox then runs with the default policy rather than not at all.
    ::syscall(SYS_set_mempolicy, 2 /* MPOL_BIND */, plan.numa_mask, 8 * sizeof(unsigned long) * 16);
  }
  if (!move_fd(plan.stdin_fd, 0) || !move_fd(options.stdout_fd, 1) ||
      !move_fd(options.stderr_fd, 2)) {
    *plan.exec_errno = errno;
    ::_exit(127);
  }
  mark_cloexec_except(options.inherit_fds);
  if (plan.envp) {
    ::execvpe(plan.argv[0], plan.argv, plan.envp);
  } else {
    ::execvp(plan.argv[0], plan.argv);
  }
  *plan.exec_errno = errno;
  ::_exit(127);
}

}  // namespace

ChildProcess spawn_process(const std::vector<std::string>& argv, const SpawnOptions& options) {
  std::vector<char*> c_argv;
  c_argv.reserve(argv.size() + 1);
  for (const auto& arg : argv) c_argv.push_back(const_cast<char*>(arg.c_str()));
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  if (options.environment) {
    for (const auto& entry : *options.environment)
      c_env.push_back(const_cast<char*>(entry.c_str()));
    c_env.push_back(nullptr);
  }

  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (int cpu : options.cpus) CPU_SET(static_cast<unsigned>(cpu), &cpus);

  sys::UniqueFd dev_null;
  if (options.stdin_fd < 0) dev_null = sys::open_file("/dev/null", O_RDONLY);
  unsigned long numa_mask[16] = {};
  bool bind_memory = options.numa_node >= 0 && options.numa_node < 16 * 64;
  if (bind_memory) {
    auto node = static_cast<unsigned>(options.numa_node);
    numa_mask[node / 64] |= 1UL << (node % 64);
  }
  volatile int exec_errno = 0;
  const ChildPlan plan{c_argv.data(),
                       options.environment ? c_env.data() : nullptr,
                       &options,
                       &cpus,
                       bind_memory ? numa_mask : nullptr,
                       options.stdin_fd < 0 ? dev_null.get() : options.stdin_fd,
                       ::getpid(),
                       &exec_errno};

  pid_t pid = ::vfork();
  if (pid < 0) sys::throw_errno("start " + argv[0]);
  if (pid == 0) run_child(plan);

  ChildProcess child(pid, options.new_process_group);
  if (exec_errno != 0) {
    int error = exec_errno;
    child.wait();
    throw sys::SysError(error, "start " + argv[0]);
  }
  return child;
}

int run_command(const std::vector<std::string>& argv, std::string* stderr_text) {
  sys::Pipe pipe = sys::make_pipe();
  // Tools like unsquashfs chatter on stdout, which may be the job's event stream.
  sys::UniqueFd dev_null = sys::open_file("/dev/null", O_WRONLY);
  SpawnOptions options;
  options.stdout_fd = dev_null.get();
  options.stderr_fd = pipe.write_end.get();
  ChildProcess child = spawn_process(argv, options);
  pipe.write_end.reset();

  std::string captured;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipe.read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (captured.size() < 65536) captured.append(buf, static_cast<std::size_t>(n));
  }
  if (stderr_text) *stderr_text = std::move(captured);
  return child.wait();
}

}  // namespace oshpc::node_agent

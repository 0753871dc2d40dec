// The seccomp program is checked the way the kernel sees it: a forked child loads it (no
// privileges needed with no_new_privs) and tries the calls.
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <map>
#include <sstream>
#include <string>

#include "node-agent/seccomp/seccomp_filter.hpp"

using namespace oshpc::seccomp;
using oshpc::sys::UniqueFd;

namespace {

std::string read_all(int fd) {
  std::string data;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) data.append(buffer, static_cast<size_t>(n));
  return data;
}

// errno of a raw call (0 when it succeeded).
long try_call(long rc) {
  return rc < 0 ? errno : 0;
}

// Runs the probes under the program in a child; returns probe name → errno.
std::map<std::string, long> probe_under(const SeccompProgram& program) {
  std::string bpf = read_all(program.reader().get());
  auto pipe = oshpc::sys::make_pipe();
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    sock_fprog prog{static_cast<unsigned short>(bpf.size() / sizeof(sock_filter)),
                    reinterpret_cast<sock_filter*>(bpf.data())};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      ::_exit(3);
    }
    std::ostringstream out;
    out << "bpf " << try_call(::syscall(SYS_bpf, 0, nullptr, 0)) << "\n";
    out << "clone3 " << try_call(::syscall(SYS_clone3, nullptr, 0)) << "\n";
    out << "unshare_user " << try_call(::unshare(CLONE_NEWUSER)) << "\n";
    out << "personality_query " << try_call(::personality(0xffffffff)) << "\n";
    out << "personality_linux " << try_call(::personality(PER_LINUX)) << "\n";
    out << "personality_bad " << try_call(::personality(PER_BSD)) << "\n";
    out << "personality_readimpl " << try_call(::personality(READ_IMPLIES_EXEC)) << "\n";
    out << "tiocsti " << try_call(::ioctl(0, TIOCSTI, "x")) << "\n";
    out << "tiocsti_high " << try_call(::syscall(SYS_ioctl, 0, (1UL << 32) | TIOCSTI, "x")) << "\n";
    out << "getpid " << try_call(::getpid()) << "\n";
    out << "io_uring " << try_call(::syscall(SYS_io_uring_setup, 0, nullptr)) << "\n";
    std::string text = out.str();
    (void)!::write(pipe.write_end.get(), text.data(), text.size());
    ::_exit(0);
  }
  pipe.write_end.reset();
  std::string text = read_all(pipe.read_end.get());
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);

  std::map<std::string, long> results;
  std::istringstream in(text);
  std::string name;
  long error;
  while (in >> name >> error) results[name] = error;
  return results;
}

}  // namespace

TEST_CASE("profiles parse by name and reject unknown names") {
  CHECK(parse_seccomp_profile("default") == SeccompProfile::kDefault);
  CHECK(parse_seccomp_profile("strict") == SeccompProfile::kStrict);
  CHECK(parse_seccomp_profile("supervisor") == SeccompProfile::kSupervisor);
  CHECK(parse_seccomp_profile("none") == SeccompProfile::kNone);
  CHECK_THROWS_WITH(parse_seccomp_profile("tight"),
                    Catch::Contains("default, strict, supervisor or none"));
  CHECK(profile_name(SeccompProfile::kStrict) == "strict");
}

TEST_CASE("the default profile lists every call the design requires") {
  auto calls = blocked_calls(SeccompProfile::kDefault);
  auto has = [&](const std::string& name) {
    for (const auto& call : calls) {
      if (call.syscall == name) return true;
    }
    return false;
  };
  for (const char* name : {"bpf",
                           "perf_event_open",
                           "userfaultfd",
                           "kexec_load",
                           "kexec_file_load",
                           "init_module",
                           "finit_module",
                           "delete_module",
                           "keyctl",
                           "add_key",
                           "request_key",
                           "fsopen",
                           "fsconfig",
                           "fsmount",
                           "fspick",
                           "move_mount",
                           "open_tree",
                           "mount_setattr",
                           "mount",
                           "umount2",
                           "pivot_root",
                           "swapon",
                           "swapoff",
                           "reboot",
                           "ptrace",
                           "process_vm_readv",
                           "process_vm_writev",
                           "personality",
                           "unshare",
                           "clone",
                           "clone3",
                           "ioctl"}) {
    CHECK(has(name));
  }
  CHECK(blocked_calls(SeccompProfile::kNone).empty());
  CHECK(blocked_calls(SeccompProfile::kStrict).size() > calls.size());
}

TEST_CASE("the program is a sealed BPF blob readable from offset 0 by every reader") {
  auto program = build_seccomp_program(SeccompProfile::kDefault);
  CHECK(program.size_bytes() > 0);
  CHECK(program.size_bytes() % 8 == 0);
  CHECK(program.instruction_count() < 4096);  // BPF_MAXINSNS
  std::string first = read_all(program.reader().get());
  std::string second = read_all(program.reader().get());
  CHECK(first.size() == program.size_bytes());
  CHECK(first == second);
  CHECK(::write(program.fd(), "x", 1) < 0);  // sealed
  CHECK_THROWS_AS(build_seccomp_program(SeccompProfile::kNone), std::invalid_argument);
}

TEST_CASE("the default program blocks what it lists and allows the rest") {
  auto results = probe_under(build_seccomp_program(SeccompProfile::kDefault));
  CHECK(results["bpf"] == EPERM);
  CHECK(results["clone3"] == ENOSYS);
  CHECK(results["unshare_user"] == EPERM);
  CHECK(results["personality_query"] == 0);
  CHECK(results["personality_linux"] == 0);
  CHECK(results["personality_bad"] == EPERM);
  CHECK(results["personality_readimpl"] == EPERM);
  CHECK(results["tiocsti"] == EPERM);
  CHECK(results["tiocsti_high"] == EPERM);
  CHECK(results["getpid"] == 0);
  CHECK(results["io_uring"] != EPERM);  // allowed by default (fails with EFAULT/EINVAL)
}

TEST_CASE("the strict program also blocks io_uring") {
  auto results = probe_under(build_seccomp_program(SeccompProfile::kStrict));
  CHECK(results["io_uring"] == EPERM);
  CHECK(results["getpid"] == 0);
}

TEST_CASE("the supervisor profile allows new mounts but never a remount") {
  auto calls = blocked_calls(SeccompProfile::kSupervisor);
  auto find = [&](const std::string& name, const std::string& condition) {
    return std::any_of(calls.begin(), calls.end(), [&](const BlockedCall& call) {
      return call.syscall == name && call.condition == condition;
    });
  };
  CHECK_FALSE(find("mount", ""));
  CHECK_FALSE(find("umount2", ""));
  CHECK(find("mount", "flags & MS_REMOUNT"));
  CHECK(find("mount_setattr", ""));
  CHECK(find("pivot_root", ""));
  CHECK(find("unshare", "flags & CLONE_NEWUSER"));
  CHECK(build_seccomp_program(SeccompProfile::kSupervisor).size_bytes() > 0);
}

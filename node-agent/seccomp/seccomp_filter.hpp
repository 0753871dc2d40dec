// The seccomp filter every sandbox runs under, built with libseccomp and handed to bubblewrap
// as a BPF program (`bwrap --seccomp FD`). The filter allows by default and makes a short list
// of kernel interfaces fail with EPERM (clone3 with ENOSYS); docs/seccomp.md says why for each.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/sys.hpp"

namespace oshpc::seccomp {

// kSupervisor is kDefault with mount(2) (but never MS_REMOUNT) and umount2(2) allowed: the
// OpenShell supervisor builds its own network namespace (`ip netns add` bind-mounts it under
// /run/netns) and then confines its workload with its own, stricter filter.
enum class SeccompProfile { kDefault, kStrict, kSupervisor, kNone };

// "default", "strict", "supervisor" or "none"; throws std::invalid_argument naming the accepted
// values.
SeccompProfile parse_seccomp_profile(std::string_view name);

// The name parse_seccomp_profile accepts for profile. Never fails.
std::string_view profile_name(SeccompProfile profile);

// One entry of a profile: a system call and, when only some uses are blocked, which ones.
struct BlockedCall {
  std::string syscall;    // name as libseccomp spells it
  std::string condition;  // "" when every call is blocked, else e.g. "flags & CLONE_NEWUSER"
  int error = 0;          // errno the call fails with (EPERM, or ENOSYS for clone3)
};

// What profile blocks, in the order the filter adds it (for docs, tests and --plan). Never fails.
std::vector<BlockedCall> blocked_calls(SeccompProfile profile);

// A compiled BPF program in a sealed memfd. Each bubblewrap needs its own open file
// description (bwrap read()s from the current offset), so hand out reader() fds, not fd().
class SeccompProgram {
 public:
  explicit SeccompProgram(sys::UniqueFd memfd, std::size_t size_bytes)
      : memfd_(std::move(memfd)), size_bytes_(size_bytes) {}

  // A fresh read-only descriptor at offset 0 (O_CLOEXEC: dup2 it into the child, which clears
  // the flag there). Throws SysError.
  sys::UniqueFd reader() const;

  int fd() const { return memfd_.get(); }
  std::size_t size_bytes() const { return size_bytes_; }
  // Number of BPF instructions (struct sock_filter is 8 bytes).
  std::size_t instruction_count() const { return size_bytes_ / 8; }

 private:
  sys::UniqueFd memfd_;
  std::size_t size_bytes_ = 0;
};

// Builds profile's filter for the native architecture (plus i386 and x32 on x86_64) and
// exports it. Throws SysError when libseccomp or memfd fails; std::invalid_argument for kNone
// (kNone means: pass no --seccomp to bubblewrap).
SeccompProgram build_seccomp_program(SeccompProfile profile);

}  // namespace oshpc::seccomp

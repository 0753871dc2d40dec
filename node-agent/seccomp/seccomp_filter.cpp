#include "node-agent/seccomp/seccomp_filter.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace oshpc::seccomp {
namespace {

// Owns a libseccomp filter context.
class FilterContext {
 public:
  explicit FilterContext(std::uint32_t default_action) : ctx_(seccomp_init(default_action)) {
    if (ctx_ == nullptr) throw sys::SysError(ENOMEM, "initialise a seccomp filter");
  }
  FilterContext(const FilterContext&) = delete;
  FilterContext& operator=(const FilterContext&) = delete;
  ~FilterContext() { seccomp_release(ctx_); }
  scmp_filter_ctx get() const { return ctx_; }

 private:
  scmp_filter_ctx ctx_;
};

// libseccomp returns -errno instead of setting errno.
void check(int rc, const std::string& operation) {
  if (rc < 0) throw sys::SysError(-rc, operation);
}

// Collects rules: adds them to a filter when it has one, and lists them for blocked_calls().
class RuleSink {
 public:
  explicit RuleSink(scmp_filter_ctx ctx) : ctx_(ctx) {}

  void block(const char* name, int error, const std::string& condition = "",
             std::initializer_list<scmp_arg_cmp> args = {}) {
    record(name, error, condition);
    if (ctx_ == nullptr) return;
    int nr = seccomp_syscall_resolve_name(name);
    // A call this architecture does not have cannot be made, so there is nothing to block.
    if (nr == __NR_SCMP_ERROR) return;
    std::vector<scmp_arg_cmp> cmps(args);
    check(seccomp_rule_add_array(ctx_, SCMP_ACT_ERRNO(static_cast<std::uint32_t>(error)), nr,
                                 static_cast<unsigned>(cmps.size()), cmps.data()),
          std::string("add a seccomp rule for ") + name);
  }

  std::vector<BlockedCall> calls() && { return std::move(calls_); }

 private:
  void record(const char* name, int error, const std::string& condition) {
    for (const auto& call : calls_) {
      if (call.syscall == name && call.condition == condition) return;
    }
    calls_.push_back({name, condition, error});
  }

  scmp_filter_ctx ctx_;
  std::vector<BlockedCall> calls_;
};

// Masked comparisons look at the low 32 bits only where the kernel takes an int: the upper
// half of the register is ignored by the kernel, so it must not let a value slip past the rule.
constexpr scmp_datum_t kLow32 = 0xffffffffULL;

scmp_arg_cmp flag_set(unsigned arg, scmp_datum_t flag) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, flag, flag};
}

bool is_classic_mount_call(std::string_view name) {
  return name == "mount" || name == "umount2" || name == "umount";
}

// The supervisor profile allows mount(2) for new mounts (`ip netns add` binds a namespace
// file), but never MS_REMOUNT: a sandbox holding CAP_SYS_ADMIN in the user namespace that owns
// its mounts could otherwise remount bubblewrap's read-only binds (the image, the supervisor,
// the TLS files) read-write and write through them to the host. A new bind of a read-only
// mount stays read-only, and the new mount API (mount_setattr, ...) stays blocked.
void block_remounts(RuleSink& sink) {
  sink.block("mount", EPERM, "flags & MS_REMOUNT", {flag_set(3, MS_REMOUNT)});
}

void block_kernel_interfaces(RuleSink& sink, bool allow_classic_mount) {
  const char* calls[] = {
      "bpf",         "perf_event_open",  "userfaultfd",      "kexec_load", "kexec_file_load",
      "init_module", "finit_module",     "delete_module",    "keyctl",     "add_key",
      "request_key", "fsopen",           "fsconfig",         "fsmount",    "fspick",
      "move_mount",  "open_tree",        "mount_setattr",    "mount",      "umount2",
      "umount",      "pivot_root",       "swapon",           "swapoff",    "reboot",
      "ptrace",      "process_vm_readv", "process_vm_writev"};
  for (const char* name : calls) {
    if (allow_classic_mount && is_classic_mount_call(name)) continue;
    sink.block(name, EPERM);
  }
}

// Allowed personas: PER_LINUX (0), PER_LINUX32 (8), both with UNAME26 (0x20000), and the query
// value 0xffffffff. libseccomp cannot express "not in a set" in one rule (one comparison per
// argument), so the complement is split into masked-equality rules, which OR together:
// bit 0 clear and some other bit outside {3, 17} set; or bit 0 set and some other bit clear.
void block_personas(RuleSink& sink) {
  const std::string condition = "persona not in {0, 0x8, 0x20000, 0x20008, 0xffffffff}";
  for (unsigned bit = 1; bit < 32; ++bit) {
    scmp_datum_t b = 1ULL << bit;
    if (bit != 3 && bit != 17) {
      sink.block("personality", EPERM, condition, {scmp_arg_cmp{0, SCMP_CMP_MASKED_EQ, b | 1, b}});
    }
    sink.block("personality", EPERM, condition, {scmp_arg_cmp{0, SCMP_CMP_MASKED_EQ, b | 1, 1}});
  }
}

void block_new_user_namespaces(RuleSink& sink) {
  sink.block("unshare", EPERM, "flags & CLONE_NEWUSER", {flag_set(0, CLONE_NEWUSER)});
  sink.block("clone", EPERM, "flags & CLONE_NEWUSER", {flag_set(0, CLONE_NEWUSER)});
  // clone3 passes its flags in memory, out of a filter's reach: make it look absent, and libc
  // falls back to clone, whose flags the rule above can see.
  sink.block("clone3", ENOSYS);
}

void block_terminal_injection(RuleSink& sink) {
  sink.block("ioctl", EPERM, "request == TIOCSTI",
             {scmp_arg_cmp{1, SCMP_CMP_MASKED_EQ, kLow32, TIOCSTI}});
  sink.block("ioctl", EPERM, "request == TIOCLINUX",
             {scmp_arg_cmp{1, SCMP_CMP_MASKED_EQ, kLow32, TIOCLINUX}});
}

// Strict: no namespaces of any kind, no io_uring (its operations bypass this filter), no
// handles into other processes or file systems, no legacy or host-wide knobs.
void block_strict_extras(RuleSink& sink) {
  sink.block("unshare", EPERM);
  sink.block("setns", EPERM);
  const std::pair<scmp_datum_t, const char*> namespace_flags[] = {
      {CLONE_NEWNS, "CLONE_NEWNS"},   {CLONE_NEWCGROUP, "CLONE_NEWCGROUP"},
      {CLONE_NEWUTS, "CLONE_NEWUTS"}, {CLONE_NEWIPC, "CLONE_NEWIPC"},
      {CLONE_NEWPID, "CLONE_NEWPID"}, {CLONE_NEWNET, "CLONE_NEWNET"}};
  for (const auto& [flag, name] : namespace_flags) {
    sink.block("clone", EPERM, std::string("flags & ") + name, {flag_set(0, flag)});
  }
  const char* calls[] = {"io_uring_setup",
                         "io_uring_enter",
                         "io_uring_register",
                         "pidfd_getfd",
                         "kcmp",
                         "open_by_handle_at",
                         "name_to_handle_at",
                         "fanotify_init",
                         "syslog",
                         "acct",
                         "quotactl",
                         "quotactl_fd",
                         "lookup_dcookie",
                         "vhangup",
                         "uselib",
                         "sysfs",
                         "ustat",
                         "modify_ldt",
                         "iopl",
                         "ioperm",
                         "memfd_secret",
                         "move_pages",
                         "migrate_pages"};
  for (const char* name : calls) sink.block(name, EPERM);
}

void add_rules(RuleSink& sink, SeccompProfile profile) {
  if (profile == SeccompProfile::kNone) return;
  block_kernel_interfaces(sink, profile == SeccompProfile::kSupervisor);
  if (profile == SeccompProfile::kSupervisor) block_remounts(sink);
  block_personas(sink);
  block_new_user_namespaces(sink);
  block_terminal_injection(sink);
  if (profile == SeccompProfile::kStrict) block_strict_extras(sink);
}

// On x86_64 a process can also make i386 and x32 system calls; the filter must cover them or
// they would bypass every rule. Any other architecture is killed (the bad-arch action).
void add_compat_architectures(const FilterContext& filter) {
  if (seccomp_arch_native() != SCMP_ARCH_X86_64) return;
  for (std::uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
    int rc = seccomp_arch_add(filter.get(), arch);
    if (rc != -EEXIST) check(rc, "add a compat architecture to the seccomp filter");
  }
}

sys::UniqueFd export_to_memfd(const FilterContext& filter, std::size_t& size_bytes) {
  sys::UniqueFd memfd(::memfd_create("oshpc-seccomp", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!memfd.is_open()) sys::throw_errno("create a memfd for the seccomp program");
  check(seccomp_export_bpf(filter.get(), memfd.get()), "export the seccomp program");

  off_t end = ::lseek(memfd.get(), 0, SEEK_END);
  if (end < 0) sys::throw_errno("size the seccomp program");
  size_bytes = static_cast<std::size_t>(end);

  // Sealed, the program cannot change under a sandbox that has not read it yet.
  if (::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) !=
      0) {
    sys::throw_errno("seal the seccomp program");
  }
  if (::lseek(memfd.get(), 0, SEEK_SET) != 0) sys::throw_errno("rewind the seccomp program");
  return memfd;
}

}  // namespace

SeccompProfile parse_seccomp_profile(std::string_view name) {
  if (name == "default") return SeccompProfile::kDefault;
  if (name == "strict") return SeccompProfile::kStrict;
  if (name == "supervisor") return SeccompProfile::kSupervisor;
  if (name == "none") return SeccompProfile::kNone;
  throw std::invalid_argument("unknown seccomp profile '" + std::string(name) +
                              "' (use default, strict, supervisor or none)");
}

std::string_view profile_name(SeccompProfile profile) {
  switch (profile) {
    case SeccompProfile::kDefault:
      return "default";
    case SeccompProfile::kStrict:
      return "strict";
    case SeccompProfile::kSupervisor:
      return "supervisor";
    case SeccompProfile::kNone:
      return "none";
  }
  return "default";
}

std::vector<BlockedCall> blocked_calls(SeccompProfile profile) {
  RuleSink sink(nullptr);
  add_rules(sink, profile);
  return std::move(sink).calls();
}

sys::UniqueFd SeccompProgram::reader() const {
  // Reopening through /proc gives a new open file description with its own offset.
  std::string path = "/proc/self/fd/" + std::to_string(memfd_.get());
  return sys::open_file(path, O_RDONLY);
}

SeccompProgram build_seccomp_program(SeccompProfile profile) {
  if (profile == SeccompProfile::kNone) {
    throw std::invalid_argument("seccomp profile 'none' has no program (omit --seccomp)");
  }
  FilterContext filter(SCMP_ACT_ALLOW);
  check(seccomp_attr_set(filter.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
        "set the seccomp bad-architecture action");
  // bubblewrap sets no_new_privs itself before loading the program.
  check(seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_NNP, 0), "configure the seccomp filter");
  add_compat_architectures(filter);

  RuleSink sink(filter.get());
  add_rules(sink, profile);

  std::size_t size_bytes = 0;
  sys::UniqueFd memfd = export_to_memfd(filter, size_bytes);
  return SeccompProgram(std::move(memfd), size_bytes);
}

}  // namespace oshpc::seccomp

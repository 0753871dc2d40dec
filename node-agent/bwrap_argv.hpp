// Sandbox spec -> bubblewrap argv. Pure: no system calls, unit-tested without privileges.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "node-agent/root_layout.hpp"
#include "node-agent/sandbox_spec.hpp"

namespace oshpc::node_agent {

// Replaces {index}, {id}, {node}, {rank} and {count} in text; other braces are left alone
// (shell snippets and Python literals often contain them). Never fails.
std::string expand_placeholders(std::string_view text, const SandboxInstance& instance);

// The environment a sandbox starts with: a fixed base, the OSHPC_* identity variables, then the
// user's variables (placeholders expanded), later entries overriding earlier ones.
EnvironmentList sandbox_environment(const SandboxProfile& profile, const SandboxInstance& instance);

// bubblewrap takes at most 9,000 arguments, those read with --args included, and each
// environment variable costs three (--setenv KEY VALUE).
constexpr std::size_t kMaxSandboxVariables = 2'000;

// File descriptors the spawned bubblewrap inherits, by number in the spawning process.
struct InheritedFds {
  int exec_report = -1;       // write end of the pipe oshpc-exec reports on
  int seccomp = -1;           // a BPF program to read (--seccomp), or -1 for none
  int info = -1;              // bubblewrap writes the sandbox's pid here (--info-fd), or -1
  int block = -1;             // bubblewrap waits for a byte here before the command (--block-fd)
  int environment_args = -1;  // --setenv arguments to read (--args), or -1
};

// Puts binds in mount order: shallow destinations first, the given order otherwise, so that a
// bind at /data never hides one at /data/in. Called once where a profile's binds are set;
// build_bwrap_argv mounts them as they are.
void order_binds(std::vector<BindMount>& binds);

// The full argv: bwrap, its options, then oshpc-exec and the expanded command. It carries no
// environment: pass sandbox_environment() as --setenv arguments in fds.environment_args, and
// spawn bubblewrap with an empty environment, which the sandbox would otherwise inherit.
// `uid`/`gid` are the caller's ids (used when the identity mode keeps them). Never fails.
std::vector<std::string> build_bwrap_argv(const SandboxProfile& profile, const RootLayout& layout,
                                          const SandboxInstance& instance, const InheritedFds& fds,
                                          unsigned uid, unsigned gid);

}  // namespace oshpc::node_agent

// oshpc-seccomp-export PROFILE [--list]: the sandbox seccomp program on stdout, or with --list
// the calls it blocks, one per line.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "node-agent/seccomp/seccomp_filter.hpp"

namespace seccomp = oshpc::seccomp;

static void list_calls(seccomp::SeccompProfile profile) {
  for (const auto& call : seccomp::blocked_calls(profile)) {
    std::printf("%s\t%s\t%s\n", call.syscall.c_str(),
                call.condition.empty() ? "always" : call.condition.c_str(),
                std::strerror(call.error));
  }
}

static void copy_program(const seccomp::SeccompProgram& program) {
  oshpc::sys::UniqueFd in = program.reader();
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(in.get(), buffer, sizeof buffer);
    if (n < 0) oshpc::sys::throw_errno("read the seccomp program");
    if (n == 0) return;
    oshpc::sys::write_all(STDOUT_FILENO, {buffer, static_cast<std::size_t>(n)}, "stdout");
  }
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3 || (argc == 3 && std::strcmp(argv[2], "--list") != 0)) {
    std::fprintf(stderr, "usage: oshpc-seccomp-export default|strict [--list]\n");
    return 2;
  }
  try {
    auto profile = seccomp::parse_seccomp_profile(argv[1]);
    if (argc == 3) {
      list_calls(profile);
    } else {
      copy_program(seccomp::build_seccomp_program(profile));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oshpc-seccomp-export: error: %s\n", e.what());
    return 1;
  }
}

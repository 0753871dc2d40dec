// The exit codes of every oshpc program, in one place, shared with the tests
// (tests/integration/exit_codes.py mirrors this table; docs/guide.md documents it).
#pragma once

#include <string_view>

namespace oshpc {

enum class ExitCode : int {
  kOk = 0,              // every sandbox exited 0
  kSandboxFailed = 1,   // at least one sandbox exited non-zero, was killed, or failed
  kUsage = 2,           // bad options: nothing was started
  kBadInput = 3,        // unusable input file (image, policy, topology): nothing was started
  kInfrastructure = 4,  // a node could not stage, spawn or communicate
  kCancelled = 5,       // SIGINT/SIGTERM stopped the job; every sandbox got a terminal event
};

// Returns the short name used in the summary ("ok", "usage", ...). Never fails.
std::string_view exit_code_name(ExitCode code);

inline int to_int(ExitCode code) {
  return static_cast<int>(code);
}

}  // namespace oshpc

#include "common/exit_codes.hpp"

namespace oshpc {

std::string_view exit_code_name(ExitCode code) {
  switch (code) {
    case ExitCode::kOk:
      return "ok";
    case ExitCode::kSandboxFailed:
      return "sandbox-failed";
    case ExitCode::kUsage:
      return "usage";
    case ExitCode::kBadInput:
      return "bad-input";
    case ExitCode::kInfrastructure:
      return "infrastructure";
    case ExitCode::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace oshpc

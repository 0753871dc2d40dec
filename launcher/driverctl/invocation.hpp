// oshpc-driverctl's command line, parsed into an immutable description of one call before any
// file is read or any connection is made.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace oshpc::driverctl {

// A command line that cannot be run; what() says which option or argument and why.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One ComputeDriver RPC each.
enum class Command {
  kCaps,
  kListenerRequirements,
  kValidate,
  kCreate,
  kGet,
  kList,
  kStop,
  kStart,
  kDelete,
  kWatch,
  kEnsureWorkspace,
  kDeleteWorkspace,
};

using KeyValue = std::pair<std::string, std::string>;

// What validate and create put into the DriverSandbox; unset fields keep what --spec-json gave.
struct SandboxOptions {
  std::string spec_json_path;  // empty: start from an empty DriverSandbox
  std::optional<std::string> id;
  std::optional<std::string> name;
  std::optional<std::string> image;
  std::optional<std::string> log_level;
  std::optional<std::string> cpu_request;
  std::optional<std::string> cpu_limit;
  std::optional<std::string> memory_request;
  std::optional<std::string> memory_limit;
  std::optional<std::uint32_t> gpus;
  std::vector<KeyValue> environment;           // spec.environment, merged over the JSON's
  std::vector<KeyValue> template_environment;  // spec.template.environment
  std::vector<KeyValue> labels;                // spec.template.labels
  bool tty = false;
  std::string token_path;                           // empty: no token (it is never taken from argv)
  std::optional<std::vector<std::string>> command;  // after "--"
};

enum class Action { kRun, kHelp, kVersion };

struct Invocation {
  Action action = Action::kRun;
  std::string socket_path;
  std::optional<double> wait_for_socket_s;
  Command command = Command::kCaps;
  std::string target;       // the sandbox id (get/stop/start/delete) or workspace name
  std::string target_name;  // --name for get/stop/start/delete
  SandboxOptions sandbox;   // validate and create
  bool dry_run = false;     // validate and create: print the request, send nothing
  std::optional<std::int64_t> watch_count;
  std::optional<double> watch_timeout_s;
};

// Parses argv (argv[0] is the program). Throws UsageError for unknown commands or options, an
// option the command does not take, a missing or extra argument, or a malformed value.
Invocation parse_invocation(int argc, const char* const argv[]);

// The --help text. Never fails.
std::string help_text();

// The command's name as typed ("listener-requirements"). Never fails.
const char* command_name(Command command);

}  // namespace oshpc::driverctl

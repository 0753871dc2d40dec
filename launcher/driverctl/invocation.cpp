#include "launcher/driverctl/invocation.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <initializer_list>
#include <string_view>
// Repeated options (--env, --label) take one value each: values may contain commas.
#define CXXOPTS_VECTOR_DELIMITER '\0'
#include <cxxopts.hpp>

#include "common/text_number.hpp"

namespace oshpc::driverctl {
namespace {

constexpr const char* kSynopsis =
    "usage: oshpc-driverctl --socket PATH [--wait-for-socket SECONDS] COMMAND [ARGS] [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  caps                                          GetCapabilities\n"
    "  listener-requirements                         GetGatewayListenerRequirements\n"
    "  validate [SANDBOX OPTIONS] [-- CMD...]        ValidateSandboxCreate\n"
    "  create --id ID [SANDBOX OPTIONS] [-- CMD...]  CreateSandbox\n"
    "  get ID [--name NAME]                          GetSandbox\n"
    "  list                                          ListSandboxes\n"
    "  stop ID [--name NAME]                         StopSandbox\n"
    "  start ID [--name NAME]                        StartSandbox\n"
    "  delete ID [--name NAME]                       DeleteSandbox\n"
    "  watch [--count N] [--timeout SECONDS]         WatchSandboxes\n"
    "  ensure-workspace [WORKSPACE]                  EnsureWorkspace\n"
    "  delete-workspace [WORKSPACE]                  DeleteWorkspace\n"
    "\n"
    "SANDBOX OPTIONS build the DriverSandbox of validate and create (see below).\n"
    "Each response is printed as one line of protobuf JSON.\n";

constexpr const char* kExitCodes =
    "\nexit codes: 0 success; 1 the RPC failed (the status code is printed, UNAVAILABLE when the\n"
    "socket cannot be reached); 2 usage error; 3 unreadable --spec-json or --token-file.\n"
    "See docs/driverctl.md.\n";

struct CommandInfo {
  std::string_view name;
  Command command;
  int min_operands;
  int max_operands;
};

constexpr std::array<CommandInfo, 12> kCommands{{
    {"caps", Command::kCaps, 0, 0},
    {"listener-requirements", Command::kListenerRequirements, 0, 0},
    {"validate", Command::kValidate, 0, 0},
    {"create", Command::kCreate, 0, 0},
    {"get", Command::kGet, 1, 1},
    {"list", Command::kList, 0, 0},
    {"stop", Command::kStop, 1, 1},
    {"start", Command::kStart, 1, 1},
    {"delete", Command::kDelete, 1, 1},
    {"watch", Command::kWatch, 0, 0},
    {"ensure-workspace", Command::kEnsureWorkspace, 0, 1},
    {"delete-workspace", Command::kDeleteWorkspace, 0, 1},
}};

const CommandInfo& info_of(Command command) {
  return *std::find_if(kCommands.begin(), kCommands.end(),
                       [&](const CommandInfo& info) { return info.command == command; });
}

// Which commands take which options; an option given to another command is a usage error, so
// that a mistyped command line is not half-applied.
constexpr std::initializer_list<Command> kSandboxCommands = {Command::kValidate, Command::kCreate};
constexpr std::initializer_list<Command> kNamedCommands = {Command::kValidate, Command::kCreate,
                                                           Command::kGet,      Command::kStop,
                                                           Command::kStart,    Command::kDelete};
constexpr std::initializer_list<Command> kWatchCommands = {Command::kWatch};

struct OptionScope {
  std::string_view option;
  std::initializer_list<Command> commands;
  std::string_view commands_text;
};

constexpr std::array<OptionScope, 18> kScopes{{
    {"spec-json", kSandboxCommands, "validate and create"},
    {"id", kSandboxCommands, "validate and create"},
    {"image", kSandboxCommands, "validate and create"},
    {"env", kSandboxCommands, "validate and create"},
    {"template-env", kSandboxCommands, "validate and create"},
    {"label", kSandboxCommands, "validate and create"},
    {"gpus", kSandboxCommands, "validate and create"},
    {"cpu-limit", kSandboxCommands, "validate and create"},
    {"cpu-request", kSandboxCommands, "validate and create"},
    {"memory-limit", kSandboxCommands, "validate and create"},
    {"memory-request", kSandboxCommands, "validate and create"},
    {"log-level", kSandboxCommands, "validate and create"},
    {"tty", kSandboxCommands, "validate and create"},
    {"token-file", kSandboxCommands, "validate and create"},
    {"dry-run", kSandboxCommands, "validate and create"},
    {"name", kNamedCommands, "validate, create, get, stop, start and delete"},
    {"count", kWatchCommands, "watch"},
    {"timeout", kWatchCommands, "watch"},
}};

cxxopts::Options make_parser() {
  cxxopts::Options parser("oshpc-driverctl",
                          "A command-line client of the OpenShell ComputeDriver gRPC service.");
  parser.custom_help("--socket PATH [--wait-for-socket SECONDS] COMMAND [ARGS] [OPTIONS]");
  parser.positional_help("");
  // clang-format off
  parser.add_options()
    ("socket", "the driver's UNIX socket", cxxopts::value<std::string>(), "PATH")
    ("wait-for-socket", "wait up to SECONDS for the driver to accept a connection",
     cxxopts::value<std::string>(), "SECONDS")
    ("h,help", "show this help")
    ("version", "show the version");
  // Positional arguments, in a group that --help does not list (the synopsis describes them).
  parser.add_options("positional")
    ("command", "", cxxopts::value<std::string>())
    ("operands", "", cxxopts::value<std::vector<std::string>>());
  parser.add_options("sandbox (validate, create)")
    ("spec-json", "start from a whole DriverSandbox in protobuf JSON (FILE); the options below "
     "override it", cxxopts::value<std::string>(), "FILE")
    ("id", "sandbox id (required for create)", cxxopts::value<std::string>(), "ID")
    ("name", "sandbox name (default: the id); also for get, stop, start, delete",
     cxxopts::value<std::string>(), "NAME")
    ("image", "spec.template.image", cxxopts::value<std::string>(), "IMG")
    ("env", "KEY=VALUE in spec.environment (repeatable)",
     cxxopts::value<std::vector<std::string>>(), "KEY=VALUE")
    ("template-env", "KEY=VALUE in spec.template.environment (repeatable)",
     cxxopts::value<std::vector<std::string>>(), "KEY=VALUE")
    ("label", "KEY=VALUE in spec.template.labels (repeatable)",
     cxxopts::value<std::vector<std::string>>(), "KEY=VALUE")
    ("gpus", "spec.resource_requirements.gpu.count", cxxopts::value<std::string>(), "N")
    ("cpu-request", "CPU request, a Kubernetes quantity (500m)", cxxopts::value<std::string>(),
     "Q")
    ("cpu-limit", "CPU limit, a Kubernetes quantity", cxxopts::value<std::string>(), "Q")
    ("memory-request", "memory request, a Kubernetes quantity (4Gi)",
     cxxopts::value<std::string>(), "Q")
    ("memory-limit", "memory limit, a Kubernetes quantity", cxxopts::value<std::string>(),
     "Q")
    ("log-level", "spec.log_level", cxxopts::value<std::string>(), "LEVEL")
    ("tty", "spec.tty = true")
    ("token-file", "read spec.sandbox_token from FILE (never from the command line)",
     cxxopts::value<std::string>(), "FILE")
    ("dry-run", "print the request (token redacted) and send nothing");
  parser.add_options("watch")
    ("count", "stop after N messages", cxxopts::value<std::string>(), "N")
    ("timeout", "stop after SECONDS", cxxopts::value<std::string>(), "SECONDS");
  // clang-format on
  parser.parse_positional({"command", "operands"});
  return parser;
}

std::string value_of(const cxxopts::ParseResult& result, const char* option) {
  return result[option].as<std::string>();
}

std::optional<std::string> optional_value(const cxxopts::ParseResult& result, const char* option) {
  if (!result.count(option)) return std::nullopt;
  return value_of(result, option);
}

// A number of seconds, all of the text (cxxopts would take "1x" as 1).
double parse_seconds(std::string_view option, const std::string& text) {
  if (auto seconds = parse_seconds_text(text)) return *seconds;
  throw UsageError("--" + std::string(option) + " expects 0 or more seconds (got '" + text + "')");
}

// A whole number in [minimum, maximum], all of the text, no sign.
template <typename Integer>
Integer parse_integer(std::string_view option, const std::string& text, Integer minimum) {
  Integer value{};
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || text[0] == '-' || error != std::errc() || end != text.data() + text.size() ||
      value < minimum) {
    throw UsageError("--" + std::string(option) + " expects a whole number of at least " +
                     std::to_string(minimum) + " (got '" + text + "')");
  }
  return value;
}

std::vector<KeyValue> parse_key_values(const cxxopts::ParseResult& result, const char* option) {
  std::vector<KeyValue> pairs;
  if (!result.count(option)) return pairs;
  for (const auto& text : result[option].as<std::vector<std::string>>()) {
    auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw UsageError("--" + std::string(option) + " expects KEY=VALUE (got '" + text + "')");
    }
    pairs.emplace_back(text.substr(0, eq), text.substr(eq + 1));
  }
  return pairs;
}

Command parse_command(const std::string& name) {
  for (const auto& info : kCommands) {
    if (info.name == name) return info.command;
  }
  std::string known;
  for (const auto& info : kCommands) known += (known.empty() ? "" : ", ") + std::string(info.name);
  throw UsageError("unknown command '" + name + "' (commands: " + known + ")");
}

void check_option_scopes(const cxxopts::ParseResult& result, Command command) {
  for (const auto& scope : kScopes) {
    if (!result.count(std::string(scope.option))) continue;
    if (std::find(scope.commands.begin(), scope.commands.end(), command) == scope.commands.end()) {
      throw UsageError("--" + std::string(scope.option) + " is an option of " +
                       std::string(scope.commands_text) + ", not of " + command_name(command));
    }
  }
}

void check_operands(Command command, const std::vector<std::string>& operands) {
  const CommandInfo& info = info_of(command);
  auto count = static_cast<int>(operands.size());
  if (count < info.min_operands) {
    throw UsageError(std::string(info.name) + " needs the sandbox id (" + std::string(info.name) +
                     " ID)");
  }
  if (count > info.max_operands) {
    throw UsageError("unexpected argument '" +
                     operands[static_cast<std::size_t>(info.max_operands)] + "' after " +
                     std::string(info.name) +
                     (command == Command::kValidate || command == Command::kCreate
                          ? " (put the sandbox command after --)"
                          : ""));
  }
}

SandboxOptions parse_sandbox_options(const cxxopts::ParseResult& result) {
  SandboxOptions sandbox;
  if (result.count("spec-json")) sandbox.spec_json_path = value_of(result, "spec-json");
  sandbox.id = optional_value(result, "id");
  sandbox.name = optional_value(result, "name");
  sandbox.image = optional_value(result, "image");
  sandbox.log_level = optional_value(result, "log-level");
  sandbox.cpu_request = optional_value(result, "cpu-request");
  sandbox.cpu_limit = optional_value(result, "cpu-limit");
  sandbox.memory_request = optional_value(result, "memory-request");
  sandbox.memory_limit = optional_value(result, "memory-limit");
  if (result.count("gpus")) {
    sandbox.gpus = parse_integer<std::uint32_t>("gpus", value_of(result, "gpus"), 0);
  }
  sandbox.environment = parse_key_values(result, "env");
  sandbox.template_environment = parse_key_values(result, "template-env");
  sandbox.labels = parse_key_values(result, "label");
  sandbox.tty = result.count("tty") > 0;
  if (result.count("token-file")) {
    sandbox.token_path = value_of(result, "token-file");
    if (sandbox.token_path.empty()) throw UsageError("--token-file needs a file name");
  }
  return sandbox;
}

// Everything after the first "--" is the sandbox command, never our options.
int find_separator(int argc, const char* const argv[]) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") return i;
  }
  return argc;
}

cxxopts::ParseResult parse_argv(int argc, const char* const argv[]) {
  try {
    return make_parser().parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what());
  }
}

void fill_command(const cxxopts::ParseResult& result, Invocation& invocation) {
  std::vector<std::string> operands;
  if (result.count("operands")) operands = result["operands"].as<std::vector<std::string>>();
  check_option_scopes(result, invocation.command);
  check_operands(invocation.command, operands);
  if (!operands.empty()) invocation.target = operands.front();

  switch (invocation.command) {
    case Command::kValidate:
    case Command::kCreate:
      invocation.sandbox = parse_sandbox_options(result);
      invocation.dry_run = result.count("dry-run") > 0;
      break;
    case Command::kWatch:
      if (result.count("count")) {
        invocation.watch_count = parse_integer<std::int64_t>("count", value_of(result, "count"), 1);
      }
      if (result.count("timeout")) {
        invocation.watch_timeout_s = parse_seconds("timeout", value_of(result, "timeout"));
      }
      break;
    default:
      if (result.count("name")) invocation.target_name = value_of(result, "name");
      break;
  }
}

}  // namespace

const char* command_name(Command command) {
  return info_of(command).name.data();
}

std::string help_text() {
  // cxxopts heads its help with a usage paragraph of its own; the synopsis above replaces it.
  std::string options = make_parser().help({"", "sandbox (validate, create)", "watch"});
  auto usage = options.find("Usage:");
  auto after_usage = options.find("\n\n", usage == std::string::npos ? 0 : usage);
  if (after_usage != std::string::npos) options.erase(0, after_usage + 2);
  return std::string(kSynopsis) + "\noptions:\n" + options + kExitCodes;
}

Invocation parse_invocation(int argc, const char* const argv[]) {
  int separator = find_separator(argc, argv);
  cxxopts::ParseResult result = parse_argv(separator, argv);
  Invocation invocation;
  if (result.count("help")) return invocation.action = Action::kHelp, invocation;
  if (result.count("version")) return invocation.action = Action::kVersion, invocation;

  if (!result.count("command")) throw UsageError("no COMMAND given");
  invocation.command = parse_command(value_of(result, "command"));
  fill_command(result, invocation);

  if (separator < argc) {
    if (invocation.command != Command::kValidate && invocation.command != Command::kCreate) {
      throw UsageError(std::string("only validate and create take a sandbox command after --, "
                                   "not ") +
                       command_name(invocation.command));
    }
    invocation.sandbox.command = std::vector<std::string>(argv + separator + 1, argv + argc);
  }
  if (invocation.command == Command::kCreate && !invocation.sandbox.id &&
      invocation.sandbox.spec_json_path.empty()) {
    throw UsageError("create needs --id ID (or an id in --spec-json)");
  }

  if (result.count("wait-for-socket")) {
    invocation.wait_for_socket_s =
        parse_seconds("wait-for-socket", value_of(result, "wait-for-socket"));
  }
  if (result.count("socket")) invocation.socket_path = value_of(result, "socket");
  if (invocation.socket_path.empty() && !invocation.dry_run) {
    throw UsageError("--socket PATH is required (the driver's UNIX socket)");
  }
  return invocation;
}

}  // namespace oshpc::driverctl

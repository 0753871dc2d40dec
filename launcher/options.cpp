#include "launcher/options.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
// Repeated options (--env, --bind) take one value each: values may contain commas.
#define CXXOPTS_VECTOR_DELIMITER '\0'
#include <cxxopts.hpp>

#include "common/text_number.hpp"
#include "launcher/gateway/workload.hpp"
#include "node-agent/bwrap_argv.hpp"
#include "node-agent/root_layout.hpp"

namespace oshpc::launcher {
namespace {

constexpr const char* kUsage =
    "mpirun [MPI OPTIONS] oshpc-fanout [OPTIONS] -- COMMAND [ARG...]\n"
    "       mpirun [MPI OPTIONS] oshpc-fanout --serve SOCKET --image IMAGE [OPTIONS]";

cxxopts::Options make_parser() {
  cxxopts::Options parser("oshpc-fanout", "Run many sandboxes over the nodes of an allocation.");
  parser.custom_help("[OPTIONS]");
  parser.positional_help("-- COMMAND [ARG...]");
  // clang-format off
  parser.add_options()
    ("image", "squashfs file or root directory of the sandboxes", cxxopts::value<std::string>())
    ("n,count", "number of sandboxes", cxxopts::value<std::int64_t>())
    ("cpus-per-sandbox", "cores per sandbox", cxxopts::value<int>()->default_value("1"))
    ("gpus-per-sandbox", "GPUs per sandbox, all on the package of its CPUs",
     cxxopts::value<int>()->default_value("0"))
    ("mem-per-sandbox", "memory per sandbox for placement (e.g. 4G; best effort)",
     cxxopts::value<std::string>())
    ("placement", "pack (fill a package first) or spread (round-robin packages)",
     cxxopts::value<std::string>()->default_value("pack"))
    ("topology-xml", "plan against this hwloc XML machine description (with --plan)",
     cxxopts::value<std::string>())
    ("index-offset", "first sandbox index (for job-array slices)",
     cxxopts::value<std::int64_t>()->default_value("0"))
    ("seccomp", "system-call filter: default, strict, supervisor or none",
     cxxopts::value<std::string>()->default_value("default"))
    ("policy", "egress policy YAML (network_policies); without it no egress at all",
     cxxopts::value<std::string>())
    ("upstream-proxy", "send allowed egress through this site proxy (http://HOST:PORT)",
     cxxopts::value<std::string>())
    ("slots", "sandboxes running at once per rank (default: CPUs / cpus-per-sandbox)",
     cxxopts::value<int>())
    ("timeout", "seconds a sandbox may run before it is killed (0: no limit)",
     cxxopts::value<std::string>()->default_value("0"))
    ("env", "KEY=VALUE set in every sandbox (repeatable; placeholders expanded)",
     cxxopts::value<std::vector<std::string>>())
    ("bind", "SRC:DST[:ro|rw] bind a host path into every sandbox (repeatable)",
     cxxopts::value<std::vector<std::string>>())
    ("events", "JSON Lines event file written by rank 0 ('-': stdout)",
     cxxopts::value<std::string>())
    ("output-dir", "per-sandbox stdout and stderr go to DIR/<sandbox-id>/",
     cxxopts::value<std::string>())
    ("cache-dir", "node-local directory for staged images and workspaces",
     cxxopts::value<std::string>())
    ("stage-method", "auto, mount (squashfuse) or extract (unsquashfs)",
     cxxopts::value<std::string>()->default_value("auto"))
    ("stage-from", "broadcast (read the image once per job, send it over MPI) or shared "
     "(every node reads the shared file)",
     cxxopts::value<std::string>()->default_value("broadcast"))
    ("identity", "root (uid 0 inside) or self (keep your uid)",
     cxxopts::value<std::string>()->default_value("root"))
    ("job-name", "job tag used in sandbox ids (default: the Slurm job id or a random tag)",
     cxxopts::value<std::string>())
    ("keep-workspaces", "keep each sandbox's /sandbox directory after it ends")
    ("serve", "serve the OpenShell compute-driver API on this UNIX socket (rank 0) instead of "
     "running --count sandboxes", cxxopts::value<std::string>())
    ("supervisor", "--serve: the OpenShell supervisor binary, run in every sandbox",
     cxxopts::value<std::string>())
    ("gateway-endpoint", "--serve: the gateway's http(s)://HOST:PORT as nodes reach it "
     "(relayed into each sandbox)", cxxopts::value<std::string>())
    ("tls-dir", "--serve: directory with the supervisor's ca.crt, tls.crt and tls.key",
     cxxopts::value<std::string>())
    ("supervisor-caps", "--serve: grant the supervisor's capabilities (CAP_SYS_ADMIN, "
     "CAP_NET_ADMIN and four more, docs/gateway.md) in the sandbox's user namespace (true or "
     "false)", cxxopts::value<bool>()->default_value("true"))
    ("plan", "print the plan and create nothing")
    ("check", "probe this host's support (user namespaces, FUSE, tools) and exit")
    ("v,verbose", "more output (-vv for debug)")
    ("q,quiet", "errors only, no progress")
    ("h,help", "show this help")
    ("version", "show the version");
  // clang-format on
  return parser;
}

template <typename T>
T get(const cxxopts::ParseResult& result, const char* name) {
  return result[name].as<T>();
}

bool is_safe_job_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  }) && name[0] != '.';
}

// A number of seconds, all of the text (cxxopts would accept "1x" as 1).
double parse_seconds(const char* option, const std::string& text) {
  if (auto seconds = parse_seconds_text(text)) return *seconds;
  throw UsageError(std::string(option) + " expects 0 or more seconds (got '" + text + "')");
}

void require_positive(const char* option, std::int64_t value) {
  if (value <= 0) {
    throw UsageError("--" + std::string(option) + " must be at least 1 (got " +
                     std::to_string(value) + ")");
  }
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void fill_serve_options(const cxxopts::ParseResult& result, Options& options) {
  options.action = Action::kServe;
  options.serve_socket = get<std::string>(result, "serve");
  if (options.serve_socket.empty() || options.serve_socket.back() == '/') {
    throw UsageError("--serve expects the path of a socket to create");
  }
  for (const char* name : {"count", "index-offset", "timeout", "plan", "keep-workspaces"}) {
    if (result.count(name)) {
      throw UsageError(std::string("--serve and --") + name +
                       " contradict each other: the gateway decides which sandboxes run");
    }
  }
  if (result.count("supervisor")) {
    options.supervisor = get<std::string>(result, "supervisor");
    if (options.supervisor.empty() || options.supervisor[0] != '/' || !is_file(options.supervisor))
      throw UsageError("--supervisor " + options.supervisor + ": not an absolute path to a file");
  }
  if (result.count("gateway-endpoint")) {
    options.gateway_endpoint = get<std::string>(result, "gateway-endpoint");
    try {
      gateway::endpoint_host_port(options.gateway_endpoint);
    } catch (const std::invalid_argument& e) {
      throw UsageError("--gateway-endpoint " + options.gateway_endpoint + ": " + e.what());
    }
  }
  if (result.count("tls-dir")) {
    options.tls_dir = get<std::string>(result, "tls-dir");
    for (const char* file : {"ca.crt", "tls.crt", "tls.key"}) {
      if (!is_file(options.tls_dir + "/" + file)) {
        throw UsageError("--tls-dir " + options.tls_dir + ": " + file + " is missing");
      }
    }
  }
  options.supervisor_caps = get<bool>(result, "supervisor-caps");
}

void fill_run_options(const cxxopts::ParseResult& result, Options& options) {
  if (!result.count("image"))
    throw UsageError("--image is required (a squashfs file or a directory)");
  options.image = get<std::string>(result, "image");
  if (result.count("serve")) {
    fill_serve_options(result, options);
  } else {
    if (!result.count("count")) throw UsageError("--count is required (or --serve SOCKET)");
    options.count = get<std::int64_t>(result, "count");
    require_positive("count", options.count);
    for (const char* name : {"supervisor", "gateway-endpoint", "tls-dir", "supervisor-caps"}) {
      if (result.count(name)) throw UsageError(std::string("--") + name + " needs --serve");
    }
  }
  options.cpus_per_sandbox = get<int>(result, "cpus-per-sandbox");
  require_positive("cpus-per-sandbox", options.cpus_per_sandbox);
  if (result.count("slots")) {
    options.slots_per_rank = get<int>(result, "slots");
    require_positive("slots", *options.slots_per_rank);
  }
  options.gpus_per_sandbox = get<int>(result, "gpus-per-sandbox");
  if (options.gpus_per_sandbox < 0) throw UsageError("--gpus-per-sandbox must be 0 or more");
  if (result.count("mem-per-sandbox")) {
    options.mem_per_sandbox =
        parse_size("--mem-per-sandbox", get<std::string>(result, "mem-per-sandbox"));
  }
  std::string placement = get<std::string>(result, "placement");
  if (placement == "pack") {
    options.placement = topo::PlacementPolicy::kPack;
  } else if (placement == "spread") {
    options.placement = topo::PlacementPolicy::kSpread;
  } else {
    throw UsageError("--placement must be pack or spread (got '" + placement + "')");
  }
  if (result.count("topology-xml")) {
    options.topology_xml = get<std::string>(result, "topology-xml");
    if (!result.count("plan")) {
      throw UsageError("--topology-xml describes another machine: use it with --plan");
    }
  }
  options.index_offset = get<std::int64_t>(result, "index-offset");
  if (options.index_offset < 0) throw UsageError("--index-offset must be 0 or more");
  try {
    options.seccomp = seccomp::parse_seccomp_profile(get<std::string>(result, "seccomp"));
    // The supervisor mounts its own network namespace under /run/netns.
    if (options.action == Action::kServe && options.supervisor_caps && !result.count("seccomp")) {
      options.seccomp = seccomp::SeccompProfile::kSupervisor;
    }
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--seccomp: ") + e.what());
  }
  if (result.count("policy")) options.policy_path = get<std::string>(result, "policy");
  if (result.count("upstream-proxy")) {
    options.upstream_proxy = get<std::string>(result, "upstream-proxy");
    if (options.policy_path.empty()) {
      throw UsageError("--upstream-proxy needs --policy: without a policy no egress is allowed");
    }
  }
  options.timeout_seconds = parse_seconds("--timeout", get<std::string>(result, "timeout"));

  if (result.count("env")) {
    for (const auto& text : get<std::vector<std::string>>(result, "env")) {
      options.environment.push_back(parse_env_assignment(text));
    }
  }
  if (result.count("bind")) {
    for (const auto& text : get<std::vector<std::string>>(result, "bind")) {
      options.binds.push_back(parse_bind(text));
    }
    node_agent::order_binds(options.binds);
  }
  if (result.count("events")) options.events_path = get<std::string>(result, "events");
  if (result.count("output-dir")) options.output_dir = get<std::string>(result, "output-dir");
  if (result.count("cache-dir")) options.cache_dir = get<std::string>(result, "cache-dir");

  auto method = rootfs_cache::parse_stage_method(get<std::string>(result, "stage-method"));
  if (!method) {
    throw UsageError("--stage-method must be auto, mount or extract (got '" +
                     get<std::string>(result, "stage-method") + "')");
  }
  options.stage_method = *method;
  auto from = rootfs_cache::parse_stage_from(get<std::string>(result, "stage-from"));
  if (!from) {
    throw UsageError("--stage-from must be broadcast or shared (got '" +
                     get<std::string>(result, "stage-from") + "')");
  }
  options.stage_from = *from;

  std::string identity = get<std::string>(result, "identity");
  if (identity == "root") {
    options.identity = node_agent::IdentityMode::kRoot;
  } else if (identity == "self") {
    options.identity = node_agent::IdentityMode::kSelf;
  } else {
    throw UsageError("--identity must be root or self (got '" + identity + "')");
  }

  if (result.count("job-name")) {
    options.job_name = get<std::string>(result, "job-name");
    if (!is_safe_job_name(options.job_name)) {
      throw UsageError("--job-name must be 1-64 letters, digits, '-', '_' or '.' (got '" +
                       options.job_name + "')");
    }
  }
  options.keep_workspaces = result.count("keep-workspaces") > 0;
}

}  // namespace

std::pair<std::string, std::string> parse_env_assignment(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw UsageError("--env expects KEY=VALUE (got '" + text + "')");
  }
  std::string key = text.substr(0, eq);
  bool valid =
      std::all_of(key.begin(), key.end(),
                  [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }) &&
      !std::isdigit(static_cast<unsigned char>(key[0]));
  if (!valid) throw UsageError("--env: '" + key + "' is not a valid variable name");
  return {key, text.substr(eq + 1)};
}

std::int64_t parse_size(const std::string& option, const std::string& text) {
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  for (const char* suffix : {"iB", "i", "B"}) {
    if (unit.size() > 1 && unit.size() >= std::strlen(suffix) &&
        unit.compare(unit.size() - std::strlen(suffix), std::string::npos, suffix) == 0) {
      unit.erase(unit.size() - std::strlen(suffix));
      break;
    }
  }
  static const std::string kUnits = "KMGT";
  double scale = 1;
  if (unit.size() == 1 &&
      kUnits.find(static_cast<char>(std::toupper(unit[0]))) != std::string::npos) {
    scale = std::pow(
        1024.0, 1 + static_cast<double>(kUnits.find(static_cast<char>(std::toupper(unit[0])))));
  } else if (!unit.empty() && unit != "B") {
    used = 0;
  }
  if (used == 0 || !(number >= 0)) {
    throw UsageError(option + " expects a size like 512M or 4G (got '" + text + "')");
  }
  return static_cast<std::int64_t>(number * scale);
}

node_agent::BindMount parse_bind(const std::string& text) {
  node_agent::BindMount bind;
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    auto colon = text.find(':', start);
    parts.push_back(text.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (parts.size() == 3) {
    if (parts[2] != "ro" && parts[2] != "rw") {
      throw UsageError("--bind " + text + ": the mode must be ro or rw (got '" + parts[2] + "')");
    }
    bind.writable = parts[2] == "rw";
  } else if (parts.size() != 2) {
    throw UsageError("--bind expects SRC:DST[:ro|rw] (got '" + text + "')");
  }
  bind.source = parts[0];
  bind.destination = parts[1];
  if (bind.source.empty() || bind.source[0] != '/' || bind.destination.empty() ||
      bind.destination[0] != '/') {
    throw UsageError("--bind " + text + ": SRC and DST must be absolute paths");
  }
  while (bind.destination.size() > 1 && bind.destination.back() == '/') bind.destination.pop_back();
  for (std::size_t pos = 0; pos != std::string::npos; pos = bind.destination.find('/', pos + 1)) {
    std::string_view part(bind.destination);
    part = part.substr(pos + 1, bind.destination.find('/', pos + 1) - pos - 1);
    if (part == "." || part == "..") {
      throw UsageError("--bind " + text + ": DST must not contain '.' or '..' components");
    }
  }
  const auto& reserved = node_agent::reserved_sandbox_paths();
  bool clashes = bind.destination == "/" ||
                 std::any_of(reserved.begin(), reserved.end(), [&](const std::string& path) {
                   return bind.destination == path ||
                          (path != "/tmp" && path != "/run" && path != "/sandbox" &&
                           bind.destination.rfind(path + "/", 0) == 0);
                 });
  if (clashes) {
    throw UsageError("--bind " + text + ": " + bind.destination +
                     " is managed by oshpc (/, /proc, /dev, /tmp, /run, /sandbox, /.oshpc)");
  }
  struct stat st {};
  if (::stat(bind.source.c_str(), &st) != 0) {
    throw UsageError("--bind " + text + ": " + bind.source + " does not exist");
  }
  return bind;
}

std::string help_text() {
  return std::string("usage: ") + kUsage + "\n\n" + make_parser().help() +
         "\nPlaceholders {index} {id} {node} {rank} {count} are expanded in COMMAND and --env.\n"
         "Exit codes: 0 all sandboxes exited 0; 1 some failed; 2 usage error; 3 bad input;\n"
         "4 infrastructure failure; 5 cancelled. See docs/guide.md.\n";
}

Options parse_options(int argc, const char* const argv[]) {
  // Everything after the first "--" is the sandbox command, never our options.
  int split = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") {
      split = i;
      break;
    }
  }
  Options options;
  for (int i = split + 1; i < argc; ++i) options.command.emplace_back(argv[i]);

  auto parser = make_parser();
  cxxopts::ParseResult result;
  try {
    result = parser.parse(split, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what());
  }
  if (!result.unmatched().empty()) {
    throw UsageError("unexpected argument '" + result.unmatched().front() +
                     "' (put the sandbox command after --)");
  }

  options.verbosity = static_cast<int>(result.count("verbose"));
  if (result.count("quiet")) {
    if (options.verbosity > 0) throw UsageError("--quiet and --verbose contradict each other");
    options.verbosity = -1;
  }
  if (result.count("help")) return options.action = Action::kHelp, options;
  if (result.count("version")) return options.action = Action::kVersion, options;
  if (result.count("check")) return options.action = Action::kCheck, options;

  try {
    fill_run_options(result, options);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what());
  }
  if (options.action == Action::kServe) {
    if (!options.command.empty()) {
      throw UsageError("--serve takes each sandbox's command from the gateway: remove '-- " +
                       options.command.front() + " ...'");
    }
    return options;
  }
  if (options.command.empty()) {
    throw UsageError("no COMMAND given: put the sandbox command after -- (" + std::string(kUsage) +
                     ")");
  }
  if (options.command.front().empty()) throw UsageError("COMMAND is an empty string");
  if (result.count("plan")) options.action = Action::kPlan;
  return options;
}

}  // namespace oshpc::launcher

// oshpc-proxy-harness: runs the egress proxy alone, for integration tests and benchmarks.
//
//   oshpc-proxy-harness --policy P [--upstream-proxy URL] [--host NAME=ADDR]...
//       [--max-per-sandbox N] [--buffer-bytes N] [--bulk-pipes N] [--no-splice] [--events FILE]
//       [--tcp-listeners N] [--unix PATH] [--port PORT] [-- bwrap ARGS... COMMAND...]
//
// With "-- bwrap ...", it starts that sandbox (adding --info-fd, --block-fd and the proxy
// environment), opens the proxy listener inside it with oshpc-netns-listen, lets the command
// run, serves until the sandbox exits, and exits with its status. Otherwise it serves host
// listeners (--tcp-listeners on 127.0.0.1, --unix) until SIGTERM. Decisions are JSON lines on
// --events (default stdout); the first line is {"ready":true,"ports":[...]}.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "proxy/egress_proxy.hpp"
#include "proxy/netns_listener.hpp"

namespace proxy = oshpc::proxy;
using oshpc::sys::UniqueFd;

extern char** environ;

namespace {

volatile std::sig_atomic_t g_stop = 0;

struct Options {
  std::string policy_path;
  proxy::ProxyOptions proxy;
  std::string events_path;
  int tcp_listeners = 0;
  std::string unix_path;
  int port = proxy::kSandboxProxyPort;
  std::vector<std::string> sandbox_argv;
};

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr, "oshpc-proxy-harness: %s\n", problem.c_str());
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--") {
      options.sandbox_argv.assign(argv + i + 1, argv + argc);
      break;
    } else if (arg == "--policy") {
      options.policy_path = value();
    } else if (arg == "--upstream-proxy") {
      options.proxy.upstream = proxy::parse_upstream_proxy(value());
    } else if (arg == "--host") {
      std::string pair = value();
      std::size_t eq = pair.find('=');
      if (eq == std::string::npos) usage("--host needs NAME=ADDRESS");
      options.proxy.static_hosts[pair.substr(0, eq)].push_back(pair.substr(eq + 1));
    } else if (arg == "--max-per-sandbox") {
      options.proxy.max_connections_per_sandbox = std::stoul(value());
    } else if (arg == "--buffer-bytes") {
      options.proxy.buffer_bytes = std::stoul(value());
    } else if (arg == "--bulk-pipes") {
      options.proxy.bulk_pipes = std::stoul(value());
    } else if (arg == "--no-splice") {
      options.proxy.splice = false;
    } else if (arg == "--idle-timeout-ms") {
      options.proxy.idle_timeout_ms = std::stoi(value());
    } else if (arg == "--request-timeout-ms") {
      options.proxy.request_timeout_ms = std::stoi(value());
    } else if (arg == "--events") {
      options.events_path = value();
    } else if (arg == "--tcp-listeners") {
      options.tcp_listeners = std::stoi(value());
    } else if (arg == "--unix") {
      options.unix_path = value();
    } else if (arg == "--port") {
      options.port = std::stoi(value());
    } else if (arg == "-v") {
      oshpc::log::configure({"oshpc-proxy-harness", -1, 2});
    } else {
      usage("unknown option " + arg);
    }
  }
  return options;
}

UniqueFd tcp_listener(int& port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::listen(fd.get(), SOMAXCONN) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    oshpc::sys::throw_errno("listen on 127.0.0.1");
  }
  port = ntohs(address.sin_port);
  return fd;
}

// A pipe end moved above the fds the child gets, so that dup2 to a low number clears CLOEXEC.
UniqueFd high_fd(UniqueFd fd) {
  return UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 20));
}

struct Sandbox {
  pid_t pid = -1;
  UniqueFd info;   // bwrap writes {"child-pid": N} here
  UniqueFd block;  // the command starts when we write to it
};

constexpr int kInfoFd = 10;
constexpr int kBlockFd = 11;

Sandbox start_sandbox(const Options& options) {
  auto info = oshpc::sys::make_pipe();
  auto block = oshpc::sys::make_pipe();
  UniqueFd info_child = high_fd(std::move(info.write_end));
  UniqueFd block_child = high_fd(std::move(block.read_end));

  std::vector<std::string> args = {options.sandbox_argv.front(), "--info-fd",
                                   std::to_string(kInfoFd), "--block-fd", std::to_string(kBlockFd)};
  for (const auto& entry : proxy::proxy_environment(options.port)) {
    std::size_t eq = entry.find('=');
    args.insert(args.end(), {"--setenv", entry.substr(0, eq), entry.substr(eq + 1)});
  }
  args.insert(args.end(), options.sandbox_argv.begin() + 1, options.sandbox_argv.end());
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, info_child.get(), kInfoFd);
  posix_spawn_file_actions_adddup2(&actions, block_child.get(), kBlockFd);
  Sandbox sandbox;
  int rc = ::posix_spawnp(&sandbox.pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw oshpc::sys::SysError(rc, "start " + args.front());
  sandbox.info = std::move(info.read_end);
  sandbox.block = std::move(block.write_end);
  return sandbox;
}

pid_t read_child_pid(int info_fd) {
  std::string text;
  char buffer[256];
  ssize_t n;
  while (text.find('}') == std::string::npos && (n = ::read(info_fd, buffer, sizeof buffer)) > 0) {
    text.append(buffer, static_cast<std::size_t>(n));
  }
  std::size_t key = text.find("\"child-pid\"");
  if (key == std::string::npos) throw std::runtime_error("bwrap reported no child-pid: " + text);
  return static_cast<pid_t>(std::stol(text.substr(text.find(':', key) + 1)));
}

void serve_sandbox(proxy::EgressProxy& egress, const Options& options) {
  Sandbox sandbox = start_sandbox(options);
  pid_t child = read_child_pid(sandbox.info.get());
  egress.add_listener(
      proxy::open_listener_in_sandbox(child, options.port, proxy::default_netns_helper_path()),
      "sandbox-0");
  oshpc::sys::write_all(sandbox.block.get(), "x", "the sandbox block fd");
  sandbox.block.reset();

  int status = 0;
  while (::waitpid(sandbox.pid, &status, WNOHANG) == 0) egress.handle_ready(50);
  for (int i = 0; i < 5; ++i) egress.handle_ready(10);  // report connections closing last
  egress.remove_sandbox("sandbox-0");
  std::fflush(nullptr);
  std::_Exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

void serve_host_listeners(proxy::EgressProxy& egress, const Options& options, FILE* events) {
  std::vector<int> ports;
  for (int i = 0; i < options.tcp_listeners; ++i) {
    int port = 0;
    egress.add_listener(tcp_listener(port), "tcp-" + std::to_string(i));
    ports.push_back(port);
  }
  if (!options.unix_path.empty()) egress.listen_unix(options.unix_path, "unix-0");
  std::string line = "{\"ready\":true,\"ports\":[";
  for (std::size_t i = 0; i < ports.size(); ++i) {
    line += (i ? "," : "") + std::to_string(ports[i]);
  }
  std::fprintf(events, "%s]}\n", line.c_str());
  std::fflush(events);
  while (!g_stop) egress.handle_ready(100);
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse_options(argc, argv);
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGPIPE, SIG_IGN);
  try {
    FILE* events =
        options.events_path.empty() ? stdout : std::fopen(options.events_path.c_str(), "w");
    if (events == nullptr) oshpc::sys::throw_errno("open " + options.events_path);
    proxy::Policy policy = options.policy_path.empty()
                               ? proxy::Policy{}
                               : proxy::load_policy_file(options.policy_path);
    for (const auto& warning : policy.warnings)
      std::fprintf(stderr, "warning: %s\n", warning.c_str());
    proxy::EgressProxy egress(std::move(policy), options.proxy,
                              [events](const proxy::ProxyDecision& d) {
                                std::fprintf(events, "%s\n", proxy::to_json(d).c_str());
                                std::fflush(events);
                              });
    if (!options.sandbox_argv.empty()) serve_sandbox(egress, options);
    serve_host_listeners(egress, options, events);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oshpc-proxy-harness: error: %s\n", e.what());
    return 3;
  }
}

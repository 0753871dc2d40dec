// How a sandbox reaches the proxy without a process of ours inside it: a helper joins the
// sandbox's network namespace from outside, listens on 127.0.0.1:PORT there, hands the
// listening socket back, and exits. The socket keeps working from the host side, so the proxy
// accepts sandbox connections with no route out of the sandbox.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/sys.hpp"

namespace oshpc::proxy {

// The port every sandbox's proxy listener uses (each sandbox has its own loopback).
constexpr int kSandboxProxyPort = 3128;

// Spawns helper_path (oshpc-netns-listen) with posix_spawn (safe in an MPI or threaded
// process: the helper, not we, calls setns) to listen on 127.0.0.1:port in the network
// namespace of sandbox_pid, and returns that listening socket. sandbox_pid is any process in
// the sandbox, e.g. bwrap's "child-pid" from --info-fd. Throws SysError naming the step that
// failed (e.g. "cannot listen on 127.0.0.1:3128 in the network namespace of pid 42 (join its
// user namespace): Operation not permitted").
sys::UniqueFd open_listener_in_sandbox(pid_t sandbox_pid, int port, const std::string& helper_path);

// oshpc-netns-listen in the directory of the running executable. Never throws.
std::string default_netns_helper_path();

// The environment that makes unmodified clients (curl, Python, pip, git) use the proxy:
// HTTP_PROXY, HTTPS_PROXY and lower-case twins (curl reads only http_proxy for plain HTTP),
// and NO_PROXY/no_proxy for loopback. "NAME=VALUE" strings. Never throws except bad_alloc.
std::vector<std::string> proxy_environment(int port = kSandboxProxyPort);

}  // namespace oshpc::proxy

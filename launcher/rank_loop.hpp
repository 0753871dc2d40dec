// The part of the event loop every rank shares: wait for a signal, a sandbox report or a
// timeout, then let the runner react.
#pragma once

#include "common/exit_codes.hpp"
#include "launcher/signals.hpp"
#include "node-agent/sandbox_runner.hpp"
#include "proxy/egress_proxy.hpp"

namespace oshpc::launcher {

struct RankOutcome {
  ExitCode exit_code = ExitCode::kOk;
  bool cancelled = false;
};

// What a rank serves locally: its sandboxes and, with a policy, its egress proxy. Either may
// be null (a node that could not stage runs nothing).
struct LocalNode {
  node_agent::SandboxRunner* runner = nullptr;
  proxy::EgressProxy* proxy = nullptr;
  int wake_fd = -1;  // another descriptor that ends the wait when readable (or -1)
};

// Waits up to timeout_ms, reaps, reads reports, serves the proxy, enforces timeouts and starts
// queued work. Never throws.
SignalsSeen step_node(const LocalNode& node, SignalChannel& signals, int timeout_ms);

// A node_failed event for this rank.
node_agent::SandboxEvent node_failed_event(int rank, const std::string& node,
                                           const std::string& why);

}  // namespace oshpc::launcher

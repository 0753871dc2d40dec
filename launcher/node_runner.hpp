// What both modes (a batch job and the gateway service) need to run sandboxes on a node: the
// runner's configuration with its egress wiring, proxy decisions as events, the exec helper,
// and the wait for the node's other ranks before the image goes away.
#pragma once

#include <cstdint>
#include <string>

#include "launcher/mpi_session.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/options.hpp"
#include "launcher/signals.hpp"
#include "node-agent/sandbox_runner.hpp"
#include "proxy/egress_proxy.hpp"

namespace oshpc::launcher {

// Where a sandbox finds its UNIX socket to the egress proxy.
inline constexpr const char* kSandboxProxySocket = "/run/oshpc/proxy.sock";

// Names rank 0 chose for the job, shared by every rank.
struct JobNames {
  std::string job_tag;
  std::string output_dir;
};

// The runner of this rank: profile from the options and the image's metadata, slots and
// seccomp from the node setup, and, with a proxy, each sandbox's proxy socket and loopback
// listener. Throws rootfs_cache::ImageError when the image's metadata cannot be read.
node_agent::RunnerConfig runner_config(const Options& options, const MpiSession& mpi,
                                       const JobNames& job, NodeSetup& setup,
                                       const std::string& exec_helper);

// A proxy decision as an event; the sandbox index comes back out of its id. Never throws.
node_agent::SandboxEvent egress_event(const proxy::ProxyDecision& decision, int rank,
                                      std::int64_t index_offset);

// oshpc-exec, next to oshpc-fanout (build tree and install tree alike). Throws
// std::runtime_error saying where it looked.
std::string find_exec_helper();

// Waits until every rank of the node is done with the staged image, so the leader does not
// unmount it under running sandboxes. The leader gives up on a stop signal, or after
// `limit_us` if set; the other ranks wait for the leader.
void wait_for_node_peers(const MpiSession& mpi, SignalChannel& signals, std::int64_t limit_us);

}  // namespace oshpc::launcher

// Lifecycle events as data. Node agents produce them, the launcher batches them to rank 0, and
// rank 0 writes them as JSON Lines (docs/events.md is the schema).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace oshpc::node_agent {

enum class EventType : std::uint8_t {
  kImageStaged,  // per node: the image is ready
  kStarted,      // the sandbox runs its command
  kExited,       // terminal: the command ended (exit code or signal)
  kFailed,       // terminal: the sandbox did not run to completion (see FailureReason)
  kNodeFailed,   // per node: the node cannot run sandboxes (its work goes elsewhere)
  kEgress,       // a sandbox's connection through the egress proxy: allowed or denied
  kRemoved,      // service mode: a deleted sandbox's files are gone from its node
};

enum class FailureReason : std::uint8_t {
  kNone,
  kCommandNotFound,  // the command is missing in the image or not executable
  kExecFailed,       // the command exists but could not be executed
  kTimeout,          // --timeout elapsed; the sandbox was killed
  kCancelled,        // the job was stopped (SIGINT/SIGTERM, scheduler) first
  kSpawnFailed,      // bubblewrap could not be started or could not build the sandbox
  kNodeFailed,       // the node it was meant for could not run sandboxes
  kStopped,          // service mode: stopped on request (its workspace is kept)
};

std::string_view event_type_name(EventType type);
std::string_view failure_reason_name(FailureReason reason);

struct SandboxEvent {
  EventType type = EventType::kStarted;
  std::int64_t wall_us = 0;  // when it happened
  std::int64_t index = -1;   // sandbox index; -1 for node events
  std::int32_t rank = 0;
  std::int32_t pid = 0;                // started: host pid of the sandbox's bubblewrap
  std::int32_t exit_code = -1;         // exited: the command's exit code, if it exited
  std::int32_t signal = 0;             // exited: the signal that killed it, if one did
  std::int64_t duration_us = 0;        // terminal: from start (or spawn) to end
  std::int64_t start_latency_us = -1;  // started: spawn request until the command runs
  std::int64_t cpu_user_us = 0;        // exited: rusage of the command
  std::int64_t cpu_system_us = 0;
  std::int64_t max_rss_kib = 0;
  FailureReason reason = FailureReason::kNone;
  std::string message;                 // failed / node_failed: one line for a person
  std::string method;                  // image_staged: mount, extract or directory
  std::string cpus;                    // started: cpu list it runs on ("0-3,8"), if pinned
  std::string gpus;                    // started: its GPUs, comma-separated (UUIDs or indices)
  double seconds = 0;                  // image_staged: staging time
  std::int64_t bytes_from_shared = 0;  // image_staged: bytes this node read from the image file
  // egress: the proxy's decision on one connection (message holds the reason)
  bool allowed = false;
  std::string host;
  std::int32_t port = 0;
  std::string request_method;  // CONNECT, GET, ...
  std::string rule;            // the policy entry that matched
  std::int32_t status = 0;     // the proxy's own HTTP answer, if it sent one
  std::int64_t bytes_up = 0;
  std::int64_t bytes_down = 0;
};

// A `failed` terminal event stamped now, for a sandbox whose end no runner reported (never
// started, cancelled, or on a rank that stopped). Never throws.
SandboxEvent failed_event(std::int64_t index, int rank, FailureReason reason, std::string message);

inline bool is_terminal(EventType type) {
  return type == EventType::kExited || type == EventType::kFailed;
}

}  // namespace oshpc::node_agent

#include "node-agent/sandbox_event.hpp"

#include "common/clock.hpp"

namespace oshpc::node_agent {

std::string_view event_type_name(EventType type) {
  switch (type) {
    case EventType::kImageStaged:
      return "image_staged";
    case EventType::kStarted:
      return "started";
    case EventType::kExited:
      return "exited";
    case EventType::kFailed:
      return "failed";
    case EventType::kNodeFailed:
      return "node_failed";
    case EventType::kEgress:
      return "egress";
    case EventType::kRemoved:
      return "removed";
  }
  return "unknown";
}

std::string_view failure_reason_name(FailureReason reason) {
  switch (reason) {
    case FailureReason::kNone:
      return "";
    case FailureReason::kCommandNotFound:
      return "command_not_found";
    case FailureReason::kExecFailed:
      return "exec_failed";
    case FailureReason::kTimeout:
      return "timeout";
    case FailureReason::kCancelled:
      return "cancelled";
    case FailureReason::kSpawnFailed:
      return "spawn_failed";
    case FailureReason::kNodeFailed:
      return "node_failed";
    case FailureReason::kStopped:
      return "stopped";
  }
  return "unknown";
}

SandboxEvent failed_event(std::int64_t index, int rank, FailureReason reason, std::string message) {
  SandboxEvent event;
  event.type = EventType::kFailed;
  event.wall_us = clock::wall_us();
  event.index = index;
  event.rank = rank;
  event.reason = reason;
  event.message = std::move(message);
  return event;
}

}  // namespace oshpc::node_agent

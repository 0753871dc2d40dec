#include "launcher/event_log.hpp"

#include <fcntl.h>

#include <unistd.h>
#include <algorithm>

#include "common/clock.hpp"
#include "common/log.hpp"

namespace oshpc::launcher {

using node_agent::EventType;
using node_agent::FailureReason;
using node_agent::SandboxEvent;

EventLog::EventLog(const std::string& path, EventContext context, std::int64_t sandbox_count)
    : path_(path == "-" ? "stdout" : path),
      context_(std::move(context)),
      finished_(static_cast<std::size_t>(sandbox_count), false) {
  if (path == "-") {
    fd_ = STDOUT_FILENO;
  } else {
    owned_fd_ = sys::open_file(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    fd_ = owned_fd_.get();
  }
  buffer_.reserve(1 << 20);
}

void EventLog::record(const SandboxEvent& event) {
  if (node_agent::is_terminal(event.type)) {
    auto index = static_cast<std::size_t>(event.index);
    if (event.index < 0 || index >= finished_.size() || finished_[index]) {
      log::get("launcher")->warn("dropping a second terminal event for sandbox {}", event.index);
      return;
    }
    finished_[index] = true;
    ++terminal_count_;
  }
  count(event);
  append_event_json(buffer_, event, context_);
  if (buffer_.size() > (1 << 20)) flush();
}

void EventLog::flush() {
  if (buffer_.empty()) return;
  sys::write_all(fd_, buffer_, "the event file " + path_);
  buffer_.clear();
}

void EventLog::count(const SandboxEvent& event) {
  switch (event.type) {
    case EventType::kImageStaged:
      tally_.staging.push_back({context_.node_of_rank.at(static_cast<std::size_t>(event.rank)),
                                event.method, event.seconds});
      break;
    case EventType::kStarted:
      ++tally_.started;
      tally_.start_latency.add(event.start_latency_us);
      break;
    case EventType::kExited:
      if (event.signal == 0 && event.exit_code == 0) {
        ++tally_.succeeded;
      } else {
        ++tally_.failed;
      }
      break;
    case EventType::kFailed:
      ++tally_.failed;
      if (event.reason == FailureReason::kCancelled) ++tally_.cancelled;
      if (event.reason == FailureReason::kSpawnFailed ||
          event.reason == FailureReason::kNodeFailed) {
        ++tally_.infrastructure_failures;
      }
      break;
    case EventType::kNodeFailed:
      // Every rank of a failed node reports it; the summary names the node once.
      if (std::find(tally_.node_failures.begin(), tally_.node_failures.end(), event.message) ==
          tally_.node_failures.end()) {
        tally_.node_failures.push_back(event.message);
      }
      break;
    case EventType::kEgress:
      ++(event.allowed ? tally_.egress_allowed : tally_.egress_denied);
      break;
    case EventType::kRemoved:
      break;
  }
}

void EventLog::fail_unfinished(FailureReason reason, const std::string& message) {
  for (std::size_t i = 0; i < finished_.size(); ++i) {
    if (finished_[i]) continue;
    SandboxEvent event;
    event.type = EventType::kFailed;
    event.wall_us = clock::wall_us();
    event.index = static_cast<std::int64_t>(i);
    event.rank = 0;
    event.reason = reason;
    event.message = message;
    record(event);
  }
}

}  // namespace oshpc::launcher

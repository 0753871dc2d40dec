// Rank 0's end of the event plane: every event is written as a JSON line (flushed after each
// batch) and tallied for the progress line and the summary. It also knows which sandboxes
// have had their terminal event, so that none is ever left without one or given two.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/sys.hpp"
#include "launcher/event_json.hpp"
#include "launcher/latency_histogram.hpp"
#include "node-agent/sandbox_event.hpp"

namespace oshpc::launcher {

struct NodeStaging {
  std::string node;
  std::string method;
  double seconds = 0;
};

struct Tally {
  std::int64_t started = 0;
  std::int64_t succeeded = 0;  // exited 0
  std::int64_t failed = 0;     // exited non-zero, killed, or failed
  std::int64_t cancelled = 0;  // failed with reason cancelled (also counted in failed)
  std::int64_t infrastructure_failures = 0;  // spawn_failed / node_failed
  LatencyHistogram start_latency;
  std::vector<NodeStaging> staging;
  std::vector<std::string> node_failures;
  std::int64_t egress_allowed = 0;
  std::int64_t egress_denied = 0;
};

class EventLog {
 public:
  // path "-" writes to stdout. Throws SysError naming the file.
  EventLog(const std::string& path, EventContext context, std::int64_t sandbox_count);

  // Records and writes one event. A second terminal event for a sandbox is dropped with a
  // warning (it would be a bug). Never throws; a write failure is reported once at flush.
  void record(const node_agent::SandboxEvent& event);
  // Writes what is buffered. Throws SysError if the event file cannot be written.
  void flush();

  const Tally& tally() const { return tally_; }
  std::int64_t terminal_count() const { return terminal_count_; }
  bool has_terminal(std::int64_t index) const { return finished_[static_cast<std::size_t>(index)]; }
  // Every sandbox without a terminal event yet gets `failed` with this reason.
  void fail_unfinished(node_agent::FailureReason reason, const std::string& message);
  const EventContext& context() const { return context_; }

 private:
  void count(const node_agent::SandboxEvent& event);

  sys::UniqueFd owned_fd_;
  int fd_ = -1;
  std::string path_;
  EventContext context_;
  std::string buffer_;
  std::vector<bool> finished_;
  std::int64_t terminal_count_ = 0;
  Tally tally_;
};

}  // namespace oshpc::launcher

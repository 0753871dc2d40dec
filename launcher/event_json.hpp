// Lifecycle events as JSON Lines (schema: docs/events.md). Pure formatting, unit-tested.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "node-agent/sandbox_event.hpp"

namespace oshpc::launcher {

struct EventContext {
  std::string job_tag;
  std::vector<std::string> node_of_rank;  // index: rank
  std::int64_t index_offset = 0;          // added to every index (job-array slices)
};

// Appends one event as a JSON object and a newline. Never fails.
void append_event_json(std::string& out, const node_agent::SandboxEvent& event,
                       const EventContext& context);

}  // namespace oshpc::launcher

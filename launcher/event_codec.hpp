// The wire format of event batches sent from node agents to rank 0: a compact binary record
// per event, so that rank 0 spends its time writing JSON, not parsing it.
#pragma once

#include <string>
#include <vector>

#include "node-agent/sandbox_event.hpp"

namespace oshpc::launcher {

// Appends one event to a batch buffer. Never fails.
void encode_event(std::string& batch, const node_agent::SandboxEvent& event);

// Decodes a whole batch, calling `on_event` for each. Throws std::runtime_error on a
// truncated or malformed batch (a bug or memory corruption, never user input).
template <typename OnEvent>
void decode_batch(const char* data, std::size_t size, OnEvent&& on_event);

// Non-template core of decode_batch: decodes the event at `offset` into `event` (reusing its
// strings' memory) and advances offset.
void decode_event(const char* data, std::size_t size, std::size_t& offset,
                  node_agent::SandboxEvent& event);

template <typename OnEvent>
void decode_batch(const char* data, std::size_t size, OnEvent&& on_event) {
  std::size_t offset = 0;
  node_agent::SandboxEvent event;
  while (offset < size) {
    decode_event(data, size, offset, event);
    on_event(static_cast<const node_agent::SandboxEvent&>(event));
  }
}

}  // namespace oshpc::launcher

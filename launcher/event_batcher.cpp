#include "launcher/event_batcher.hpp"

#include "common/clock.hpp"
#include "launcher/event_codec.hpp"

namespace oshpc::launcher {

EventBatcher::EventBatcher(int destination, int tag, MPI_Comm comm)
    : destination_(destination), tag_(tag), comm_(comm) {}

EventBatcher::~EventBatcher() {
  for (auto& sent : in_flight_) MPI_Wait(&sent.request, MPI_STATUS_IGNORE);
}

void EventBatcher::record(const node_agent::SandboxEvent& event) {
  if (batch_.empty()) opened_us_ = clock::mono_us();
  encode_event(batch_, event);
}

void EventBatcher::retire_completed() {
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    int done = 0;
    MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    it = done ? in_flight_.erase(it) : std::next(it);
  }
}

void EventBatcher::flush(bool force) {
  retire_completed();
  bool due = batch_.size() >= kBatchBytes || clock::mono_us() - opened_us_ >= kBatchAgeUs;
  if (!batch_.empty() && (force || due)) {
    in_flight_.push_back({MPI_REQUEST_NULL, std::move(batch_)});
    batch_.clear();
    auto& sent = in_flight_.back();
    MPI_Isend(sent.data.data(), static_cast<int>(sent.data.size()), MPI_CHAR, destination_, tag_,
              comm_, &sent.request);
  }
  // Bounded memory: past a few batches in flight, wait for rank 0 to catch up.
  while (force ? !in_flight_.empty() : in_flight_.size() > 8) {
    MPI_Wait(&in_flight_.front().request, MPI_STATUS_IGNORE);
    in_flight_.pop_front();
  }
}

}  // namespace oshpc::launcher

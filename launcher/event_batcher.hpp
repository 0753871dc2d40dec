// The sending side of the event plane: a rank's events are encoded into a batch that leaves
// for rank 0 when it is large or old enough, with a bounded number of sends in flight.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <list>
#include <string>

#include "node-agent/sandbox_event.hpp"

namespace oshpc::launcher {

class EventBatcher {
 public:
  // A batch leaves when it holds this many bytes or its first event is this old: large enough
  // to keep rank 0's message rate low at scale, young enough for a live view of the job.
  static constexpr std::size_t kBatchBytes = 64 * 1024;
  static constexpr std::int64_t kBatchAgeUs = 20'000;

  EventBatcher(int destination, int tag, MPI_Comm comm);
  ~EventBatcher();  // waits for sends in flight
  EventBatcher(const EventBatcher&) = delete;
  EventBatcher& operator=(const EventBatcher&) = delete;

  // Adds an event to the open batch. Never throws.
  void record(const node_agent::SandboxEvent& event);
  // Sends the open batch if it is due (or always, with force; then waits for every send).
  void flush(bool force);

 private:
  void retire_completed();

  int destination_;
  int tag_;
  MPI_Comm comm_;
  std::string batch_;
  std::int64_t opened_us_ = 0;
  struct InFlight {
    MPI_Request request;
    std::string data;
  };
  std::list<InFlight> in_flight_;
};

}  // namespace oshpc::launcher

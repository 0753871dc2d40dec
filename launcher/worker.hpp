// A rank other than 0: asks rank 0 for work when its slots run low, runs it, and sends its
// events to rank 0 in batches.
#pragma once

#include "launcher/event_batcher.hpp"
#include "launcher/mpi_session.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/rank_loop.hpp"

namespace oshpc::launcher {

class Worker {
 public:
  Worker(const MpiSession& mpi, SignalChannel& signals);

  // Adds an event to the next batch. Never throws.
  void record(const node_agent::SandboxEvent& event) { events_.record(event); }
  // Runs until rank 0 has no more work and everything here finished, or until cancelled.
  RankOutcome run(const LocalNode& node, const NodeSetup& setup);

 private:
  void send_done(bool cancelled);
  void request_work(const node_agent::SandboxRunner& runner);
  // Handles messages from rank 0; returns a signal number when told to stop.
  int receive_messages(node_agent::SandboxRunner& runner);

  const MpiSession& mpi_;
  SignalChannel& signals_;
  EventBatcher events_;
  bool request_outstanding_ = false;
  bool no_more_work_ = false;
};

}  // namespace oshpc::launcher

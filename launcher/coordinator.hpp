// Rank 0: hands out work in index ranges, runs its own share of sandboxes, writes every event,
// shows progress, and decides the job's exit code. On a stop signal it stops every rank and
// gives each sandbox without a terminal event a `failed`/`cancelled` one.
#pragma once

#include <vector>

#include "launcher/event_log.hpp"
#include "launcher/mpi_session.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/options.hpp"
#include "launcher/rank_loop.hpp"
#include "launcher/summary.hpp"
#include "launcher/work_protocol.hpp"

namespace oshpc::launcher {

class Coordinator {
 public:
  Coordinator(const Options& options, const MpiSession& mpi, SignalChannel& signals,
              EventLog& event_log);

  void record(const node_agent::SandboxEvent& event) { event_log_.record(event); }
  RankOutcome run(const LocalNode& node, const NodeSetup& setup);

 private:
  struct GrantRecord {
    std::int64_t first;
    std::int64_t count;
    int rank;
  };

  WorkGrant take_work(std::int64_t wanted, int rank);
  void feed_own_runner(node_agent::SandboxRunner& runner);
  void receive_messages();
  bool everything_finished(const node_agent::SandboxRunner* runner) const;
  void stop_job(int signo, node_agent::SandboxRunner* runner);
  void fail_remaining(node_agent::FailureReason reason, const std::string& message);
  ExitCode exit_code() const;
  void print_summary();

  const Options& options_;
  const MpiSession& mpi_;
  SignalChannel& signals_;
  EventLog& event_log_;
  ProgressReporter progress_;
  std::int64_t started_us_;
  std::int64_t next_index_ = 0;
  std::vector<bool> rank_done_;
  int ranks_done_ = 0;
  int working_ranks_ = 0;  // ranks that may still ask for work: the guided chunks' divisor
  bool own_work_exhausted_ = false;
  bool cancelled_ = false;
  std::vector<GrantRecord> grants_;
};

}  // namespace oshpc::launcher

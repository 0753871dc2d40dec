#include "launcher/coordinator.hpp"

#include <signal.h>

#include <algorithm>
#include <cstring>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "launcher/event_codec.hpp"

namespace oshpc::launcher {
namespace {

auto logger() {
  return log::get("launcher");
}

// After a stop signal, how long rank 0 waits for the other ranks' last events before it
// writes the cancellations itself. The scheduler's grace period (mpirun: about 1 s after
// SIGTERM; Slurm: KillWait) bounds it from above.
constexpr std::int64_t kStopCollectUs = 700'000;

}  // namespace

Coordinator::Coordinator(const Options& options, const MpiSession& mpi, SignalChannel& signals,
                         EventLog& event_log)
    : options_(options),
      mpi_(mpi),
      signals_(signals),
      event_log_(event_log),
      progress_(options.verbosity < 0, options.count),
      started_us_(clock::mono_us()),
      rank_done_(static_cast<std::size_t>(mpi.size()), false) {}

WorkGrant Coordinator::take_work(std::int64_t wanted, int rank) {
  std::int64_t remaining = options_.count - next_index_;
  if (remaining <= 0 || cancelled_) return {next_index_, 0};
  // Guided chunks: large while much is left, single sandboxes at the end, so that no rank sits
  // on a backlog while another is idle.
  std::int64_t fair = std::max<std::int64_t>(1, remaining / (2 * std::max(1, working_ranks_)));
  WorkGrant grant{next_index_, std::min({wanted, fair, remaining})};
  next_index_ += grant.count;
  grants_.push_back({grant.first, grant.count, rank});
  return grant;
}

void Coordinator::feed_own_runner(node_agent::SandboxRunner& runner) {
  if (own_work_exhausted_) return;
  auto queued = static_cast<std::int64_t>(runner.queued());
  if (queued >= runner.slot_count()) return;
  std::int64_t wanted = 2 * runner.slot_count() - runner.running() - queued;
  WorkGrant grant = take_work(wanted, 0);
  if (grant.count == 0) {
    own_work_exhausted_ = true;
  } else {
    runner.enqueue(grant.first, grant.count);
  }
}

void Coordinator::receive_messages() {
  std::string buffer;
  for (;;) {
    int pending = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &pending, &status);
    if (!pending) return;
    int source = status.MPI_SOURCE;
    switch (status.MPI_TAG) {
      case kTagWorkRequest: {
        std::int64_t wanted = 0;
        MPI_Recv(&wanted, 1, MPI_INT64_T, source, kTagWorkRequest, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        WorkGrant grant = take_work(wanted, source);
        MPI_Send(&grant, 2, MPI_INT64_T, source, kTagWorkGrant, MPI_COMM_WORLD);
        break;
      }
      case kTagEvents: {
        int size = 0;
        MPI_Get_count(&status, MPI_CHAR, &size);
        buffer.resize(static_cast<std::size_t>(size));
        MPI_Recv(buffer.data(), size, MPI_CHAR, source, kTagEvents, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        decode_batch(buffer.data(), buffer.size(),
                     [&](const node_agent::SandboxEvent& event) { event_log_.record(event); });
        break;
      }
      case kTagRankDone: {
        std::int64_t flag = 0;
        MPI_Recv(&flag, 1, MPI_INT64_T, source, kTagRankDone, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (flag != 0 && !cancelled_) {
          logger()->warn("rank {} on {} was stopped by a signal; its sandboxes were cancelled",
                         source, mpi_.node_of_rank()[static_cast<std::size_t>(source)]);
        }
        if (!rank_done_[static_cast<std::size_t>(source)]) {
          rank_done_[static_cast<std::size_t>(source)] = true;
          ++ranks_done_;
          --working_ranks_;  // it asks for no more work (one that failed its set-up, none at all)
        }
        break;
      }
      default:
        discard_message(status, MPI_COMM_WORLD);
    }
  }
}

bool Coordinator::everything_finished(const node_agent::SandboxRunner* runner) const {
  bool others_done = ranks_done_ == mpi_.size() - 1;
  bool own_done = !runner || (own_work_exhausted_ && runner->is_idle());
  return others_done && own_done;
}

void Coordinator::fail_remaining(node_agent::FailureReason reason, const std::string& message) {
  // Sandboxes never granted, and granted ones whose rank never reported their end.
  for (std::int64_t index = 0; index < options_.count; ++index) {
    if (event_log_.has_terminal(index)) continue;
    auto grant = std::upper_bound(grants_.begin(), grants_.end(), index,
                                  [](std::int64_t i, const GrantRecord& g) { return i < g.first; });
    int rank = grant == grants_.begin() ? 0 : std::prev(grant)->rank;
    event_log_.record(node_agent::failed_event(index, rank, reason, message));
  }
}

void Coordinator::stop_job(int signo, node_agent::SandboxRunner* runner) {
  cancelled_ = true;
  logger()->warn("stopping the job on signal {} ({})", signo, ::strsignal(signo));
  if (runner) runner->cancel_all();

  std::int64_t message = signo;
  for (int rank = 1; rank < mpi_.size(); ++rank) {
    if (rank_done_[static_cast<std::size_t>(rank)]) continue;
    MPI_Send(&message, 1, MPI_INT64_T, rank, kTagCancel, MPI_COMM_WORLD);
  }
  std::int64_t deadline = clock::mono_us() + kStopCollectUs;
  while (ranks_done_ < mpi_.size() - 1 && clock::mono_us() < deadline) {
    receive_messages();
    ::usleep(500);
  }
  fail_remaining(node_agent::FailureReason::kCancelled,
                 "the job was stopped before the sandbox finished");
}

ExitCode Coordinator::exit_code() const {
  const Tally& tally = event_log_.tally();
  if (cancelled_) return ExitCode::kCancelled;
  if (tally.infrastructure_failures > 0) return ExitCode::kInfrastructure;
  if (tally.failed > 0) return ExitCode::kSandboxFailed;
  return ExitCode::kOk;
}

void Coordinator::print_summary() {
  progress_.finish();
  if (options_.verbosity < 0) return;
  double wall = static_cast<double>(clock::mono_us() - started_us_) / 1e6;
  std::string text =
      summary_text(event_log_.tally(), options_.count, wall, log::collected_warnings());
  std::fputs(text.c_str(), stderr);
}

RankOutcome Coordinator::run(const LocalNode& node, const NodeSetup& setup) {
  node_agent::SandboxRunner* runner = node.runner;
  if (setup.staged_event) record(*setup.staged_event);
  if (!runner && !setup.stopped) record(node_failed_event(0, mpi_.node_name(), setup.failure));
  working_ranks_ = mpi_.size() - ranks_done_ - (runner ? 0 : 1);

  // A set-up cut short by the job's stop kept that stop pending: with no runner and no other
  // rank there would be no step to see it.
  int stop_signal = setup.stopped ? signals_.drain().stop_signal : 0;
  int timeout_ms = mpi_.size() > 1 ? 1 : 50;
  while (!stop_signal && !everything_finished(runner)) {
    SignalsSeen seen = step_node(node, signals_, timeout_ms);
    if (seen.stop_signal) {
      stop_signal = seen.stop_signal;
      break;
    }
    receive_messages();
    if (runner) {
      feed_own_runner(*runner);
      runner->start_ready();
    }
    event_log_.flush();
    progress_.update(event_log_.tally(), clock::mono_us());
  }

  if (stop_signal) {
    stop_job(stop_signal, runner);
  } else if (event_log_.terminal_count() < options_.count) {
    // Every rank is done, yet work is left: no node could run it.
    fail_remaining(node_agent::FailureReason::kNodeFailed, "no node could run sandboxes");
  }
  event_log_.flush();
  print_summary();
  return {exit_code(), cancelled_};
}

}  // namespace oshpc::launcher

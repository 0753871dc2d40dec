#include "launcher/worker.hpp"

#include "launcher/work_protocol.hpp"

namespace oshpc::launcher {

Worker::Worker(const MpiSession& mpi, SignalChannel& signals)
    : mpi_(mpi), signals_(signals), events_(0, kTagEvents, MPI_COMM_WORLD) {}

void Worker::send_done(bool cancelled) {
  events_.flush(true);
  std::int64_t flag = cancelled ? 1 : 0;
  MPI_Send(&flag, 1, MPI_INT64_T, 0, kTagRankDone, MPI_COMM_WORLD);
}

void Worker::request_work(const node_agent::SandboxRunner& runner) {
  if (request_outstanding_ || no_more_work_) return;
  auto queued = static_cast<std::int64_t>(runner.queued());
  if (queued >= runner.slot_count()) return;
  // Ask for enough to refill every slot once more, so a slot never waits for a round trip.
  std::int64_t wanted = 2 * runner.slot_count() - runner.running() - queued;
  if (wanted <= 0) return;
  MPI_Send(&wanted, 1, MPI_INT64_T, 0, kTagWorkRequest, MPI_COMM_WORLD);
  request_outstanding_ = true;
}

int Worker::receive_messages(node_agent::SandboxRunner& runner) {
  for (;;) {
    int pending = 0;
    MPI_Status status;
    MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &pending, &status);
    if (!pending) return 0;
    if (status.MPI_TAG == kTagWorkGrant) {
      WorkGrant grant;
      MPI_Recv(&grant, 2, MPI_INT64_T, 0, kTagWorkGrant, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      request_outstanding_ = false;
      if (grant.count == 0) {
        no_more_work_ = true;
      } else {
        runner.enqueue(grant.first, grant.count);
      }
    } else if (status.MPI_TAG == kTagCancel) {
      std::int64_t signo = 0;
      MPI_Recv(&signo, 1, MPI_INT64_T, 0, kTagCancel, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      return static_cast<int>(signo);
    } else {
      discard_message(status, MPI_COMM_WORLD);
    }
  }
}

RankOutcome Worker::run(const LocalNode& node, const NodeSetup& setup) {
  node_agent::SandboxRunner* runner = node.runner;
  if (setup.staged_event) record(*setup.staged_event);
  if (!runner && setup.stopped) {
    send_done(true);
    return {ExitCode::kCancelled, true};
  }
  if (!runner) {
    record(node_failed_event(mpi_.rank(), mpi_.node_name(), setup.failure));
    send_done(false);
    return {};
  }
  for (;;) {
    SignalsSeen seen = step_node(node, signals_, request_outstanding_ ? 1 : 5);
    int stop = seen.stop_signal ? seen.stop_signal : receive_messages(*runner);
    if (stop) {
      runner->cancel_all();
      send_done(true);
      return {ExitCode::kCancelled, true};
    }
    request_work(*runner);
    runner->start_ready();
    events_.flush(false);
    if (no_more_work_ && runner->is_idle()) {
      send_done(false);
      return {};
    }
  }
}

}  // namespace oshpc::launcher

#include "launcher/worker.hpp"

#include "common/clock.hpp"
#include "launcher/work_protocol.hpp"

namespace oshpc::launcher {
namespace {

// A batch leaves when it is this big or this old: large enough to keep rank 0's message rate
// low at scale, young enough for a live view of the job.
constexpr std::size_t kBatchBytes = 64 * 1024;
constexpr std::int64_t kBatchAgeUs = 20'000;

}  // namespace

Worker::Worker(const MpiSession& mpi, SignalChannel& signals) : mpi_(mpi), signals_(signals) {}

Worker::~Worker() {
  for (auto& sent : in_flight_) MPI_Wait(&sent.request, MPI_STATUS_IGNORE);
}

void Worker::record(const node_agent::SandboxEvent& event) {
  if (batch_.empty()) batch_opened_us_ = clock::mono_us();
  encode_event(batch_, event);
}

void Worker::flush_events(bool force) {
  // Retire completed sends first, so their buffers can go.
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    int done = 0;
    MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    it = done ? in_flight_.erase(it) : std::next(it);
  }
  if (batch_.empty()) return;
  if (!force && batch_.size() < kBatchBytes && clock::mono_us() - batch_opened_us_ < kBatchAgeUs) {
    return;
  }
  in_flight_.push_back({MPI_REQUEST_NULL, std::move(batch_)});
  batch_.clear();
  auto& sent = in_flight_.back();
  MPI_Isend(sent.data.data(), static_cast<int>(sent.data.size()), MPI_CHAR, 0, kTagEvents,
            MPI_COMM_WORLD, &sent.request);
  if (force) {
    for (auto& pending : in_flight_) MPI_Wait(&pending.request, MPI_STATUS_IGNORE);
    in_flight_.clear();
  }
}

void Worker::send_done(bool cancelled) {
  flush_events(true);
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
      // Nothing else is sent to workers; drain it so it cannot block the queue.
      char ignored;
      MPI_Recv(&ignored, 0, MPI_CHAR, 0, status.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
  }
}

RankOutcome Worker::run(const LocalNode& node, const NodeSetup& setup) {
  node_agent::SandboxRunner* runner = node.runner;
  if (setup.staged_event) record(*setup.staged_event);
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
    flush_events(false);
    if (no_more_work_ && runner->is_idle()) {
      send_done(false);
      return {};
    }
  }
}

}  // namespace oshpc::launcher

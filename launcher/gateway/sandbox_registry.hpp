// Rank 0's record of every sandbox the gateway created: the state behind each RPC, the
// WatchSandboxes streams, and the commands for the nodes. gRPC threads call the RPC side;
// the launcher's event loop (the only thread that uses MPI) takes the commands and feeds back
// what the nodes report. One mutex guards everything; node work never runs under it.
//
// Each sandbox is placed on a rank and slot when it is created and keeps them until it is
// deleted, so a stopped sandbox can always start again where its workspace is.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

#include "common/sys.hpp"
#include "launcher/gateway/workload.hpp"
#include "node-agent/sandbox_event.hpp"

namespace oshpc::gateway {

// What rank 0 asks one rank to do with one sandbox.
enum class NodeCommandKind { kLaunch, kStop, kRemove };

struct NodeCommand {
  NodeCommandKind kind = NodeCommandKind::kLaunch;
  std::int64_t handle = 0;  // oshpc's number for the sandbox; node events carry it as index
  int rank = 0;
  int slot = 0;
  std::string sandbox_name;  // oshpc's name: hostname and file names on the node
  WorkloadPlan workload;     // kLaunch only
};

// The messages of one WatchSandboxes stream, in order. The registry pushes; the stream's
// handler pops. A stream that falls too far behind is closed with an error, never thinned.
class WatchQueue {
 public:
  static constexpr std::size_t kMaxPending = 100'000;

  // The next message, waiting up to `timeout`; std::nullopt when none came (then see
  // closed_status()).
  std::optional<api::WatchSandboxesEvent> pop(std::chrono::milliseconds timeout);
  // Set once the stream must end; the handler returns it.
  std::optional<grpc::Status> closed_status();

 private:
  friend class SandboxRegistry;
  void push(const api::WatchSandboxesEvent& event);
  void close(grpc::Status status);

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<api::WatchSandboxesEvent> pending_;
  std::optional<grpc::Status> closed_;
};

struct RankSlots {
  std::string node;  // host name, for instance ids and messages
  int slots = 0;
};

class SandboxRegistry {
 public:
  // Throws SysError when the wake-up eventfd cannot be made.
  SandboxRegistry(ServiceSettings settings, std::string job_tag, std::vector<RankSlots> ranks);
  ~SandboxRegistry();
  SandboxRegistry(const SandboxRegistry&) = delete;
  SandboxRegistry& operator=(const SandboxRegistry&) = delete;

  // --- the RPC side (any thread). Each throws RpcError with the status the RPC returns.
  api::GetCapabilitiesResponse capabilities() const;
  void validate(const api::DriverSandbox& sandbox) const;
  // Accepts the sandbox and queues its launch; ALREADY_EXISTS for a known id,
  // FAILED_PRECONDITION when it cannot run here (see validate) or every slot is taken.
  void create(const api::DriverSandbox& sandbox);
  // NOT_FOUND only when the sandbox is gone (deleted, or never created).
  api::DriverSandbox get(const std::string& id) const;
  std::vector<api::DriverSandbox> list() const;
  // Returns once its processes are gone. Idempotent. `abandoned` tells whether the caller
  // has gone away (then it returns early; the stop goes on).
  void stop(const std::string& id, const std::function<bool()>& abandoned);
  // Queues a new run of a stopped or ended sandbox in its workspace; a running one is left
  // alone. Idempotent.
  void start(const std::string& id, const std::function<bool()>& abandoned);
  // Removes the sandbox and every file of it; returns once they are gone. True when there
  // was something to remove, false when it was already gone.
  bool remove(const std::string& id, const std::function<bool()>& abandoned);
  // A new stream: first a snapshot of every sandbox, then every change.
  std::shared_ptr<WatchQueue> watch();

  // --- the event loop's side.
  // Readable (an eventfd) when commands are waiting.
  int wake_fd() const { return wake_.get(); }
  std::vector<NodeCommand> take_commands();
  // A rank finished setting up its node: ready to run sandboxes, or not (failure says why).
  void on_rank_ready(int rank, const std::string& failure);
  // The handles of runs on `rank` that have no terminal event yet.
  std::vector<std::int64_t> open_runs_on(int rank) const;
  // What a node reported about one of its sandboxes (index = handle).
  void on_event(const node_agent::SandboxEvent& event);
  // The allocation ends: every sandbox is reported stopped, waiters return, streams end with
  // UNAVAILABLE and new requests are refused. Returns the runs that had no terminal event
  // yet (started or not): their nodes may still report one, else the caller writes it.
  struct UnfinishedRun {
    std::int64_t handle;
    int rank;
  };
  std::vector<UnfinishedRun> shut_down(const std::string& why);

 private:
  struct Record;
  enum class RankState { kStaging, kReady, kFailed };

  Record& find(const std::string& id) const;  // throws RpcError(NOT_FOUND)
  Record* find_handle(std::int64_t handle) const;
  void check_open() const;  // throws RpcError(UNAVAILABLE)
  std::pair<int, int> take_slot(const std::string& id);
  void queue_command(NodeCommand command);
  void queue_launch(Record& record);
  void set_ready(Record& record, const std::string& status, const std::string& reason,
                 const std::string& message);
  api::DriverSandbox snapshot(const Record& record) const;
  void publish(const Record& record);
  api::WatchSandboxesEvent platform_event(const Record& record, const std::string& type,
                                          const std::string& reason,
                                          const std::string& message) const;
  void publish_progress(const Record& record, const std::string& completed,
                        const std::string& active, const std::string& detail);
  void publish_platform_event(const Record& record, const std::string& type,
                              const std::string& reason, const std::string& message);
  void broadcast(const api::WatchSandboxesEvent& event);
  void wait_until(std::unique_lock<std::mutex>& lock, const std::function<bool()>& done,
                  const std::function<bool()>& abandoned);
  void on_run_ended(Record& record, const node_agent::SandboxEvent& event);

  const ServiceSettings settings_;
  const std::string job_tag_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<RankSlots> ranks_;
  std::vector<RankState> rank_state_;
  std::vector<std::vector<bool>> slot_taken_;               // [rank][slot]
  std::map<std::string, std::unique_ptr<Record>> records_;  // by the gateway's id
  std::map<std::int64_t, std::string> id_of_handle_;
  std::int64_t next_handle_ = 0;
  std::vector<NodeCommand> commands_;
  std::vector<std::weak_ptr<WatchQueue>> watchers_;
  std::string shut_down_reason_;  // non-empty once shut down
  sys::UniqueFd wake_;
};

}  // namespace oshpc::gateway

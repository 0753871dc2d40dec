#include "launcher/gateway/sandbox_registry.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/clock.hpp"
#include "node-agent/sandbox_spec.hpp"

namespace oshpc::gateway {

using node_agent::EventType;
using node_agent::FailureReason;
using node_agent::SandboxEvent;

// Ready condition reasons. The gateway treats False with any reason but a few transient ones
// (Starting, DependenciesNotReady, ...) as terminal, so only those two are used before a run
// has ended.
namespace reason {
constexpr const char* kStarting = "Starting";
constexpr const char* kDependencies = "DependenciesNotReady";
constexpr const char* kReady = "BackendReady";
constexpr const char* kStopped = "ContainerStopped";
constexpr const char* kExited = "ContainerExited";
constexpr const char* kStartFailed = "ContainerStartFailed";
constexpr const char* kImageFailed = "ImagePullFailed";
}  // namespace reason

struct SandboxRegistry::Record {
  std::int64_t handle = 0;
  std::string name;            // oshpc's own name for it
  api::DriverSandbox sandbox;  // as the gateway sent it, less the token
  std::string token;           // kept for restarts; never logged
  int rank = 0;
  int slot = 0;
  bool run_outstanding = false;  // a launch was sent and its run has not ended
  std::uint64_t run = 0;         // counts launches: a Stop waits for the end of its own run
  bool stop_requested = false;
  bool deleting = false;
  std::string ready_status = "False";
  std::string ready_reason = reason::kStarting;
  std::string ready_message;
  std::string transition_time;
};

std::optional<api::WatchSandboxesEvent> WatchQueue::pop(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  ready_.wait_for(lock, timeout, [this] { return !pending_.empty() || closed_; });
  if (pending_.empty()) return std::nullopt;
  api::WatchSandboxesEvent event = std::move(pending_.front());
  pending_.pop_front();
  return event;
}

std::optional<grpc::Status> WatchQueue::closed_status() {
  std::lock_guard lock(mutex_);
  // Messages queued before the close are delivered first.
  return pending_.empty() ? closed_ : std::nullopt;
}

void WatchQueue::push(const api::WatchSandboxesEvent& event) {
  std::lock_guard lock(mutex_);
  if (closed_) return;
  if (pending_.size() >= kMaxPending) {
    // Dropping a change would leave the gateway wrong for good; ending the stream makes it
    // reopen one and take a fresh snapshot.
    pending_.clear();
    closed_ = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "the watch stream fell behind; open a new one");
  } else {
    pending_.push_back(event);
  }
  ready_.notify_one();
}

void WatchQueue::close(grpc::Status status) {
  std::lock_guard lock(mutex_);
  if (!closed_) closed_ = std::move(status);
  ready_.notify_one();
}

SandboxRegistry::SandboxRegistry(ServiceSettings settings, std::string job_tag,
                                 std::vector<RankSlots> ranks)
    : settings_(std::move(settings)),
      job_tag_(std::move(job_tag)),
      ranks_(std::move(ranks)),
      rank_state_(ranks_.size(), RankState::kStaging),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_.is_open()) sys::throw_errno("create the service's wake-up eventfd");
  for (const auto& rank : ranks_) slot_taken_.emplace_back(static_cast<std::size_t>(rank.slots));
}

SandboxRegistry::~SandboxRegistry() = default;

api::GetCapabilitiesResponse SandboxRegistry::capabilities() const {
  api::GetCapabilitiesResponse response;
  response.set_driver_name("oshpc");
  response.set_driver_version(OSHPC_VERSION);
  response.set_default_image(settings_.default_image);
  // The allocation, not the gateway, owns the sandboxes' lifetime: a gateway restart must not
  // stop an HPC job's sandboxes.
  response.set_gateway_manages_lifecycle(false);
  return response;
}

void SandboxRegistry::validate(const api::DriverSandbox& sandbox) const {
  validate_sandbox(sandbox, settings_);
}

void SandboxRegistry::check_open() const {
  if (!shut_down_reason_.empty()) {
    throw RpcError(grpc::StatusCode::UNAVAILABLE,
                   "the service is shutting down: " + shut_down_reason_);
  }
}

SandboxRegistry::Record& SandboxRegistry::find(const std::string& id) const {
  auto it = records_.find(id);
  if (it == records_.end()) {
    throw RpcError(grpc::StatusCode::NOT_FOUND, "no sandbox with id '" + id + "'");
  }
  return *it->second;
}

SandboxRegistry::Record* SandboxRegistry::find_handle(std::int64_t handle) const {
  auto it = id_of_handle_.find(handle);
  if (it == id_of_handle_.end()) return nullptr;
  return records_.at(it->second).get();
}

// The rank with the most free slots (ties: the lowest rank) that has not failed.
std::pair<int, int> SandboxRegistry::take_slot(const std::string& id) {
  int best_rank = -1;
  long best_free = 0;
  int total = 0;
  for (std::size_t r = 0; r < ranks_.size(); ++r) {
    if (rank_state_[r] == RankState::kFailed) continue;
    total += ranks_[r].slots;
    long free = std::count(slot_taken_[r].begin(), slot_taken_[r].end(), false);
    if (free > best_free) best_free = free, best_rank = static_cast<int>(r);
  }
  if (best_rank < 0) {
    throw RpcError(grpc::StatusCode::FAILED_PRECONDITION,
                   "cannot place sandbox '" + id + "': all " + std::to_string(total) +
                       " slots of the allocation's working ranks are in use (delete sandboxes "
                       "to free them)");
  }
  auto& taken = slot_taken_[static_cast<std::size_t>(best_rank)];
  auto slot = std::find(taken.begin(), taken.end(), false) - taken.begin();
  taken[static_cast<std::size_t>(slot)] = true;
  return {best_rank, static_cast<int>(slot)};
}

void SandboxRegistry::queue_command(NodeCommand command) {
  commands_.push_back(std::move(command));
  std::uint64_t one = 1;
  // An eventfd write only fails when the counter would overflow; it is read often.
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void SandboxRegistry::queue_launch(Record& record) {
  ++record.run;
  record.run_outstanding = true;
  record.stop_requested = false;
  bool staged = rank_state_[static_cast<std::size_t>(record.rank)] != RankState::kStaging;
  set_ready(record, "False", staged ? reason::kStarting : reason::kDependencies,
            staged ? "starting on " + ranks_[static_cast<std::size_t>(record.rank)].node
                   : "waiting for the image to be staged on " +
                         ranks_[static_cast<std::size_t>(record.rank)].node);
  NodeCommand command;
  command.kind = NodeCommandKind::kLaunch;
  command.handle = record.handle;
  command.rank = record.rank;
  command.slot = record.slot;
  command.sandbox_name = record.name;
  api::DriverSandbox with_token = record.sandbox;
  with_token.mutable_spec()->set_sandbox_token(record.token);
  command.workload = plan_workload(with_token, settings_, record.name);
  queue_command(std::move(command));
  publish(record);
  publish_progress(record, "requesting_sandbox", staged ? "starting_sandbox" : "pulling_image",
                   record.ready_message);
}

void SandboxRegistry::create(const api::DriverSandbox& sandbox) {
  validate_sandbox(sandbox, settings_);
  std::lock_guard lock(mutex_);
  check_open();
  if (records_.count(sandbox.id())) {
    throw RpcError(grpc::StatusCode::ALREADY_EXISTS,
                   "a sandbox with id '" + sandbox.id() + "' exists");
  }
  if (settings_.has_supervisor && sandbox.spec().sandbox_token().empty()) {
    throw RpcError(grpc::StatusCode::FAILED_PRECONDITION,
                   "the request carries no sandbox token, which the supervisor needs "
                   "(configure the gateway's gateway_jwt)");
  }
  auto [rank, slot] = take_slot(sandbox.id());
  auto record = std::make_unique<Record>();
  record->handle = next_handle_++;
  record->name = node_agent::sandbox_id(job_tag_, record->handle);
  record->sandbox = sandbox;
  record->token = sandbox.spec().sandbox_token();
  record->sandbox.mutable_spec()->clear_sandbox_token();
  record->rank = rank;
  record->slot = slot;
  Record& added = *record;
  id_of_handle_[added.handle] = sandbox.id();
  records_.emplace(sandbox.id(), std::move(record));
  queue_launch(added);
}

api::DriverSandbox SandboxRegistry::get(const std::string& id) const {
  std::lock_guard lock(mutex_);
  return snapshot(find(id));
}

std::vector<api::DriverSandbox> SandboxRegistry::list() const {
  std::lock_guard lock(mutex_);
  std::vector<api::DriverSandbox> all;
  all.reserve(records_.size());
  for (const auto& [id, record] : records_) all.push_back(snapshot(*record));
  return all;
}

void SandboxRegistry::wait_until(std::unique_lock<std::mutex>& lock,
                                 const std::function<bool()>& done,
                                 const std::function<bool()>& abandoned) {
  // The gateway sets no deadline; a caller that went away is noticed within a second.
  while (!done() && shut_down_reason_.empty() && !(abandoned && abandoned())) {
    changed_.wait_for(lock, std::chrono::seconds(1));
  }
}

void SandboxRegistry::stop(const std::string& id, const std::function<bool()>& abandoned) {
  std::unique_lock lock(mutex_);
  Record& record = find(id);
  std::int64_t handle = record.handle;
  std::uint64_t run = record.run;
  if (record.run_outstanding && !record.stop_requested && !record.deleting) {
    record.stop_requested = true;
    queue_command({NodeCommandKind::kStop, handle, record.rank, record.slot, record.name, {}});
  }
  // Done when the run it stopped has ended, even if a Start has begun a new one since.
  wait_until(
      lock,
      [&] {
        Record* current = find_handle(handle);
        return current == nullptr || current->run != run || !current->run_outstanding;
      },
      abandoned);
}

void SandboxRegistry::start(const std::string& id, const std::function<bool()>& abandoned) {
  std::unique_lock lock(mutex_);
  check_open();
  std::int64_t handle = find(id).handle;
  // A stop still under way finishes first; the new run starts after it.
  wait_until(
      lock,
      [&] {
        Record* current = find_handle(handle);
        return current == nullptr || !(current->run_outstanding && current->stop_requested);
      },
      abandoned);
  check_open();
  Record& record = find(id);
  if (record.deleting) {
    throw RpcError(grpc::StatusCode::FAILED_PRECONDITION, "sandbox '" + id + "' is being deleted");
  }
  if (!record.run_outstanding) queue_launch(record);
}

bool SandboxRegistry::remove(const std::string& id, const std::function<bool()>& abandoned) {
  std::unique_lock lock(mutex_);
  auto it = records_.find(id);
  if (it == records_.end()) return false;
  Record& record = *it->second;
  std::int64_t handle = record.handle;
  if (!record.deleting) {
    record.deleting = true;
    queue_command({NodeCommandKind::kRemove, handle, record.rank, record.slot, record.name, {}});
    publish(record);
  }
  wait_until(
      lock, [&] { return find_handle(handle) == nullptr; }, abandoned);
  return true;
}

std::shared_ptr<WatchQueue> SandboxRegistry::watch() {
  std::lock_guard lock(mutex_);
  auto queue = std::make_shared<WatchQueue>();
  // Taken under the same lock as every change, so the stream neither misses nor repeats one.
  for (const auto& [id, record] : records_) {
    api::WatchSandboxesEvent event;
    *event.mutable_sandbox()->mutable_sandbox() = snapshot(*record);
    queue->push(event);
  }
  if (!shut_down_reason_.empty()) {
    queue->close(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the service is shutting down: " + shut_down_reason_));
  }
  watchers_.push_back(queue);
  return queue;
}

std::vector<NodeCommand> SandboxRegistry::take_commands() {
  std::uint64_t count = 0;
  [[maybe_unused]] ssize_t n = ::read(wake_.get(), &count, sizeof count);
  std::lock_guard lock(mutex_);
  return std::exchange(commands_, {});
}

void SandboxRegistry::on_rank_ready(int rank, const std::string& failure) {
  std::lock_guard lock(mutex_);
  if (rank < 0 || static_cast<std::size_t>(rank) >= ranks_.size()) return;
  rank_state_[static_cast<std::size_t>(rank)] =
      failure.empty() ? RankState::kReady : RankState::kFailed;
  for (auto& [id, record] : records_) {
    if (record->rank != rank || !record->run_outstanding || record->deleting) continue;
    if (!failure.empty()) {
      publish_platform_event(*record, "Warning", "NodeFailed",
                             ranks_[static_cast<std::size_t>(rank)].node + ": " + failure);
      continue;  // the rank itself fails the run, with the reason
    }
    if (record->ready_reason == reason::kDependencies) {
      set_ready(*record, "False", reason::kStarting,
                "starting on " + ranks_[static_cast<std::size_t>(rank)].node);
      publish(*record);
      publish_progress(*record, "pulling_image", "starting_sandbox", record->ready_message);
    }
  }
}

std::vector<std::int64_t> SandboxRegistry::open_runs_on(int rank) const {
  std::lock_guard lock(mutex_);
  std::vector<std::int64_t> handles;
  for (const auto& [id, record] : records_) {
    if (record->rank == rank && record->run_outstanding) handles.push_back(record->handle);
  }
  return handles;
}

void SandboxRegistry::on_event(const SandboxEvent& event) {
  std::lock_guard lock(mutex_);
  Record* record = find_handle(event.index);
  if (record == nullptr) return;
  if (event.type == EventType::kStarted) {
    // Fencing: a late report of a run that a stop already ended changes nothing.
    if (!record->run_outstanding || record->stop_requested) return;
    set_ready(*record, "True", reason::kReady,
              "running on " + ranks_.at(static_cast<std::size_t>(record->rank)).node);
    publish(*record);
    publish_progress(*record, "starting_sandbox", "", "");
  } else if (node_agent::is_terminal(event.type)) {
    on_run_ended(*record, event);
  } else if (event.type == EventType::kRemoved) {
    std::string id = record->sandbox.id();
    slot_taken_[static_cast<std::size_t>(record->rank)][static_cast<std::size_t>(record->slot)] =
        false;
    id_of_handle_.erase(record->handle);
    records_.erase(id);
    api::WatchSandboxesEvent deleted;
    deleted.mutable_deleted()->set_sandbox_id(id);
    broadcast(deleted);
  }
  changed_.notify_all();
}

void SandboxRegistry::on_run_ended(Record& record, const SandboxEvent& event) {
  if (!record.run_outstanding) return;
  record.run_outstanding = false;
  if (record.stop_requested || event.reason == FailureReason::kStopped ||
      event.reason == FailureReason::kCancelled) {
    set_ready(record, "False", reason::kStopped,
              event.reason == FailureReason::kCancelled ? event.message : "stopped");
  } else if (event.type == EventType::kExited) {
    set_ready(record, "False", reason::kExited,
              event.signal != 0
                  ? "the main process was killed by signal " + std::to_string(event.signal)
                  : "the main process exited with code " + std::to_string(event.exit_code));
    publish_platform_event(record, "Warning", reason::kExited, record.ready_message);
  } else {
    const char* why =
        event.reason == FailureReason::kNodeFailed ? reason::kImageFailed : reason::kStartFailed;
    set_ready(record, "False", why, event.message);
    publish_platform_event(record, "Warning", why, event.message);
  }
  publish(record);
}

std::vector<SandboxRegistry::UnfinishedRun> SandboxRegistry::shut_down(const std::string& why) {
  std::lock_guard lock(mutex_);
  std::vector<UnfinishedRun> unfinished;
  if (!shut_down_reason_.empty()) return unfinished;
  for (auto& [id, record] : records_) {
    if (!record->run_outstanding) continue;
    unfinished.push_back({record->handle, record->rank});
    record->run_outstanding = false;
    set_ready(*record, "False", reason::kStopped, why);
    publish(*record);
  }
  shut_down_reason_ = why;
  for (auto& weak : watchers_) {
    if (auto queue = weak.lock()) {
      queue->close(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "the service is shutting down: " + why));
    }
  }
  changed_.notify_all();
  return unfinished;
}

void SandboxRegistry::set_ready(Record& record, const std::string& status, const std::string& why,
                                const std::string& message) {
  if (record.ready_status != status || record.ready_reason != why ||
      record.transition_time.empty()) {
    record.transition_time = clock::rfc3339(clock::wall_us());
  }
  record.ready_status = status;
  record.ready_reason = why;
  record.ready_message = message;
}

api::DriverSandbox SandboxRegistry::snapshot(const Record& record) const {
  api::DriverSandbox sandbox = record.sandbox;
  sandbox.set_namespace_(job_tag_);
  api::DriverSandboxStatus* status = sandbox.mutable_status();
  status->set_sandbox_name(record.name);
  status->set_instance_id(ranks_.at(static_cast<std::size_t>(record.rank)).node + "/rank-" +
                          std::to_string(record.rank) + "/slot-" + std::to_string(record.slot));
  status->set_deleting(record.deleting);
  api::DriverCondition* ready = status->add_conditions();
  ready->set_type("Ready");
  ready->set_status(record.ready_status);
  ready->set_reason(record.ready_reason);
  ready->set_message(record.ready_message);
  ready->set_last_transition_time(record.transition_time);
  return sandbox;
}

void SandboxRegistry::publish(const Record& record) {
  api::WatchSandboxesEvent event;
  *event.mutable_sandbox()->mutable_sandbox() = snapshot(record);
  broadcast(event);
}

api::WatchSandboxesEvent SandboxRegistry::platform_event(const Record& record,
                                                         const std::string& type,
                                                         const std::string& why,
                                                         const std::string& message) const {
  api::WatchSandboxesEvent event;
  auto* platform = event.mutable_platform_event();
  platform->set_sandbox_id(record.sandbox.id());
  api::DriverPlatformEvent* details = platform->mutable_event();
  details->set_timestamp_ms(clock::wall_us() / 1000);
  details->set_source("oshpc");
  details->set_type(type);
  details->set_reason(why);
  details->set_message(message);
  return event;
}

void SandboxRegistry::publish_progress(const Record& record, const std::string& completed,
                                       const std::string& active, const std::string& detail) {
  api::WatchSandboxesEvent event = platform_event(record, "Normal", "Progress", detail);
  auto& metadata = *event.mutable_platform_event()->mutable_event()->mutable_metadata();
  metadata["openshell.progress.complete_step"] = completed;
  if (!active.empty()) {
    metadata["openshell.progress.active_step"] = active;
    metadata["openshell.progress.active_detail"] = detail;
  }
  broadcast(event);
}

void SandboxRegistry::publish_platform_event(const Record& record, const std::string& type,
                                             const std::string& why, const std::string& message) {
  broadcast(platform_event(record, type, why, message));
}

void SandboxRegistry::broadcast(const api::WatchSandboxesEvent& event) {
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    if (auto queue = it->lock()) {
      queue->push(event);
      ++it;
    } else {
      it = watchers_.erase(it);
    }
  }
}

}  // namespace oshpc::gateway

// A stand-in ComputeDriver for checking bench_gateway itself (smoke.sh), not for figures: each
// created sandbox is reported Ready=False/Starting at once and Ready=True --ready-ms later;
// a delete reports deleting=true, then a `deleted` event. --fail-every K makes every K-th
// create end Ready=False/ImagePullFailed instead.
//
//   bench_gateway_fake_driver --socket PATH [--ready-ms 20] [--fail-every 0]
//
// Serves until SIGINT or SIGTERM.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "compute_driver.grpc.pb.h"

namespace {

namespace v1 = openshell::compute::v1;
using Clock = std::chrono::steady_clock;

struct Config {
  std::string socket_path;
  int ready_ms = 20;
  int fail_every = 0;
};

// A change due at a time: a sandbox's Ready outcome, or its disappearance.
struct Due {
  Clock::time_point at;
  std::string id;
  bool is_deletion = false;
};

class FakeDriver final : public v1::ComputeDriver::Service {
 public:
  explicit FakeDriver(Config config) : config_(std::move(config)) {
    timer_ = std::thread([this] { run_timer(); });
  }

  ~FakeDriver() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    timer_.join();
  }

  grpc::Status GetCapabilities(grpc::ServerContext*, const v1::GetCapabilitiesRequest*,
                               v1::GetCapabilitiesResponse* response) override {
    response->set_driver_name("bench-fake");
    response->set_driver_version("0");
    return grpc::Status::OK;
  }

  grpc::Status CreateSandbox(grpc::ServerContext*, const v1::CreateSandboxRequest* request,
                             v1::CreateSandboxResponse*) override {
    std::lock_guard lock(mutex_);
    const std::string& id = request->sandbox().id();
    if (sandboxes_.count(id)) return {grpc::StatusCode::ALREADY_EXISTS, "sandbox " + id};
    v1::DriverSandbox& sandbox = sandboxes_[id];
    sandbox = request->sandbox();
    sandbox.mutable_spec()->clear_sandbox_token();
    set_ready(sandbox, "False", "Starting");
    publish_snapshot(sandbox);
    due_.push_back({Clock::now() + std::chrono::milliseconds(config_.ready_ms), id});
    changed_.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status DeleteSandbox(grpc::ServerContext*, const v1::DeleteSandboxRequest* request,
                             v1::DeleteSandboxResponse* response) override {
    std::lock_guard lock(mutex_);
    auto it = sandboxes_.find(request->sandbox_id());
    if (it == sandboxes_.end() || it->second.status().deleting()) {
      response->set_deleted(false);
      return grpc::Status::OK;
    }
    it->second.mutable_status()->set_deleting(true);
    publish_snapshot(it->second);
    due_.push_back(
        {Clock::now() + std::chrono::milliseconds(config_.ready_ms / 2), it->first, true});
    changed_.notify_all();
    response->set_deleted(true);
    return grpc::Status::OK;
  }

  // A snapshot of every sandbox, then each change as it is published.
  grpc::Status WatchSandboxes(grpc::ServerContext* context, const v1::WatchSandboxesRequest*,
                              grpc::ServerWriter<v1::WatchSandboxesEvent>* writer) override {
    std::vector<v1::WatchSandboxesEvent> pending;
    std::size_t position = 0;
    {
      std::lock_guard lock(mutex_);
      position = log_.size();
      for (const auto& [id, sandbox] : sandboxes_) {
        pending.emplace_back().mutable_sandbox()->mutable_sandbox()->CopyFrom(sandbox);
      }
    }
    while (!context->IsCancelled()) {
      for (const auto& event : pending) {
        if (!writer->Write(event)) return grpc::Status::CANCELLED;
      }
      pending.clear();
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::milliseconds(50),
                        [&] { return log_.size() > position || stopping_; });
      if (stopping_) return {grpc::StatusCode::UNAVAILABLE, "the fake driver is stopping"};
      pending.assign(log_.begin() + static_cast<std::ptrdiff_t>(position), log_.end());
      position = log_.size();
    }
    return grpc::Status::CANCELLED;
  }

 private:
  static void set_ready(v1::DriverSandbox& sandbox, const char* status, const char* reason) {
    auto* conditions = sandbox.mutable_status()->mutable_conditions();
    conditions->Clear();
    v1::DriverCondition& ready = *conditions->Add();
    ready.set_type("Ready");
    ready.set_status(status);
    ready.set_reason(reason);
  }

  // Callers hold mutex_.
  void publish_snapshot(const v1::DriverSandbox& sandbox) {
    log_.emplace_back().mutable_sandbox()->mutable_sandbox()->CopyFrom(sandbox);
  }

  void apply(const Due& due) {
    auto it = sandboxes_.find(due.id);
    if (it == sandboxes_.end()) return;
    if (due.is_deletion) {
      log_.emplace_back().mutable_deleted()->set_sandbox_id(due.id);
      sandboxes_.erase(it);
      return;
    }
    if (it->second.status().deleting()) return;
    bool fails = config_.fail_every > 0 && ++created_ % config_.fail_every == 0;
    if (!fails) {
      set_ready(it->second, "True", "BackendReady");
    } else {
      set_ready(it->second, "False", "ImagePullFailed");
    }
    publish_snapshot(it->second);
  }

  // Applies due changes in order; every delay is the same, so arrival order is due order.
  void run_timer() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (due_.empty()) {
        changed_.wait(lock, [&] { return !due_.empty() || stopping_; });
        continue;
      }
      Due next = due_.front();
      if (Clock::now() < next.at) {
        changed_.wait_until(lock, next.at, [&] { return stopping_; });
        continue;
      }
      due_.pop_front();
      apply(next);
      changed_.notify_all();
    }
  }

  Config config_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, v1::DriverSandbox> sandboxes_;
  std::vector<v1::WatchSandboxesEvent> log_;  // every change, for watchers to catch up on
  std::deque<Due> due_;
  int created_ = 0;
  bool stopping_ = false;
  std::thread timer_;
};

Config parse(int argc, char** argv) {
  Config config;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string option = argv[i];
    if (option == "--socket") {
      config.socket_path = argv[i + 1];
    } else if (option == "--ready-ms") {
      config.ready_ms = std::stoi(argv[i + 1]);
    } else if (option == "--fail-every") {
      config.fail_every = std::stoi(argv[i + 1]);
    }
  }
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  Config config = parse(argc, argv);
  if (config.socket_path.empty()) {
    std::fputs("usage: bench_gateway_fake_driver --socket PATH [--ready-ms N] [--fail-every K]\n",
               stderr);
    return 2;
  }

  // Blocked before gRPC starts its threads, so that only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  FakeDriver driver(config);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + config.socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(&driver);
  auto server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "bench_gateway_fake_driver: cannot serve on %s\n",
                 config.socket_path.c_str());
    return 1;
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

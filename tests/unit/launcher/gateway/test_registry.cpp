// The service's state machine without MPI or gRPC transport: the registry is driven the way
// the event loop drives it (commands out, node events in).
#include <catch2/catch.hpp>

#include <future>
#include <thread>

#include "launcher/gateway/sandbox_registry.hpp"

using namespace oshpc::gateway;
using oshpc::node_agent::EventType;
using oshpc::node_agent::FailureReason;
using oshpc::node_agent::SandboxEvent;

namespace {

ServiceSettings settings() {
  ServiceSettings s;
  s.default_image = "img.sqsh";
  return s;
}

// Two ranks of two slots, both staged.
std::unique_ptr<SandboxRegistry> make_registry() {
  auto registry = std::make_unique<SandboxRegistry>(settings(), "svc",
                                                    std::vector<RankSlots>{{"n0", 2}, {"n1", 2}});
  registry->on_rank_ready(0, "");
  registry->on_rank_ready(1, "");
  return registry;
}

api::DriverSandbox request(const std::string& id) {
  api::DriverSandbox s;
  s.set_id(id);
  s.set_name(id);
  s.mutable_spec()->add_command("sleep");
  s.mutable_spec()->set_sandbox_token("tok-" + id);
  return s;
}

SandboxEvent node_event(EventType type, std::int64_t handle,
                        FailureReason reason = FailureReason::kNone) {
  SandboxEvent event;
  event.type = type;
  event.index = handle;
  event.reason = reason;
  return event;
}

const api::DriverCondition& ready(const api::DriverSandbox& s) {
  REQUIRE(s.status().conditions_size() == 1);
  REQUIRE(s.status().conditions(0).type() == "Ready");
  return s.status().conditions(0);
}

grpc::StatusCode code_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const RpcError& e) {
    return e.code();
  }
  return grpc::StatusCode::OK;
}

}  // namespace

TEST_CASE("create places sandboxes on the rank with most free slots, then refuses when full") {
  SandboxRegistry registry(settings(), "svc", {{"n0", 2}, {"n1", 2}});
  for (const char* id : {"a", "b", "c", "d"}) registry.create(request(id));
  auto commands = registry.take_commands();
  REQUIRE(commands.size() == 4);
  CHECK(commands[0].rank == 0);
  CHECK(commands[1].rank == 1);
  CHECK(commands[2].rank == 0);
  CHECK(commands[3].rank == 1);
  CHECK(commands[0].kind == NodeCommandKind::kLaunch);
  CHECK(commands[0].workload.token == "tok-a");
  CHECK(code_of([&] { registry.create(request("e")); }) == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(code_of([&] { registry.create(request("a")); }) == grpc::StatusCode::ALREADY_EXISTS);
}

TEST_CASE("conditions follow the node: staging, starting, ready, exited") {
  SandboxRegistry registry(settings(), "svc", {{"n0", 1}});
  registry.create(request("a"));
  CHECK(ready(registry.get("a")).reason() == "DependenciesNotReady");
  registry.on_rank_ready(0, "");
  CHECK(ready(registry.get("a")).reason() == "Starting");
  registry.on_event(node_event(EventType::kStarted, 0));
  CHECK(ready(registry.get("a")).status() == "True");
  auto exited = node_event(EventType::kExited, 0);
  exited.exit_code = 3;
  registry.on_event(exited);
  CHECK(ready(registry.get("a")).status() == "False");
  CHECK(ready(registry.get("a")).reason() == "ContainerExited");
  CHECK(ready(registry.get("a")).message().find("code 3") != std::string::npos);
  // The stored spec never holds the token.
  CHECK(registry.get("a").spec().sandbox_token().empty());
  CHECK(registry.get("a").status().instance_id() == "n0/rank-0/slot-0");
}

TEST_CASE("stop returns only once the node reports the run ended; start runs it again") {
  auto owned = make_registry();
  SandboxRegistry& registry = *owned;
  registry.create(request("a"));
  registry.take_commands();
  registry.on_event(node_event(EventType::kStarted, 0));

  auto stopped = std::async(std::launch::async, [&] { registry.stop("a", nullptr); });
  CHECK(stopped.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  auto commands = registry.take_commands();
  REQUIRE(commands.size() == 1);
  CHECK(commands[0].kind == NodeCommandKind::kStop);
  registry.on_event(node_event(EventType::kFailed, 0, FailureReason::kStopped));
  stopped.get();
  CHECK(ready(registry.get("a")).reason() == "ContainerStopped");

  registry.stop("a", nullptr);  // idempotent: nothing more to do
  CHECK(registry.take_commands().empty());
  registry.start("a", nullptr);
  commands = registry.take_commands();
  REQUIRE(commands.size() == 1);
  CHECK(commands[0].kind == NodeCommandKind::kLaunch);
  registry.start("a", nullptr);  // idempotent while it runs
  CHECK(registry.take_commands().empty());
  // A late start report of the run that was stopped is fenced off by the stop itself.
  registry.on_event(node_event(EventType::kStarted, 0));
  CHECK(ready(registry.get("a")).status() == "True");
}

TEST_CASE("delete waits for the node to remove the files, then the sandbox is gone") {
  auto owned = make_registry();
  SandboxRegistry& registry = *owned;
  registry.create(request("a"));
  registry.take_commands();
  auto watch = registry.watch();
  while (watch->pop(std::chrono::milliseconds(0))) {
  }

  auto removed = std::async(std::launch::async, [&] { return registry.remove("a", nullptr); });
  std::vector<NodeCommand> commands;
  while (commands.empty()) {
    commands = registry.take_commands();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(commands[0].kind == NodeCommandKind::kRemove);
  CHECK(registry.get("a").status().deleting());
  registry.on_event(node_event(EventType::kFailed, 0, FailureReason::kStopped));
  registry.on_event(node_event(EventType::kRemoved, 0));
  CHECK(removed.get());
  CHECK(code_of([&] { registry.get("a"); }) == grpc::StatusCode::NOT_FOUND);
  CHECK_FALSE(registry.remove("a", nullptr));

  bool saw_deleted = false;
  while (auto event = watch->pop(std::chrono::milliseconds(0))) {
    if (event->has_deleted()) saw_deleted = event->deleted().sandbox_id() == "a";
  }
  CHECK(saw_deleted);
  // Its slot is free again.
  registry.create(request("b"));
  registry.create(request("c"));
  registry.create(request("d"));
  registry.create(request("e"));
}

TEST_CASE("a new watch stream starts with a snapshot of every sandbox") {
  auto owned = make_registry();
  SandboxRegistry& registry = *owned;
  registry.create(request("a"));
  registry.create(request("b"));
  auto watch = registry.watch();
  std::vector<std::string> snapshot;
  while (auto event = watch->pop(std::chrono::milliseconds(0))) {
    REQUIRE(event->has_sandbox());
    snapshot.push_back(event->sandbox().sandbox().id());
  }
  CHECK(snapshot == std::vector<std::string>{"a", "b"});
  registry.on_event(node_event(EventType::kStarted, 1));
  auto change = watch->pop(std::chrono::milliseconds(0));
  REQUIRE(change);
  CHECK(change->sandbox().sandbox().id() == "b");
}

TEST_CASE("a failed node fails its sandboxes' runs and gets no new ones") {
  SandboxRegistry registry(settings(), "svc", {{"n0", 1}, {"n1", 1}});
  registry.on_rank_ready(1, "cannot stage the image");
  registry.create(request("a"));
  CHECK(registry.get("a").status().instance_id() == "n0/rank-0/slot-0");
  CHECK(code_of([&] { registry.create(request("b")); }) == grpc::StatusCode::FAILED_PRECONDITION);

  registry.on_event(node_event(EventType::kFailed, 0, FailureReason::kNodeFailed));
  CHECK(ready(registry.get("a")).reason() == "ImagePullFailed");
}

TEST_CASE("shutting down reports every running sandbox stopped and ends the streams") {
  auto owned = make_registry();
  SandboxRegistry& registry = *owned;
  registry.create(request("a"));
  registry.on_event(node_event(EventType::kStarted, 0));
  auto watch = registry.watch();
  registry.shut_down("the allocation is ending");
  CHECK(ready(registry.get("a")).reason() == "ContainerStopped");
  while (watch->pop(std::chrono::milliseconds(0))) {
  }
  auto status = watch->closed_status();
  REQUIRE(status);
  CHECK(status->error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(code_of([&] { registry.create(request("b")); }) == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("a stop returns when the run it stopped ends, even if a start began a new one") {
  auto owned = make_registry();
  SandboxRegistry& registry = *owned;
  registry.create(request("a"));
  registry.take_commands();
  registry.on_event(node_event(EventType::kStarted, 0));

  auto stopped = std::async(std::launch::async, [&] { registry.stop("a", nullptr); });
  while (registry.take_commands().empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  registry.on_event(node_event(EventType::kFailed, 0, FailureReason::kStopped));
  // A start comes in before the stopping caller has woken up.
  registry.start("a", nullptr);
  CHECK(stopped.wait_for(std::chrono::seconds(3)) == std::future_status::ready);
}

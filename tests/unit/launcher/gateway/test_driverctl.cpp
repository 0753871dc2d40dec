// oshpc-driverctl against an in-process fake ComputeDriver on a temporary UNIX socket: the
// command line, the request it builds, what it prints, and its exit codes. The real server's
// contract tests are elsewhere; this fake only answers what each case needs.
#include <catch2/catch.hpp>

#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "compute_driver.grpc.pb.h"
#include "launcher/driverctl/client.hpp"
#include "launcher/driverctl/invocation.hpp"
#include "launcher/driverctl/output.hpp"
#include "launcher/driverctl/sandbox_request.hpp"

namespace v1 = openshell::compute::v1;
using namespace oshpc::driverctl;

namespace {

// A directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "driverctl.XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name, const std::string& text = "") const {
    std::string path = (path_ / name).string();
    if (!text.empty()) std::ofstream(path) << text;
    return path;
  }

 private:
  std::filesystem::path path_;
};

// Answers from a small table of sandboxes; records what it was sent.
class FakeDriver final : public v1::ComputeDriver::Service {
 public:
  std::mutex mutex;
  v1::DriverSandbox last_created;
  std::atomic<int> watch_events = 0;  // snapshots sent on each watch before it idles
  std::atomic<bool> watch_ends_with_error = false;

  grpc::Status GetCapabilities(grpc::ServerContext*, const v1::GetCapabilitiesRequest*,
                               v1::GetCapabilitiesResponse* response) override {
    response->set_driver_name("fake");
    response->set_driver_version("0");
    return grpc::Status::OK;
  }

  grpc::Status CreateSandbox(grpc::ServerContext*, const v1::CreateSandboxRequest* request,
                             v1::CreateSandboxResponse*) override {
    std::lock_guard lock(mutex);
    last_created = request->sandbox();
    return grpc::Status::OK;
  }

  grpc::Status GetSandbox(grpc::ServerContext*, const v1::GetSandboxRequest* request,
                          v1::GetSandboxResponse* response) override {
    std::lock_guard lock(mutex);
    if (request->sandbox_id() != last_created.id() || last_created.id().empty()) {
      return {grpc::StatusCode::NOT_FOUND, "sandbox " + request->sandbox_id() + " not found"};
    }
    *response->mutable_sandbox() = last_created;
    return grpc::Status::OK;
  }

  grpc::Status DeleteSandbox(grpc::ServerContext*, const v1::DeleteSandboxRequest*,
                             v1::DeleteSandboxResponse* response) override {
    response->set_deleted(false);
    return grpc::Status::OK;
  }

  grpc::Status WatchSandboxes(grpc::ServerContext* context, const v1::WatchSandboxesRequest*,
                              grpc::ServerWriter<v1::WatchSandboxesEvent>* writer) override {
    for (int i = 0; i < watch_events; ++i) {
      v1::WatchSandboxesEvent event;
      event.mutable_sandbox()->mutable_sandbox()->set_id("w" + std::to_string(i));
      writer->Write(event);
    }
    if (watch_ends_with_error) return {grpc::StatusCode::ABORTED, "watch lagged"};
    while (!context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return grpc::Status::CANCELLED;
  }
};

// The fake serving on socket_path until destroyed.
class FakeServer {
 public:
  explicit FakeServer(const std::string& socket_path) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
    builder.RegisterService(&driver);
    server_ = builder.BuildAndStart();
    // Not REQUIRE: one test starts the server on another thread, where Catch cannot assert.
    if (!server_) throw std::runtime_error("cannot serve on " + socket_path);
  }
  ~FakeServer() { server_->Shutdown(std::chrono::system_clock::now()); }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  FakeDriver driver;

 private:
  std::unique_ptr<grpc::Server> server_;
};

Invocation parse(std::vector<const char*> args) {
  args.insert(args.begin(), "oshpc-driverctl");
  return parse_invocation(static_cast<int>(args.size()), args.data());
}

struct Result {
  Exit exit;
  std::string out;
  std::string err;
};

Result run_with(std::vector<const char*> args) {
  std::ostringstream out;
  std::ostringstream err;
  Exit exit = run(parse(std::move(args)), out, err);
  return {exit, out.str(), err.str()};
}

std::size_t line_count(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

TEST_CASE("the command line becomes an invocation") {
  auto invocation = parse({"--socket", "/s", "get", "sb-1", "--name", "n1"});
  CHECK(invocation.command == Command::kGet);
  CHECK(invocation.socket_path == "/s");
  CHECK(invocation.target == "sb-1");
  CHECK(invocation.target_name == "n1");

  invocation = parse({"create", "--socket", "/s", "--id", "a", "--env", "A=1,2", "--env", "B=x=y",
                      "--gpus", "2", "--tty", "--", "sleep", "--count", "3600"});
  CHECK(invocation.command == Command::kCreate);
  CHECK(invocation.sandbox.id == "a");
  REQUIRE(invocation.sandbox.environment.size() == 2);
  CHECK(invocation.sandbox.environment[0] == KeyValue{"A", "1,2"});
  CHECK(invocation.sandbox.environment[1] == KeyValue{"B", "x=y"});
  CHECK(invocation.sandbox.gpus == 2u);
  CHECK(invocation.sandbox.tty);
  CHECK(invocation.sandbox.command == std::vector<std::string>{"sleep", "--count", "3600"});

  invocation = parse({"--socket", "/s", "--wait-for-socket", "2.5", "watch", "--count", "3"});
  CHECK(invocation.wait_for_socket_s == 2.5);
  CHECK(invocation.watch_count == 3);
  CHECK_FALSE(invocation.watch_timeout_s);

  CHECK(parse({"--help"}).action == Action::kHelp);
  CHECK(parse({"ensure-workspace", "--socket", "/s"}).target.empty());
  CHECK(parse({"delete-workspace", "ws", "--socket", "/s"}).target == "ws");
}

TEST_CASE("usage errors name the option or argument") {
  auto usage_error = [](std::vector<const char*> args) {
    try {
      parse(std::move(args));
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(usage_error({}), Catch::Contains("no COMMAND"));
  CHECK_THAT(usage_error({"caps"}), Catch::Contains("--socket"));
  CHECK_THAT(usage_error({"--socket", "/s", "frob"}), Catch::Contains("unknown command 'frob'"));
  CHECK_THAT(usage_error({"--socket", "/s", "get"}), Catch::Contains("get ID"));
  CHECK_THAT(usage_error({"--socket", "/s", "get", "a", "b"}), Catch::Contains("'b'"));
  CHECK_THAT(usage_error({"--socket", "/s", "create"}), Catch::Contains("--id"));
  CHECK_THAT(usage_error({"--socket", "/s", "list", "--gpus", "1"}),
             Catch::Contains("--gpus is an option of validate and create, not of list"));
  CHECK_THAT(usage_error({"--socket", "/s", "caps", "--count", "1"}), Catch::Contains("watch"));
  CHECK_THAT(usage_error({"--socket", "/s", "list", "--", "x"}), Catch::Contains("after --"));
  CHECK_THAT(usage_error({"--socket", "/s", "watch", "--count", "0"}), Catch::Contains("'0'"));
  CHECK_THAT(usage_error({"--socket", "/s", "watch", "--timeout", "1x"}), Catch::Contains("1x"));
  CHECK_THAT(usage_error({"--socket", "/s", "validate", "--gpus", "-1"}), Catch::Contains("-1"));
  CHECK_THAT(usage_error({"--socket", "/s", "validate", "--env", "A"}), Catch::Contains("KEY="));
  CHECK_THAT(usage_error({"--socket", "/s", "--wait-for-socket", "x", "caps"}),
             Catch::Contains("--wait-for-socket"));
  CHECK_THAT(usage_error({"--socket", "/s", "caps", "--bogus"}), Catch::Contains("bogus"));
}

TEST_CASE("options override the --spec-json sandbox and merge into its maps") {
  TempDir dir;
  auto json = dir.file("spec.json", R"({"id":"x","name":"gateway-name","spec":{
      "environment":{"A":"0","C":"3"},"command":["old"],
      "template":{"image":"old.sqsh","labels":{"l":"1"}}}})");
  auto token = dir.file("token", "tok-123\n");
  auto invocation =
      parse({"create", "--socket", "/s", "--spec-json", json.c_str(), "--env", "A=1", "--image",
             "new.sqsh", "--token-file", token.c_str(), "--cpu-limit", "500m", "--", "sleep", "1"});
  v1::DriverSandbox sandbox = build_sandbox(invocation.sandbox);
  CHECK(sandbox.id() == "x");
  CHECK(sandbox.name() == "gateway-name");
  CHECK(sandbox.spec().environment().at("A") == "1");
  CHECK(sandbox.spec().environment().at("C") == "3");
  CHECK(sandbox.spec().template_().image() == "new.sqsh");
  CHECK(sandbox.spec().template_().labels().at("l") == "1");
  CHECK(sandbox.spec().template_().resources().cpu_limit() == "500m");
  CHECK(sandbox.spec().command_size() == 2);
  CHECK(sandbox.spec().sandbox_token() == "tok-123");
}

TEST_CASE("the name defaults to the id") {
  SandboxOptions options;
  options.id = "sb-7";
  CHECK(build_sandbox(options).name() == "sb-7");
}

TEST_CASE("unreadable input files are input errors, and never quote the token") {
  TempDir dir;
  SandboxOptions options;
  options.token_path = dir.file("empty-token", "");
  std::ofstream(options.token_path).close();
  CHECK_THROWS_AS(build_sandbox(options), InputError);
  options.token_path = dir.file("absent");
  CHECK_THROWS_WITH(build_sandbox(options), Catch::Contains("absent"));

  options.token_path.clear();
  options.spec_json_path =
      dir.file("bad.json", R"({"spec":{"sandbox_token":"SECRET-1" "tty":true}})");
  CHECK_THROWS_WITH(build_sandbox(options), !Catch::Contains("SECRET-1"));
  options.spec_json_path = dir.file("typed.json", R"({"spec":{"sandbox_token":424242}})");
  CHECK_THROWS_WITH(build_sandbox(options), !Catch::Contains("424242"));
  options.spec_json_path = dir.file("unknown.json", R"({"spec":{"bogus":1}})");
  CHECK_THROWS_WITH(build_sandbox(options), Catch::Contains("bogus"));
}

TEST_CASE("printed messages are one JSON line with defaults shown and tokens redacted") {
  v1::DeleteSandboxResponse deleted;
  CHECK(to_json_line(deleted) == R"({"deleted":false})");

  v1::ListSandboxesResponse list;
  list.add_sandboxes()->mutable_spec()->set_sandbox_token("tok-1");
  list.add_sandboxes()->set_id("no-token");
  std::string line = to_json_line(list);
  CHECK(line.find("tok-1") == std::string::npos);
  CHECK(line.find(R"j("sandbox_token":"(redacted)")j") != std::string::npos);
  CHECK(line.find('\n') == std::string::npos);
  // The original is untouched.
  CHECK(list.sandboxes(0).spec().sandbox_token() == "tok-1");
}

TEST_CASE("status codes print by their canonical names") {
  CHECK(status_code_name(grpc::StatusCode::NOT_FOUND) == "NOT_FOUND");
  CHECK(status_code_name(grpc::StatusCode::FAILED_PRECONDITION) == "FAILED_PRECONDITION");
  CHECK(status_code_name(grpc::StatusCode::UNAVAILABLE) == "UNAVAILABLE");
  CHECK(status_code_name(grpc::StatusCode::UNAUTHENTICATED) == "UNAUTHENTICATED");
}

TEST_CASE("RPCs against a fake driver print responses and errors") {
  TempDir dir;
  auto socket = dir.file("driver.sock");
  FakeServer server(socket);
  const char* s = socket.c_str();

  auto caps = run_with({"--socket", s, "caps"});
  CHECK(caps.exit == Exit::kOk);
  CHECK(caps.out == R"({"driver_name":"fake","driver_version":"0","default_image":"",)"
                    R"("gateway_manages_lifecycle":false})"
                    "\n");

  auto missing = run_with({"--socket", s, "get", "nope"});
  CHECK(missing.exit == Exit::kRpcFailed);
  CHECK(missing.out.empty());
  CHECK(missing.err == "oshpc-driverctl: error: NOT_FOUND: sandbox nope not found\n");

  auto token = dir.file("token", "tok-SECRET\n");
  auto created = run_with({"--socket", s, "create", "--id", "sb-1", "--token-file", token.c_str(),
                           "--", "sleep", "3600"});
  CHECK(created.exit == Exit::kOk);
  CHECK(created.out == "{}\n");
  {
    std::lock_guard lock(server.driver.mutex);
    CHECK(server.driver.last_created.spec().sandbox_token() == "tok-SECRET");
    CHECK(server.driver.last_created.name() == "sb-1");
  }

  // A driver that echoes the token back does not get it printed.
  auto got = run_with({"--socket", s, "get", "sb-1"});
  CHECK(got.exit == Exit::kOk);
  CHECK(got.out.find("tok-SECRET") == std::string::npos);
  CHECK(got.out.find(R"("id":"sb-1")") != std::string::npos);

  CHECK(run_with({"--socket", s, "delete", "sb-1"}).out == "{\"deleted\":false}\n");

  auto unimplemented = run_with({"--socket", s, "ensure-workspace", "ws"});
  CHECK(unimplemented.exit == Exit::kRpcFailed);
  CHECK_THAT(unimplemented.err, Catch::StartsWith("oshpc-driverctl: error: UNIMPLEMENTED: "));
}

TEST_CASE("watch ends after --count messages, after --timeout, or with the stream") {
  TempDir dir;
  auto socket = dir.file("driver.sock");
  FakeServer server(socket);
  const char* s = socket.c_str();
  server.driver.watch_events = 3;

  auto counted = run_with({"--socket", s, "watch", "--count", "2"});
  CHECK(counted.exit == Exit::kOk);
  CHECK(line_count(counted.out) == 2);
  CHECK_THAT(counted.out, Catch::StartsWith(R"({"sandbox":{"sandbox":{"id":"w0")"));

  auto timed = run_with({"--socket", s, "watch", "--timeout", "0.3"});
  CHECK(timed.exit == Exit::kOk);
  CHECK(line_count(timed.out) == 3);
  CHECK(timed.err.empty());

  server.driver.watch_ends_with_error = true;
  auto ended = run_with({"--socket", s, "watch"});
  CHECK(ended.exit == Exit::kRpcFailed);
  CHECK(line_count(ended.out) == 3);
  CHECK(ended.err == "oshpc-driverctl: error: ABORTED: watch lagged\n");
}

TEST_CASE("an absent driver is UNAVAILABLE") {
  TempDir dir;
  auto socket = dir.file("absent.sock");
  auto result = run_with({"--socket", socket.c_str(), "list"});
  CHECK(result.exit == Exit::kRpcFailed);
  CHECK_THAT(result.err, Catch::StartsWith("oshpc-driverctl: error: UNAVAILABLE: "));

  auto waited = run_with({"--socket", socket.c_str(), "--wait-for-socket", "0.3", "list"});
  CHECK(waited.exit == Exit::kRpcFailed);
  CHECK_THAT(waited.err, Catch::Contains("UNAVAILABLE") && Catch::Contains(socket));
}

TEST_CASE("--wait-for-socket connects to a driver that starts late") {
  TempDir dir;
  auto socket = dir.file("late.sock");
  std::unique_ptr<FakeServer> server;
  std::thread starter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    server = std::make_unique<FakeServer>(socket);
  });
  auto started = std::chrono::steady_clock::now();
  auto result = run_with({"--socket", socket.c_str(), "--wait-for-socket", "10", "caps"});
  auto waited = std::chrono::steady_clock::now() - started;
  starter.join();
  CHECK(result.exit == Exit::kOk);
  CHECK(result.err.empty());
  // Redialled about every 250 ms, not on gRPC's default back-off of seconds.
  CHECK(waited < std::chrono::milliseconds(2500));
}

// Create-to-Ready latency and create throughput of a ComputeDriver service, measured the way
// the OpenShell gateway sees them: through one WatchSandboxes stream.
//
//   bench_gateway --socket PATH --image IMG [--count 100] [--concurrency 8]
//                 [--wait-for-socket SECONDS] [--timeout SECONDS] [--token-file FILE]
//                 [-- COMMAND...]          (default command: sleep 3600)
//
// It opens the watch first, then creates sandboxes bench-0..N-1 with C CreateSandbox calls in
// flight, and takes each sandbox's time from the start of its create call to the first watch
// snapshot whose Ready condition is True. Then it deletes them all, C at a time, and waits for
// their `deleted` events. It prints p50/p99/max create-to-Ready in ms and creates per second
// (N over the time from the first create to the last Ready; "-" and null unless all N became
// Ready) as a table and as one JSON line, the last line of stdout.
// Exit status: 0 when every sandbox became Ready and was deleted; 1 when one failed (a create
// error, Ready=False with a reason other than Starting or DependenciesNotReady, no Ready or no
// deleted event within --timeout, or the watch ended); 2 for a usage error.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <cxxopts.hpp>

#include "common/text_number.hpp"
#include "compute_driver.grpc.pb.h"
#include "launcher/driverctl/client.hpp"
#include "launcher/driverctl/output.hpp"

namespace {

namespace v1 = openshell::compute::v1;
using Clock = std::chrono::steady_clock;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
// The driver may want a token; with `sleep` as the workload nothing reads it.
constexpr const char* kPlaceholderToken = "oshpc-bench-placeholder-token";

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Config {
  std::string socket_path;
  std::string image;
  int count = 100;
  int concurrency = 8;
  double wait_for_socket_s = 0;
  double timeout_s = 600;
  std::string token = kPlaceholderToken;
  std::vector<std::string> command{"sleep", "3600"};
};

// What the bench knows about one sandbox; times are unset until they happen.
struct Sandbox {
  std::string id;
  Clock::time_point create_started;
  std::optional<Clock::time_point> ready_at;
  std::optional<std::string> failure;  // why it will never be Ready
  bool deleting = false;               // our DeleteSandbox was sent: snapshots no longer judged
  bool awaiting_deleted_event = false;
  bool deleted = false;
};

// --- options ---------------------------------------------------------------------------------

double parse_seconds(const std::string& option, const std::string& text) {
  if (auto seconds = oshpc::parse_seconds_text(text)) return *seconds;
  throw UsageError(option + " expects 0 or more seconds (got '" + text + "')");
}

std::string read_token(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  std::string token = text.str();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (!file || token.empty()) throw UsageError("--token-file: cannot read a token from " + path);
  return token;
}

Config parse_config(int argc, char** argv) {
  int separator = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") {
      separator = i;
      break;
    }
  }
  cxxopts::Options parser("bench_gateway", "Create-to-Ready latency of a ComputeDriver service.");
  // clang-format off
  parser.add_options()
    ("socket", "the driver's UNIX socket", cxxopts::value<std::string>(), "PATH")
    ("image", "spec.template.image of every sandbox", cxxopts::value<std::string>(), "IMG")
    ("count", "sandboxes to create", cxxopts::value<int>()->default_value("100"), "N")
    ("concurrency", "CreateSandbox (and DeleteSandbox) calls in flight",
     cxxopts::value<int>()->default_value("8"), "C")
    ("wait-for-socket", "wait up to SECONDS for the driver to accept a connection",
     cxxopts::value<std::string>()->default_value("0"), "SECONDS")
    ("timeout", "give up waiting for Ready (and for deleted events) after SECONDS",
     cxxopts::value<std::string>()->default_value("600"), "SECONDS")
    ("token-file", "spec.sandbox_token from FILE (default: a placeholder)",
     cxxopts::value<std::string>(), "FILE")
    ("h,help", "show this help");
  // clang-format on
  cxxopts::ParseResult result;
  try {
    result = parser.parse(separator, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what());
  }
  if (result.count("help")) {
    std::fputs((parser.help() + "  -- COMMAND...          the sandboxes' command (default: sleep "
                                "3600)\n")
                   .c_str(),
               stdout);
    std::exit(0);
  }
  if (!result.unmatched().empty()) {
    throw UsageError("unexpected argument '" + result.unmatched().front() +
                     "' (put the sandbox command after --)");
  }

  Config config;
  if (!result.count("socket")) throw UsageError("--socket PATH is required");
  if (!result.count("image")) throw UsageError("--image IMG is required");
  config.socket_path = result["socket"].as<std::string>();
  config.image = result["image"].as<std::string>();
  config.count = result["count"].as<int>();
  config.concurrency = result["concurrency"].as<int>();
  if (config.count < 1) throw UsageError("--count must be at least 1");
  if (config.concurrency < 1) throw UsageError("--concurrency must be at least 1");
  config.wait_for_socket_s =
      parse_seconds("--wait-for-socket", result["wait-for-socket"].as<std::string>());
  config.timeout_s = parse_seconds("--timeout", result["timeout"].as<std::string>());
  if (result.count("token-file")) config.token = read_token(result["token-file"].as<std::string>());
  if (separator < argc) {
    config.command.assign(argv + separator + 1, argv + argc);
    if (config.command.empty()) throw UsageError("nothing after --: give the sandboxes' command");
  }
  return config;
}

// --- shared state: what the creators, deleters and the watch learn -------------------------

std::string status_text(const grpc::Status& status) {
  return std::string(oshpc::driverctl::status_code_name(status.error_code())) + ": " +
         status.error_message();
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Ready=False with these reasons means "not yet"; with any other reason the sandbox is lost.
bool is_transient_reason(std::string_view reason) {
  return equals_ignoring_case(reason, "Starting") ||
         equals_ignoring_case(reason, "DependenciesNotReady");
}

class Board {
 public:
  explicit Board(int count) {
    for (int i = 0; i < count; ++i) {
      std::string id = "bench-" + std::to_string(i);
      index_.emplace(id, sandboxes_.size());
      sandboxes_.push_back(Sandbox{id});
    }
  }

  std::size_t size() const { return sandboxes_.size(); }
  const std::string& id(std::size_t i) const { return sandboxes_[i].id; }

  void create_started(std::size_t i) {
    std::lock_guard lock(mutex_);
    sandboxes_[i].create_started = Clock::now();
  }

  void fail(std::size_t i, std::string why) {
    std::lock_guard lock(mutex_);
    if (!sandboxes_[i].failure) sandboxes_[i].failure = std::move(why);
    changed_.notify_all();
  }

  void delete_sent(std::size_t i, bool expect_event) {
    std::lock_guard lock(mutex_);
    sandboxes_[i].deleting = true;
    sandboxes_[i].awaiting_deleted_event = expect_event && !sandboxes_[i].deleted;
    changed_.notify_all();
  }

  void deleting(std::size_t i) {
    std::lock_guard lock(mutex_);
    sandboxes_[i].deleting = true;
  }

  // A watch message: a snapshot judged by its Ready condition, or a deletion.
  void observe(const v1::WatchSandboxesEvent& event) {
    std::lock_guard lock(mutex_);
    if (event.has_sandbox()) observe_snapshot(event.sandbox().sandbox());
    if (event.has_deleted()) observe_deleted(event.deleted().sandbox_id());
    changed_.notify_all();
  }

  void watch_ended(const grpc::Status& status) {
    std::lock_guard lock(mutex_);
    watch_error_ = "the watch stream ended: " + status_text(status);
    changed_.notify_all();
  }

  // Waits until every sandbox is Ready or failed; false on timeout or a dead watch.
  bool wait_all_settled(Clock::time_point deadline) {
    return wait_until(deadline, [&](const Sandbox& s) { return s.ready_at || s.failure; });
  }

  // Waits until every deleted sandbox that owes a `deleted` event has sent it.
  bool wait_all_deleted(Clock::time_point deadline) {
    return wait_until(deadline, [&](const Sandbox& s) { return !s.awaiting_deleted_event; });
  }

  std::vector<Sandbox> snapshot() const {
    std::lock_guard lock(mutex_);
    return sandboxes_;
  }

  std::optional<std::string> watch_error() const {
    std::lock_guard lock(mutex_);
    return watch_error_;
  }

 private:
  Sandbox* find(const std::string& id) {
    auto it = index_.find(id);
    return it == index_.end() ? nullptr : &sandboxes_[it->second];
  }

  void observe_snapshot(const v1::DriverSandbox& snapshot) {
    Sandbox* sandbox = find(snapshot.id());
    // Teardown snapshots (Ready=False while deleting) say nothing about how the create went.
    if (!sandbox || sandbox->deleting || snapshot.status().deleting()) return;
    for (const auto& condition : snapshot.status().conditions()) {
      if (condition.type() != "Ready") continue;
      if (equals_ignoring_case(condition.status(), "True")) {
        if (!sandbox->ready_at && !sandbox->failure) sandbox->ready_at = Clock::now();
      } else if (equals_ignoring_case(condition.status(), "False") &&
                 !is_transient_reason(condition.reason()) && !sandbox->failure) {
        sandbox->failure = "Ready=False " + condition.reason();
        if (!condition.message().empty()) *sandbox->failure += ": " + condition.message();
      }
      break;  // the gateway reads the first Ready condition only
    }
  }

  void observe_deleted(const std::string& id) {
    Sandbox* sandbox = find(id);
    if (!sandbox) return;
    sandbox->deleted = true;
    sandbox->awaiting_deleted_event = false;
  }

  bool wait_until(Clock::time_point deadline, const std::function<bool(const Sandbox&)>& done) {
    std::unique_lock lock(mutex_);
    auto all_done = [&] { return std::all_of(sandboxes_.begin(), sandboxes_.end(), done); };
    changed_.wait_until(lock, deadline, [&] { return all_done() || watch_error_; });
    return all_done();
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Sandbox> sandboxes_;
  std::map<std::string, std::size_t> index_;
  std::optional<std::string> watch_error_;
};

// --- the driver side -------------------------------------------------------------------------

// Whole milliseconds, capped at a day: a deadline that far off only has to not expire.
std::chrono::milliseconds capped_ms(double seconds) {
  return std::chrono::milliseconds(
      static_cast<std::int64_t>(std::min(std::ceil(seconds * 1000), 86'400'000.0)));
}

Clock::time_point after_seconds(double seconds) {
  return Clock::now() + capped_ms(seconds);
}

std::chrono::system_clock::time_point system_after_seconds(double seconds) {
  return std::chrono::system_clock::now() + capped_ms(seconds);
}

// GetCapabilities, also the check that a driver is there at all. Returns "name version".
std::optional<std::string> probe_driver(v1::ComputeDriver::Stub& stub, const Config& config) {
  grpc::ClientContext context;
  if (config.wait_for_socket_s > 0) {
    context.set_wait_for_ready(true);
    context.set_deadline(system_after_seconds(config.wait_for_socket_s));
  }
  v1::GetCapabilitiesResponse capabilities;
  grpc::Status status = stub.GetCapabilities(&context, {}, &capabilities);
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::fprintf(stderr,
                 "bench_gateway: error: UNAVAILABLE: no driver accepted a connection on %s "
                 "within %g s\n",
                 config.socket_path.c_str(), config.wait_for_socket_s);
    return std::nullopt;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "bench_gateway: error: no driver on %s: GetCapabilities: %s\n",
                 config.socket_path.c_str(), status_text(status).c_str());
    return std::nullopt;
  }
  return capabilities.driver_name() + " " + capabilities.driver_version();
}

// Reads the watch stream into the board until it ends or is cancelled.
void watch_loop(v1::ComputeDriver::Stub& stub, grpc::ClientContext& context, Board& board) {
  auto reader = stub.WatchSandboxes(&context, {});
  v1::WatchSandboxesEvent event;
  while (reader->Read(&event)) board.observe(event);
  grpc::Status status = reader->Finish();
  if (status.error_code() != grpc::StatusCode::CANCELLED) board.watch_ended(status);
}

v1::CreateSandboxRequest create_request(const Config& config, const std::string& id) {
  v1::CreateSandboxRequest request;
  v1::DriverSandbox& sandbox = *request.mutable_sandbox();
  sandbox.set_id(id);
  sandbox.set_name(id);
  v1::DriverSandboxSpec& spec = *sandbox.mutable_spec();
  spec.mutable_template_()->set_image(config.image);
  spec.set_sandbox_token(config.token);
  for (const auto& arg : config.command) spec.add_command(arg);
  return request;
}

// Runs task(i) for i in [0, count) on `concurrency` threads.
void run_concurrently(std::size_t count, int concurrency,
                      const std::function<void(std::size_t)>& task) {
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      for (std::size_t i = next++; i < count; i = next++) task(i);
    });
  }
  for (auto& worker : workers) worker.join();
}

void create_all(v1::ComputeDriver::Stub& stub, const Config& config, Board& board) {
  run_concurrently(board.size(), config.concurrency, [&](std::size_t i) {
    auto request = create_request(config, board.id(i));
    grpc::ClientContext context;
    v1::CreateSandboxResponse response;
    board.create_started(i);
    grpc::Status status = stub.CreateSandbox(&context, request, &response);
    if (!status.ok()) board.fail(i, "CreateSandbox: " + status_text(status));
  });
}

// Deletes every sandbox (failed ones too: a half-created one still holds resources).
void delete_all(v1::ComputeDriver::Stub& stub, const Config& config, Board& board) {
  run_concurrently(board.size(), config.concurrency, [&](std::size_t i) {
    v1::DeleteSandboxRequest request;
    request.set_sandbox_id(board.id(i));
    request.set_sandbox_name(board.id(i));
    grpc::ClientContext context;
    v1::DeleteSandboxResponse response;
    board.deleting(i);
    grpc::Status status = stub.DeleteSandbox(&context, request, &response);
    if (!status.ok()) {
      board.delete_sent(i, false);
      board.fail(i, "DeleteSandbox: " + status_text(status));
      return;
    }
    // deleted=false: already gone, and no `deleted` event is owed.
    board.delete_sent(i, response.deleted());
  });
}

// --- the report ------------------------------------------------------------------------------

struct Report {
  std::size_t count = 0;
  std::size_t ready = 0;
  std::size_t failed = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::optional<double> creates_per_s;  // only when every sandbox became Ready
  double delete_s = 0;
};

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p / 100 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

Report summarise(const std::vector<Sandbox>& sandboxes, double delete_s) {
  Report report;
  report.count = sandboxes.size();
  report.delete_s = delete_s;
  std::vector<double> latencies;
  auto first_create = Clock::time_point::max();
  auto last_ready = Clock::time_point::min();
  for (const auto& sandbox : sandboxes) {
    first_create = std::min(first_create, sandbox.create_started);
    if (sandbox.failure) ++report.failed;
    if (!sandbox.ready_at) continue;
    ++report.ready;
    latencies.push_back(ms_between(sandbox.create_started, *sandbox.ready_at));
    last_ready = std::max(last_ready, *sandbox.ready_at);
  }
  std::sort(latencies.begin(), latencies.end());
  report.p50_ms = percentile(latencies, 50);
  report.p99_ms = percentile(latencies, 99);
  report.max_ms = latencies.empty() ? 0 : latencies.back();
  if (report.ready == report.count && last_ready > first_create) {
    report.creates_per_s =
        static_cast<double>(report.count) / (ms_between(first_create, last_ready) / 1000);
  }
  return report;
}

void print_failures(const std::vector<Sandbox>& sandboxes) {
  int shown = 0;
  for (const auto& sandbox : sandboxes) {
    if (!sandbox.failure && sandbox.ready_at) continue;
    if (++shown > 10) {
      std::fputs("bench_gateway: ... (more)\n", stderr);
      break;
    }
    std::fprintf(stderr, "bench_gateway: %s: %s\n", sandbox.id.c_str(),
                 sandbox.failure ? sandbox.failure->c_str() : "never became Ready");
  }
}

// A JSON string's contents: the driver's name is the one text we did not write ourselves.
std::string json_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

void print_report(const Report& report, const Config& config, const std::string& driver) {
  char rate[32] = "-";
  char rate_json[32] = "null";
  if (report.creates_per_s) {
    std::snprintf(rate, sizeof rate, "%.1f", *report.creates_per_s);
    std::snprintf(rate_json, sizeof rate_json, "%.2f", *report.creates_per_s);
  }
  std::printf("%9s %6s %7s %9s %9s %9s %10s %9s\n", "sandboxes", "ready", "failed", "p50 ms",
              "p99 ms", "max ms", "creates/s", "delete s");
  std::printf("%9zu %6zu %7zu %9.1f %9.1f %9.1f %10s %9.2f\n", report.count, report.ready,
              report.failed, report.p50_ms, report.p99_ms, report.max_ms, rate, report.delete_s);
  std::printf(
      "{\"bench\":\"gateway\",\"driver\":\"%s\",\"count\":%zu,\"concurrency\":%d,\"ready\":%zu,"
      "\"failed\":%zu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"creates_per_s\":%s,"
      "\"delete_s\":%.3f}\n",
      json_escape(driver).c_str(), report.count, config.concurrency, report.ready, report.failed,
      report.p50_ms, report.p99_ms, report.max_ms, rate_json, report.delete_s);
  std::fflush(stdout);
}

// Creates, waits for Ready, deletes, waits for the deleted events; true if all went well.
bool run_bench(v1::ComputeDriver::Stub& stub, const Config& config, const std::string& driver) {
  Board board(config.count);
  grpc::ClientContext watch_context;
  std::thread watcher([&] { watch_loop(stub, watch_context, board); });

  create_all(stub, config, board);
  bool settled = board.wait_all_settled(after_seconds(config.timeout_s));

  auto delete_started = Clock::now();
  delete_all(stub, config, board);
  bool deleted = board.wait_all_deleted(after_seconds(config.timeout_s));
  double delete_s = ms_between(delete_started, Clock::now()) / 1000;

  watch_context.TryCancel();
  watcher.join();

  std::vector<Sandbox> sandboxes = board.snapshot();
  Report report = summarise(sandboxes, delete_s);
  print_report(report, config, driver);
  print_failures(sandboxes);
  if (auto error = board.watch_error()) std::fprintf(stderr, "bench_gateway: %s\n", error->c_str());
  if (!settled) std::fputs("bench_gateway: not every sandbox became Ready in time\n", stderr);
  if (!deleted) std::fputs("bench_gateway: not every deleted event arrived in time\n", stderr);
  return settled && deleted && report.failed == 0 && !board.watch_error();
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  try {
    config = parse_config(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "bench_gateway: error: %s\n(see bench_gateway --help)\n", e.what());
    return kExitUsage;
  }

  // Redials every 250 ms while --wait-for-socket waits, as the gateway does.
  auto stub = v1::ComputeDriver::NewStub(oshpc::driverctl::open_channel(config.socket_path));
  std::optional<std::string> driver = probe_driver(*stub, config);
  if (!driver) return kExitFailed;
  return run_bench(*stub, config, *driver) ? 0 : kExitFailed;
}

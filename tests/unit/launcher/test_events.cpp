#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "launcher/event_codec.hpp"
#include "launcher/event_json.hpp"

using namespace oshpc::launcher;
using namespace oshpc::node_agent;

namespace {

const EventContext kContext{"job", {"n0", "n1"}};

nlohmann::json as_json(const SandboxEvent& event) {
  std::string line;
  append_event_json(line, event, kContext);
  REQUIRE(line.back() == '\n');
  REQUIRE(line.find('\n') == line.size() - 1);
  return nlohmann::json::parse(line);
}

}  // namespace

TEST_CASE("a started event carries identity, pid, latency and cpus") {
  SandboxEvent e;
  e.type = EventType::kStarted;
  e.wall_us = 1796313322000042;
  e.index = 12;
  e.rank = 1;
  e.pid = 4242;
  e.start_latency_us = 12345;
  e.cpus = "0-3";
  auto j = as_json(e);
  CHECK(j["ts"] == "2026-12-03T15:55:22.000042Z");
  CHECK(j["event"] == "started");
  CHECK(j["sandbox"] == "job-12");
  CHECK(j["index"] == 12);
  CHECK(j["node"] == "n1");
  CHECK(j["rank"] == 1);
  CHECK(j["pid"] == 4242);
  CHECK(j["start_latency_ms"].get<double>() == Approx(12.345));
  CHECK(j["cpus"] == "0-3");
}

TEST_CASE("terminal events say how the sandbox ended") {
  SandboxEvent exited;
  exited.type = EventType::kExited;
  exited.index = 0;
  exited.signal = 11;
  auto j = as_json(exited);
  CHECK(j["signal"] == 11);
  CHECK_FALSE(j.contains("exit_code"));

  SandboxEvent failed;
  failed.type = EventType::kFailed;
  failed.index = 1;
  failed.reason = FailureReason::kCommandNotFound;
  failed.message = "cannot run \"x\"\n";
  j = as_json(failed);
  CHECK(j["event"] == "failed");
  CHECK(j["reason"] == "command_not_found");
  CHECK(j["message"] == "cannot run \"x\"\n");
}

TEST_CASE("node events have no sandbox fields") {
  SandboxEvent staged;
  staged.type = EventType::kImageStaged;
  staged.method = "extract";
  staged.seconds = 1.25;
  auto j = as_json(staged);
  CHECK(j["event"] == "image_staged");
  CHECK_FALSE(j.contains("sandbox"));
  CHECK(j["method"] == "extract");
  CHECK(j["seconds"].get<double>() == Approx(1.25));
}

TEST_CASE("event batches round-trip through the wire format") {
  std::string batch;
  SandboxEvent a;
  a.type = EventType::kExited;
  a.index = 99;
  a.rank = 3;
  a.exit_code = 2;
  a.duration_us = 777;
  SandboxEvent b;
  b.type = EventType::kFailed;
  b.index = 100;
  b.reason = FailureReason::kTimeout;
  b.message = "slow";
  encode_event(batch, a);
  encode_event(batch, b);

  std::vector<SandboxEvent> decoded;
  decode_batch(batch.data(), batch.size(), [&](SandboxEvent e) { decoded.push_back(e); });
  REQUIRE(decoded.size() == 2);
  CHECK(decoded[0].index == 99);
  CHECK(decoded[0].exit_code == 2);
  CHECK(decoded[0].duration_us == 777);
  CHECK(decoded[1].reason == FailureReason::kTimeout);
  CHECK(decoded[1].message == "slow");

  CHECK_THROWS(decode_batch(batch.data(), batch.size() - 3, [](SandboxEvent) {}));
}

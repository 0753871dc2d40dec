#include "launcher/event_json.hpp"

#include <charconv>
#include <cmath>

#include "common/clock.hpp"
#include "common/json_text.hpp"
#include "node-agent/sandbox_spec.hpp"

namespace oshpc::launcher {
namespace {

using node_agent::EventType;
using node_agent::SandboxEvent;

// Keys are literals: their length is known at compile time (the event plane formats millions
// of lines a second, and strlen showed up in its profile).
template <std::size_t N>
void key(std::string& out, const char (&name)[N]) {
  out.append(",\"", 2);
  out.append(name, N - 1);
  out.append("\":", 2);
}

void append_integer(std::string& out, std::int64_t value) {
  char buf[24];
  auto result = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, static_cast<std::size_t>(result.ptr - buf));
}

template <std::size_t N>
void field(std::string& out, const char (&name)[N], std::int64_t value) {
  key(out, name);
  append_integer(out, value);
}

template <std::size_t N>
void field(std::string& out, const char (&name)[N], std::string_view value) {
  key(out, name);
  json_text::append_string(out, value);
}

// A comma-separated list as a JSON array of strings.
template <std::size_t N>
void field_list(std::string& out, const char (&name)[N], std::string_view items) {
  key(out, name);
  out += '[';
  std::size_t start = 0;
  while (start <= items.size()) {
    std::size_t comma = items.find(',', start);
    if (comma == std::string_view::npos) comma = items.size();
    if (start > 0) out += ',';
    json_text::append_string(out, items.substr(start, comma - start));
    start = comma + 1;
  }
  out += ']';
}

// Milliseconds with microsecond precision, e.g. 12.345, from integer microseconds (no
// floating-point formatting: it was a quarter of rank 0's time).
template <std::size_t N>
void field_ms(std::string& out, const char (&name)[N], std::int64_t us) {
  key(out, name);
  if (us < 0) {
    out += '-';
    us = -us;
  }
  append_integer(out, us / 1000);
  char fraction[4] = {'.', static_cast<char>('0' + us % 1000 / 100),
                      static_cast<char>('0' + us % 100 / 10), static_cast<char>('0' + us % 10)};
  out.append(fraction, 4);
}

template <std::size_t N>
void field_seconds(std::string& out, const char (&name)[N], double seconds) {
  // Seconds with three decimals: the same fixed-point printing, one thousand times coarser.
  field_ms(out, name, std::isfinite(seconds) ? std::llround(seconds * 1e3) : 0);
}

void append_identity(std::string& out, const SandboxEvent& e, const EventContext& context) {
  if (e.index >= 0) {
    std::int64_t index = e.index + context.index_offset;
    field(out, "sandbox", node_agent::sandbox_id(context.job_tag, index));
    field(out, "index", index);
  }
  const auto rank = static_cast<std::size_t>(e.rank);
  field(out, "node", rank < context.node_of_rank.size() ? context.node_of_rank[rank] : "");
  field(out, "rank", e.rank);
}

void append_details(std::string& out, const SandboxEvent& e) {
  switch (e.type) {
    case EventType::kImageStaged:
      field(out, "method", e.method);
      field_seconds(out, "seconds", e.seconds);
      field(out, "bytes_from_shared", e.bytes_from_shared);
      break;
    case EventType::kStarted:
      field(out, "pid", e.pid);
      field_ms(out, "start_latency_ms", e.start_latency_us);
      if (!e.cpus.empty()) field(out, "cpus", e.cpus);
      if (!e.gpus.empty()) field_list(out, "gpus", e.gpus);
      break;
    case EventType::kExited:
      if (e.signal != 0) {
        field(out, "signal", e.signal);
      } else {
        field(out, "exit_code", e.exit_code);
      }
      field_ms(out, "duration_ms", e.duration_us);
      field_ms(out, "cpu_user_ms", e.cpu_user_us);
      field_ms(out, "cpu_system_ms", e.cpu_system_us);
      field(out, "max_rss_kib", e.max_rss_kib);
      break;
    case EventType::kFailed:
      field(out, "reason", node_agent::failure_reason_name(e.reason));
      field(out, "message", e.message);
      field_ms(out, "duration_ms", e.duration_us);
      break;
    case EventType::kNodeFailed:
      field(out, "message", e.message);
      break;
    case EventType::kEgress:
      key(out, "allowed");
      out += e.allowed ? "true" : "false";
      field(out, "method", e.request_method);
      field(out, "host", e.host);
      field(out, "port", e.port);
      field(out, "rule", e.rule);
      if (!e.message.empty()) field(out, "reason", e.message);
      if (e.status != 0) field(out, "status", e.status);
      field(out, "bytes_up", e.bytes_up);
      field(out, "bytes_down", e.bytes_down);
      field_ms(out, "duration_ms", e.duration_us);
      break;
    case EventType::kRemoved:
      break;
  }
}

}  // namespace

void append_event_json(std::string& out, const SandboxEvent& event, const EventContext& context) {
  out.append("{\"ts\":\"", 7);
  clock::append_rfc3339(out, event.wall_us);
  out.append("\",\"event\":\"", 11);
  out += node_agent::event_type_name(event.type);
  out += '"';
  append_identity(out, event, context);
  append_details(out, event);
  out += "}\n";
}

}  // namespace oshpc::launcher

#include "launcher/summary.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/clock.hpp"

namespace oshpc::launcher {
namespace {

std::string format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

}  // namespace

std::string progress_text(const Tally& tally, std::int64_t count, double elapsed_seconds) {
  std::int64_t finished = tally.succeeded + tally.failed;
  std::int64_t running = std::max<std::int64_t>(0, tally.started - finished);
  double rate = elapsed_seconds > 0 ? static_cast<double>(finished) / elapsed_seconds : 0;
  return "running " + std::to_string(running) + ", finished " + std::to_string(finished) + "/" +
         std::to_string(count) + " (failed " + std::to_string(tally.failed) + "), " +
         format("%.1f/s", rate);
}

std::string summary_text(const Tally& tally, std::int64_t count, double wall_seconds,
                         const std::vector<std::string>& warnings) {
  std::string out = "oshpc-fanout: summary\n";
  out += "  sandboxes: " + std::to_string(count) + ", ok " + std::to_string(tally.succeeded) +
         ", failed " + std::to_string(tally.failed);
  if (tally.cancelled > 0) out += " (cancelled " + std::to_string(tally.cancelled) + ")";
  out += "\n";
  if (tally.start_latency.count() == 0) {
    // Failures written for sandboxes that never ran are no rate and no latency.
    out += format("  wall time: %.2f s, no sandbox started\n", wall_seconds);
  } else {
    double finished = static_cast<double>(tally.succeeded + tally.failed);
    out += format("  wall time: %.2f s, %.1f sandboxes/s\n", wall_seconds,
                  wall_seconds > 0 ? finished / wall_seconds : 0);
    auto ms = [&](double p) {
      return static_cast<double>(tally.start_latency.percentile(p)) / 1000.0;
    };
    out +=
        format("  start latency: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms\n", ms(50), ms(95), ms(99));
  }
  for (const auto& staged : tally.staging) {
    out +=
        "  staging on " + staged.node + ": " + staged.method + format(", %.2f s\n", staged.seconds);
  }
  if (tally.egress_allowed + tally.egress_denied > 0) {
    out += "  egress: " + std::to_string(tally.egress_allowed) + " connections allowed, " +
           std::to_string(tally.egress_denied) + " denied\n";
  }
  for (const auto& failure : tally.node_failures) out += "  node failure: " + failure + "\n";
  for (const auto& warning : warnings) out += "  warning: " + warning + "\n";
  return out;
}

ProgressReporter::ProgressReporter(bool quiet, std::int64_t count)
    : quiet_(quiet),
      is_terminal_(::isatty(STDERR_FILENO) == 1),
      count_(count),
      started_us_(clock::mono_us()),
      last_print_us_(started_us_) {}

void ProgressReporter::update(const Tally& tally, std::int64_t now_us) {
  if (quiet_) return;
  std::int64_t interval = is_terminal_ ? 200'000 : 10'000'000;
  if (now_us - last_print_us_ < interval) return;
  last_print_us_ = now_us;
  std::string line = progress_text(tally, count_, static_cast<double>(now_us - started_us_) / 1e6);
  if (is_terminal_) {
    std::fprintf(stderr, "\r\033[Koshpc-fanout: %s", line.c_str());
    printed_ = true;
  } else {
    std::fprintf(stderr, "oshpc-fanout: %s\n", line.c_str());
  }
  std::fflush(stderr);
}

void ProgressReporter::finish() {
  if (printed_) std::fputc('\n', stderr);
  printed_ = false;
}

}  // namespace oshpc::launcher

// The human side of rank 0: the progress line while the job runs and the summary at its end.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launcher/event_log.hpp"
#include "launcher/latency_histogram.hpp"

namespace oshpc::launcher {

// "running 12, finished 180/200 (failed 3), 95.2/s". Never fails.
std::string progress_text(const Tally& tally, std::int64_t count, double elapsed_seconds);

// The multi-line end-of-job summary. Never fails.
std::string summary_text(const Tally& tally, std::int64_t count, double wall_seconds,
                         const std::vector<std::string>& warnings);

// Prints progress on stderr: an updating line on a terminal, a plain line every 10 s
// otherwise, nothing when quiet.
class ProgressReporter {
 public:
  ProgressReporter(bool quiet, std::int64_t count);
  void update(const Tally& tally, std::int64_t now_us);
  void finish();

 private:
  bool quiet_;
  bool is_terminal_;
  std::int64_t count_;
  std::int64_t started_us_;
  std::int64_t last_print_us_;
  bool printed_ = false;
};

}  // namespace oshpc::launcher

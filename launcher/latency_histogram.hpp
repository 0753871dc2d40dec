// Start latencies of any number of sandboxes in fixed memory: a log-linear histogram (64
// linear steps per power of two, so a percentile is within about 1.6% of the exact value).
#pragma once

#include <array>
#include <cstdint>

namespace oshpc::launcher {

class LatencyHistogram {
 public:
  // Records one latency in microseconds (negative values count as 0). Never fails.
  void add(std::int64_t us);
  std::int64_t count() const { return count_; }
  // The p-th percentile (0..100), nearest rank, as the lower bound of its bucket; 0 when
  // empty. Never fails.
  std::int64_t percentile(double p) const;

 private:
  static constexpr int kSubBits = 6;
  static constexpr int kBuckets = (64 - kSubBits + 1) << kSubBits;
  static int bucket_of(std::uint64_t value);
  static std::int64_t lower_bound_of(int bucket);

  std::array<std::int64_t, kBuckets> counts_{};
  std::int64_t count_ = 0;
};

}  // namespace oshpc::launcher

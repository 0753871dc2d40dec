#include "launcher/latency_histogram.hpp"

#include <algorithm>
#include <cmath>

namespace oshpc::launcher {

int LatencyHistogram::bucket_of(std::uint64_t value) {
  // Values below 2^kSubBits have a bucket each; above, the top kSubBits bits after the
  // leading one pick the step within the value's power of two.
  if (value < (1U << kSubBits)) return static_cast<int>(value);
  int msb = 63 - __builtin_clzll(value);
  int shift = msb - kSubBits;
  auto step = static_cast<int>((value >> shift) & ((1U << kSubBits) - 1));
  return ((shift + 1) << kSubBits) + step;
}

std::int64_t LatencyHistogram::lower_bound_of(int bucket) {
  if (bucket < (1 << kSubBits)) return bucket;
  int shift = (bucket >> kSubBits) - 1;
  std::int64_t step = bucket & ((1 << kSubBits) - 1);
  return ((1LL << kSubBits) + step) << shift;
}

void LatencyHistogram::add(std::int64_t us) {
  ++counts_[static_cast<std::size_t>(
      bucket_of(static_cast<std::uint64_t>(std::max<std::int64_t>(us, 0))))];
  ++count_;
}

std::int64_t LatencyHistogram::percentile(double p) const {
  if (count_ == 0) return 0;
  auto rank = static_cast<std::int64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<std::int64_t>(rank, 1, count_);
  std::int64_t seen = 0;
  for (int bucket = 0; bucket < kBuckets; ++bucket) {
    seen += counts_[static_cast<std::size_t>(bucket)];
    if (seen >= rank) return lower_bound_of(bucket);
  }
  return 0;
}

}  // namespace oshpc::launcher

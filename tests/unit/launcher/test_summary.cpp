#include <catch2/catch.hpp>

#include "launcher/summary.hpp"

using namespace oshpc::launcher;

TEST_CASE("percentiles use the nearest rank and are exact for small values") {
  LatencyHistogram histogram;
  for (int v : {5, 1, 4, 2, 3, 6, 7, 8, 9, 10}) histogram.add(v);
  CHECK(histogram.percentile(50) == 5);
  CHECK(histogram.percentile(95) == 10);
  CHECK(histogram.percentile(0) == 1);
  CHECK(LatencyHistogram().percentile(50) == 0);
}

TEST_CASE("large latencies keep about 1.6% precision in fixed memory") {
  LatencyHistogram histogram;
  for (std::int64_t v = 1; v <= 1'000'000; ++v) histogram.add(v * 10);
  CHECK(histogram.count() == 1'000'000);
  CHECK(histogram.percentile(50) == Approx(5'000'000).epsilon(0.016));
  CHECK(histogram.percentile(99) == Approx(9'900'000).epsilon(0.016));
  CHECK(histogram.percentile(50) <= 5'000'000);
}

TEST_CASE("the summary reports counts, rate, latencies and staging") {
  Tally tally;
  tally.succeeded = 8;
  tally.failed = 2;
  tally.cancelled = 1;
  tally.start_latency.add(10000);
  tally.start_latency.add(20000);
  tally.staging = {{"n0", "mount", 0.5}};
  auto text = summary_text(tally, 10, 2.0, {"a warning"});
  CHECK_THAT(text, Catch::Contains("ok 8, failed 2 (cancelled 1)"));
  CHECK_THAT(text, Catch::Contains("5.0 sandboxes/s"));
  CHECK_THAT(text, Catch::Contains("p50 10.0 ms"));
  CHECK_THAT(text, Catch::Contains("staging on n0: mount, 0.50 s"));
  CHECK_THAT(text, Catch::Contains("warning: a warning"));
}

TEST_CASE("a job where no sandbox started reports no rate and no latency") {
  Tally tally;
  tally.failed = 4;
  tally.cancelled = 4;
  auto text = summary_text(tally, 4, 0.001, {});
  CHECK_THAT(text, Catch::Contains("no sandbox started"));
  CHECK_THAT(text, !Catch::Contains("sandboxes/s"));
  CHECK_THAT(text, !Catch::Contains("start latency"));
}

TEST_CASE("the progress line counts running and finished sandboxes") {
  Tally tally;
  tally.started = 5;
  tally.succeeded = 2;
  tally.failed = 1;
  CHECK(progress_text(tally, 10, 1.0) == "running 2, finished 3/10 (failed 1), 3.0/s");
}

#include <catch2/catch.hpp>

#include "launcher/summary.hpp"

using namespace oshpc::launcher;

TEST_CASE("percentiles use the nearest rank") {
  std::vector<std::int32_t> values = {5, 1, 4, 2, 3, 6, 7, 8, 9, 10};
  CHECK(percentile(values, 50) == 5);
  CHECK(percentile(values, 95) == 10);
  CHECK(percentile(values, 99) == 10);
  CHECK(percentile(values, 0) == 1);
  CHECK(percentile({}, 50) == 0);
}

TEST_CASE("the summary reports counts, rate, latencies and staging") {
  Tally tally;
  tally.succeeded = 8;
  tally.failed = 2;
  tally.cancelled = 1;
  tally.start_latencies_us = {10000, 20000};
  tally.staging = {{"n0", "mount", 0.5}};
  auto text = summary_text(tally, 10, 2.0, {"a warning"});
  CHECK_THAT(text, Catch::Contains("ok 8, failed 2 (cancelled 1)"));
  CHECK_THAT(text, Catch::Contains("5.0 sandboxes/s"));
  CHECK_THAT(text, Catch::Contains("p50 10.0 ms"));
  CHECK_THAT(text, Catch::Contains("staging on n0: mount, 0.50 s"));
  CHECK_THAT(text, Catch::Contains("warning: a warning"));
}

TEST_CASE("the progress line counts running and finished sandboxes") {
  Tally tally;
  tally.started = 5;
  tally.succeeded = 2;
  tally.failed = 1;
  CHECK(progress_text(tally, 10, 1.0) == "running 2, finished 3/10 (failed 1), 3.0/s");
}

#include <catch2/catch.hpp>

#include "common/clock.hpp"

TEST_CASE("RFC 3339 time stamps are UTC with microseconds") {
  // 2026-12-03T15:55:22.000042Z
  std::int64_t us = 1796313322LL * 1'000'000 + 42;
  CHECK(oshpc::clock::rfc3339(us) == "2026-12-03T15:55:22.000042Z");
  CHECK(oshpc::clock::rfc3339(0) == "1970-01-01T00:00:00.000000Z");
}

TEST_CASE("the monotonic clock does not go backwards") {
  auto a = oshpc::clock::mono_us();
  auto b = oshpc::clock::mono_us();
  CHECK(b >= a);
}

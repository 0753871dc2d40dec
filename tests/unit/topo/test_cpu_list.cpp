#include <catch2/catch.hpp>

#include "topo/cpu_list.hpp"
#include "topo/error.hpp"

using namespace oshpc::topo;

TEST_CASE("CPU lists format as ascending ranges") {
  CHECK(format_cpu_list({}) == "");
  CHECK(format_cpu_list({5}) == "5");
  CHECK(format_cpu_list({8, 0, 1, 2, 3}) == "0-3,8");
  CHECK(format_cpu_list({1, 1, 2, 4, 5, 7}) == "1-2,4-5,7");
}

TEST_CASE("CPU lists parse the kernel's format") {
  CHECK(parse_cpu_list("0-3,8") == std::vector<int>{0, 1, 2, 3, 8});
  CHECK(parse_cpu_list(" 7,2-2,0\n") == std::vector<int>{0, 2, 7});
  CHECK(parse_cpu_list("").empty());
  CHECK(parse_cpu_list("\n").empty());
}

TEST_CASE("CPU lists round-trip") {
  for (const std::vector<int>& cpus :
       {std::vector<int>{0}, {0, 1, 2, 3, 8}, {1, 3, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 383}}) {
    CHECK(parse_cpu_list(format_cpu_list(cpus)) == cpus);
  }
  for (const char* text : {"0-3,8", "1,3,5", "0-383"})
    CHECK(format_cpu_list(parse_cpu_list(text)) == text);
}

TEST_CASE("Bad CPU lists are refused, quoting the bad part") {
  CHECK_THROWS_WITH(parse_cpu_list("0-3,x"), Catch::Contains("\"x\" is not a cpu number"));
  CHECK_THROWS_WITH(parse_cpu_list("5-2"), Catch::Contains("\"5-2\" ends below its start"));
  CHECK_THROWS_AS(parse_cpu_list("1,,2"), PlacementError);
  CHECK_THROWS_AS(parse_cpu_list("1,"), PlacementError);
  CHECK_THROWS_AS(parse_cpu_list("-1"), PlacementError);
  CHECK_THROWS_AS(parse_cpu_list("1-2-3"), PlacementError);
  CHECK_THROWS_AS(parse_cpu_list("0x3"), PlacementError);
  CHECK_THROWS_WITH(parse_cpu_list("0-99999999"), Catch::Contains("beyond the largest"));
}
